"""How figures and times read on the page; a missing or non-finite value is "—"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain_mlflow.metrics.trends import finite

MISSING = "—"
_FORMATS = {
    "accuracy": "{:.3f}",
    "latency_ms": "{:.1f} ms",
    "training_loss": "{:.3f}",
    "validation_loss": "{:.3f}",
    "requests": "{:,.0f}",
    "error_rate": "{:.1%}",
}


# What a metric is called on the page: in words, the unit apart.
_NAMES = {
    "accuracy": "accuracy",
    "latency_ms": "latency",
    "training_loss": "training loss",
    "validation_loss": "validation loss",
    "requests": "requests",
    "error_rate": "error rate",
}
_UNITS = {"latency_ms": "ms"}


def metric_name(metric: str) -> str:
    """The metric in words, without its unit: ``latency_ms`` is "latency"."""
    return _NAMES.get(metric, metric.replace("_", " "))


def metric_label(metric: str) -> str:
    """The metric in words with its unit: ``latency_ms`` is "latency (ms)"."""
    unit = _UNITS.get(metric)
    return f"{metric_name(metric)} ({unit})" if unit else metric_name(metric)


def format_metric(metric: str, value: Any) -> str:
    """``value`` as the metric is usually written (accuracy ``0.912``), or "—"."""
    number = finite(value)
    if number is None:
        return MISSING
    return _FORMATS.get(metric, "{:.3g}").format(number)


def parse_time(value: Any) -> datetime | None:
    """An ISO timestamp as a naive UTC datetime (what Plotly draws correctly), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def format_time(value: Any) -> str:
    """An ISO timestamp as ``2026-01-31 12:05 UTC``, or "—"."""
    moment = parse_time(value)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else MISSING


def production_label(production: dict[str, Any] | None) -> str:
    """The model version serving the domain, its semver beside it when it has one
    (``sql-v20260131_120500 (1.2.0)``), or "not in production"."""
    if not production:
        return "not in production"
    label = production.get("model_version") or f"registry v{production.get('registry_version')}"
    return f"{label} ({production['semver']})" if production.get("semver") else str(label)


def in_flight_label(in_flight: dict[str, Any] | None, error_chars: int = 160) -> str:
    """The open promotion in one line: ``moving to v7 — at redis_synced — error: …``,
    or "" when none is open."""
    if not in_flight:
        return ""
    verb = "rolling back to" if in_flight.get("kind") == "rollback" else "moving to"
    parts = [f"{verb} v{in_flight.get('registry_version')}", f"at {in_flight.get('state')}"]
    if error := in_flight.get("error"):
        attempts = in_flight.get("attempts") or 0
        short = error if len(error) <= error_chars else error[: error_chars - 1] + "…"
        parts.append(f"error: {short} ({attempts} failed attempt{'s' * (attempts != 1)})")
    return " — ".join(parts)


def last_action_label(production: dict[str, Any] | None) -> str:
    """The newest promotion or rollback, in one line, or "—"."""
    action = (production or {}).get("last_action")
    if not action:
        return MISSING
    return (f"{action.get('action')} v{action.get('registry_version')} · "
            f"{format_time(action.get('created_at'))} · {action.get('actor') or MISSING}")
