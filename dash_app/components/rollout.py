"""A canary or A/B test: its mark on a card, and its section on the domain's page (split,
step, per-arm table, per-arm figures over time, decisions with their evidence)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import plotly.graph_objects as go
from dash import dcc, html
from plotly.subplots import make_subplots

from dash_app.components.axes import TIME_TICK_FORMATS
from dash_app.components.charts import GRAPH_CONFIG
from dash_app.components.formatting import MISSING, format_time, parse_time
from domain_mlflow.metrics.rollout_figures import SERIES_ROW_LIMIT
from domain_mlflow.metrics.trends import finite

ARM_COLORS = {"production": "#1f77b4", "candidate": "#ff7f0e"}
# (figure, panel title, y tick format) of each panel, left to right, top to bottom.
PANELS = (("requests", "requests per {bucket} bucket", ",d"), ("error_rate", "error rate", ".0%"),
          ("latency_p95_ms", "p95 latency (ms)", ",.0f"),
          ("quality", "quality (mean score)", ".2f"))
_STEP_COLOR = "#6b7685"


def rollout_label(mark: dict[str, Any]) -> str:
    """``canary 10% → version 2 (step 1 of 3)``, ``A/B test 50% → version 2 on quality``;
    a paused or ended one says so."""
    target = f"version {mark['registry_version']}"
    where = (f"on {mark['metric']}" if mark["kind"] == "ab" else
             f"(step {mark['step']} of {mark['steps']})")
    if mark["state"] in ("running", "paused"):
        paused = " · paused" if mark["state"] == "paused" else ""
        return f"{mark['label']} {mark['percent']:g}% → {target} {where}{paused}"
    return f"{mark['label']} of {target} {mark['state']} at {mark['percent']:g}% {where}"


def rollout_line(mark: dict[str, Any] | None) -> html.Div | None:
    """The rollout's mark on a card or the domain's facts (class ``card-rollout``)."""
    if not mark:
        return None
    return html.Div(html.Strong(rollout_label(mark)),
                    title=f"{mark['label']} of version {mark['registry_version']} "
                          f"({mark['model_version']}) against version "
                          f"{mark['baseline_registry_version']} in production",
                    className=f"card-rollout rollout-{mark['state']}")


def _number(value: Any, pattern: str) -> str:
    number = finite(value)
    return MISSING if number is None else pattern.format(number)


def _arm_cells(arm: str, figures: dict[str, Any], rollout: dict[str, Any]) -> list[Any]:
    version = rollout["model_version"] if arm == "candidate" else \
        rollout["baseline_model_version"]
    share = rollout["percent"] if arm == "candidate" else 100 - rollout["percent"]
    cells = (("arm", arm), ("version", version), ("share", f"{share:g}%"),
             ("requests", f"{figures['requests']:,d}"), ("errors", f"{figures['errors']:,d}"),
             ("error_rate", _number(figures["error_rate"], "{:.1%}")),
             ("latency_p95_ms", _number(figures["latency_p95_ms"], "{:,.1f}")),
             ("quality", _number(figures["quality"], "{:.3f}")),
             ("rated", f"{figures['rated']:,d}"))
    return [html.Td(text, **{"data-column": column}) for column, text in cells]


def arms_table(rollout: dict[str, Any]) -> html.Table:
    """Each arm on the current step: version, share, requests, errors, error rate, p95
    latency, quality and how many requests were rated."""
    header = ["arm", "version", "share", "requests", "errors", "error rate", "p95 (ms)",
              "quality", "rated"]
    return html.Table([
        html.Thead(html.Tr([html.Th(h) for h in header])),
        html.Tbody([html.Tr(_arm_cells(arm, figures, rollout), **{"data-arm": arm})
                    for arm, figures in rollout["arms"].items()]),
    ], id="rollout-arms", className="plain-table rollout-arms")


def _checks(checks: list[dict[str, Any]]) -> html.Table | None:
    """Each canary check: the arms' figures, its statistic against its threshold."""
    if not checks:
        return None
    rows = [html.Tr([html.Td(c["metric"]), html.Td(c.get("test") or MISSING),
                     html.Td(_number(c.get("production"), "{:.4g}")),
                     html.Td(_number(c.get("canary"), "{:.4g}")),
                     html.Td(_number(c.get("statistic"), "{:.4g}")),
                     html.Td(_number(c.get("threshold"), "{:.4g}")),
                     html.Td("worse" if c.get("worse") else "not worse")],
                    className="check-worse" if c.get("worse") else None) for c in checks]
    return html.Table([
        html.Thead(html.Tr([html.Th(h) for h in ("check", "test", "production", "canary",
                                                 "statistic", "threshold", "verdict")])),
        html.Tbody(rows)], className="plain-table rollout-checks")


def _interval(evidence: dict[str, Any]) -> html.Div | None:
    """An A/B decision's difference (candidate − production) and its interval."""
    if "interval" not in evidence:
        return None
    low, high = evidence["interval"]
    return html.Div(f"{evidence['metric']}: difference {_number(evidence['difference'], '{:.4g}')}"
                    f", {evidence['confidence']:.0%} interval [{_number(low, '{:.4g}')}, "
                    f"{_number(high, '{:.4g}')}]", className="rollout-interval")


