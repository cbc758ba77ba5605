"""The arrow beside a metric: which way the value moved (↑ up, ↓ down, → stable, · too
few runs), coloured by whether that is better (green) or worse (red)."""

from __future__ import annotations

from typing import Any

from dash import html

from dash_app.components.formatting import metric_name
from domain_mlflow.metrics.trends import STABLE_BAND, value_direction

ARROWS = {"up": "↑", "down": "↓", "flat": "→", None: "·"}
VERDICTS = {"improving": "better", "degrading": "worse"}
NO_TREND = "not enough runs for a trend (it needs two)"


def trend_tooltip(metric: str, trend: dict[str, Any]) -> str:
    """``latency went down 12% — better``, in words."""
    direction = trend.get("direction")
    moved = value_direction(metric, direction)
    name = metric_name(metric)
    if moved is None:
        return f"{name}: {NO_TREND}"
    if moved == "flat":
        return f"{name} stable: within {STABLE_BAND:.0%} of the runs before"
    change = f"{trend.get('magnitude') or 0:.0%}"
    return f"{name} went {moved} {change} against the runs before — {VERDICTS[direction]}"


def trend_arrow(metric: str, trend: dict[str, Any] | None) -> html.Span:
    """The arrow of one ``trend()`` result; class ``trend-<direction>`` and, when the
    value moved, ``trend-better`` or ``trend-worse``; the tooltip says it in words."""
    trend = trend or {}
    direction = trend.get("direction")
    classes = ["trend", f"trend-{direction or 'insufficient_data'}"]
    if direction in VERDICTS:
        classes.append(f"trend-{VERDICTS[direction]}")
    return html.Span(ARROWS[value_direction(metric, direction)], className=" ".join(classes),
                     title=trend_tooltip(metric, trend))


def trend_legend() -> html.Div:
    """What the arrows and their colours mean, in one line."""
    def arrow(text: str, kind: str) -> html.Span:
        return html.Span(text, className=f"trend trend-{kind}")

    return html.Div([
        "Trends, newest run against the ones before: ", arrow("↑", "stable"), " went up, ",
        arrow("↓", "stable"), " went down, ", arrow("→", "stable"),
        f" stable (within {STABLE_BAND:.0%}); ", arrow("■", "better"), " better, ",
        arrow("■", "worse"), " worse (lower is better for latency and losses); ",
        arrow("·", "insufficient_data"), f" {NO_TREND}.",
    ], className="trend-legend muted")
