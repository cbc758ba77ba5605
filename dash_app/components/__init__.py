"""Pure functions from the collector's data to Dash components and Plotly figures."""

from dash_app.components.charts import (
    GRAPH_CONFIG,
    X_AXES,
    comparison_figure,
    domain_colors,
    loss_curves_figure,
    metric_chart,
    time_to_live_figure,
)
from dash_app.components.domain_card import domain_card, in_flight_line
from dash_app.components.formatting import format_metric, format_time
from dash_app.components.rollout import rollout_line, rollout_section
from dash_app.components.store_notice import page_heading, store_notice
from dash_app.components.tables import (
    approval_queue_table,
    fleet_rows,
    fleet_table,
    history_table,
    rankings_rows,
    rankings_table,
    runs_table,
    versions_table,
)
from dash_app.components.trend import trend_arrow, trend_legend

__all__ = [
    "GRAPH_CONFIG",
    "X_AXES",
    "approval_queue_table",
    "comparison_figure",
    "domain_colors",
    "domain_card",
    "fleet_rows",
    "fleet_table",
    "format_metric",
    "format_time",
    "history_table",
    "in_flight_line",
    "loss_curves_figure",
    "metric_chart",
    "page_heading",
    "rankings_rows",
    "rankings_table",
    "rollout_line",
    "rollout_section",
    "runs_table",
    "store_notice",
    "time_to_live_figure",
    "trend_arrow",
    "trend_legend",
    "versions_table",
]
