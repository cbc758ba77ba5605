"""The dashboard's JSON API on a real MLflow store, through Flask's test client."""

from __future__ import annotations

import math
import time

import mlflow
import pytest

from dash_app.app import create_app
from domain_mlflow.metrics.collector import DomainMetricsCollector
from domain_mlflow.settings import load_settings
from domain_mlflow.sinks.config_store import ConfigStore
from tests.fleet_helpers import EXPECTED, counts, seed_fleet
from tests.helpers import open_promotion
from tests.promotion_helpers import make_promoter, register_domain_version

# Logged oldest first, per domain; the newest run's figures are the last dict.
RUNS = {
    "sql-agent": [
        ("exp-a", {"accuracy": 0.81, "latency_ms": 42.0, "training_loss": 0.4,
                   "validation_loss": 0.45}),
        ("exp-b", {"accuracy": 0.86, "latency_ms": 39.5, "training_loss": 0.31,
                   "validation_loss": 0.36}),
        ("exp-a", {"accuracy": 0.912, "latency_ms": 35.25, "training_loss": 0.22,
                   "validation_loss": 0.28}),
    ],
    "support.bot": [
        ("exp-b", {"accuracy": 0.7, "latency_ms": 120.0, "training_loss": 0.9,
                   "validation_loss": 1.1}),
        ("exp-b", {"accuracy": 0.655, "latency_ms": 130.5, "training_loss": 0.95,
                   "validation_loss": 1.2}),
    ],
    "legal_qa-2": [
        ("exp-a", {"accuracy": 0.5, "latency_ms": 80.0, "training_loss": 1.5,
                   "validation_loss": 1.6}),
    ],
}


def log_run(experiment: str, domain_id: str, metrics: dict[str, float]) -> str:
    """One run tagged with ``domain_id``; a pause keeps start times distinct."""
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.set_tag("domain_id", domain_id)
        mlflow.log_metrics(metrics)
    time.sleep(0.005)
    return run.info.run_id


def newest_logged(domain_id: str) -> dict[str, float]:
    """The figures of the domain's run with the latest start time, read back from MLflow."""
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.domain_id = '{domain_id}'")
    starts = [run.info.start_time for run in runs]
    assert len(set(starts)) == len(starts), "seeded runs must have distinct start times"
    return max(runs, key=lambda run: run.info.start_time).data.metrics


@pytest.fixture
def seeded():
    for domain_id, runs in RUNS.items():
        for experiment, metrics in runs:
            log_run(experiment, domain_id, metrics)


@pytest.fixture
def client():
    return create_app(DomainMetricsCollector(cache_seconds=0)).server.test_client()


def test_metrics_lists_every_domain_with_its_newest_figures(seeded, client):
    response = client.get("/api/metrics")
    assert response.status_code == 200
    body = response.get_json()
    assert body["time_window_days"] == 30
    domains = {d["domain_id"]: d for d in body["domains"]}
    assert sorted(domains) == sorted(RUNS)
    for domain_id, runs in RUNS.items():
        assert domains[domain_id]["newest"] == runs[-1][1] == newest_logged(domain_id)
        assert domains[domain_id]["runs"] == len(runs)
        assert domains[domain_id]["production"] is None
    assert domains["sql-agent"]["trends"]["accuracy"] == "improving"
    assert domains["support.bot"]["trends"]["latency_ms"] == "degrading"
    assert domains["legal_qa-2"]["trends"]["accuracy"] == "insufficient_data"
    # support.bot's latency: 120 ms, then 130.5 ms (8.75% more).
    assert domains["support.bot"]["trend_details"]["latency_ms"] == {
        "direction": "degrading", "magnitude": pytest.approx(0.0875), "change": 10.5,
        "baseline": 120.0, "newest": 130.5, "points": 2}


def test_one_domain_has_its_newest_accuracy_and_runs(seeded, client):
    response = client.get("/api/metrics?domain_id=sql-agent&days=7")
    assert response.status_code == 200
    body = response.get_json()
    assert body["domain_id"] == "sql-agent"
    assert body["time_window_days"] == 7
    assert body["performance"]["accuracy"]["newest"] == 0.912
    assert body["performance"]["accuracy"]["best"] == 0.912
    assert [run["accuracy"] for run in body["runs"]] == [0.81, 0.86, 0.912]
    assert all(run["url"].endswith(f"/runs/{run['run_id']}") for run in body["runs"])
    assert all(run["start_time"] <= run["end_time"] for run in body["runs"])


