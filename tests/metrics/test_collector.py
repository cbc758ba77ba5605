"""The metrics collector against a real MLflow store seeded through MLflow's client."""

from __future__ import annotations

import json
import math
import time

import mlflow
import pytest

from domain_mlflow import DomainMetricsCollector
from domain_mlflow.exceptions import ConfigStoreError
from domain_mlflow.metrics.trends import rank, summarize, trend
from domain_mlflow.sinks.config_store import ConfigStore
from tests.helpers import open_promotion
from tests.promotion_helpers import PASSING, make_promoter, register_domain_version


def log_run(domain: str | None, experiment: str = "Default", **metrics: float) -> str:
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        if domain:
            mlflow.set_tag("domain_id", domain)
        mlflow.log_metrics(metrics)
    time.sleep(0.002)  # distinct start times, so "newest" is well defined
    return run.info.run_id


def test_figures_equal_the_values_logged_across_experiments():
    log_run("sql", "team-a", accuracy=0.70, latency_ms=120.0, training_loss=0.5,
            validation_loss=0.6)
    log_run("sql", "team-b", accuracy=0.90, latency_ms=100.0, training_loss=0.2,
            validation_loss=0.3)
    log_run("sql", "team-a", accuracy=0.80, latency_ms=90.0, training_loss=0.3,
            validation_loss=0.4)
    log_run(None, accuracy=0.99)  # not a domain's run
    metrics = DomainMetricsCollector(cache_seconds=0).collect_domain_metrics("sql")
    accuracy = metrics["performance"]["accuracy"]
    assert accuracy == {"newest": 0.80, "mean": pytest.approx(0.80), "best": 0.90, "count": 3,
                        "missing": 0}
    latency = metrics["performance"]["latency_ms"]
    assert (latency["newest"], latency["best"]) == (90.0, 90.0)
    assert [run["accuracy"] for run in metrics["runs"]] == [0.70, 0.90, 0.80]
    assert metrics["runs"][0]["url"].endswith(f"/runs/{metrics['runs'][0]['run_id']}")


def test_trends_know_that_lower_latency_and_loss_are_better():
    for accuracy, latency, loss in ((0.70, 300.0, 0.6), (0.72, 280.0, 0.5), (0.90, 150.0, 0.2)):
        log_run("improving", accuracy=accuracy, latency_ms=latency, training_loss=loss,
                validation_loss=loss)
    for accuracy, latency in ((0.90, 100.0), (0.91, 110.0), (0.60, 400.0)):
        log_run("degrading", accuracy=accuracy, latency_ms=latency, training_loss=0.2,
                validation_loss=0.2)
    collector = DomainMetricsCollector(cache_seconds=0)
    up = collector.collect_domain_metrics("improving")["trends"]
    down = collector.collect_domain_metrics("degrading")["trends"]
    assert {m: up[m]["direction"] for m in up} == dict.fromkeys(up, "improving")
    assert down["accuracy"]["direction"] == "degrading"
    assert down["latency_ms"]["direction"] == "degrading"
    assert down["training_loss"]["direction"] == "stable"
    assert up["latency_ms"]["magnitude"] == pytest.approx(abs(150 - 290) / 290)


def test_an_empty_domain_and_missing_or_nan_metrics_are_visible_not_fatal():
    log_run("partial", accuracy=0.5)
    log_run("partial", accuracy=float("nan"), latency_ms=80.0)
    collector = DomainMetricsCollector(cache_seconds=0)
    partial = collector.collect_domain_metrics("partial")
    assert partial["performance"]["accuracy"]["count"] == 1
    assert partial["performance"]["accuracy"]["missing"] == 1
    assert partial["performance"]["training_loss"] == {"newest": None, "mean": None,
                                                       "best": None, "count": 0, "missing": 2}
    assert partial["trends"]["accuracy"]["direction"] == "insufficient_data"
    empty = collector.collect_domain_metrics("no-runs-at-all")
    assert empty["has_runs"] is False
    assert empty["performance"]["accuracy"]["newest"] is None
    assert empty["usage"]["requests"] == 0
    json.dumps(partial)  # no NaN leaks into JSON
    assert "NaN" not in json.dumps(partial)


