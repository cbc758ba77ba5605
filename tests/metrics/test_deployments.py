"""Fleet rates (gate hit rate, deployment success, time to live, approval lead time)
from promotion records whose true counts are known, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from domain_mlflow import DomainMetricsCollector
from domain_mlflow.metrics.deployments import (
    describe,
    duration_text,
    durations,
    percentile,
    rates,
)
from domain_mlflow.settings import load_settings
from domain_mlflow.sinks.config_store import ConfigStore
from domain_mlflow.sinks.database import utc_now
from tests.fleet_helpers import (
    APPROVAL_WAIT,
    B1_TO_LIVE,
    B3_WAITING,
    EXPECTED,
    counts,
    seed_fleet,
)
from tests.helpers import run_cli
from tests.promotion_helpers import FAILING, PASSING, make_promoter, register_domain_version

# Measured durations carry the test's own run time on top of the known ones.
SLACK_SECONDS = 120


def test_rates_equal_the_counts_of_known_promotion_records(store_backend):
    seed_fleet()
    collector = DomainMetricsCollector(cache_seconds=0)
    deployments = collector.fleet_deployments()
    assert sorted(deployments["domains"]) == ["alpha", "beta", "gamma"]
    for domain in ("alpha", "beta", "gamma"):
        assert counts(deployments["domains"][domain]) == EXPECTED[domain], domain
        assert collector.collect_domain_metrics(domain)["deployments"] == \
            deployments["domains"][domain]
    assert counts(deployments["fleet"]) == EXPECTED["fleet"]

    beta = deployments["domains"]["beta"]
    assert beta["deployment"]["time_to_live"]["median_seconds"] == pytest.approx(
        B1_TO_LIVE.total_seconds(), abs=SLACK_SECONDS)
    assert beta["approval"]["lead_time"]["median_seconds"] == pytest.approx(
        APPROVAL_WAIT.total_seconds(), abs=SLACK_SECONDS)
    assert (beta["approval"]["rejected_by_reviewer"], beta["approval"]["closed"]) == (1, 0)
    assert (beta["deployment"]["not_reached"], beta["gate"]["refused_by_other_rules"]) == (1, 0)
    alpha_live = deployments["domains"]["alpha"]["deployment"]["time_to_live"]["seconds"]
    assert len(alpha_live) == 3 and all(0 <= s < SLACK_SECONDS for s in alpha_live)
    # The fleet's p95 of four durations is the longest: beta's two hours.
    assert deployments["fleet"]["deployment"]["time_to_live"]["p95_seconds"] == \
        beta["deployment"]["time_to_live"]["median_seconds"]
    gamma = deployments["domains"]["gamma"]
    assert gamma["deployment"]["time_to_live"]["median_seconds"] is None
    assert gamma["approval"]["lead_time"]["median_seconds"] is None


def test_the_approval_queue_shows_the_waiting_version_and_how_to_approve_it(store_backend):
    fleet = seed_fleet()
    collector = DomainMetricsCollector(cache_seconds=0)
    [entry] = collector.fleet_deployments()["awaiting_approval"]
    waiting = fleet.beta[2]
    assert (entry["domain_id"], entry["registry_version"], entry["model_version"]) == \
        ("beta", 3, waiting.tags["model_version"])
    assert entry["semver"] == waiting.tags["semver"]
    assert entry["approve_command"] == "domain-mlflow approve beta --version 3 --by NAME"
    assert entry["url"] == f"{collector.ui_url()}/#/models/domain.beta/versions/3"
    assert entry["gate"]["passed"] is True
    assert [check["metric"] for check in entry["gate"]["checks"]] == [
        "accuracy", "latency_ms", "training_loss", "validation_loss"]
    waited = utc_now() - fleet.waiting.awaiting_since
    assert waited >= B3_WAITING
    # Waiting for a person is not a promotion under way: the forced b4 is.
    assert collector.collect_domain_metrics("beta")["in_flight"]["registry_version"] == 4


def test_the_window_counts_only_promotions_created_in_it(store_backend):
    refused, passed = (register_domain_version("windowed", m) for m in (FAILING, PASSING))
    promoter = make_promoter()
    old = promoter.run(promoter.request("windowed", int(refused.version)))
    promoter.run(promoter.request("windowed", int(passed.version)))
    store = ConfigStore.from_settings(load_settings())
    try:
        with store.database.transaction() as tx:
            tx.execute("UPDATE promotions SET created_at = %s WHERE id = %s",
                       (utc_now() - timedelta(days=40), old.id))
    finally:
        store.close()
    collector = DomainMetricsCollector(cache_seconds=0)
    recent = collector.collect_domain_metrics("windowed")["deployments"]["gate"]
    wider = collector.collect_domain_metrics("windowed", 60)["deployments"]["gate"]
    assert (recent["decided"], recent["passed"], recent["hit_rate"]) == (1, 1, 1.0)
    assert (wider["decided"], wider["passed"], wider["hit_rate"]) == (2, 1, 0.5)
    assert wider["failing_thresholds"] == {"accuracy": 1, "training_loss": 1}


def test_rates_without_a_denominator_are_none_and_read_as_a_dash():
    empty = rates([], [])
    assert (empty["gate"]["hit_rate"], empty["deployment"]["success_rate"]) == (None, None)
    lines = describe(empty)
    assert lines[0] == "gate hit rate — (0 of 0 decided passed)"
    assert lines[1].startswith("deployment success — (0 of 0 started")
    assert lines[2] == "registration to live: median —, p95 — (0 live)"


def test_percentiles_and_durations_in_words():
    assert percentile([3.0, 1.0, 2.0], 0.95) == 3.0
    assert percentile(list(range(1, 101)), 0.95) == 95
    assert percentile([], 0.5) is None
    assert durations([60.0, 10.0, 30.0, 20.0]) == {
        "count": 4, "median_seconds": 25.0, "p95_seconds": 60.0,
        "seconds": [10.0, 20.0, 30.0, 60.0]}
    assert [duration_text(s) for s in (None, 0.42, 42, 720, 5400, 3 * 86400)] == [
        "—", "0.4 s", "42 s", "12 min", "1.5 h", "3.0 days"]


def test_the_metrics_command_prints_the_rates_and_export_carries_them(tmp_path):
    seed_fleet()
    shown = run_cli("metrics", "beta")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "promotions of beta: 5 in the window" in text
    assert "gate hit rate 100% (4 of 4 decided passed)" in text
    assert ("deployment success 33% (1 of 3 started reached every target, 1 in progress); "
            "1 retry") in text
    assert "1 awaiting approval now" in text
    assert "fleet (3 domains): 9 in the window" in text
    assert "gate hit rate 86% (6 of 7 decided passed); failing: accuracy 1, training_loss 1" \
        in text
    assert "deployment success 67% (4 of 6 started reached every target" in text
    nothing = run_cli("metrics", "gamma")
    assert "gate hit rate — (0 of 0 decided passed)" in nothing.stdout

    as_json = json.loads(run_cli("metrics", "beta", "--json").stdout)
    assert counts(as_json["deployments"]) == EXPECTED["beta"]
    assert counts(as_json["fleet"]) == EXPECTED["fleet"]
    assert as_json["fleet"]["domains"] == ["alpha", "beta", "gamma"]

    written = run_cli("export", str(tmp_path / "m.json"))
    assert written.returncode == 0, written.stderr
    data = json.loads((tmp_path / "m.json").read_text())
    assert counts(data["deployments"]["fleet"]) == EXPECTED["fleet"]
    assert counts(data["domains"]["alpha"]["deployments"]) == EXPECTED["alpha"]
    assert [e["registry_version"] for e in data["deployments"]["awaiting_approval"]] == [3]
