"""Rankings ("/rankings"): every domain's newest figures in one sortable table."""

from __future__ import annotations

import dash
from dash import Input, Output, callback, html

from dash_app.components import rankings_rows, rankings_table
from dash_app.state import get_collector

dash.register_page(__name__, path="/rankings", name="Rankings",
                   title="Domain models · rankings", order=1)


def layout(**_query: str) -> html.Div:
    return html.Div([
        html.H1("Rankings"),
        html.P("Newest figures per domain; click a column header to sort.", className="muted"),
        rankings_table([]),
    ])


@callback(Output("rankings-table", "data"), Input("refresh-interval", "n_intervals"))
def fill_table(_ticks: int | None) -> list[dict]:
    collector = get_collector()
    return rankings_rows([collector.domain_summary(d) for d in collector.domain_ids()])