def test_versions_and_production_come_from_the_registry_and_config_store():
    first = register_domain_version("promoted", PASSING)
    register_domain_version("promoted", PASSING)
    promoter = make_promoter()
    promoter.run(promoter.request("promoted", int(first.version)))
    metrics = DomainMetricsCollector(cache_seconds=0).collect_domain_metrics("promoted")
    assert [(v["version"], v["is_production"], v["stage"]) for v in metrics["versions"]] == [
        (1, True, "production"), (2, False, "staging")]
    assert metrics["production"]["model_version"] == first.tags["model_version"]
    assert metrics["production"]["last_action"]["action"] == "promote"


def test_the_oldest_open_promotion_is_in_flight_and_a_finished_one_is_not():
    serving = register_domain_version("moving", PASSING)
    promoter = make_promoter()
    promoter.run(promoter.request("moving", int(serving.version)))
    older, newer = (register_domain_version("moving", PASSING) for _ in range(2))
    open_promotion(older, "redis unreachable")
    open_promotion(newer, "redis unreachable again")
    log_run("idle", accuracy=0.5)
    collector = DomainMetricsCollector(cache_seconds=0)
    metrics = collector.collect_domain_metrics("moving")
    summary = collector.domain_summary("moving")
    assert metrics["in_flight"] == summary["in_flight"]
    assert (metrics["in_flight"]["registry_version"], metrics["in_flight"]["error"]) == \
        (int(older.version), "redis unreachable")
    assert metrics["production"]["registry_version"] == int(serving.version)
    assert collector.domain_summary("idle")["in_flight"] is None
    assert collector.store_status() == {"store_error": None, "store_note": None}


def test_open_existing_finds_no_store_without_creating_one(tmp_path, postgres_dsn):
    import psycopg

    missing = tmp_path / "nested" / "domain_configs.db"
    assert ConfigStore.open_existing(None, missing) is None
    assert not missing.parent.exists()
    assert ConfigStore.open_existing(postgres_dsn, missing) is None
    with psycopg.connect(postgres_dsn, connect_timeout=5) as connection:
        [(tables,)] = connection.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
            "current_schema()").fetchall()
    assert tables == 0


def test_open_existing_reads_a_migrated_sqlite_store_and_refuses_writes(tmp_path):
    path = tmp_path / "domain_configs.db"
    ConfigStore.open(None, path).close()
    store = ConfigStore.open_existing(None, path)
    assert store is not None
    assert store.all_configs() == [] and store.open_promotions() == []
    with pytest.raises(ConfigStoreError, match="readonly"):
        store.remember_delivery("delivery-1", "model_version.created")
    store.close()


def test_open_existing_reads_a_migrated_postgres_store_and_refuses_writes(postgres_dsn):
    import psycopg

    ConfigStore.open(postgres_dsn, "unused.db").close()
    store = ConfigStore.open_existing(postgres_dsn, "unused.db")
    assert store is not None
    assert store.all_configs() == [] and store.open_promotions() == []
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        store.remember_delivery("delivery-1", "model_version.created")
    store.close()


def test_a_store_that_does_not_answer_is_an_error_not_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFIG_STORE_PATH", str(tmp_path))  # a folder, not a database
    log_run("sql", accuracy=0.8)
    collector = DomainMetricsCollector(cache_seconds=0)
    status = collector.store_status()
    assert status["store_note"] is None
    assert "config store" in status["store_error"]
    assert collector.collect_domain_metrics("sql")["store_error"] == status["store_error"]