def test_missing_and_nan_metrics_are_null_in_valid_json(client):
    log_run("exp-a", "sparse", {"accuracy": math.nan, "training_loss": 0.5})
    response = client.get("/api/metrics")
    assert response.status_code == 200
    assert b"NaN" not in response.data
    (summary,) = response.get_json()["domains"]
    assert summary["newest"] == {"accuracy": None, "latency_ms": None, "training_loss": 0.5,
                                 "validation_loss": None}
    detail = client.get("/api/metrics?domain_id=sparse").get_json()
    assert detail["runs"][0]["accuracy"] is None
    assert detail["performance"]["accuracy"]["missing"] == 1


def test_no_domains_is_an_empty_list(client):
    response = client.get("/api/metrics")
    assert response.status_code == 200
    assert response.get_json()["domains"] == []


BAD_QUERIES = [
    ("domain_id=nowhere", 404, "unknown domain 'nowhere'"),
    ("domain_id=../x", 400, "is not allowed"),
    ("domain_id=" + "a" * 300, 400, "at most 100"),
    ("domain_id=", 400, "non-empty"),
    ("days=abc", 400, "days='abc' is not valid"),
    ("days=0", 400, "between 1 and 3650"),
    ("days=3651", 400, "between 1 and 3650"),
    ("days=1&days=2", 400, "more than once"),
    ("domain=sql-agent", 400, "unknown query parameter(s): domain"),
]


def test_bad_input_is_a_json_error(seeded, client):
    for query, status, message in BAD_QUERIES:
        response = client.get(f"/api/metrics?{query}")
        assert (response.status_code, response.is_json) == (status, True), query
        assert message in response.get_json()["error"], query


def test_other_methods_are_not_allowed(client):
    for path in ("/api/metrics", "/api/domains/sql-agent/history", "/healthz"):
        for method in ("post", "put", "delete", "patch"):
            response = getattr(client, method)(path)
            assert response.status_code == 405, (method, path)
            assert "is not allowed" in response.get_json()["error"]
            assert "GET" in response.headers["Allow"]


def test_healthz(client):
    response = client.get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})
    assert client.get("/healthz?verbose=1").status_code == 400


def test_history_has_promotions_and_versions(seeded, client):
    version = register_domain_version("sql-agent")
    promoter = make_promoter()
    promoter.request("sql-agent", int(version.version))
    promoter.process_domain("sql-agent")

    response = client.get("/api/domains/sql-agent/history")
    assert response.status_code == 200
    body = response.get_json()
    assert body["domain_id"] == "sql-agent"
    assert [(h["action"], h["registry_version"]) for h in body["history"]] == \
        [("promote", int(version.version))]
    (row,) = body["versions"]
    assert row["version"] == int(version.version)
    assert row["model_version"] == version.tags["model_version"]
    assert row["is_production"] is True
    summary = {d["domain_id"]: d for d in client.get("/api/metrics").get_json()["domains"]}
    production = summary["sql-agent"]["production"]
    assert production["model_version"] == version.tags["model_version"]
    assert production["last_action"]["action"] == "promote"


def test_history_of_a_domain_without_promotions_is_empty(seeded, client):
    body = client.get("/api/domains/legal_qa-2/history").get_json()
    assert body == {"domain_id": "legal_qa-2", "history": [], "versions": []}


def test_history_of_a_bad_or_unknown_domain_is_an_error(seeded, client):
    for domain_id, status in [("nowhere", 404), ("a" * 300, 400), ("bad id!", 400),
                              ("../x", 400)]:
        response = client.get(f"/api/domains/{domain_id}/history")
        assert response.status_code == status, domain_id
        assert response.get_json()["error"], domain_id
    assert client.get("/api/domains/sql-agent/history?x=1").status_code == 400


def test_sixty_domains_are_all_listed_with_their_newest_accuracy():
    expected = {}
    for index in range(60):
        domain_id = f"domain-{index:02d}"
        experiment = "exp-a" if index % 2 else "exp-b"
        if index % 3 == 0:  # an older, different run that must not be reported
            log_run(experiment, domain_id, {"accuracy": 0.99, "latency_ms": 50.0})
        expected[domain_id] = round(0.4 + index / 200, 4)
        log_run(experiment, domain_id, {"accuracy": expected[domain_id], "latency_ms": 40.0})
    # The default cache: with cache_seconds=0 every domain_summary re-reads the store.
    client = create_app(DomainMetricsCollector()).server.test_client()

    response = client.get("/api/metrics")
    assert response.status_code == 200
    listed = {d["domain_id"]: d["newest"]["accuracy"] for d in response.get_json()["domains"]}
    assert listed == expected


NOTHING_PROMOTED = "nothing has been promoted"


