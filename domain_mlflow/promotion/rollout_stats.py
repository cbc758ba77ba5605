"""The statistics a rollout decides on: per-arm figures of the step's requests, the
canary's "worse than production?" checks and the A/B test's difference with its
confidence interval. Pure functions of the request rows; ``docs/progressive-delivery.md``
states each rule.
"""

from __future__ import annotations

import math
import random
from datetime import datetime
from statistics import NormalDist
from typing import Any

from domain_mlflow.sinks.rollouts import CANDIDATE_ARM, PRODUCTION_ARM

ARMS = (PRODUCTION_ARM, CANDIDATE_ARM)
# Quality is compared once each arm has this many requests with feedback.
MIN_RATED = 10
BOOTSTRAP_SAMPLES = 400
AB_METRICS = ("quality", "error_rate", "latency_p95_ms")
HIGHER_IS_BETTER = {"quality": True, "error_rate": False, "latency_p95_ms": False}


def rollout_verdict(rows: list[dict[str, Any]], rollout: Any, settings: Any,
                    now: datetime) -> dict[str, Any]:
    """The decision on a rollout's step rows now: :func:`ab_verdict` or
    :func:`canary_verdict` with the rollout's plan and the settings' confidence and
    latency tolerance."""
    plan = rollout.plan
    if rollout.kind == "ab":
        return ab_verdict(rows, metric=plan["metric"], min_requests=plan["min_requests"],
                          max_requests=plan["max_requests"],
                          confidence=settings.rollout_confidence, seed=rollout.id)
    return canary_verdict(
        rows, min_requests=plan["min_requests"], bake_seconds=plan["bake_seconds"],
        step_age_seconds=(now - rollout.step_started_at).total_seconds(),
        confidence=settings.rollout_confidence,
        latency_tolerance=settings.canary_latency_tolerance,
        latency_slack_ms=settings.canary_latency_slack_ms)


def p95(values: list[float]) -> float | None:
    """The nearest-rank 95th percentile (None without values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def arm_figures(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm: requests, errors, error rate, p95 latency, rated requests, mean quality
    and its variance (rows: ``arm``, ``status``, ``latency_ms``, ``quality``)."""
    figures = {}
    for arm in ARMS:
        mine = [row for row in rows if row["arm"] == arm]
        scores = [float(row["quality"]) for row in mine if row["quality"] is not None]
        errors = sum(row["status"] == "error" for row in mine)
        mean = sum(scores) / len(scores) if scores else None
        latencies = [float(row["latency_ms"]) for row in mine]
        figures[arm] = {
            "requests": len(mine), "errors": errors,
            "error_rate": errors / len(mine) if mine else None,
            "latency_p95_ms": p95(latencies),
            "rated": len(scores), "quality": mean,
            "quality_variance": (sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)
                                 if mean is not None and len(scores) > 1 else None),
            "_latencies": latencies,
        }
    return figures


