"""Plotly figures: a domain's metrics over its runs and its training runs' loss curves,
domains side by side, and the fleet's time from registration to live."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dash_app.components.formatting import format_metric, parse_time
from domain_mlflow.metrics.curves import LOSS_METRICS
from domain_mlflow.metrics.trends import LOWER_IS_BETTER, finite

PROMOTION_ACTIONS = ("promote", "force_promote", "rollback")
_ACTION_COLORS = {"promote": "#2e8b57", "force_promote": "#8e44ad", "rollback": "#d35400"}
_LINE_COLORS = {"accuracy": "#1f77b4", "latency_ms": "#ff7f0e", "training_loss": "#2ca02c",
                "validation_loss": "#9467bd"}
_POSITIONS = {"accuracy": (1, 1), "latency_ms": (1, 2), "training_loss": (2, 1),
              "validation_loss": (2, 2)}


def _direction(metric: str) -> str:
    if metric == "requests":
        return "busiest first"
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


def metric_chart(runs: list[dict[str, Any]], thresholds: dict[str, Any],
                 history: list[dict[str, Any]], uirevision: str = "") -> go.Figure:
    """One panel per metric over run start time, with the gate's threshold as a dashed
    line and promotions and rollbacks as vertical lines."""
    figure = make_subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.12,
                           horizontal_spacing=0.08,
                           subplot_titles=[f"{m} ({_direction(m)})" for m in _POSITIONS])
    times = [parse_time(run.get("start_time")) for run in runs]
    for metric, (row, col) in _POSITIONS.items():
        figure.add_trace(go.Scatter(
            x=times, y=[finite(run.get(metric)) for run in runs], name=metric,
            mode="lines+markers", connectgaps=True,
            line={"color": _LINE_COLORS[metric], "width": 2}, marker={"size": 6},
            hovertemplate=f"{metric} %{{y}}<br>%{{x}}<extra></extra>",
        ), row=row, col=col)
        if all(finite(run.get(metric)) is None for run in runs):
            figure.add_annotation(text=f"no {metric} logged", row=row, col=col,
                                  xref="x domain", yref="y domain", x=0.5, y=0.15,
                                  showarrow=False, bgcolor="rgba(255,255,255,0.9)",
                                  font={"color": "#6b7685", "size": 13})
        threshold = finite(thresholds.get(metric))
        if threshold is not None:
            figure.add_hline(y=threshold, row=row, col=col, line_dash="dash",
                             line_color="#c0392b", line_width=1,
                             annotation_text=f"threshold {format_metric(metric, threshold)}",
                             annotation_font_size=11, annotation_font_color="#c0392b")
    _add_promotions(figure, history)
    figure.update_layout(
        template="plotly_white", height=560, margin={"l": 50, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.08}, uirevision=uirevision or None,
        hovermode="closest",
    )
    return figure


def _add_promotions(figure: go.Figure, history: list[dict[str, Any]]) -> None:
    shown: set[str] = set()
    for entry in history:
        action, moment = entry.get("action"), parse_time(entry.get("created_at"))
        if action not in PROMOTION_ACTIONS or moment is None:
            continue
        color = _ACTION_COLORS[action]
        # Plotly cannot annotate a vline on a date axis, so a legend entry explains it.
        figure.add_vline(x=moment, row="all", col="all", line_color=color, line_width=1,
                         line_dash="dot")
        figure.add_trace(go.Scatter(
            x=[moment], y=[None], mode="lines", name=action, legendgroup=action,
            showlegend=action not in shown, line={"color": color, "dash": "dot"},
            hoverinfo="skip",
        ), row=1, col=1)
        shown.add(action)


def comparison_figure(metric: str, comparison: dict[str, Any]) -> go.Figure:
    """A bar per domain for ``metric``, best first (``get_domain_comparison``'s ranking)."""
    figures = comparison.get("domains", {})
    order = comparison.get("rankings", {}).get(metric) or list(figures)
    values = [finite(figures.get(domain, {}).get(metric)) for domain in order]
    figure = go.Figure(go.Bar(
        x=order, y=values, text=[format_metric(metric, v) for v in values],
        textposition="outside", cliponaxis=False, marker_color=_LINE_COLORS.get(metric, "#607d8b"),
        hovertemplate="%{x}: %{text}<extra></extra>",
    ))
    for domain, value in zip(order, values, strict=True):
        if value is None:  # a bar of height zero would read as a real 0
            figure.add_annotation(x=domain, y=0, text="—", showarrow=False, yshift=10,
                                  hovertext=f"{domain}: no {metric}",
                                  font={"color": "#6b7685", "size": 14})
    figure.update_layout(
        title={"text": f"{metric} ({_direction(metric)})", "font": {"size": 15}},
        template="plotly_white", height=320, margin={"l": 50, "r": 20, "t": 50, "b": 60},
        xaxis={"type": "category"}, uirevision=metric,
    )
    return figure



def _empty_note(figure: go.Figure, text: str, **where: Any) -> None:
    figure.add_annotation(text=text, xref="x domain", yref="y domain", x=0.5, y=0.5,
                          showarrow=False, font={"color": "#6b7685", "size": 13}, **where)


def loss_curves_figure(curves: list[dict[str, Any]], uirevision: str = "") -> go.Figure:
    """``training_loss`` and ``validation_loss`` over steps, one line per training run
    (``collector.loss_curves``), each run in one colour in both panels."""
    figure = make_subplots(rows=1, cols=len(LOSS_METRICS), horizontal_spacing=0.08,
                           subplot_titles=[f"{m} by step (lower is better)"
                                           for m in LOSS_METRICS])
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
    for index, run in enumerate(curves):
        name = run.get("training_run_id") or run["run_id"]
        for col, metric in enumerate(LOSS_METRICS, start=1):
            points = run["curves"].get(metric, [])
            figure.add_trace(go.Scatter(
                x=[p["step"] for p in points], y=[p["value"] for p in points], name=name,
                legendgroup=name, showlegend=col == 1, mode="lines+markers",
                meta=metric, line={"color": palette[index % len(palette)], "width": 2},
                marker={"size": 5},
                hovertemplate=f"{name}<br>{metric} %{{y}} at step %{{x}}<extra></extra>",
            ), row=1, col=col)
    for col, metric in enumerate(LOSS_METRICS, start=1):
        if not any(run["curves"].get(metric) for run in curves):
            _empty_note(figure, f"no {metric} steps logged by a training run in the window",
                        row=1, col=col)
    figure.update_xaxes(title_text="step")
    figure.update_layout(template="plotly_white", height=360, uirevision=uirevision or None,
                         margin={"l": 50, "r": 20, "t": 40, "b": 40},
                         legend={"orientation": "h", "y": -0.2})
    return figure


def _duration_unit(longest: float) -> tuple[str, float]:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if longest >= 2 * size:
            return unit, size
    return "seconds", 1.0


def time_to_live_figure(domains: dict[str, dict[str, Any]], days: int) -> go.Figure:
    """Per domain, the time from registration to live of each version that went live in
    the window: a box with every version as a point (``fleet_deployments()["domains"]``)."""
    values = {domain: figures["deployment"]["time_to_live"]["seconds"]
              for domain, figures in domains.items()
              if figures["deployment"]["time_to_live"]["seconds"]}
    unit, size = _duration_unit(max((max(v) for v in values.values()), default=0.0))
    figure = go.Figure([go.Box(y=[s / size for s in seconds], name=domain, boxpoints="all",
                               jitter=0.3, pointpos=0, marker={"size": 7},
                               hovertemplate=f"{domain}: %{{y:.3g}} {unit}<extra></extra>")
                        for domain, seconds in values.items()])
    if not values:
        _empty_note(figure, f"no version went live in the last {days} days")
    figure.update_layout(
        title={"text": "registration to live", "font": {"size": 15}}, template="plotly_white",
        height=360, margin={"l": 60, "r": 20, "t": 50, "b": 60}, showlegend=False,
        yaxis={"title": {"text": unit}, "rangemode": "tozero"}, xaxis={"type": "category"},
        uirevision="time-to-live",
    )
    return figure
