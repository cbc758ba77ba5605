"""The collector's view of a canary (domain_mlflow/metrics/rollout_figures.py): real config
store (each dialect), Redis, registry and the LocalAI double; figures checked against the
``serving_requests`` rows themselves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from domain_mlflow import DomainClient
from domain_mlflow.exceptions import SinkError
from domain_mlflow.metrics.collector import DomainMetricsCollector
from domain_mlflow.metrics.rollout_figures import (
    BUCKET_SECONDS,
    MAX_BUCKETS,
    arm_series,
    bucket_seconds,
)
from domain_mlflow.promotion import rollout
from domain_mlflow.promotion.monitor import Monitor
from tests.promotion.conftest import CANARY_DOMAIN as DOMAIN
from tests.promotion_helpers import make_promoter


def send(count: int, start: int = 0, domain_id: str = DOMAIN) -> None:
    """``count`` requests with routing keys; each answered one rated 1.0 or 0.0 by turns."""
    with DomainClient(domain_id) as client:
        for i in range(start, start + count):
            try:
                client.complete(f"question {i}", routing_key=f"user-{i}")
            except SinkError:
                continue
            client.feedback(client.last_request_id, float(i % 2))


def stored_arms(rollout_id: int, since=None) -> dict[str, dict]:
    """Per arm, straight from ``serving_requests``: requests, errors, rated, quality sum."""
    where, params = "rollout_id = %s", [rollout_id]
    if since is not None:
        where, params = where + " AND started_at >= %s", [rollout_id, since]
    with make_promoter().store.database.transaction() as tx:
        rows = tx.execute(
            "SELECT arm, COUNT(*) AS requests, "
            "SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors, "
            f"COUNT(quality) AS rated, SUM(quality) AS scored FROM serving_requests WHERE {where} "
            "GROUP BY arm", params)
    return {row["arm"]: {"requests": int(row["requests"]), "errors": int(row["errors"]),
                         "rated": int(row["rated"]), "scored": float(row["scored"] or 0)}
            for row in rows}


def figures() -> dict:
    return DomainMetricsCollector(cache_seconds=0).collect_domain_metrics(DOMAIN)["rollout"]


def series_sums(found: dict, arm: str) -> dict[str, int]:
    series = found["series"]["arms"][arm]
    return {key: sum(series[key]) for key in ("requests", "errors", "rated")}


def test_a_canary_shows_its_split_step_per_arm_figures_series_and_decisions(production):
    localai, first, second = production
    for version in (first, second):  # the same error rate on both arms: not worse
        localai.behave(version.tags["model_version"], error_rate=0.1)
    started = rollout.start(make_promoter(), DOMAIN, int(second.version),
                            rollout.canary_plan([10, 50, 100], 0, 20), kind="canary")
    assert figures()["arms"]["candidate"]["requests"] == 0
    send(300)

    found = figures()
    stored = stored_arms(started["id"])
    assert (found["kind"], found["state"], found["percent"], found["step"], found["steps"]) == \
        ("canary", "running", 10.0, 1, 3)
    assert (found["registry_version"], found["baseline_registry_version"]) == \
        (int(second.version), int(first.version))
    for arm in ("production", "candidate"):
        shown = found["arms"][arm]
        assert (shown["requests"], shown["errors"], shown["rated"]) == \
            (stored[arm]["requests"], stored[arm]["errors"], stored[arm]["rated"])
        assert shown["error_rate"] == pytest.approx(stored[arm]["errors"] /
                                                    stored[arm]["requests"])
        assert shown["quality"] == pytest.approx(stored[arm]["scored"] / stored[arm]["rated"])
        assert series_sums(found, arm) == {k: stored[arm][k] for k in
                                           ("requests", "errors", "rated")}
    assert stored["candidate"]["errors"] > 0 and stored["production"]["errors"] > 0
    assert len(found["series"]["starts"]) <= MAX_BUCKETS and not found["series"]["truncated"]
    assert found["now"]["decision"] == "next" and found["decisions"] == []
    summary = DomainMetricsCollector(cache_seconds=0).domain_summary(DOMAIN)
    assert {k: summary["rollout"][k] for k in ("kind", "state", "percent", "step", "steps")} \
        == {"kind": "canary", "state": "running", "percent": 10.0, "step": 1, "steps": 3}

    [decided] = Monitor(make_promoter("monitor")).evaluate_rollouts()
    assert decided["decision"] == "next"
    send(100, start=300)
    found = figures()
    assert (found["step"], found["percent"]) == (2, 50.0)
    [step] = found["decisions"]
    assert (step["decision"], step["step_index"], step["percent"]) == ("next_step", 0, 10.0)
    assert step["evidence"]["arms"]["candidate"]["requests"] == stored["candidate"]["requests"]
    checks = {check["metric"]: check for check in step["evidence"]["checks"]}
    assert {"error_rate", "latency_p95_ms", "quality"} <= set(checks)
    assert all(c["statistic"] is not None and c["threshold"] is not None and not c["worse"]
               for c in checks.values())
    # The current step counts its own requests; the series every request of the rollout.
    now_step = stored_arms(started["id"], since=make_promoter().store.get_rollout(
        started["id"]).step_started_at)
    assert sum(a["requests"] for a in found["arms"].values()) == \
        sum(a["requests"] for a in now_step.values()) == 100
    everything = stored_arms(started["id"])
    for arm in ("production", "candidate"):
        assert series_sums(found, arm)["requests"] == everything[arm]["requests"]
    assert [(s["step"], s["percent"], s["decision"]) for s in found["steps_taken"]] == \
        [(1, 10.0, "next_step"), (2, 50.0, None)]
    json.dumps(found, allow_nan=False)  # the API's answer: valid JSON


def test_an_aborted_canary_stays_on_the_page_with_its_evidence_and_leaves_the_overview(
        production):
    localai, first, second = production
    localai.behave(second.tags["model_version"], error_rate=0.5)
    started = rollout.start(make_promoter(), DOMAIN, int(second.version),
                            rollout.canary_plan([10, 50, 100], 0, 20), kind="canary")
    send(400)
    [decided] = Monitor(make_promoter("monitor")).evaluate_rollouts()
    assert decided["decision"] == "abort"

    found = figures()
    assert (found["rollout_id"], found["state"], found["now"]) == (started["id"], "aborted",
                                                                   None)
    assert "error_rate" in found["outcome"]
    [step] = found["decisions"]
    [check] = [c for c in step["evidence"]["checks"] if c["metric"] == "error_rate"]
    assert check["worse"] and check["statistic"] > check["threshold"]
    assert found["arms"]["candidate"]["errors"] == stored_arms(started["id"])["candidate"][
        "errors"]
    assert DomainMetricsCollector(cache_seconds=0).domain_summary(DOMAIN)["rollout"] is None


def test_a_domain_without_a_rollout_has_none(production):
    assert figures() is None
    assert DomainMetricsCollector(cache_seconds=0).domain_summary(DOMAIN)["rollout"] is None


@pytest.mark.parametrize("span", [0, 150, 199, 600, 3 * 86400, 400 * 86400])
def test_series_buckets_are_round_widths_at_most_max_buckets_holding_every_request(span):
    width = bucket_seconds(span)
    assert width in BUCKET_SECONDS or width % BUCKET_SECONDS[-1] == 0
    start = datetime(2026, 12, 1, 8, 19, 31, 700000, tzinfo=UTC)  # on no bucket's edge
    moments = [start + timedelta(seconds=span * k / 10) for k in range(11)]
    rows = [{"arm": arm, "started_at": moment.isoformat(), "status": "ok", "latency_ms": 5.0,
             "quality": None} for moment in moments for arm in ("production", "candidate")]
    series = arm_series({"rows": rows, "truncated": False}, start, moments[-1])
    assert len(series["starts"]) <= MAX_BUCKETS and series["bucket_seconds"] == width
    assert [sum(series["arms"][arm]["requests"]) for arm in ("production", "candidate")] == \
        [11, 11]