def _decision(decision: dict[str, Any]) -> html.Div:
    evidence = decision.get("evidence") or {}
    return html.Div([
        html.Div([html.Strong(f"step {decision['step_index'] + 1} at "
                              f"{decision['percent']:g}%: {decision['decision']}"),
                  f" · {format_time(decision.get('created_at'))} · "
                  f"{decision.get('actor') or MISSING}"]),
        html.Div(evidence.get("why") or MISSING, className="rollout-why"),
        _checks(evidence.get("checks") or []), _interval(evidence),
    ], className="rollout-decision")


def _now(rollout: dict[str, Any]) -> html.Div | None:
    now = rollout.get("now")
    if not now:
        return None
    return html.Div([
        html.Div([html.Strong(f"decided now: {now['decision']}"), f" · {now['why']}"]),
        _checks(now.get("checks") or []),
    ], className="rollout-decision rollout-now")


def rollout_figure(rollout: dict[str, Any]) -> go.Figure:
    """Each arm's requests, error rate, p95 latency and quality per time bucket over the
    rollout's life, one colour per arm; a dotted line where a step began."""
    series = rollout["series"]
    width = timedelta(seconds=series["bucket_seconds"])
    starts = [parse_time(start) for start in series["starts"]]
    xs = [start + width / 2 for start in starts]  # each bucket's middle: inside the axis
    figure = make_subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.16,
                           horizontal_spacing=0.09,
                           subplot_titles=[title.format(bucket=bucket_text(
                               series["bucket_seconds"])) for _, title, _ in PANELS])
    for index, (metric, _, tick) in enumerate(PANELS):
        row, col = divmod(index, 2)
        for arm, figures in series["arms"].items():
            figure.add_trace(go.Scatter(
                x=xs, y=[finite(v) for v in figures[metric]], name=arm, legendgroup=arm,
                showlegend=index == 0, mode="lines+markers", meta=f"{arm}:{metric}",
                line={"color": ARM_COLORS.get(arm), "width": 2}, marker={"size": 5},
                hovertemplate=f"{arm} · {metric.replace('_', ' ')} %{{y}}<br>%{{x}}"
                              "<extra></extra>",
            ), row=row + 1, col=col + 1)
        figure.update_yaxes(tickformat=tick, rangemode="tozero", row=row + 1, col=col + 1)
    for step in rollout["steps_taken"][1:]:
        moment = parse_time(step["started_at"])
        figure.add_vline(x=moment, line_color=_STEP_COLOR, line_dash="dot", line_width=1.5)
    if len(rollout["steps_taken"]) > 1:
        figure.add_trace(go.Scatter(x=[xs[0]], y=[None], mode="lines", name="a step began",
                                    line={"color": _STEP_COLOR, "dash": "dot"},
                                    hoverinfo="skip"), row=1, col=1)
    figure.update_xaxes(range=[starts[0], starts[-1] + width],
                        tickformatstops=TIME_TICK_FORMATS)
    figure.update_layout(
        template="plotly_white", height=460, margin={"l": 60, "r": 20, "t": 60, "b": 40},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.1, "yanchor": "bottom"},
        hovermode="closest",
        uirevision=f"rollout-{rollout['rollout_id']}")
    return figure


def bucket_text(seconds: int) -> str:
    """A bucket's width in words: ``5-second``, ``2-minute``, ``1-hour``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}-{unit}"
    return f"{seconds}-second"


def _plan(rollout: dict[str, Any]) -> str:
    plan = rollout["plan"]
    if rollout["kind"] == "ab":
        return (f"A/B on {plan['metric']} until a difference or {plan['max_requests']:,d} "
                f"requests; at least {plan['min_requests']:,d} per arm")
    steps = " → ".join(f"{step:g}%" for step in plan["steps"])
    return (f"steps {steps}; at least {plan['min_requests']:,d} requests per arm and "
            f"{plan['bake_seconds'] / 60:g} min per step")


def rollout_section(rollout: dict[str, Any] | None) -> html.Div | None:
    """The domain's rollout (``collect_domain_metrics()["rollout"]``): None without one."""
    if not rollout:
        return None
    series = rollout["series"]
    return html.Div([
        html.H2("Rollout"),
        html.Div([
            rollout_line(rollout),
            html.Span(f"against version {rollout['baseline_registry_version']} "
                      f"({rollout['baseline_model_version']}) in production"),
            html.Span(f"step started {format_time(rollout['step_started_at'])}"),
            html.Span(_plan(rollout)),
        ], className="domain-facts rollout-facts"),
        html.Div(f"outcome: {rollout['outcome']}", className="rollout-outcome")
        if rollout.get("outcome") else None,
        html.H3(f"This step ({rollout['percent']:g}% to the candidate)"),
        arms_table(rollout),
        _now(rollout),
        html.H3("Over time"),
        html.P(f"Every request of the rollout in {bucket_text(series['bucket_seconds'])} "
               "buckets" + (f" (its newest {SERIES_ROW_LIMIT:,d})" if series["truncated"]
                            else "") + ".", className="muted"),
        dcc.Graph(id="rollout-chart", figure=rollout_figure(rollout), config=GRAPH_CONFIG,
                  responsive=True, style={"height": "460px"}),
        html.H3("Decisions"),
        html.Div([_decision(d) for d in rollout["decisions"]], className="rollout-decisions")
        if rollout["decisions"] else html.P("No step decided yet.", className="muted"),
    ], id="rollout-section", className="rollout-section")
