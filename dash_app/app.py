"""The dashboard's shell: navigation, auto-refresh, the page container and the API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dash
from dash import Input, Output, State, dcc, html

from dash_app import state
from dash_app.api import register_api
from dash_app.request_errors import register_request_errors

if TYPE_CHECKING:
    from domain_mlflow.metrics.collector import DomainMetricsCollector

PACKAGE = __name__.rpartition(".")[0]
PAGES_FOLDER = Path(__file__).with_name("pages")
REFRESH_INTERVAL_MS = 30_000
NAV = (("Overview", "/"), ("Rankings", "/rankings"), ("Compare", "/compare"),
       ("Fleet", "/fleet"))


def shell_layout() -> html.Div:
    """Top navigation, the refresh timer and the page container."""
    return html.Div([
        dcc.Location(id="url"),
        dcc.Interval(id="refresh-interval", interval=REFRESH_INTERVAL_MS, n_intervals=0),
        html.Header([
            html.Span("Domain models", className="brand"),
            html.Nav([dcc.Link(label, href=href, id=f"nav-{label.lower()}",
                               className="nav-link") for label, href in NAV]),
            html.Button("Refresh", id="refresh-button", n_clicks=0, className="refresh-button",
                        title="Read the tracking store again (it refreshes every 30 s)"),
        ], className="topbar"),
        html.Main(dash.page_container, className="content"),
    ])


def _forget_unclaimed_page_callbacks() -> None:
    # Dash runs the page modules again for every app; callbacks that an earlier app never
    # claimed (it served no request) would otherwise land in this one twice.
    from dash import _callback

    _callback.GLOBAL_CALLBACK_LIST.clear()
    _callback.GLOBAL_CALLBACK_MAP.clear()


def _register_shell_callbacks(app: dash.Dash, collector: DomainMetricsCollector) -> None:
    @app.callback(Output("refresh-interval", "n_intervals"),
                  Input("refresh-button", "n_clicks"),
                  State("refresh-interval", "n_intervals"), prevent_initial_call=True)
    def refresh_now(_clicks: int, ticks: int | None) -> int:
        collector.refresh()
        return (ticks or 0) + 1

    @app.callback([Output(f"nav-{label.lower()}", "className") for label, _ in NAV],
                  Input("url", "pathname"))
    def highlight_nav(pathname: str | None) -> list[str]:
        return ["nav-link active" if pathname == href else "nav-link" for _, href in NAV]


def create_app(collector: DomainMetricsCollector) -> dash.Dash:
    """The Dash app reading ``collector``, with the JSON API on its Flask server."""
    state.set_collector(collector)
    _forget_unclaimed_page_callbacks()
    app = dash.Dash(PACKAGE, use_pages=True, pages_folder=str(PAGES_FOLDER),
                    title="Domain models", update_title=None)
    app.layout = shell_layout
    _register_shell_callbacks(app, collector)
    register_api(app.server, collector)
    register_request_errors(app.server, app.callback_map)
    return app
