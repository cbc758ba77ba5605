"""Tables: every domain's newest figures, a domain's versions, history and runs."""

from __future__ import annotations

from typing import Any

from dash import dash_table, html
from dash.dash_table.Format import Format, Scheme

from dash_app.components.formatting import (
    MISSING,
    format_metric,
    format_time,
    production_label,
)
from domain_mlflow.metrics.trends import PERFORMANCE_METRICS, finite

_NUMBER_FORMATS = {
    "accuracy": Format(precision=3, scheme=Scheme.fixed),
    "latency_ms": Format(precision=1, scheme=Scheme.fixed),
    "training_loss": Format(precision=3, scheme=Scheme.fixed),
    "validation_loss": Format(precision=3, scheme=Scheme.fixed),
    "runs": Format(precision=0, scheme=Scheme.fixed),
    "requests": Format(precision=0, scheme=Scheme.fixed),
    "error_rate": Format(precision=1, scheme=Scheme.percentage),
}
_FONT = '-apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
_TABLE_STYLE = {
    "style_table": {"overflowX": "auto"},
    "style_cell": {"fontFamily": _FONT, "fontSize": "14px", "padding": "6px 10px",
                   "textAlign": "left", "border": "1px solid #e3e6ea"},
    "style_header": {"backgroundColor": "#f3f5f7", "fontWeight": "600"},
    # Markdown cells wrap their text in <p>; without this each row grows a blank line.
    "css": [{"selector": ".dash-cell p", "rule": "margin: 0;"}],
}


def _markdown_text(text: str) -> str:
    return "".join(f"\\{c}" if c in "\\`*_[]()#+-.!" else c for c in text)


def rankings_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ``domain_summary``: the domain (as a link) and its newest figures."""
    rows = []
    for summary in summaries:
        newest = summary.get("newest") or {}
        domain_id = summary["domain_id"]
        rows.append({
            "domain": f"[{_markdown_text(domain_id)}](/domain/{domain_id})",
            "production": production_label(summary.get("production")),
            "runs": summary.get("runs", 0),
            **{m: finite(newest.get(m)) for m in PERFORMANCE_METRICS},
            "requests": summary.get("requests"),
            "error_rate": finite(summary.get("error_rate")),
        })
    return rows


def rankings_table(rows: list[dict[str, Any]], table_id: str = "rankings-table"
                   ) -> dash_table.DataTable:
    """A sortable table of :func:`rankings_rows` (best accuracy first until re-sorted)."""
    columns = [{"name": "domain", "id": "domain", "presentation": "markdown"},
               {"name": "production", "id": "production"}]
    columns += [{"name": name, "id": name, "type": "numeric",
                 "format": _NUMBER_FORMATS[name].nully(MISSING)}
                for name in ("runs", *PERFORMANCE_METRICS, "requests", "error_rate")]
    return dash_table.DataTable(
        id=table_id, columns=columns, data=rows, sort_action="native",
        sort_by=[{"column_id": "accuracy", "direction": "desc"}],
        markdown_options={"link_target": "_self"}, page_action="none", **_TABLE_STYLE,
    )


def versions_table(versions: list[dict[str, Any]]) -> dash_table.DataTable:
    """A domain's registry versions, newest first, the production one marked."""
    rows = [{
        "version": v.get("version"),
        "model_version": v.get("model_version") or MISSING,
        "stage": v.get("stage") or MISSING,
        "validation": v.get("validation_status") or MISSING,
        "accuracy": format_metric("accuracy", v.get("accuracy")),
        "created": format_time(v.get("created_at")),
        "production": "yes" if v.get("is_production") else "",
    } for v in reversed(versions)]
    columns = [{"name": n, "id": n} for n in
               ("version", "model_version", "stage", "validation", "accuracy", "created",
                "production")]
    return dash_table.DataTable(
        id="versions-table", columns=columns, data=rows, page_action="none",
        style_data_conditional=[{"if": {"filter_query": '{production} = "yes"'},
                                 "backgroundColor": "#eaf6ee", "fontWeight": "600"}],
        **_TABLE_STYLE,
    )


def _table(header: list[str], body: list[list[Any]], class_name: str) -> html.Table:
    return html.Table([
        html.Thead(html.Tr([html.Th(h) for h in header])),
        html.Tbody([html.Tr([html.Td(cell) for cell in row]) for row in body]),
    ], className=f"plain-table {class_name}")


def history_table(history: list[dict[str, Any]]) -> html.Table:
    """Promotions, rollbacks and rejections, newest first."""
    body = [[format_time(h.get("created_at")), h.get("action") or MISSING,
             f"v{h.get('registry_version')}", h.get("model_version") or MISSING,
             h.get("actor") or MISSING, h.get("reason") or MISSING] for h in history]
    return _table(["when", "action", "version", "model_version", "actor", "reason"], body,
                  "history-table")


def runs_table(runs: list[dict[str, Any]], limit: int = 50) -> html.Table:
    """The newest ``limit`` runs with their figures and a link to each in the MLflow UI."""
    body = [[format_time(run.get("start_time")),
             *[format_metric(m, run.get(m)) for m in PERFORMANCE_METRICS],
             run.get("registry_version") or MISSING,
             html.A("open in MLflow", href=run["url"], target="_blank", rel="noopener",
                    className="run-link") if run.get("url") else MISSING]
            for run in list(reversed(runs))[:limit]]
    return _table(["started", *PERFORMANCE_METRICS, "version", "MLflow"], body, "runs-table")
