"""A domain's card on the overview: production version, a promotion in flight, a canary
or A/B test, newest figures, trends."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from dash_app.components.formatting import (
    format_metric,
    in_flight_label,
    last_action_label,
    metric_label,
    production_label,
)
from dash_app.components.rollout import rollout_line
from dash_app.components.trend import trend_arrow
from domain_mlflow.metrics.trends import PERFORMANCE_METRICS


def metric_line(metric: str, value: Any, trend: dict[str, Any] | None) -> html.Div:
    """``accuracy 0.912 ↑``: name in words, formatted value and trend arrow."""
    return html.Div([
        html.Span(metric_label(metric), className="metric-name"), " ",
        html.Span(format_metric(metric, value), className="metric-value"), " ",
        trend_arrow(metric, trend),
    ], className="metric-line", **{"data-metric": metric})


def in_flight_line(in_flight: dict[str, Any] | None) -> html.Div | None:
    """The open promotion beside what serves (class ``has-error`` when its last attempt
    failed); None when none is open."""
    if not in_flight:
        return None
    return html.Div(["in flight ", html.Strong(in_flight_label(in_flight))],
                    title=in_flight.get("error") or None,
                    className="in-flight" + (" has-error" if in_flight.get("error") else ""))


REASON_CHARACTERS = 140


def state_line(state: str | None, reason: str | None) -> html.Div | None:
    """The domain's state in words and colour (class ``state-<state>``), and why,
    shortened (the whole reason is the tooltip)."""
    if not state:
        return None
    reason = reason or ""
    short = reason if len(reason) <= REASON_CHARACTERS else \
        reason[:REASON_CHARACTERS - 1].rstrip() + "…"
    return html.Div([html.Strong(state, className="state-word"), " ",
                     html.Span(short, className="state-reason")],
                    title=reason or None,
                    className=f"card-state state-{state.replace(' ', '-')}")


def domain_card(summary: dict[str, Any]) -> html.Div:
    """The card of one ``domain_summary``; ``data-domain`` names the domain."""
    domain_id = summary["domain_id"]
    newest = summary.get("newest") or {}
    trends = summary.get("trend_details") or {}
    production = summary.get("production")
    return html.Div([
        html.Div([
            html.H3(domain_id, className="card-title"),
            dcc.Link("details →", href=f"/domain/{domain_id}", className="card-link"),
        ], className="card-header"),
        state_line(summary.get("state"), summary.get("state_reason")),
        # The serving version in full; a domain with nothing in production says so above.
        html.Div(["production ", html.Strong(production_label(production))],
                 className="card-production") if production else None,
        in_flight_line(summary.get("in_flight")),
        rollout_line(summary.get("rollout")),
        html.Div([metric_line(m, newest.get(m), trends.get(m)) for m in PERFORMANCE_METRICS],
                 className="card-metrics"),
        html.Div(f"runs {summary.get('runs', 0)} · requests "
                 f"{format_metric('requests', summary.get('requests'))} · error rate "
                 f"{format_metric('error_rate', summary.get('error_rate'))}",
                 className="card-usage muted"),
        html.Div(f"last promotion: {last_action_label(production)}",
                 className="card-last-action muted"),
    ], className="domain-card" + (" has-rollout" if summary.get("rollout") else ""),
        **{"data-domain": domain_id})
