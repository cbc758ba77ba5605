"""Compare ("/compare"): the chosen domains side by side, one bar chart per metric, in
one order and one colour per domain throughout."""

from __future__ import annotations

import dash
from dash import Input, Output, State, callback, dcc, html

from dash_app.components import GRAPH_CONFIG, comparison_figure, domain_colors
from dash_app.state import get_collector
from domain_mlflow.metrics.trends import PERFORMANCE_METRICS

dash.register_page(__name__, path="/compare", name="Compare", title="Domain models · compare",
                   order=2)

COMPARED_METRICS = (*PERFORMANCE_METRICS, "requests", "error_rate")
DEFAULT_CHOICE = 5


def layout(**_query: str) -> html.Div:
    return html.Div([
        html.H1("Compare domains"),
        dcc.Dropdown(id="compare-domains", multi=True, options=[],
                     placeholder="Choose domains to compare"),
        html.Div(id="compare-charts", className="chart-grid"),
    ])


@callback(Output("compare-domains", "options"), Output("compare-domains", "value"),
          Input("refresh-interval", "n_intervals"), State("compare-domains", "value"))
def list_domains(_ticks: int | None, chosen: list[str] | None
                 ) -> tuple[list[str], list[str]]:
    ids = get_collector().domain_ids()
    if chosen is None:
        return ids, ids[:DEFAULT_CHOICE]
    return ids, [domain for domain in chosen if domain in ids]


@callback(Output("compare-charts", "children"), Input("compare-domains", "value"))
def draw_charts(chosen: list[str] | None) -> list:
    collector = get_collector()
    known = set(collector.domain_ids())
    domains = [domain for domain in chosen or [] if domain in known]
    if not domains:
        return [html.Div("Choose one or more domains above.", className="empty")]
    comparison = collector.get_domain_comparison(domains)
    colors = domain_colors(sorted(known))  # a domain keeps its colour whatever is chosen
    return [dcc.Graph(id=f"compare-{metric.replace('_', '-')}",
                      figure=comparison_figure(metric, comparison, colors),
                      config=GRAPH_CONFIG, responsive=True,
                      style={"height": "320px"}, className="chart-cell")
            for metric in COMPARED_METRICS]
