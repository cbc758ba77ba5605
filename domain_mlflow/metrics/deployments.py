"""Fleet rates from promotion records: gate hit rate, deployment success, time from
registration to live, approval lead time. Pure functions of the config store's rows.

Definitions (docs/dashboard.md, "Fleet rates"), over the promotions created in the
window:

- **decided**: ``promote`` promotions with a gate decision; **passed**: those whose
  decision passed (waiting for, or refused by, a reviewer afterwards still passed).
  Gate hit rate = passed / decided.
- **started**: promotions of any kind that got past the gate and approval into
  deployment (state ``approved`` or a later deploying state, or a target recorded
  done or failed); **reached all targets**: ``done`` with every target done or
  skipped because it is not configured (a superseded one is not). Deployment success
  rate = reached / started.
- A rate is None when its denominator is 0.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from domain_mlflow.sinks.rows import Kind, State, TargetStatus
from domain_mlflow.sinks.targets import NO_LOCALAI, NO_REDIS

if TYPE_CHECKING:
    from domain_mlflow.sinks.rows import Promotion

DEPLOYING_STATES = frozenset({State.APPROVED, State.SERVABLE, State.CONFIG_WRITTEN,
                              State.REDIS_SYNCED, State.LOCALAI_SYNCED, State.DONE})
# A target that is not configured is reached by not being there: it serves nothing.
NOT_CONFIGURED = frozenset({NO_REDIS, NO_LOCALAI})


def ratio(part: int, whole: int) -> float | None:
    """``part / whole``, or None when nothing was counted."""
    return part / whole if whole else None


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (the smallest value with at least ``fraction`` of the
    values at or below it), or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def durations(seconds: list[float]) -> dict[str, Any]:
    """Count, median and p95 of durations in seconds, and the durations, shortest first."""
    return {"count": len(seconds),
            "median_seconds": statistics.median(seconds) if seconds else None,
            "p95_seconds": percentile(seconds, 0.95),
            "seconds": sorted(seconds)}


def _status(text: Any) -> TargetStatus | None:
    try:
        return TargetStatus.of(text) if isinstance(text, str) else None
    except ValueError:  # a status this version does not know: neither done nor failed
        return None


def began_deploying(promotion: Promotion) -> bool:
    """Whether the promotion got past the gate (and approval) into deployment."""
    return promotion.state in DEPLOYING_STATES or any(
        _status(text) in (TargetStatus.DONE, TargetStatus.FAILED)
        for text in promotion.targets.values())


def reached_all_targets(promotion: Promotion) -> bool:
    """Done, and every target done or skipped because it is not configured."""
    return promotion.state is State.DONE and all(
        _status(text) is TargetStatus.DONE or text in NOT_CONFIGURED
        for text in promotion.targets.values())


def _seconds(start: Any, end: Any) -> float:
    return max(0.0, (end - start).total_seconds())


def gate_figures(promotions: list[Promotion]) -> dict[str, Any]:
    """Gate hit rate, with each threshold's failures (metric → count, most first)."""
    decided = [p for p in promotions if p.kind is Kind.PROMOTE and p.decision is not None]
    passed = sum(1 for p in decided if p.decision.passed)
    failing = Counter(check.metric for p in decided for check in p.decision.checks
                      if not check.passed)
    other = sum(1 for p in decided if not p.decision.passed and
                all(check.passed for check in p.decision.checks))
    return {
        "hit_rate": ratio(passed, len(decided)),
        "decided": len(decided),
        "passed": passed,
        "failed": len(decided) - passed,
        "failing_thresholds": dict(sorted(failing.items(), key=lambda item: (-item[1], item[0]))),
        "refused_by_other_rules": other,  # e.g. superseded: production is already newer
    }


def deployment_figures(promotions: list[Promotion]) -> dict[str, Any]:
    """Deployment success rate, retries and the time from registration to live."""
    started = [p for p in promotions if began_deploying(p)]
    live = [p for p in started if reached_all_targets(p)]
    in_progress = sum(1 for p in started if p.state.is_open)
    return {
        "success_rate": ratio(len(live), len(started)),
        "started": len(started),
        "reached_all_targets": len(live),
        "in_progress": in_progress,
        "not_reached": len(started) - len(live) - in_progress,
        "retries": sum(p.attempts for p in promotions),
        "time_to_live": durations([_seconds(p.registered_at or p.created_at, p.updated_at)
                                   for p in live]),
    }