def test_comparison_ranks_each_metric_best_first():
    log_run("a", accuracy=0.7, latency_ms=50.0)
    log_run("b", accuracy=0.9, latency_ms=150.0)
    log_run("c", accuracy=0.8)
    comparison = DomainMetricsCollector(cache_seconds=0).get_domain_comparison(["a", "b", "c"])
    assert comparison["rankings"]["accuracy"] == ["b", "c", "a"]
    assert comparison["rankings"]["latency_ms"] == ["a", "b", "c"]  # c has none: last
    assert comparison["domains"]["b"]["accuracy"] == 0.9


def test_export_writes_every_domain_to_one_json_file(tmp_path):
    log_run("a", accuracy=0.7)
    log_run("b", accuracy=0.9)
    path = tmp_path / "out" / "metrics.json"
    DomainMetricsCollector(cache_seconds=0).export_metrics_dashboard(path)
    data = json.loads(path.read_text())
    assert sorted(data["domains"]) == ["a", "b"]
    assert data["domains"]["b"]["performance"]["accuracy"]["newest"] == 0.9
    assert data["comparison"]["rankings"]["accuracy"] == ["b", "a"]


def test_one_snapshot_serves_many_domains_with_few_queries(monkeypatch):
    for index in range(12):
        log_run(f"d{index}", accuracy=index / 20)
    collector = DomainMetricsCollector(cache_seconds=60)
    calls = []
    original = collector.client.search_runs
    monkeypatch.setattr(collector.client, "search_runs",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    for index in range(12):
        assert collector.collect_domain_metrics(f"d{index}")["performance"]["accuracy"][
            "newest"] == pytest.approx(index / 20)
    assert len(calls) == 1  # one paginated search for all domains, then the cache


def test_summaries_and_rankings_are_pure_functions():
    assert summarize("latency_ms", [3.0, None, float("inf"), 1.0])["best"] == 1.0
    assert trend("accuracy", [0.5, 0.5, 0.505])["direction"] == "stable"
    assert rank("accuracy", [("x", math.nan), ("y", 0.1)]) == ["y", "x"]


def test_the_metrics_and_export_commands(tmp_path):
    import os
    import subprocess
    import sys

    log_run("cli", accuracy=0.61)
    log_run("cli", accuracy=0.64)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "domain_mlflow.cli", *args],
                              env=dict(os.environ), capture_output=True, text=True, timeout=120,
                              check=False)

    shown = cli("metrics", "cli", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["performance"]["accuracy"]["newest"] == 0.64
    written = cli("export", str(tmp_path / "m.json"), "--domain-id", "cli")
    assert written.returncode == 0, written.stderr
    assert json.loads((tmp_path / "m.json").read_text())["domains"]["cli"]["trends"][
        "accuracy"]["direction"] == "improving"
    refused = cli("metrics", "../etc")
    assert refused.returncode == 2
    assert refused.stderr.startswith("domain-mlflow: error: domain id '../etc'")


def test_links_go_to_the_mlflow_ui_the_user_named(monkeypatch):
    log_run("sql", "team-a", accuracy=0.9)
    monkeypatch.setenv("MLFLOW_UI_URL", "http://ui.example:5001/")
    run = DomainMetricsCollector(cache_seconds=0).collect_domain_metrics("sql")["runs"][0]
    assert run["url"] == (f"http://ui.example:5001/#/experiments/{run['experiment_id']}"
                          f"/runs/{run['run_id']}")
    chosen = DomainMetricsCollector(cache_seconds=0, mlflow_ui_url="http://127.0.0.1:5055")
    assert chosen.collect_domain_metrics("sql")["runs"][0]["url"].startswith(
        "http://127.0.0.1:5055/#/experiments/")
    monkeypatch.delenv("MLFLOW_UI_URL")
    plain = DomainMetricsCollector(cache_seconds=0).collect_domain_metrics("sql")["runs"][0]
    assert plain["url"].startswith("http://127.0.0.1:5000/#/")  # a local `mlflow ui`
