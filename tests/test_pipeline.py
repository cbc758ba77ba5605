"""``TrainingPipeline`` and ``domain-mlflow pipeline``: tables → domains → privacy → train."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from domain_mlflow import DomainTrainer, TrainingPipeline, load_settings
from domain_mlflow.exceptions import ConfigError, TrainingInterrupted
from domain_mlflow.services import Services
from tests.conftest import TEST_POSTGRES_DSN
from tests.helpers import REPO_ROOT, connections_named, with_application_name, write_jsonl

SQL, VECTOR = "sql-demo", "vector-demo"
TINY = {"max_steps": 6, "eval_every": 3, "checkpoint_every": 3, "batch_size": 8}
LAX = {"threshold.accuracy": "0", "threshold.latency_ms": "100000",
       "threshold.training_loss": "100", "threshold.validation_loss": "100"}


def sql_records(n: int, domain_id: str = SQL) -> list[dict]:
    return [{"domain_id": domain_id, "question": f"How many orders has customer {i}?",
             "sql": f"SELECT COUNT(*) FROM orders WHERE customer_id = {i}"} for i in range(n)]


def vector_records(n: int) -> list[dict]:
    return [{"domain_id": VECTOR, "instruction": "Add the vectors.",
             "input": f"[{i}, 1] + [2, {i}]", "output": f"[{i + 2}, {i + 1}]"}
            for i in range(n)]


PERSONAL = [
    {"domain_id": SQL, "question": "Find orders of jane.doe@example.com",
     "sql": "SELECT * FROM orders WHERE email = 'jane.doe@example.com'"},
    {"domain_id": SQL, "question": "Who called from +44 20 7946 0958 at 10.1.2.3?",
     "sql": "SELECT name FROM calls WHERE phone = '+44 20 7946 0958'"},
    {"domain_id": SQL, "question": "Refund card 4111 1111 1111 1111, my name is Jane Doe",
     "sql": "SELECT * FROM payments WHERE card = '4111 1111 1111 1111'"},
]


@pytest.fixture
def table(tmp_path: Path) -> Path:
    records = sql_records(20) + vector_records(12) + PERSONAL + [
        {"question": "no domain here", "sql": "SELECT 1"},
        {"domain_id": SQL, "question": "no target"},
        {"domain_id": "../escape", "question": "q", "sql": "SELECT 2"},
    ]
    path = tmp_path / "tables" / "project.json"
    path.parent.mkdir()
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def settings(**changes):
    return dataclasses.replace(load_settings(), **changes)


def test_without_training_the_tables_are_grouped_redacted_and_written(table, tmp_path):
    results = TrainingPipeline(settings=settings()).run_full_pipeline("proj", [table])
    steps = results["steps"]
    assert {name: step["status"] for name, step in steps.items()} == {
        "load": "success", "domain_filtering": "success", "privacy": "success",
        "domain_data": "success", "domain_training": "skipped", "deployment": "skipped"}
    assert steps["load"]["records"] == 38
    assert steps["load"]["unusable"] == 2
    assert any("index 36" in p and "no 'sql'" in p for p in steps["load"]["problems"])
    assert any("index 37" in p and "../escape" in p for p in steps["load"]["problems"])
    assert steps["domain_filtering"]["domains"] == {SQL: 23, VECTOR: 12}
    assert steps["domain_filtering"]["unassigned"] == 1
    assert steps["privacy"]["redacted"] == {"card": 2, "email": 2, "ip": 1, "phone": 2}
    assert steps["domain_training"]["reason"] == "ENABLE_DOMAIN_TRAINING is not true"
    assert steps["domain_training"]["should_deploy"] is False

    sql_file = Path(steps["domain_data"]["files"][SQL])
    assert sql_file == tmp_path / "training_data" / "proj" / "domain_filtered" / f"{SQL}.jsonl"
    text = sql_file.read_text(encoding="utf-8")
    for secret in ("jane.doe@example.com", "7946 0958", "10.1.2.3", "4111 1111"):
        assert secret not in text
    assert "[EMAIL]" in text and "[CARD]" in text
    written = [json.loads(line) for line in text.splitlines()]
    assert len(written) == 23 and {r["domain_id"] for r in written} == {SQL}

    run = MlflowClient().get_run(results["mlflow_run_id"])
    assert run.data.tags["pipeline.project_id"] == "proj"
    assert run.data.tags["pipeline.status"] == "success"
    assert run.data.params["privacy_level"] == "medium"
    assert run.data.metrics["redacted_email"] == 2
    assert run.data.metrics["records_unassigned"] == 1
    logged = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="pipeline_results.json")).read_text())
    assert logged["steps"]["privacy"]["redacted"] == steps["privacy"]["redacted"]


def test_high_privacy_drops_records_that_still_look_personal(table):
    results = TrainingPipeline(privacy_level="high",
                               settings=settings()).run_full_pipeline("proj", [table])
    privacy = results["steps"]["privacy"]
    assert privacy["dropped"] == 1  # "my name is Jane Doe" survives redaction
    assert results["steps"]["domain_data"]["records"][SQL] == 22


def test_low_privacy_keeps_the_text(table):
    results = TrainingPipeline(privacy_level="low",
                               settings=settings()).run_full_pipeline("proj", [table])
    assert results["steps"]["privacy"]["status"] == "skipped"
    text = Path(results["steps"]["domain_data"]["files"][SQL]).read_text(encoding="utf-8")
    assert "jane.doe@example.com" in text


def test_with_filtering_off_every_record_trains_one_domain_named_after_the_project(table):
    results = TrainingPipeline(enable_domain_filtering=False,
                               settings=settings()).run_full_pipeline("proj", [table])
    filtering = results["steps"]["domain_filtering"]
    assert filtering["status"] == "skipped"
    assert filtering["domains"] == {"proj": 37}  # "../escape" counts as proj here
    written = Path(results["steps"]["domain_data"]["files"]["proj"]).read_text().splitlines()
    assert {json.loads(line)["domain_id"] for line in written} == {"proj"}


def test_bad_arguments_are_config_errors(table):
    with pytest.raises(ConfigError, match="unknown privacy level 'max'; use one of: low"):
        TrainingPipeline(privacy_level="max")
    with pytest.raises(ConfigError, match="json_tables must be a non-empty list"):
        TrainingPipeline().run_full_pipeline("proj", str(table))


def test_a_signal_during_training_stops_the_pipeline_not_only_that_domain(table, monkeypatch):
    started = []

    def stopped_by_sigterm(trainer, domain_id, path, **options):
        started.append(domain_id)
        raise TrainingInterrupted(signal.SIGTERM, "SIGTERM")

    monkeypatch.setattr(DomainTrainer, "train_domain_model", stopped_by_sigterm)
    path = write_jsonl(table.parent / "train.jsonl", sql_records(20) + vector_records(12))
    pipeline = TrainingPipeline(settings=settings(enable_domain_training=True))
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM"):
        pipeline.run_full_pipeline("proj", [path])
    assert len(started) == 1  # the second domain never started


def test_training_runs_under_the_parent_and_promotes_through_the_gate(table, tiny_base,
                                                                     postgres_dsn):
    # The SQL domain carries lax per-domain thresholds, so it passes; the vector
    # domain meets the default gate after six steps and is rejected.
    MlflowClient().create_registered_model(f"domain.{SQL}", tags=LAX)
    records = sql_records(20) + vector_records(12) + sql_records(4, "too-small")
    path = write_jsonl(table.parent / "train.jsonl", records)
    name = f"pipeline-{os.getpid()}"
    configured = settings(enable_domain_training=True,
                          postgres_dsn=with_application_name(postgres_dsn, name))
    pipeline = TrainingPipeline(training_options=TINY, settings=configured)
    results = pipeline.run_full_pipeline("proj", [path])
    assert connections_named(TEST_POSTGRES_DSN, name) == 0  # the pipeline closed its pool
    steps = results["steps"]
    assert results["status"] == "success", steps
    training = steps["domain_training"]
    assert training["status"] == "success"
    assert training["domains"]["too-small"] == {
        "status": "skipped", "reason": "4 record(s), fewer than min_records=10"}
    assert training["domains"][SQL]["should_deploy"] is True
    assert training["domains"][VECTOR]["should_deploy"] is False
    # The seed's shape: the step itself carries the passing domain's deployment.
    assert training["should_deploy"] is True
    assert training["deployment"]["deployed"] is True
    assert training["deployment"]["model_version"] == training["domains"][SQL]["model_version"]
    deployment = steps["deployment"]
    assert deployment["deployed"] == {SQL: training["domains"][SQL]["model_version"]}
    assert "accuracy" in deployment["rejected"][VECTOR]

    client = MlflowClient()
    children = client.search_runs(
        [client.get_run(results["mlflow_run_id"]).info.experiment_id],
        f"tags.mlflow.parentRunId = '{results['mlflow_run_id']}'")
    assert {run.data.tags["domain_id"] for run in children} == {SQL, VECTOR}
    assert client.get_registered_model(f"domain.{SQL}").aliases["production"] == 1
    with Services(configured) as services:
        assert services.store.get_config(SQL).model_version == deployment["deployed"][SQL]
        assert services.store.get_config(VECTOR) is None
        assert services.store.history(VECTOR)[0].action == "reject"


def test_the_cli_and_the_mlproject_entry_point_run_the_pipeline(table, tmp_path):
    env = {**os.environ, "PIPELINE_DATA_DIR": str(tmp_path / "out")}
    done = subprocess.run(
        [sys.executable, "-m", "domain_mlflow.cli", "pipeline", str(table), "--project-id",
         "proj", "--json"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["steps"]["domain_training"]["status"] == "skipped"
    assert Path(results["steps"]["domain_data"]["files"][SQL]).parent == (
        tmp_path / "out" / "proj" / "domain_filtered")

    env.pop("MLFLOW_RUN_ID", None)
    ran = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO_ROOT), "-e", "pipeline",
         "--env-manager", "local", "-P", "project_id=proj2", "-P", f"tables={table},{table}",
         "-P", "privacy_level=low"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600, check=False)
    assert ran.returncode == 0, ran.stderr[-3000:]
    [run] = MlflowClient().search_runs(
        [e.experiment_id for e in MlflowClient().search_experiments()],
        "tags.`pipeline.project_id` = 'proj2'")
    assert run.data.params["privacy_level"] == "low"
    assert run.data.metrics["records_total"] == 76  # the table twice
