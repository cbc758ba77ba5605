"""Training that does not finish: a signal ends the run as KILLED, an error as FAILED,
each with its ``failure_reason``; nothing is registered and the last checkpoint resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from domain_mlflow import DomainTrainer
from domain_mlflow.exceptions import (
    DomainMlflowError,
    TrainingInterrupted,
    TrainingTimeLimitReached,
)
from domain_mlflow.training import loop
from domain_mlflow.training.checkpoints import Checkpoint, CheckpointStore
from domain_mlflow.training.stopping import (
    failure_reason,
    run_status,
    signals_interrupt_training,
)
from tests.helpers import assert_one_line_error, run_cli

DOMAIN = "0x5678-SQLAgent"
_FIRST_CHECKPOINT_WITHIN_S = 120  # imports, the tiny base and five steps on 2 busy cores


# --- the handlers ----------------------------------------------------------------


@pytest.mark.parametrize(("number", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_inside_the_block_raises_training_interrupted(number, exit_code):
    with pytest.raises(TrainingInterrupted) as caught, signals_interrupt_training():
        signal.raise_signal(number)
    assert caught.value.exit_code == exit_code
    assert str(caught.value) == (
        f"training stopped by {signal.Signals(number).name}; nothing was registered. Run "
        "again with resume=true to continue from the last checkpoint")
    assert isinstance(caught.value, DomainMlflowError)


def test_the_previous_handlers_are_back_after_the_block():
    with signals_interrupt_training():
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_handler_the_host_installed_is_left_alone():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda number, frame: received.append(number))
    try:
        with signals_interrupt_training():
            signal.raise_signal(signal.SIGTERM)
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_no_handler_is_touched():
    seen = []

    def in_thread() -> None:
        with signals_interrupt_training():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [signal.SIG_DFL]


@pytest.mark.parametrize(("error", "status", "reason"), [
    (TrainingInterrupted(15, "SIGTERM"), "KILLED", "training stopped by SIGTERM; nothing"),
    (KeyboardInterrupt(), "KILLED", "KeyboardInterrupt"),
    (TrainingTimeLimitReached("stopped at step 40 of 400"), "KILLED", "stopped at step 40"),
    (RuntimeError("CUDA out of memory"), "FAILED", "RuntimeError: CUDA out of memory"),
    (DomainMlflowError("loss became nan"), "FAILED", "loss became nan"),
])
def test_the_status_and_reason_of_a_run_that_did_not_finish(error, status, reason):
    assert run_status(error) == status
    assert failure_reason(error).startswith(reason)


def test_an_error_not_of_ours_fails_the_run_with_its_reason(small_sql_data, monkeypatch):
    def out_of_memory(model, batch):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "completion_loss", out_of_memory)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        DomainTrainer().train_domain_model(DOMAIN, small_sql_data, max_steps=4, batch_size=8)
    [run] = MlflowClient().search_runs(["0"])
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == (
        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert MlflowClient().search_model_versions() == []
    assert mlflow.active_run() is None


def test_a_signal_during_the_promotion_is_not_taken_for_a_target_that_is_down(
        small_sql_data, monkeypatch):
    from domain_mlflow.promotion.trigger import AutoDeploymentTrigger

    def stopped_by_sigterm(trigger, domain_id, version):
        raise TrainingInterrupted(signal.SIGTERM, "SIGTERM")

    monkeypatch.setattr(AutoDeploymentTrigger, "deploy", stopped_by_sigterm)
    with pytest.raises(TrainingInterrupted):
        DomainTrainer().train_domain_model(DOMAIN, small_sql_data, max_steps=2, batch_size=8)
    [run] = MlflowClient().search_runs(["0"])
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"].startswith("training stopped by SIGTERM")


# --- a real process stopped by a signal ---------------------------------------------


def _default_sigint() -> None:
    """In the child: SIGINT as a terminal gives it, even when this test runs in a
    background job that ignores it (Python then leaves it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _train_until_a_checkpoint_then_signal(data: Path, checkpoints: Path, number: int
                                          ) -> subprocess.CompletedProcess[str]:
    """``domain-mlflow train`` with a budget it will not reach, sent ``number`` as soon as
    its first checkpoint is on disk."""
    command = [sys.executable, "-m", "domain_mlflow.cli", "train", "--domain-id", DOMAIN,
               "--data", str(data), "--max-steps", "50000", "--checkpoint-every", "5",
               "--eval-every", "1000", "--batch-size", "8"]
    # The fresh store's tables are made here, so the child's stderr holds only its own.
    MlflowClient().search_experiments()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + _FIRST_CHECKPOINT_WITHIN_S
        while not any((checkpoints / DOMAIN).glob("*/step-*")):
            if process.poll() is not None or time.monotonic() > deadline:
                out, err = process.communicate()
                pytest.fail(f"no checkpoint appeared (exit {process.returncode}): {err[-3000:]}")
            time.sleep(0.1)
        process.send_signal(number)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _the_killed_run_and_its_checkpoint(tmp_path: Path) -> tuple[object, Checkpoint]:
    client = MlflowClient()
    [run] = client.search_runs(["0"])
    assert client.search_registered_models() == []
    assert client.search_model_versions() == []
    checkpoint = CheckpointStore(tmp_path / "checkpoints", DOMAIN).latest()
    assert checkpoint is not None
    assert checkpoint.meta["mlflow_run_id"] == run.info.run_id
    return run, checkpoint


@pytest.mark.slow
def test_sigterm_kills_the_run_registers_nothing_and_resume_continues(small_sql_data,
                                                                      tmp_path):
    done = _train_until_a_checkpoint_then_signal(small_sql_data, tmp_path / "checkpoints",
                                                 signal.SIGTERM)

    assert_one_line_error(done, 143, "training stopped by SIGTERM; nothing was registered. "
                                     "Run again with resume=true")
    run, checkpoint = _the_killed_run_and_its_checkpoint(tmp_path)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"].startswith("training stopped by SIGTERM")
    assert checkpoint.step % 5 == 0
    state = checkpoint.load_state()
    assert state["step"] == checkpoint.step
    assert state["trainable"] and {"optimizer", "scheduler", "rng"} <= set(state)

    resumed = run_cli("train", "--domain-id", DOMAIN, "--data", str(small_sql_data),
                      "--resume", "--max-steps", str(checkpoint.step + 2),
                      "--checkpoint-every", "5", "--eval-every", "1000", "--batch-size", "8",
                      "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads(resumed.stdout)
    assert results["training_run_id"] == checkpoint.training_run_id
    assert results["steps"] == {"start": checkpoint.step, "end": checkpoint.step + 2}
    assert results["registry_version"] == "1"


@pytest.mark.slow
def test_sigint_kills_the_run_and_exits_130(small_sql_data, tmp_path):
    done = _train_until_a_checkpoint_then_signal(small_sql_data, tmp_path / "checkpoints",
                                                 signal.SIGINT)

    assert_one_line_error(done, 130, "training stopped by SIGINT")
    run, _ = _the_killed_run_and_its_checkpoint(tmp_path)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"].startswith("training stopped by SIGINT")