def approval_figures(promotions: list[Promotion], awaiting_now: int) -> dict[str, Any]:
    """Approval lead time (awaiting → a reviewer's approval) and the reviews' outcomes."""
    reviewed = [p for p in promotions if p.approved_at is not None]
    approved = [p for p in reviewed if p.state is not State.REJECTED]
    rejected = [p for p in reviewed if p.state is State.REJECTED]
    return {
        "lead_time": durations([_seconds(p.awaiting_since, p.approved_at) for p in approved
                                if p.awaiting_since is not None]),
        "approved": len(approved),
        "rejected_by_reviewer": sum(1 for p in rejected if p.approved_by),
        "closed": sum(1 for p in rejected if not p.approved_by),  # superseded or expired
        "awaiting_now": awaiting_now,
    }


def rates(promotions: list[Promotion], awaiting: list[Promotion]) -> dict[str, Any]:
    """Every rate of one group of promotions (a domain's, or the whole fleet's)."""
    return {"promotions": len(promotions), "gate": gate_figures(promotions),
            "deployment": deployment_figures(promotions),
            "approval": approval_figures(promotions, len(awaiting))}


def by_domain(promotions: Iterable[Promotion]) -> dict[str, list[Promotion]]:
    """Each domain's promotions, in the order given."""
    grouped: dict[str, list[Promotion]] = {}
    for promotion in promotions:
        grouped.setdefault(promotion.domain_id, []).append(promotion)
    return grouped


def fleet_figures(window: dict[str, list[Promotion]], awaiting: dict[str, list[Promotion]],
                  domain_ids: list[str]) -> dict[str, Any]:
    """``fleet``: the figures of every promotion of these domains pooled; ``domains``:
    each domain's own (``window`` and ``awaiting`` as :func:`by_domain` groups them)."""
    return {
        "fleet": rates([p for d in domain_ids for p in window.get(d, [])],
                       [p for d in domain_ids for p in awaiting.get(d, [])]),
        "domains": {d: rates(window.get(d, []), awaiting.get(d, [])) for d in domain_ids},
    }


# --- in words (the CLI and the dashboard) ------------------------------------------

MISSING = "—"


def rate_text(rate: float | None) -> str:
    return MISSING if rate is None else f"{rate:.0%}"


def duration_text(seconds: float | None) -> str:
    """``0.4 s``, ``45 s``, ``12 min``, ``3.5 h``, ``2.1 days``; "—" for None."""
    if seconds is None:
        return MISSING
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def describe(figures: dict[str, Any]) -> list[str]:
    """:func:`rates` in four lines of words, counts next to each rate."""
    gate, deployment, approval = figures["gate"], figures["deployment"], figures["approval"]
    failing = f"; failing: {_counts(gate['failing_thresholds'])}" \
        if gate["failing_thresholds"] else ""
    live, lead = deployment["time_to_live"], approval["lead_time"]
    return [
        f"gate hit rate {rate_text(gate['hit_rate'])} ({gate['passed']} of {gate['decided']} "
        f"decided passed){failing}",
        f"deployment success {rate_text(deployment['success_rate'])} "
        f"({deployment['reached_all_targets']} of {deployment['started']} started reached "
        f"every target, {deployment['in_progress']} in progress); "
        f"{deployment['retries']} {'retry' if deployment['retries'] == 1 else 'retries'}",
        f"registration to live: median {duration_text(live['median_seconds'])}, p95 "
        f"{duration_text(live['p95_seconds'])} ({live['count']} live)",
        f"approval lead time: median {duration_text(lead['median_seconds'])}, p95 "
        f"{duration_text(lead['p95_seconds'])} ({approval['approved']} approved); "
        f"{approval['awaiting_now']} awaiting approval now",
    ]
