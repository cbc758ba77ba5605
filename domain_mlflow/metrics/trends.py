"""Pure summaries of a metric's values over time: figures, trends, rankings."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

from domain_mlflow.gate import as_number

PERFORMANCE_METRICS = ("accuracy", "latency_ms", "training_loss", "validation_loss")
LOWER_IS_BETTER = frozenset({"latency_ms", "latency_p95_ms", "training_loss", "validation_loss",
                             "error_rate"})
# A change smaller than 2% of the baseline is "stable".
STABLE_BAND = 0.02
BASELINE_POINTS = 5


def finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number, else None."""
    number = as_number(value)
    return number if number is not None and math.isfinite(number) else None


def better(metric: str, a: float, b: float) -> bool:
    return a < b if metric in LOWER_IS_BETTER else a > b


def summarize(metric: str, values: list[Any]) -> dict[str, Any]:
    """Newest, mean and best of the finite values (oldest first); how many were not."""
    numbers = [n for n in map(finite, values) if n is not None]
    best = (min if metric in LOWER_IS_BETTER else max)(numbers) if numbers else None
    return {
        "newest": numbers[-1] if numbers else None,
        "mean": statistics.fmean(numbers) if numbers else None,
        "best": best,
        "count": len(numbers),
        "missing": len(values) - len(numbers),
    }


def trend(metric: str, values: list[Any]) -> dict[str, Any]:
    """The newest value against the mean of the few before it.

    ``direction`` is improving, degrading or stable (knowing that lower latency and
    loss are better), or insufficient_data with fewer than two values; ``magnitude``
    is the change relative to that baseline (0.1 = 10%).
    """
    numbers = [n for n in map(finite, values) if n is not None]
    if len(numbers) < 2:
        return {"direction": "insufficient_data", "magnitude": 0.0, "change": None,
                "baseline": None, "newest": numbers[-1] if numbers else None,
                "points": len(numbers)}
    newest = numbers[-1]
    baseline = statistics.fmean(numbers[-1 - BASELINE_POINTS : -1])
    change = newest - baseline
    relative = abs(change) / abs(baseline) if baseline else (0.0 if change == 0 else 1.0)
    if relative < STABLE_BAND:
        direction = "stable"
    else:
        direction = "improving" if better(metric, newest, baseline) else "degrading"
    return {"direction": direction, "magnitude": round(relative, 6), "change": change,
            "baseline": baseline, "newest": newest, "points": len(numbers)}


def rank(metric: str, figures: Iterable[tuple[str, Any]]) -> list[str]:
    """Domain ids best first by ``metric``; domains without a finite value last, by id."""
    scored = [(domain, finite(value)) for domain, value in figures]
    known = [(d, v) for d, v in scored if v is not None]
    known.sort(key=lambda item: (item[1] if metric in LOWER_IS_BETTER else -item[1], item[0]))
    return [d for d, _ in known] + sorted(d for d, v in scored if v is None)


def value_direction(metric: str, direction: str | None) -> str | None:
    """Which way the value itself moved for a trend ``direction``: "up", "down", "flat"
    (stable), or None without a trend (lower is better for latency, losses and errors,
    so an improving latency went down)."""
    if direction == "stable":
        return "flat"
    if direction not in ("improving", "degrading"):
        return None
    rose = (direction == "improving") != (metric in LOWER_IS_BETTER)
    return "up" if rose else "down"
