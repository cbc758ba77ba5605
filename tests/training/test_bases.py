"""Finding a base: named real bases inside their package, GGUF files, and one-time
builds that a killed process leaves half done."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from domain_mlflow.exceptions import BaseModelError
from domain_mlflow.training import bases
from domain_mlflow.training.base_cache import DONE_MARKER, build_once, staging_dir
from domain_mlflow.training.bases import NamedBase, resolve_base
from tests.helpers import run_torchrun


def test_a_named_base_whose_package_is_missing_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(bases.NAMED_BASES, "absent-base",
                        NamedBase("no_such_package_here", "x.gguf", "pip install no-such"))
    with pytest.raises(BaseModelError) as caught:
        resolve_base("absent-base", tmp_path)
    assert str(caught.value) == (
        "base_model 'absent-base' needs the no-such-package-here package, which is not "
        "installed; install it with `pip install no-such`")


def test_a_gguf_path_that_does_not_exist_is_a_clear_error(tmp_path):
    missing = tmp_path / "model.Q4.gguf"
    with pytest.raises(BaseModelError, match="GGUF file .*model.Q4.gguf.* does not exist"):
        resolve_base(str(missing), tmp_path)


def test_a_file_that_is_not_gguf_is_refused_with_the_reason(tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file at all")
    with pytest.raises(BaseModelError, match="cannot convert GGUF base"):
        resolve_base(str(fake), tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("gguf-base-*/" + DONE_MARKER))


def test_a_build_left_half_done_is_said_and_started_again(tmp_path, caplog):
    target = tmp_path / "built"
    staging_dir(target).mkdir(parents=True)
    (staging_dir(target) / "partial").write_text("left by a killed build")
    seen = []

    def build(folder: Path) -> None:
        seen.append(sorted(p.name for p in folder.iterdir()))
        (folder / "weights").write_text("ok")

    assert build_once(target, build, "a test base") == target
    assert seen == [[]]  # not resumable: an empty folder
    assert (target / "weights").is_file() and (target / DONE_MARKER).is_file()
    assert "an earlier build of a test base" in caplog.text and "starting it again" in caplog.text


_BUILD = """
import logging, sys
from domain_mlflow.training.tiny_base import TinyBaseSpec, ensure_tiny_base
logging.basicConfig(level=logging.INFO)
spec = TinyBaseSpec(vocab_size=300, n_positions=64, n_embd=16, n_layer=1, n_head=1,
                    corpus_per_domain=40, pretrain_steps=int(sys.argv[2]), batch_size=4)
print(ensure_tiny_base(sys.argv[1], spec, progress=False))
"""


def test_a_killed_tiny_base_build_continues_from_its_own_checkpoint(tmp_path):
    steps = "3000"
    command = [sys.executable, "-c", _BUILD, str(tmp_path), steps]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    state = None
    while time.monotonic() < deadline and state is None:
        state = next(tmp_path.glob("tiny-base-*.building/pretraining-state.pt"), None)
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert state is not None, first.stderr.read() if first.stderr else ""
    assert not list(tmp_path.glob("tiny-base-*/" + DONE_MARKER))

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                            check=False)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "was interrupted; continuing from what it saved" in second.stderr
    [step] = re.findall(r"continuing the tiny base's pretraining from step (\d+)",
                        second.stderr)
    assert int(step) % 500 == 0 and 0 < int(step) < 3000
    logged = re.findall(r"pretraining the tiny base \(once\): step (\d+) of 3000 .*, ETA ",
                        second.stderr)
    assert len(logged) >= 3 and int(logged[0]) > int(step) and logged[-1] == "3000"
    folder = Path(second.stdout.strip().splitlines()[-1])
    assert (folder / DONE_MARKER).is_file() and (folder / "model.safetensors").is_file()
    assert not (folder / "pretraining-state.pt").exists()


_BUILD_IN_A_GROUP = """
import logging, os, sys
import torch.distributed as dist
from domain_mlflow.exceptions import BaseModelError
from domain_mlflow.training.tiny_base import TinyBaseSpec, ensure_tiny_base
logging.basicConfig(level=logging.INFO)
spec = TinyBaseSpec(vocab_size=300, n_positions=64, n_embd=16, n_layer=1, n_head=1,
                    corpus_per_domain=40, pretrain_steps=20, batch_size=4)
dist.init_process_group("gloo")
report = open(os.path.join(sys.argv[2], f"rank-{dist.get_rank()}.txt"), "w")
if dist.get_rank() == 1:
    try:
        ensure_tiny_base(sys.argv[1], spec, progress=False)
    except BaseModelError as error:
        print(error, file=report)
dist.barrier()
if dist.get_rank() == 0:
    print(ensure_tiny_base(sys.argv[1], spec, progress=False), file=report)
dist.destroy_process_group()
"""


def test_a_base_built_from_rank_1_of_a_started_group_fails_and_rank_0_finishes_it(tmp_path):
    """transformers writes no model from rank 1 and says nothing: not marked done."""
    script = tmp_path / "build.py"
    script.write_text(_BUILD_IN_A_GROUP)
    cache = tmp_path / "cache"
    done = run_torchrun(str(script), str(cache), str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [built] = (tmp_path / "rank-0.txt").read_text().splitlines()
    folder = Path(built)
    assert (tmp_path / "rank-1.txt").read_text().splitlines() == [
        f"transformers wrote no model into {staging_dir(folder)}: this process is not rank 0 "
        "of an initialised torch.distributed group. Build the base before the group starts "
        "(domain-mlflow train does), or from rank 0"]
    assert folder.parent == cache
    assert (folder / DONE_MARKER).is_file() and (folder / "config.json").is_file()
    assert (folder / "model.safetensors").is_file()
    # rank 0 took over rank 1's staging folder and its saved state, not a new start
    assert "continuing the tiny base's pretraining from step 20" in done.stderr


def test_a_folder_marked_complete_without_its_model_is_built_again(tmp_path, caplog):
    target = tmp_path / "built"
    target.mkdir()
    (target / DONE_MARKER).write_text("ok\n")  # as a build from rank 1 once left it

    def build(folder: Path) -> None:
        (folder / "config.json").write_text("{}")

    assert build_once(target, build, "a test base", required=("config.json",)) == target
    assert (target / "config.json").is_file() and (target / DONE_MARKER).is_file()
    assert "a test base in" in caplog.text and "lacks config.json; building it again" in caplog.text