def two_proportion_z(errors_a: int, n_a: int, errors_b: int, n_b: int) -> float:
    """The pooled two-proportion z statistic of rate A minus rate B (0 when both are 0
    or both 1: no spread to test against)."""
    pooled = (errors_a + errors_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return 0.0 if spread == 0 else (errors_a / n_a - errors_b / n_b) / spread


def public_arms(arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`arm_figures` without the raw latencies (what evidence and pages show)."""
    return {arm: {key: value for key, value in figures.items() if not key.startswith("_")}
            for arm, figures in arms.items()}


def canary_verdict(rows: list[dict[str, Any]], *, min_requests: int, bake_seconds: float,
                   step_age_seconds: float, confidence: float, latency_tolerance: float,
                   latency_slack_ms: float) -> dict[str, Any]:
    """Whether the canary is worse than production on this step's traffic.

    ``decision``: ``abort`` (a check found it worse), ``next`` (no check did, each arm
    has ``min_requests`` and the step baked ``bake_seconds``) or ``wait``; with each
    check's figures, statistic and threshold as the evidence."""
    arms = arm_figures(rows)
    production, canary = arms[PRODUCTION_ARM], arms[CANDIDATE_ARM]
    evidence: dict[str, Any] = {
        "arms": public_arms(arms),
        "min_requests": min_requests, "bake_seconds": bake_seconds,
        "step_age_seconds": round(step_age_seconds, 3), "confidence": confidence, "checks": []}
    if min(production["requests"], canary["requests"]) < min_requests:
        return {"decision": "wait", "why": f"each arm needs {min_requests} requests at this "
                f"step (production {production['requests']}, canary {canary['requests']})",
                "evidence": evidence}
    critical = NormalDist().inv_cdf(confidence)
    z = two_proportion_z(canary["errors"], canary["requests"], production["errors"],
                         production["requests"])
    checks = [{"metric": "error_rate", "test": "two-proportion z, one-sided",
               "production": production["error_rate"], "canary": canary["error_rate"],
               "statistic": z, "threshold": critical, "worse": z > critical}]
    limit = production["latency_p95_ms"] * (1 + latency_tolerance) + latency_slack_ms
    checks.append({"metric": "latency_p95_ms", "test": "p95 against production's p95 x "
                   f"{1 + latency_tolerance:g} + {latency_slack_ms:g} ms",
                   "production": production["latency_p95_ms"],
                   "canary": canary["latency_p95_ms"], "statistic": canary["latency_p95_ms"],
                   "threshold": limit, "worse": canary["latency_p95_ms"] > limit})
    if min(production["rated"], canary["rated"]) >= MIN_RATED:
        spread = _mean_spread(production, canary)
        zq = 0.0 if spread == 0 else (production["quality"] - canary["quality"]) / spread
        checks.append({"metric": "quality", "test": "difference of means z, one-sided",
                       "production": production["quality"], "canary": canary["quality"],
                       "statistic": zq, "threshold": critical, "worse": zq > critical})
    evidence["checks"] = checks
    worse = [check["metric"] for check in checks if check["worse"]]
    if worse:
        return {"decision": "abort", "why": "canary worse than production on "
                + ", ".join(_check_text(check) for check in checks if check["worse"]),
                "evidence": evidence}
    if step_age_seconds < bake_seconds:
        return {"decision": "wait", "why": f"baking: {step_age_seconds:.0f} of "
                f"{bake_seconds:.0f} s at this step", "evidence": evidence}
    return {"decision": "next", "why": "not worse than production on "
            + ", ".join(check["metric"] for check in checks), "evidence": evidence}


def _check_text(check: dict[str, Any]) -> str:
    return (f"{check['metric']} ({_figure(check['canary'])} against "
            f"{_figure(check['production'])}; statistic {_figure(check['statistic'])} > "
            f"{_figure(check['threshold'])})")


def _figure(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}"


def _mean_spread(a: dict[str, Any], b: dict[str, Any]) -> float:
    return math.sqrt((a["quality_variance"] or 0.0) / a["rated"]
                     + (b["quality_variance"] or 0.0) / b["rated"])


def ab_verdict(rows: list[dict[str, Any]], *, metric: str, min_requests: int,
               max_requests: int, confidence: float, seed: int = 0) -> dict[str, Any]:
    """The A/B test on ``metric``: the difference candidate − production with its
    two-sided ``confidence`` interval; ``decision`` ``winner`` (the interval excludes 0,
    each arm has ``min_requests``), ``no_difference`` (``max_requests`` reached without
    that) or ``continue``; ``winner`` names the better arm."""
    arms = arm_figures(rows)
    production, candidate = arms[PRODUCTION_ARM], arms[CANDIDATE_ARM]
    counted = "rated" if metric == "quality" else "requests"
    difference, low, high = _difference(metric, production, candidate, confidence, seed)
    evidence = {"arms": public_arms(arms),
                "metric": metric, "difference": difference, "interval": [low, high],
                "confidence": confidence, "min_requests": min_requests,
                "max_requests": max_requests}
    total = production["requests"] + candidate["requests"]
    enough = min(production[counted], candidate[counted]) >= min_requests
    if enough and difference is not None and (low > 0 or high < 0):
        better = (difference > 0) == HIGHER_IS_BETTER[metric]
        winner = CANDIDATE_ARM if better else PRODUCTION_ARM
        return {"decision": "winner", "winner": winner, "evidence": evidence,
                "why": f"{winner} is better on {metric}: difference {difference:.4g}, "
                       f"{confidence:.0%} interval [{low:.4g}, {high:.4g}]"}
    if total >= max_requests:
        return {"decision": "no_difference", "winner": None, "evidence": evidence,
                "why": f"no difference in {metric} after {total} requests "
                       f"(max {max_requests}): {_interval_text(difference, low, high)}"}
    return {"decision": "continue", "winner": None, "evidence": evidence,
            "why": f"{total} of at most {max_requests} requests; "
                   f"{_interval_text(difference, low, high)}"}


def _interval_text(difference: Any, low: Any, high: Any) -> str:
    if difference is None:
        return "not enough data for an interval yet"
    return f"difference {difference:.4g}, interval [{low:.4g}, {high:.4g}]"


def _difference(metric: str, a: dict[str, Any], b: dict[str, Any], confidence: float,
                seed: int) -> tuple[Any, Any, Any]:
    """(b − a, low, high) of ``metric``; Nones without data on both arms."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    unknown = (None, None, None)
    if metric == "quality":
        if min(a["rated"], b["rated"]) < 2:
            return unknown
        difference, spread = b["quality"] - a["quality"], _mean_spread(a, b)
    elif metric == "error_rate":
        if not (a["requests"] and b["requests"]):
            return unknown
        ra, rb = a["error_rate"], b["error_rate"]
        difference = rb - ra
        spread = math.sqrt(ra * (1 - ra) / a["requests"] + rb * (1 - rb) / b["requests"])
    else:
        if not (a["_latencies"] and b["_latencies"]):
            return unknown
        return _bootstrap_p95(a["_latencies"], b["_latencies"], confidence, seed)
    return difference, difference - z * spread, difference + z * spread


def _bootstrap_p95(a: list[float], b: list[float], confidence: float, seed: int
                   ) -> tuple[float, float, float]:
    """p95(b) − p95(a) with a percentile bootstrap interval (seeded: the same rows give
    the same interval)."""
    rng = random.Random(seed)
    samples = sorted(p95(rng.choices(b, k=len(b))) - p95(rng.choices(a, k=len(a)))
                     for _ in range(BOOTSTRAP_SAMPLES))
    tail = (1 - confidence) / 2
    low = samples[int(tail * (BOOTSTRAP_SAMPLES - 1))]
    high = samples[int((1 - tail) * (BOOTSTRAP_SAMPLES - 1))]
    return p95(b) - p95(a), low, high
