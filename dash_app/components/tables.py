"""Tables: every domain's newest figures, a domain's versions, history and runs, the
fleet's rates and the approval queue."""

from __future__ import annotations

from typing import Any

from dash import dash_table, html
from dash.dash_table.Format import Format, Scheme

from dash_app.components.formatting import (
    MISSING,
    format_metric,
    format_time,
    metric_label,
    parse_time,
    production_label,
)
from domain_mlflow.metrics.deployments import duration_text
from domain_mlflow.metrics.trends import PERFORMANCE_METRICS, finite
from domain_mlflow.naming import utc_now

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
    columns += [{"name": metric_label(name), "id": name, "type": "numeric",
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
        "semver": v.get("semver") or MISSING,
        "stage": v.get("stage") or MISSING,
        "validation": v.get("validation_status") or MISSING,
        "accuracy": format_metric("accuracy", v.get("accuracy")),
        "created": format_time(v.get("created_at")),
        "production": "yes" if v.get("is_production") else "",
    } for v in reversed(versions)]
    columns = [{"name": n, "id": n} for n in
               ("version", "model_version", "semver", "stage", "validation", "accuracy", "created",
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


_RATE = Format(precision=0, scheme=Scheme.percentage).nully(MISSING)
_COUNT = Format(precision=0, scheme=Scheme.fixed).nully(MISSING)
_MINUTES = Format(precision=1, scheme=Scheme.fixed).nully(MISSING)
# (column id, header, format); the rates first, each followed by its counts.
_FLEET_COLUMNS = (
    ("gate_hit_rate", "gate hit rate", _RATE), ("passed", "passed", _COUNT),
    ("decided", "decided", _COUNT), ("failing_thresholds", "failing thresholds", None),
    ("success_rate", "deployment success", _RATE),
    ("reached_all_targets", "reached all targets", _COUNT), ("started", "started", _COUNT),
    ("retries", "retries", _COUNT), ("live_median_min", "to live p50 (min)", _MINUTES),
    ("live_p95_min", "to live p95 (min)", _MINUTES),
    ("approval_median_min", "approval p50 (min)", _MINUTES),
    ("awaiting_now", "awaiting", _COUNT),
)


def _minutes(seconds: Any) -> float | None:
    return None if seconds is None else seconds / 60


def fleet_rows(domains: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per domain of ``fleet_deployments()["domains"]``: its rates and counts."""
    rows = []
    for domain_id, figures in domains.items():
        gate, deployment = figures["gate"], figures["deployment"]
        failing = gate["failing_thresholds"]
        rows.append({
            "domain": f"[{_markdown_text(domain_id)}](/domain/{domain_id})",
            "gate_hit_rate": gate["hit_rate"], "passed": gate["passed"],
            "decided": gate["decided"],
            "failing_thresholds": ", ".join(f"{m} {n}" for m, n in failing.items()) or MISSING,
            "success_rate": deployment["success_rate"],
            "reached_all_targets": deployment["reached_all_targets"],
            "started": deployment["started"], "retries": deployment["retries"],
            "live_median_min": _minutes(deployment["time_to_live"]["median_seconds"]),
            "live_p95_min": _minutes(deployment["time_to_live"]["p95_seconds"]),
            "approval_median_min": _minutes(figures["approval"]["lead_time"]["median_seconds"]),
            "awaiting_now": figures["approval"]["awaiting_now"],
        })
    return rows


def fleet_table(rows: list[dict[str, Any]]) -> dash_table.DataTable:
    """A sortable table of :func:`fleet_rows` (lowest gate hit rate first until re-sorted)."""
    columns = [{"name": "domain", "id": "domain", "presentation": "markdown"}]
    columns += [{"name": header, "id": column_id} if number is None else
                {"name": header, "id": column_id, "type": "numeric", "format": number}
                for column_id, header, number in _FLEET_COLUMNS]
    return dash_table.DataTable(
        id="fleet-table", columns=columns, data=rows, sort_action="native",
        sort_by=[{"column_id": "gate_hit_rate", "direction": "asc"}],
        markdown_options={"link_target": "_self"}, page_action="none", **_TABLE_STYLE,
    )


def _waiting(since: Any) -> str:
    moment = parse_time(since)
    if moment is None:
        return MISSING
    waited = (utc_now().replace(tzinfo=None) - moment).total_seconds()
    return f"{format_time(since)} ({duration_text(max(0.0, waited))})"


def _gate_checks(gate: dict[str, Any] | None) -> Any:
    if not gate:
        return MISSING
    return [html.Div(check["reason"], className="gate-check" +
                     ("" if check["passed"] else " failed")) for check in gate["checks"]]


def approval_queue_table(entries: list[dict[str, Any]]) -> html.Table:
    """Versions awaiting approval, oldest first: what the gate saw and how to approve."""
    body = [[e["domain_id"], f"v{e['registry_version']} · {e.get('model_version') or MISSING}",
             e.get("semver") or MISSING, _waiting(e.get("awaiting_since")),
             _gate_checks(e.get("gate")),
             html.Code(e["approve_command"], className="approve-command"),
             html.A("open in MLflow", href=e["url"], target="_blank", rel="noopener",
                    className="version-link")]
            for e in entries]
    return _table(["domain", "version", "semver", "waiting since", "gate", "approve with",
                   "MLflow"], body, "approval-queue")