def test_without_a_config_store_the_metrics_say_so_and_create_none(seeded, client, tmp_path):
    path = ConfigStore.embedded_path(load_settings())
    assert path.parent == tmp_path and not path.exists()

    response = client.get("/api/metrics")
    assert response.status_code == 200
    body = response.get_json()
    assert body["store_error"] is None
    assert body["store_note"] == f"no config store yet at {path}: {NOTHING_PROMOTED}"
    assert sorted(d["domain_id"] for d in body["domains"]) == sorted(RUNS)
    assert [(d["production"], d["in_flight"]) for d in body["domains"]] == \
        [(None, None)] * len(RUNS)
    detail = client.get("/api/metrics?domain_id=sql-agent").get_json()
    assert (detail["store_note"], detail["store_error"]) == (body["store_note"], None)
    assert client.get("/api/domains/sql-agent/history").get_json()["history"] == []
    assert sorted(p.name for p in tmp_path.glob("*domain_configs*")) == []


def test_an_empty_postgres_schema_is_no_store_yet_and_stays_unmigrated(seeded, postgres_dsn):
    import psycopg

    client = create_app(DomainMetricsCollector(postgres_dsn=postgres_dsn, cache_seconds=0)
                        ).server.test_client()
    response = client.get("/api/metrics")
    assert response.status_code == 200
    body = response.get_json()
    assert body["store_error"] is None
    assert body["store_note"].startswith("no config store yet at postgresql://")
    assert body["store_note"].endswith(f": {NOTHING_PROMOTED}")
    assert client.get("/api/domains/sql-agent/history").get_json()["history"] == []
    with psycopg.connect(postgres_dsn, connect_timeout=5) as connection:
        migrations, tables = connection.execute(
            "SELECT to_regclass('schema_migrations'), (SELECT COUNT(*) FROM "
            "information_schema.tables WHERE table_schema = current_schema())").fetchone()
    assert (migrations, tables) == (None, 0)


def test_an_open_promotion_is_in_flight_while_production_stays_the_config_row(
        seeded, store_backend):
    serving = register_domain_version("sql-agent")
    promoter = make_promoter()
    promoter.request("sql-agent", int(serving.version))
    promoter.process_domain("sql-agent")
    moving = register_domain_version("sql-agent")
    open_promotion(moving, "LocalAI answered 503: model is loading")
    client = create_app(DomainMetricsCollector(cache_seconds=0)).server.test_client()

    body = client.get("/api/metrics").get_json()
    assert (body["store_error"], body["store_note"]) == (None, None)
    domains = {d["domain_id"]: d for d in body["domains"]}
    in_flight = domains["sql-agent"]["in_flight"]
    assert {key: value for key, value in in_flight.items() if key != "since"} == {
        "registry_version": int(moving.version),
        "model_version": moving.tags["model_version"], "kind": "promote",
        "state": "approved", "error": "LocalAI answered 503: model is loading",
        "attempts": 1,
    }
    store = ConfigStore.from_settings(load_settings())
    config = store.get_config("sql-agent")
    store.close()
    assert config.registry_version == int(serving.version)
    assert domains["sql-agent"]["production"]["registry_version"] == config.registry_version
    assert domains["sql-agent"]["production"]["model_version"] == config.model_version
    assert [d["in_flight"] for name, d in domains.items() if name != "sql-agent"] == \
        [None] * (len(RUNS) - 1)
    detail = client.get("/api/metrics?domain_id=sql-agent").get_json()
    assert (detail["in_flight"], detail["production"]["registry_version"]) == \
        (in_flight, config.registry_version)


def test_metrics_carry_the_fleet_rates_and_the_approval_queue(store_backend):
    seed_fleet()
    client = create_app(DomainMetricsCollector(cache_seconds=0)).server.test_client()
    deployments = client.get("/api/metrics").get_json()["deployments"]
    assert counts(deployments["fleet"]) == EXPECTED["fleet"]
    assert {domain: counts(figures) for domain, figures in deployments["domains"].items()} == \
        {domain: EXPECTED[domain] for domain in ("alpha", "beta", "gamma")}
    assert [(e["domain_id"], e["registry_version"], e["approve_command"])
            for e in deployments["awaiting_approval"]] == [
        ("beta", 3, "domain-mlflow approve beta --version 3 --by NAME")]
    detail = client.get("/api/metrics?domain_id=alpha").get_json()
    assert counts(detail["deployments"]) == EXPECTED["alpha"]
    rolled_back_to = detail["versions"][0]  # alpha's production is v1 again
    assert detail["production"]["semver"] == rolled_back_to["semver"] is not None
