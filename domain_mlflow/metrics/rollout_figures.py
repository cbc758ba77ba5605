"""A domain's canary or A/B test as the dashboard shows it: the split, the current step,
each arm's figures on that step, each arm's figures over the rollout's life in time
buckets, what the evaluator would decide now, and every decided step with its
evidence. Read-only: from a config store opened by the caller.

The per-arm figures and the "now" view are the evaluator's own functions
(:mod:`domain_mlflow.promotion.rollout_stats`) on the same rows, so the page and
``domain-mlflow canary status`` agree.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from domain_mlflow.promotion.rollout_stats import ARMS, arm_figures, public_arms, rollout_verdict
from domain_mlflow.sinks.database import to_datetime, utc_now

if TYPE_CHECKING:
    from domain_mlflow.settings import Settings
    from domain_mlflow.sinks.config_store import ConfigStore
    from domain_mlflow.sinks.rollouts import Rollout

MAX_BUCKETS = 200
# Bucket widths in seconds, the smallest that keeps the rollout's life within MAX_BUCKETS.
BUCKET_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
                  21600, 43200, 86400)
# The series read at most this many of the rollout's newest requests (``truncated`` says
# when there were more); the current step's figures always count all of its requests.
SERIES_ROW_LIMIT = 200_000
SERIES_METRICS = ("requests", "error_rate", "latency_p95_ms", "quality")


def rollout_marks(store: ConfigStore, domain_ids: list[str] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Each domain's running or paused rollout in a few words, for the overview (one
    query for all domains)."""
    return {rollout.domain_id: rollout.mark()
            for rollout in store.active_rollouts(domain_ids)}


def domain_rollout(store: ConfigStore, domain_id: str, settings: Settings, since: datetime,
                   now: datetime | None = None) -> dict[str, Any] | None:
    """The domain's running rollout, else its newest one that ended after ``since``, with
    its figures; None when there is neither."""
    newest = store.active_rollout(domain_id) or next(iter(store.rollouts(domain_id, 1)), None)
    if newest is None or (not newest.is_active and newest.updated_at < since):
        return None
    return rollout_figures(store, newest, settings, now or utc_now())


def rollout_figures(store: ConfigStore, rollout: Rollout, settings: Settings,
                    now: datetime) -> dict[str, Any]:
    """Split, step, per-arm figures of the current step, series over the rollout's life,
    the evaluator's view now (while it is active) and every decided step."""
    step_rows = store.rollout_requests(rollout.id, rollout.step_started_at)
    decisions = store.rollout_decisions(rollout.id)
    end = now if rollout.is_active else rollout.updated_at
    return {
        **rollout.mark(),
        "baseline_model_version": rollout.baseline_model_version,
        "plan": rollout.plan,
        "step_started_at": rollout.step_started_at.isoformat(),
        "created_at": rollout.created_at.isoformat(),
        "updated_at": rollout.updated_at.isoformat(),
        "actor": rollout.actor,
        "outcome": rollout.outcome,
        "arms": public_arms(arm_figures(step_rows)),
        "now": _verdict(rollout, step_rows, settings, now) if rollout.is_active else None,
        "series": arm_series(_series_rows(store, rollout.id), rollout.created_at, end),
        "steps_taken": _steps(rollout, decisions, end),
        "decisions": decisions,
    }


def _verdict(rollout: Rollout, rows: list[dict[str, Any]], settings: Settings,
             now: datetime) -> dict[str, Any]:
    """What the evaluator would decide on these rows now (as ``rollout.verdict`` does)."""
    found = rollout_verdict(rows, rollout, settings, now)
    return {"decision": found["decision"], "why": found["why"],
            "checks": found["evidence"].get("checks", [])}


def _series_rows(store: ConfigStore, rollout_id: int) -> dict[str, Any]:
    rows = store.rollout_series(rollout_id, SERIES_ROW_LIMIT + 1)
    return {"rows": rows[:SERIES_ROW_LIMIT], "truncated": len(rows) > SERIES_ROW_LIMIT}


def bucket_seconds(span_seconds: float) -> int:
    """The smallest width that cuts ``span_seconds`` into at most MAX_BUCKETS buckets
    wherever the span starts (the first bucket begins on a multiple of the width)."""
    most = MAX_BUCKETS - 1  # the span's own buckets, and one more for the unaligned start
    for width in BUCKET_SECONDS:
        if math.ceil(span_seconds / width) <= most:
            return width
    day = BUCKET_SECONDS[-1]
    return day * math.ceil(span_seconds / day / most)


def arm_series(read: dict[str, Any], start: datetime, end: datetime) -> dict[str, Any]:
    """Per arm and time bucket (from ``start``'s bucket to ``end``'s): requests, errors,
    error rate, p95 latency, mean quality and rated requests."""
    rows = [{**row, "started_at": to_datetime(row["started_at"])} for row in read["rows"]]
    first = min([start, *(row["started_at"] for row in rows)])
    last = max([end, *(row["started_at"] for row in rows)])
    width = bucket_seconds((last - first).total_seconds())
    origin = math.floor(first.timestamp() / width) * width
    count = int((last.timestamp() - origin) // width) + 1
    buckets: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    for row in rows:
        buckets[int((row["started_at"].timestamp() - origin) // width)].append(row)
    figures = [arm_figures(bucket) for bucket in buckets]
    keys = ("requests", "errors", "error_rate", "latency_p95_ms", "quality", "rated")
    return {
        "bucket_seconds": width,
        "starts": [(datetime.fromtimestamp(origin, UTC) + timedelta(seconds=width * i))
                   .isoformat() for i in range(count)],
        "arms": {arm: {key: [f[arm][key] for f in figures] for key in keys} for arm in ARMS},
        "truncated": read["truncated"],
    }


def _steps(rollout: Rollout, decisions: list[dict[str, Any]], end: datetime
           ) -> list[dict[str, Any]]:
    """Each step run so far: its share, when it started and ended (the next step's
    start, or ``end`` for the step it is at) and its decision."""
    taken = []
    started = rollout.created_at.isoformat()
    for decision in decisions:
        taken.append({"step": decision["step_index"] + 1, "percent": decision["percent"],
                      "started_at": started, "ended_at": decision["created_at"],
                      "decision": decision["decision"]})
        started = decision["created_at"]
    if rollout.is_active:
        taken.append({"step": rollout.step_index + 1, "percent": rollout.percent,
                      "started_at": rollout.step_started_at.isoformat(),
                      "ended_at": end.isoformat(), "decision": None})
    return taken
