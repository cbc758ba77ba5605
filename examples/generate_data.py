"""Write the bundled example data sets to examples/data/ (deterministic; rerun to rebuild).

    python examples/generate_data.py [--out examples/data]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from domain_mlflow.data.synthetic import SQL_DOMAIN, VECTOR_DOMAIN, example_records

FILES = {SQL_DOMAIN: "sql_agent.jsonl", VECTOR_DOMAIN: "vector_agent.jsonl"}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data",
                        help="output folder (default: examples/data next to this script)")
    return parser


def main(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    for domain_id, records in example_records().items():
        path = args.out / FILES[domain_id]
        with path.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"{path}: {len(records)} records of {domain_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(make_parser().parse_args()))
