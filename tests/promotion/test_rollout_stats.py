"""The rollout statistics on rows whose answers are known."""

from __future__ import annotations

import pytest

from domain_mlflow.promotion.rollout_stats import ab_verdict, canary_verdict, two_proportion_z


def rows(arm: str, count: int, errors: int = 0, latency: float = 5.0,
         quality: float | None = None) -> list[dict]:
    return [{"arm": arm, "status": "error" if i < errors else "ok", "latency_ms": latency,
             "quality": quality} for i in range(count)]


def test_two_proportion_z_matches_the_textbook_value():
    # 30/100 against 20/100: pooled 0.25, z = 0.1 / sqrt(0.25 * 0.75 * 0.02) = 1.633
    assert two_proportion_z(30, 100, 20, 100) == pytest.approx(1.63299, abs=1e-5)
    assert two_proportion_z(0, 50, 0, 50) == 0.0


CANARY = {"min_requests": 50, "bake_seconds": 60.0, "confidence": 0.95,
          "latency_tolerance": 0.2, "latency_slack_ms": 10.0}


def test_a_slow_canary_is_worse_on_latency_and_a_fast_one_bakes_first():
    slow = canary_verdict(rows("production", 100) + rows("candidate", 100, latency=30.0),
                          step_age_seconds=0.0, **CANARY)
    assert slow["decision"] == "abort"
    [latency] = [c for c in slow["evidence"]["checks"] if c["metric"] == "latency_p95_ms"]
    assert (latency["threshold"], latency["canary"], latency["worse"]) == (16.0, 30.0, True)
    same = rows("production", 100) + rows("candidate", 100)
    assert canary_verdict(same, step_age_seconds=10.0, **CANARY)["decision"] == "wait"
    assert canary_verdict(same, step_age_seconds=61.0, **CANARY)["decision"] == "next"
    few = rows("production", 100) + rows("candidate", 49, errors=49)
    assert canary_verdict(few, step_age_seconds=61.0, **CANARY)["decision"] == "wait"


def test_an_ab_test_on_latency_finds_the_faster_arm_by_bootstrap():
    found = ab_verdict(rows("production", 80, latency=50.0) + rows("candidate", 80, latency=20.0),
                       metric="latency_p95_ms", min_requests=50, max_requests=1000,
                       confidence=0.95, seed=7)
    assert (found["decision"], found["winner"]) == ("winner", "candidate")
    assert found["evidence"]["difference"] == -30.0
    equal = ab_verdict(rows("production", 80) + rows("candidate", 80), metric="error_rate",
                       min_requests=50, max_requests=160, confidence=0.95)
    assert (equal["decision"], equal["winner"]) == ("no_difference", None)
