"""Every Python example of the seed document runs as written, imported from ``domain_mlflow``.

The blocks below are the seed's, character for character, except for the import
path (``services.training`` → ``domain_mlflow``); a test checks that against the
seed itself when ``../shared/seed`` is present. Each block runs in a folder holding
the files it names, on the embedded defaults (SQLite MLflow store, SQLite config
store). ``TRAINING_MAX_STEPS`` keeps each training short; nothing else is set.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from domain_mlflow.data.synthetic import (
    SQL_DOMAIN,
    VECTOR_DOMAIN,
    example_records,
    generate_records,
)
from tests.helpers import REPO_ROOT

SEED = REPO_ROOT.parent / "shared" / "seed" / "phase2-domain-training.md"

TRAINER_USAGE = '''\
from domain_mlflow import DomainTrainer

trainer = DomainTrainer(
    localai_url="http://localai:8080",
    postgres_dsn="postgres://...",
    checkpoint_dir="./checkpoints",
    model_output_dir="./models/domain_models"
)

# Train domain-specific model
results = trainer.train_domain_model(
    domain_id="0x5678-SQLAgent",
    training_data_path="./training_data/domain_filtered/sql_agent_data.json",
    fine_tune=True
)

# Results include:
# - training_run_id
# - model_path
# - evaluation metrics
# - should_deploy flag
# - deployment result (if threshold met)
'''

COLLECTOR_USAGE = '''\
from domain_mlflow import DomainMetricsCollector

collector = DomainMetricsCollector(
    localai_url="http://localai:8080",
    postgres_dsn="postgres://..."
)

# Collect metrics for a domain
metrics = collector.collect_domain_metrics(
    domain_id="0x5678-SQLAgent",
    time_window_days=30
)

# Compare multiple domains
comparison = collector.get_domain_comparison([
    "0x5678-SQLAgent",
    "0x3579-VectorProcessingAgent"
])

# Export dashboard data
collector.export_metrics_dashboard(
    output_path="./dashboard_data/metrics.json",
    domain_ids=["0x5678-SQLAgent"]
)
'''

TRIGGER_USAGE = '''\
from domain_mlflow import AutoDeploymentTrigger

trigger = AutoDeploymentTrigger(
    localai_url="http://localai:8080",
    postgres_dsn="postgres://...",
    redis_url="redis://..."
)

# Check and deploy if threshold met
result = trigger.check_and_deploy(
    domain_id="0x5678-SQLAgent",
    training_run_id="0x5678-SQLAgent_20241104_120000",
    metrics={
        "accuracy": 0.87,
        "latency_ms": 120,
        "training_loss": 0.023,
        "validation_loss": 0.028
    },
    model_path="./checkpoints/0x5678-SQLAgent/model.pt"
)

if result["deployed"]:
    print(f"✅ Model deployed: {result['model_version']}")
else:
    print(f"⚠️  Deployment skipped: {result['reason']}")
'''

DASHBOARD_USAGE = '''\
from domain_mlflow import DomainDashboard, DomainMetricsCollector

collector = DomainMetricsCollector()
dashboard = DomainDashboard(
    metrics_collector=collector,
    port=8085
)

# Start dashboard server
dashboard.serve()
'''

PIPELINE_INTEGRATION = '''\
from domain_mlflow import TrainingPipeline

pipeline = TrainingPipeline(
    enable_domain_filtering=True,
    privacy_level="medium"
)

# Enable domain training
os.environ["ENABLE_DOMAIN_TRAINING"] = "true"

# Run pipeline - includes domain training and deployment
results = pipeline.run_full_pipeline(
    project_id="sgmi",
    json_tables=["data/training/sgmi/json_with_changes.json"]
)

# Check results
if results["steps"]["domain_training"]["status"] == "success":
    training_result = results["steps"]["domain_training"]
    if training_result["should_deploy"]:
        print(f"✅ Model deployed: {training_result['deployment']['model_version']}")
'''

MANUAL_DEPLOYMENT = '''\
from domain_mlflow import DomainTrainer

trainer = DomainTrainer()

# Manually deploy a model
results = trainer.train_domain_model(
    domain_id="0x5678-SQLAgent",
    training_data_path="./data.json",
    fine_tune=True
)

# Check deployment status
if results["should_deploy"]:
    print("✅ Model ready for deployment")
else:
    print("⚠️  Model does not meet deployment threshold")
'''

TEST_TRAINING = '''\
from domain_mlflow import DomainTrainer

trainer = DomainTrainer()

# Test training
results = trainer.train_domain_model(
    domain_id="test-domain",
    training_data_path="./test_data.json",
    fine_tune=True
)

assert results["training_run_id"] is not None
assert results["model_path"] is not None
assert "evaluation" in results
'''

TEST_METRICS = '''\
from domain_mlflow import DomainMetricsCollector

collector = DomainMetricsCollector()

# Test metrics collection
metrics = collector.collect_domain_metrics("test-domain", time_window_days=7)

assert "performance" in metrics
assert "trends" in metrics
'''

TEST_DEPLOYMENT = '''\
from domain_mlflow import AutoDeploymentTrigger

trigger = AutoDeploymentTrigger()

# Test deployment check
result = trigger.check_and_deploy(
    domain_id="test-domain",
    training_run_id="test-run",
    metrics={"accuracy": 0.9, "latency_ms": 100},
    model_path="./test_model.pt"
)

assert "deployed" in result
'''

BLOCKS = [TRAINER_USAGE, COLLECTOR_USAGE, TRIGGER_USAGE, DASHBOARD_USAGE, PIPELINE_INTEGRATION,
          MANUAL_DEPLOYMENT, TEST_TRAINING, TEST_METRICS, TEST_DEPLOYMENT]

STEPS = "40"


def run_block(code: str) -> dict:
    """Execute a seed block as a script would, in the current folder; return its names."""
    namespace: dict = {"__name__": "__seed__", "os": os}
    exec(compile(code, "<seed example>", "exec"), namespace)
    return namespace


def held_out_records(domain_id: str, count: int) -> list[dict]:
    """Records of a bundled domain whose prompts are not in the shipped example file."""
    shipped = example_records()[domain_id]
    prompts = frozenset(r.get("question") or f"{r.get('instruction')}\n{r.get('input')}"
                        for r in shipped)
    fresh = generate_records(domain_id, count, seed=2024, exclude=prompts)
    return [{**r, "domain_id": domain_id} for r in fresh]


def write_json(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


@pytest.fixture
def seed_env(monkeypatch: pytest.MonkeyPatch, tiny_base: Path) -> None:
    monkeypatch.setenv("TRAINING_MAX_STEPS", STEPS)
    # Set (not deleted) so that the seed's own os.environ assignment is undone afterwards.
    monkeypatch.setenv("ENABLE_DOMAIN_TRAINING", "false")


def seed_blocks() -> list[str]:
    text = SEED.read_text(encoding="utf-8")
    return [block.replace("services.training", "domain_mlflow")
            for block in re.findall(r"```python\n(.*?)```", text, flags=re.S)]


def test_the_blocks_here_are_the_seeds_own_with_only_the_import_path_changed():
    if not SEED.is_file():  # beside every checkout in CI: there, its absence fails
        message = f"the seed document is not at {SEED}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert seed_blocks() == BLOCKS


def test_trainer_usage_trains_registers_and_reports_the_pending_deployment(tmp_path, seed_env):
    write_json(tmp_path / "training_data/domain_filtered/sql_agent_data.json",
               held_out_records(SQL_DOMAIN, 80))
    names = run_block(TRAINER_USAGE)
    results = names["results"]
    model_path = Path(results["model_path"])
    assert model_path.is_dir()
    assert model_path.resolve().is_relative_to(tmp_path / "models" / "domain_models")
    assert set(results["evaluation"]) >= {"accuracy", "latency_ms", "training_loss",
                                          "validation_loss"}
    version = MlflowClient().get_model_version("domain.0x5678-SQLAgent",
                                               results["registry_version"])
    assert version.tags["training_run_id"] == results["training_run_id"]
    # TRAINING_MAX_STEPS is the default when the caller gives no max_steps.
    assert MlflowClient().get_run(results["mlflow_run_id"]).data.params["max_steps"] == STEPS
    # The seed's placeholders name a LocalAI without its models folder: the version is
    # registered and its promotion reported as pending with the reason, not lost.
    deployment = results["deployment"]
    assert deployment["deployed"] is False
    assert "LOCALAI_MODELS_DIR" in deployment["reason"]


def test_collector_usage_after_training_reports_performance_trends_and_exports(
        tmp_path, seed_env):
    write_json(tmp_path / "data.json", held_out_records(SQL_DOMAIN, 60))
    trained = run_block(MANUAL_DEPLOYMENT)["results"]
    names = run_block(COLLECTOR_USAGE)
    metrics = names["metrics"]
    assert metrics["performance"]["accuracy"]["newest"] == pytest.approx(
        trained["evaluation"]["accuracy"])
    assert metrics["trends"]["accuracy"]["points"] == 1
    comparison = names["comparison"]
    assert set(comparison["domains"]) == {SQL_DOMAIN, VECTOR_DOMAIN}
    exported = json.loads((tmp_path / "dashboard_data" / "metrics.json").read_text())
    assert list(exported["domains"]) == [SQL_DOMAIN]


def test_trigger_usage_refuses_a_run_that_was_never_registered(seed_env, capsys):
    result = run_block(TRIGGER_USAGE)["result"]
    assert result["deployed"] is False
    assert "0x5678-SQLAgent_20241104_120000" in result["reason"]
    assert "Deployment skipped" in capsys.readouterr().out


def test_testing_blocks_train_collect_and_refuse_below_the_thresholds(tmp_path, seed_env):
    records = [{k: v for k, v in r.items() if k != "domain_id"}
               for r in held_out_records(SQL_DOMAIN, 40)]
    write_json(tmp_path / "test_data.json", records)
    run_block(TEST_TRAINING)
    assert run_block(TEST_METRICS)["metrics"]["performance"]["accuracy"]["newest"] is not None
    result = run_block(TEST_DEPLOYMENT)["result"]
    # "test-run" names no registered version: nothing to promote, and the reason says so
    # (the caller's figures may only add restrictions to a version's recorded ones).
    assert result["deployed"] is False
    assert "carries training_run_id=test-run" in result["reason"]


def test_pipeline_integration_on_a_held_out_table(tmp_path, seed_env, capsys):
    table = held_out_records(SQL_DOMAIN, 60) + held_out_records(VECTOR_DOMAIN, 30)
    table[0] = {**table[0], "question": table[0]["question"] + " (ask jane.doe@example.com)"}
    table.append({"question": "a record without a domain", "sql": "SELECT 1"})
    write_json(tmp_path / "data/training/sgmi/json_with_changes.json", table)
    results = run_block(PIPELINE_INTEGRATION)["results"]
    steps = results["steps"]
    assert {name: step["status"] for name, step in steps.items()} == {
        "load": "success", "domain_filtering": "success", "privacy": "success",
        "domain_data": "success", "domain_training": "success", "deployment": "success"}
    assert steps["domain_filtering"]["domains"] == {SQL_DOMAIN: 60, VECTOR_DOMAIN: 30}
    assert steps["domain_filtering"]["unassigned"] == 1
    assert steps["privacy"]["redacted"]["email"] == 1
    sql_file = Path(steps["domain_data"]["files"][SQL_DOMAIN])
    assert "jane.doe@example.com" not in sql_file.read_text()
    training = steps["domain_training"]
    assert set(training["domains"]) == {SQL_DOMAIN, VECTOR_DOMAIN}
    assert isinstance(training["should_deploy"], bool)
    parent = MlflowClient().get_run(results["mlflow_run_id"])
    children = MlflowClient().search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {run.data.tags["domain_id"] for run in children} == {SQL_DOMAIN, VECTOR_DOMAIN}


def test_dashboard_usage_serves_the_api_on_port_8085(tmp_path, isolated_mlflow):
    script = tmp_path / "dashboard_example.py"
    script.write_text(DASHBOARD_USAGE, encoding="utf-8")
    env = {**os.environ, "MLFLOW_TRACKING_URI": isolated_mlflow}
    process = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        body = None
        for _ in range(240):
            try:
                # Connecting fails fast until it listens; the first answer reads the whole
                # store (a cold snapshot), which on a busy machine takes seconds.
                reply = requests.get("http://127.0.0.1:8085/api/metrics", timeout=(2, 60))
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read().decode()
                time.sleep(0.25)
                continue
            body = reply.json()
            break
        assert body is not None, "the dashboard never answered on 8085"
        assert body["domains"] == []
        assert requests.get("http://127.0.0.1:8085/healthz", timeout=10).json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=30)
