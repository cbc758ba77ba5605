"""Fleet ("/fleet"): gate hit rate and deployment success per domain, the time from
registration to live, and the versions awaiting approval (read-only)."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, callback, dcc, html

from dash_app.components import (
    GRAPH_CONFIG,
    approval_queue_table,
    fleet_rows,
    fleet_table,
    page_heading,
    store_notice,
    time_to_live_figure,
)
from dash_app.state import get_collector
from domain_mlflow.metrics.deployments import describe

dash.register_page(__name__, path="/fleet", name="Fleet", title="Domain models · fleet",
                   order=4)


def layout(**_query: str) -> html.Div:
    return html.Div([
        *page_heading("Fleet", "Loading the fleet's promotions…", "fleet"),
        html.Div(id="fleet-summary", className="fleet-summary"),
        html.H2("Gate and deployments per domain"),
        html.P("Click a column header to sort; docs/dashboard.md defines each rate.",
               className="muted"),
        fleet_table([]),
        html.H2("Time from registration to live"),
        dcc.Graph(id="time-to-live-chart", config=GRAPH_CONFIG, responsive=True,
                  style={"height": "360px"}),
        html.H2("Approval queue"),
        html.Div(id="approval-queue"),
    ])


@callback(Output("fleet-status", "children"), Output("fleet-store", "children"),
          Output("fleet-summary", "children"), Output("fleet-table", "data"),
          Output("time-to-live-chart", "figure"), Output("approval-queue", "children"),
          Input("refresh-interval", "n_intervals"))
def render_fleet(_ticks: int | None) -> tuple[Any, ...]:
    collector = get_collector()
    deployments = collector.fleet_deployments()
    days, fleet = deployments["time_window_days"], deployments["fleet"]
    status = (f"{fleet['promotions']} promotions of {len(deployments['domains'])} domains "
              f"in the last {days} days; the fleet's rates pool them all")
    summary = html.Ul([html.Li(line) for line in describe(fleet)], id="fleet-rates")
    queue = deployments["awaiting_approval"]
    return (status, store_notice(collector.store_status()), summary,
            fleet_rows(deployments["domains"]),
            time_to_live_figure(deployments["domains"], days),
            approval_queue_table(queue) if queue else
            html.P("No version awaits approval.", className="muted empty-queue"))
