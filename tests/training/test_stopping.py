"""What a failed entry point leaves on the MLflow run that was opened for it."""

from __future__ import annotations

import argparse
import re

import pytest
from mlflow.tracking import MlflowClient

from domain_mlflow.exceptions import NoUsableRecordsError, TrainingInterrupted
from domain_mlflow.redaction import Redactor
from domain_mlflow.training.stopping import record_entry_point_failure, recording_failures


def _open_run(client: MlflowClient, **tags: str) -> str:
    return client.create_run("0", tags=tags, run_name="brave-owl-123").info.run_id


def test_a_failed_entry_point_run_is_tagged_named_after_the_domain_and_failed():
    client = MlflowClient()
    run_id = _open_run(client)
    error = NoUsableRecordsError("d.jsonl", "no record of domain 'nope'")
    record_entry_point_failure(client, run_id, "nope", error, Redactor())
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["domain_id"] == "nope"
    assert run.data.tags["failure_reason"] == "d.jsonl: no record of domain 'nope'"
    assert re.fullmatch(r"nope_\d{8}_\d{6}", run.info.run_name)


def test_secrets_in_the_reason_are_masked_and_a_stop_ends_the_run_killed():
    client = MlflowClient()
    run_id = _open_run(client)
    error = RuntimeError("cannot reach postgresql://app:hunter22@db/app")
    record_entry_point_failure(client, run_id, "d", error, Redactor(["hunter22"]))
    run = client.get_run(run_id)
    assert "hunter22" not in run.data.tags["failure_reason"]
    assert run.data.tags["failure_reason"].startswith("RuntimeError: cannot reach")

    stopped = _open_run(client)
    record_entry_point_failure(client, stopped, "d", TrainingInterrupted(15, "SIGTERM"),
                               Redactor())
    assert client.get_run(stopped).info.status == "KILLED"


def test_an_invalid_domain_id_is_tagged_but_keeps_mlflows_name():
    client = MlflowClient()
    run_id = _open_run(client)
    record_entry_point_failure(client, run_id, "../escape", ValueError("x"), Redactor())
    run = client.get_run(run_id)
    assert run.data.tags["domain_id"] == "../escape"
    assert run.info.run_name == "brave-owl-123"


def test_a_run_the_training_recorded_already_is_left_as_it_is():
    client = MlflowClient()
    run_id = _open_run(client, failure_reason="the loss became nan", domain_id="d")
    record_entry_point_failure(client, run_id, "d", ValueError("later"), Redactor())
    run = client.get_run(run_id)
    assert run.data.tags["failure_reason"] == "the loss became nan"
    assert run.info.run_name == "brave-owl-123"
    assert run.info.status == "RUNNING"


def test_the_wrapped_handler_records_on_mlflow_run_id_and_reraises(monkeypatch):
    client = MlflowClient()
    run_id = _open_run(client)
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)

    def handler(args: argparse.Namespace) -> int:
        raise NoUsableRecordsError("d.jsonl", "no record")

    with pytest.raises(NoUsableRecordsError):
        recording_failures(handler)(argparse.Namespace(domain_id="nope"))
    assert client.get_run(run_id).data.tags["domain_id"] == "nope"


def test_an_unrecordable_failure_still_raises_the_original_error(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)  # no such run

    def handler(args: argparse.Namespace) -> int:
        raise NoUsableRecordsError("d.jsonl", "no record")

    with pytest.raises(NoUsableRecordsError):
        recording_failures(handler)(argparse.Namespace(domain_id="nope"))
    assert "could not record the failure on MLflow run" in caplog.text
