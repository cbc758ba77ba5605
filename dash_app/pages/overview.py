"""Overview ("/"): a card per domain and the config store's state, re-rendered on every
refresh tick."""

from __future__ import annotations

import dash
from dash import Input, Output, callback, html

from dash_app.components import domain_card, page_heading, store_notice, trend_legend
from dash_app.components.formatting import format_time
from dash_app.state import get_collector
from domain_mlflow.naming import utc_now

dash.register_page(__name__, path="/", name="Overview", title="Domain models · overview",
                   order=0)


def layout(**_query: str) -> html.Div:
    return html.Div([
        *page_heading("Domains", "Loading domains…", "overview"),
        trend_legend(),
        html.Div(id="overview-cards", className="card-grid"),
    ])


@callback(Output("overview-cards", "children"), Output("overview-status", "children"),
          Output("overview-store", "children"), Input("refresh-interval", "n_intervals"))
def render_cards(_ticks: int | None) -> tuple[list[html.Div], str, html.Div | None]:
    collector = get_collector()
    notice = store_notice(collector.store_status())
    ids = collector.domain_ids()
    summaries = [collector.domain_summary(domain_id) for domain_id in ids]
    status = (f"{len(ids)} domain{'s' * (len(ids) != 1)} with activity in the last "
              f"{collector.settings.metrics_time_window_days} days · updated "
              f"{format_time(utc_now().isoformat())}")
    if not summaries:
        return [html.Div("No domains yet: log an MLflow run tagged domain_id to see it here.",
                         className="empty")], status, notice
    return [domain_card(summary) for summary in summaries], status, notice
