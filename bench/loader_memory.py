"""Loader memory: peak RSS of loading a ~300 MB data file, streamed vs whole text.

Writes a JSON Lines file and a JSON array file of the same distinct
``{"prompt", "completion"}`` records to a temporary folder, then loads each in a
fresh subprocess and reports that process's peak RSS (``ru_maxrss``):

- streamed: ``load_training_data`` as it is (line by line, or one array element
  at a time);
- whole text (the reference, the loader before streaming): the file read and
  decoded at once, ``json.loads`` of the whole array (or of every line of the
  split text), and the digest over one JSON text of all examples.

    python bench/loader_memory.py [--megabytes 300] [--tmp-dir DIR]

Both variants keep every example in memory (training needs them); the difference
is the file's text and the decoded records held beside them.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_WORDS = (
    "the", "customer", "order", "invoice", "shipment", "account", "balance", "report", "quarter",
    "revenue", "region", "product", "category", "supplier", "warehouse", "delay", "refund",
    "payment", "status", "ticket", "summary", "please", "explain", "why", "how", "when", "which",
    "list", "show", "compare", "total", "average", "monthly", "weekly", "daily", "increase",
    "decrease", "because", "after", "before", "during", "between", "support", "agent", "reply",
    "escalate", "resolve", "priority", "critical", "minor", "feature", "request", "database",
    "query", "table", "index", "column", "value", "filter", "group", "sort", "limit", "join",
    "where",
)


def records(seed: int) -> Iterator[dict[str, str]]:
    """Distinct support-desk style records of about 1.4 KB, the same for a given seed."""
    rng = random.Random(seed)
    for number in range(10**9):
        prompt = " ".join(rng.choices(_WORDS, k=rng.randint(40, 200)))
        completion = " ".join(rng.choices(_WORDS, k=rng.randint(20, 120)))
        yield {"prompt": f"Ticket {number}: {prompt}?", "completion": completion + "."}


def write_files(folder: Path, megabytes: int, seed: int = 7) -> tuple[Path, Path, int]:
    """A JSON Lines and a JSON array file of the same records, each about ``megabytes``."""
    lines_path, array_path = folder / "data.jsonl", folder / "data.json"
    limit, size, count = megabytes * 1_000_000, 0, 0
    with lines_path.open("w", encoding="utf-8") as lines, \
            array_path.open("w", encoding="utf-8") as array:
        array.write("[\n")
        for record in records(seed):
            text = json.dumps(record, ensure_ascii=False)
            lines.write(text + "\n")
            array.write(("" if count == 0 else ",\n") + "  " + text)
            size += len(text) + 1
            count += 1
            if size >= limit:
                break
        array.write("\n]\n")
    return lines_path, array_path, count


# The child: load one file one way; print its peak RSS in KiB, the examples and the time.
_CHILD = r"""
import json, resource, sys, time
from domain_mlflow.data import loader

def whole_text_records(path, max_bytes=loader.DEFAULT_MAX_BYTES):
    loader.check_data_file(path, max_bytes)
    with open(path, "rb") as handle:
        text = handle.read().decode("utf-8-sig")
    if text.lstrip().startswith("["):
        return ((f"index {i}", v) for i, v in enumerate(json.loads(text)))
    return ((f"line {n}", json.loads(line))
            for n, line in enumerate(text.split("\n"), start=1) if line.strip())

def whole_text_digest(examples):
    import hashlib
    payload = json.dumps([[e.prompt, e.completion, e.domain_id] for e in examples],
                         ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()

if sys.argv[2] == "whole":
    loader.iter_raw_records = whole_text_records
    loader.digest_examples = whole_text_digest
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
data = loader.load_training_data(sys.argv[1])
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "peak_kib": peak, "examples": len(data.examples),
                  "digest": data.digest, "seconds": seconds}))
"""


def measure(path: Path, variant: str) -> dict[str, float | str]:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path), variant], cwd=REPO,
                          capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(done.stdout)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=300, help="size of each file")
    parser.add_argument("--tmp-dir", default=None, help="where the temporary folder goes")
    return parser


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as folder:
        lines_path, array_path, count = write_files(Path(folder), args.megabytes)
        print(f"{count:,} records; JSON Lines {lines_path.stat().st_size / 1e6:.0f} MB, "
              f"JSON array {array_path.stat().st_size / 1e6:.0f} MB")
        print(f"{'file':<12} {'variant':<11} {'peak RSS':>10} {'after imports':>14} "
              f"{'examples':>9} {'load time':>10}")
        digests = set()
        for label, path in (("JSON Lines", lines_path), ("JSON array", array_path)):
            for variant in ("streamed", "whole"):
                figures = measure(path, variant)
                digests.add(figures["digest"])
                print(f"{label:<12} {variant:<11} {figures['peak_kib'] / 1024:>7.0f} MiB "
                      f"{figures['before_kib'] / 1024:>10.0f} MiB {figures['examples']:>9,} "
                      f"{figures['seconds']:>8.1f} s")
        print("same examples and digest in every variant" if len(digests) == 1
              else f"DIGESTS DIFFER: {sorted(digests)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(make_parser().parse_args()))
