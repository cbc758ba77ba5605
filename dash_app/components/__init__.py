"""Pure functions from the collector's data to Dash components and Plotly figures."""

from dash_app.components.charts import comparison_figure, metric_chart
from dash_app.components.domain_card import domain_card, in_flight_line
from dash_app.components.formatting import format_metric, format_time
from dash_app.components.store_notice import store_notice
from dash_app.components.tables import (
    history_table,
    rankings_rows,
    rankings_table,
    runs_table,
    versions_table,
)
from dash_app.components.trend import trend_arrow

__all__ = [
    "comparison_figure",
    "domain_card",
    "format_metric",
    "format_time",
    "history_table",
    "in_flight_line",
    "metric_chart",
    "rankings_rows",
    "rankings_table",
    "runs_table",
    "store_notice",
    "trend_arrow",
    "versions_table",
]
