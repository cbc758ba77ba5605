"""The deployment gate: a pure decision from measured metrics and thresholds.

Nothing here does I/O or imports the rest of the package.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

# metric name -> "min" (value must be at least the threshold) or "max" (at most)
GATED_METRICS: dict[str, str] = {
    "accuracy": "min",
    "latency_ms": "max",
    "training_loss": "max",
    "validation_loss": "max",
}


@dataclass(frozen=True)
class Thresholds:
    """The bars a model version must clear; defaults are the seed's."""

    accuracy: float = 0.85
    latency_ms: float = 500.0
    training_loss: float = 0.3
    validation_loss: float = 0.35

    def with_overrides(self, overrides: Mapping[str, float]) -> Thresholds:
        unknown = set(overrides) - {f.name for f in fields(self)}
        if unknown:
            raise KeyError(f"unknown threshold(s): {', '.join(sorted(unknown))}")
        return replace(self, **dict(overrides))

    def as_dict(self) -> dict[str, float]:
        return {metric: getattr(self, metric) for metric in GATED_METRICS}


@dataclass(frozen=True)
class GateCheck:
    metric: str
    value: float | None
    threshold: float
    passed: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "threshold": self.threshold,
                "passed": self.passed, "reason": self.reason}


@dataclass(frozen=True)
class GateDecision:
    """Whether a version may be deployed, with one reason per failed check."""

    passed: bool
    reasons: tuple[str, ...]
    checks: tuple[GateCheck, ...]
    thresholds: Thresholds
    champion_checked: bool = field(default=False)

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    def summary(self) -> str:
        return "all thresholds met" if self.passed else "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "status": self.status,
            "reasons": list(self.reasons),
            "checks": [check.as_dict() for check in self.checks],
            "thresholds": self.thresholds.as_dict(),
            "champion_checked": self.champion_checked,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateDecision:
        """The decision :meth:`to_dict` wrote (as the config store keeps it)."""
        return cls(
            passed=bool(data["passed"]),
            reasons=tuple(data.get("reasons", ())),
            checks=tuple(GateCheck(**check) for check in data.get("checks", ())),
            thresholds=Thresholds(**data.get("thresholds", {})),
            champion_checked=bool(data.get("champion_checked", False)),
        )

    def refused(self, reason: str) -> GateDecision:
        """This decision with one more reason to refuse (a rule outside the thresholds)."""
        return replace(self, passed=False, reasons=(*self.reasons, reason))

    def combined(self, other: GateDecision, label: str) -> GateDecision:
        """Both decisions must pass; ``other``'s reasons are prefixed with ``label``."""
        extra = tuple(f"{label}: {reason}" for reason in other.reasons)
        return replace(self, passed=self.passed and other.passed,
                       reasons=(*self.reasons, *extra), checks=(*self.checks, *other.checks))


def as_number(value: Any) -> float | None:
    """``value`` as a float (NaN and inf included), or None when it is not a number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def _check(metric: str, raw: Any, threshold: float) -> GateCheck:
    value = as_number(raw)
    if value is None:
        return GateCheck(metric, None, threshold, False, f"{metric} is missing")
    if not math.isfinite(value):
        return GateCheck(metric, value, threshold, False, f"{metric} is {value}, not a number")
    if GATED_METRICS[metric] == "min":
        passed = value >= threshold
        relation = ">=" if passed else "<"
    else:
        passed = value <= threshold
        relation = "<=" if passed else ">"
    limit = "minimum" if GATED_METRICS[metric] == "min" else "maximum"
    return GateCheck(
        metric, value, threshold, passed, f"{metric} {value:.4g} {relation} {limit} {threshold:g}"
    )


def _champion_check(metrics: Mapping[str, Any], champion: Mapping[str, Any]) -> GateCheck | None:
    """Challenger must not have lower accuracy than the production version."""
    incumbent = as_number(champion.get("accuracy"))
    if incumbent is None or not math.isfinite(incumbent):
        return None
    value = as_number(metrics.get("accuracy"))
    passed = value is not None and math.isfinite(value) and value >= incumbent
    shown = "missing" if value is None else f"{value:.4g}"
    relation = ">=" if passed else "<"
    return GateCheck(
        "accuracy_vs_production", value, incumbent, passed,
        f"accuracy {shown} {relation} production's {incumbent:.4g}",
    )


def decide(
    metrics: Mapping[str, Any],
    thresholds: Thresholds,
    champion: Mapping[str, Any] | None = None,
    *,
    only_given: bool = False,
) -> GateDecision:
    """Check every gated metric; a missing or NaN metric fails its check.

    With ``champion`` (the production version's metrics), the version must also
    not be less accurate than production. ``only_given``: check only the gated
    metrics that ``metrics`` names (a caller's extra restrictions); a named one that
    is None or NaN still fails.
    """
    limits = thresholds.as_dict()
    names = [m for m in GATED_METRICS if m in metrics] if only_given else list(GATED_METRICS)
    checks = [_check(metric, metrics.get(metric), limits[metric]) for metric in names]
    champion_check = _champion_check(metrics, champion) if champion else None
    if champion_check:
        checks.append(champion_check)
    return GateDecision(
        passed=all(check.passed for check in checks),
        reasons=tuple(check.reason for check in checks if not check.passed),
        checks=tuple(checks),
        thresholds=thresholds,
        champion_checked=champion_check is not None,
    )
