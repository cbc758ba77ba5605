"""A domain ("/domain/<domain_id>"): its canary or A/B test, metric chart, its newest
training runs' loss curves, versions, promotions and runs."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html

from dash_app.components import (
    GRAPH_CONFIG,
    X_AXES,
    history_table,
    in_flight_line,
    loss_curves_figure,
    metric_chart,
    rollout_section,
    runs_table,
    store_notice,
    versions_table,
)
from dash_app.components.formatting import last_action_label, production_label
from dash_app.state import get_collector, is_known_domain
from domain_mlflow.exceptions import InvalidDomainIdError
from domain_mlflow.metrics.curves import CURVE_RUNS

_HIDDEN = {"display": "none"}


def _title(domain_id: str | None = None, **_query: str) -> str:
    return f"{domain_id or 'domain'} · domain models"


dash.register_page(__name__, path_template="/domain/<domain_id>", name="Domain", title=_title,
                   order=3)


_X_AXIS_CHOICE = [{"label": f" {label}", "value": value} for value, label in X_AXES.items()]


def layout(domain_id: str | None = None, **_query: str) -> html.Div:
    return html.Div([
        dcc.Store(id="domain-page-id", data=domain_id),
        html.H1(domain_id or "Domain", id="domain-title"),
        html.Div("Loading…", id="domain-status", className="muted"),
        html.Div(id="domain-rollout"),
        html.Div([
            html.Div([
                html.Div([
                    html.Span("x axis:", className="muted"),
                    dcc.RadioItems(id="metric-x-axis", options=_X_AXIS_CHOICE, value="time",
                                   inline=True, className="axis-choice"),
                ], className="chart-controls"),
                dcc.Graph(id="metric-chart", config=GRAPH_CONFIG, responsive=True,
                          style={"height": "580px"}),
            ], id="domain-chart-wrap", style=_HIDDEN),
            html.Div([
                html.H2("Loss curves", id="loss-chart-title"),
                html.P(id="loss-chart-note", className="muted"),
                dcc.Graph(id="loss-chart", config=GRAPH_CONFIG, responsive=True,
                          style={"height": "360px"}),
            ], id="loss-chart-wrap", style=_HIDDEN),
        ], className="domain-charts"),
        html.Div(id="domain-tables"),
    ])


def _missing(message: str) -> tuple[Any, ...]:
    return (html.Div(message, className="empty unknown-domain"), None, {}, _HIDDEN, {},
            _HIDDEN, "", "", [])


def _loss_heading(runs: int, curves: list[dict[str, Any]]) -> tuple[str, str, int]:
    """The loss chart's title, its note and its place among the charts: first when the
    domain has one run, whose curves say more than its lone point."""
    if runs == 1 and curves:
        return ("Loss curves of its one run", "The domain has one run so far: every step "
                "it logged is here, its final figures in the panels below.", 0)
    return ("Loss curves", f"Every logged step of the newest {CURVE_RUNS} training runs in "
            "the time window.", 2)


@callback(Output("domain-status", "children"), Output("domain-rollout", "children"),
          Output("metric-chart", "figure"),
          Output("domain-chart-wrap", "style"), Output("loss-chart", "figure"),
          Output("loss-chart-wrap", "style"), Output("loss-chart-title", "children"),
          Output("loss-chart-note", "children"), Output("domain-tables", "children"),
          Input("refresh-interval", "n_intervals"), Input("metric-x-axis", "value"),
          State("domain-page-id", "data"))
def render_domain(_ticks: int | None, x_axis: str | None, domain_id: str | None
                  ) -> tuple[Any, ...]:
    collector = get_collector()
    try:
        if not domain_id or not is_known_domain(collector, domain_id):
            return _missing(f"unknown domain {domain_id!r}: no runs, registered model or "
                            "config. Pick one on the overview.")
    except InvalidDomainIdError as error:
        return _missing(f"unknown domain: {error}")
    x_axis = x_axis if x_axis in X_AXES else "time"
    metrics = collector.collect_domain_metrics(domain_id)
    history = collector.domain_history(domain_id)
    figure = metric_chart(metrics["runs"], collector.thresholds(domain_id), history,
                          uirevision=f"{domain_id}:{x_axis}", x_axis=x_axis,
                          versions=metrics["versions"])
    production, runs = metrics["production"], len(metrics["runs"])
    status = html.Div([
        html.Div([
            html.Span(["production ", html.Strong(production_label(production))]),
            in_flight_line(metrics["in_flight"]),
            html.Span(f"last promotion: {last_action_label(production)}"),
            html.Span(f"{runs} run{'s' * (runs != 1)} in the last "
                      f"{metrics['time_window_days']} days"),
            html.A("MLflow UI", href=collector.ui_url(), target="_blank", rel="noopener"),
        ], className="domain-facts"),
        store_notice(metrics),
    ])
    tables = [
        html.H2("Versions"),
        versions_table(metrics["versions"]) if metrics["versions"] else
        html.P("No registered versions.", className="muted"),
        html.H2("Promotions and rollbacks"),
        history_table(history) if history else html.P("No promotions yet.", className="muted"),
        html.H2("Runs"),
        runs_table(metrics["runs"]) if metrics["runs"] else
        html.P("No runs in the time window.", className="muted"),
    ]
    curves = collector.loss_curves(domain_id)
    title, note, place = _loss_heading(runs, curves)
    return (status, rollout_section(metrics["rollout"]), figure, {"order": 1},
            loss_curves_figure(curves, uirevision=domain_id),
            {"order": place}, title, note, tables)
