"""Plotly figures: a domain's metrics over its runs and its training runs' loss curves,
domains side by side, and the fleet's time from registration to live."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dash_app.components.axes import TIME_TICK_FORMATS, reaches, time_range, value_range
from dash_app.components.formatting import (
    format_metric,
    format_time,
    metric_label,
    metric_name,
    parse_time,
)
from domain_mlflow.metrics.curves import LOSS_METRICS
from domain_mlflow.metrics.trends import LOWER_IS_BETTER, better, finite

PROMOTION_ACTIONS = ("promote", "force_promote", "rollback")
# Plotly's toolbar only while the pointer is over a chart.
GRAPH_CONFIG = {"displaylogo": False, "displayModeBar": "hover"}
# One colour per domain (compare) or training run (loss curves), in this order.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#d62728")
X_AXES = {"time": "time", "version": "version"}
_ACTION_COLORS = {"promote": "#2e8b57", "force_promote": "#8e44ad", "rollback": "#d35400"}
_LINE_COLORS = {"accuracy": "#1f77b4", "latency_ms": "#ff7f0e", "training_loss": "#2ca02c",
                "validation_loss": "#9467bd"}
_POSITIONS = {"accuracy": (1, 1), "latency_ms": (1, 2), "training_loss": (2, 1),
              "validation_loss": (2, 2)}
_NOTE_FONT = {"color": "#6b7685", "size": 13}
_THRESHOLD_COLOR = "#c0392b"
_LABEL_BACKGROUND = "rgba(255, 255, 255, 0.85)"  # lines crossing a label do not strike it
TRAFFIC_METRICS = ("requests", "error_rate")


def _direction(metric: str) -> str:
    if metric == "requests":
        return "busiest first"
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


def _title(metric: str) -> str:
    return f"{metric_label(metric)} · {_direction(metric)}"


def domain_colors(domain_ids: list[str]) -> dict[str, str]:
    """A colour per domain, by its place among ``domain_ids`` sorted."""
    return {domain: PALETTE[index % len(PALETTE)]
            for index, domain in enumerate(sorted(domain_ids))}


def run_moment(run: dict[str, Any]) -> datetime | None:
    """When the run ended (when it started while it is still running)."""
    return parse_time(run.get("end_time")) or parse_time(run.get("start_time"))


def run_versions(runs: list[dict[str, Any]], versions: list[dict[str, Any]]
                 ) -> list[str | None]:
    """Per run, the registry version it registered: its ``registry_version`` tag, else
    the version made from it (``collect_domain_metrics``' ``versions``), else None."""
    by_run = {v.get("run_id"): str(v["version"]) for v in versions if v.get("run_id")}
    return [str(run["registry_version"]) if run.get("registry_version") else
            by_run.get(run.get("run_id")) for run in runs]


def metric_chart(runs: list[dict[str, Any]], thresholds: dict[str, Any],
                 history: list[dict[str, Any]], uirevision: str = "",
                 x_axis: str = "time", versions: list[dict[str, Any]] | None = None
                 ) -> go.Figure:
    """One panel per metric over the runs, by the time each ended or by version
    (``x_axis``; a run without a version by its place: ``run 2``), with the gate's
    threshold as a dashed line and promotions and rollbacks as vertical lines; every
    point, marker and near threshold is inside."""
    figure = make_subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.14,
                           horizontal_spacing=0.08,
                           subplot_titles=[_title(m) for m in _POSITIONS])
    registered = run_versions(runs, versions or [])
    labels = [f"v{version}" if version else f"run {position}"
              for position, version in enumerate(registered, start=1)]
    xs: list[Any] = ([run_moment(run) for run in runs] if x_axis == "time" else
                     list(range(1, len(runs) + 1)))
    hover = [f"{label} · ended {format_time(run.get('end_time') or run.get('start_time'))}"
             for label, run in zip(labels, runs, strict=True)]
    for metric, (row, col) in _POSITIONS.items():
        values = [finite(run.get(metric)) for run in runs]
        figure.add_trace(go.Scatter(
            x=xs, y=values, name=metric_label(metric), mode="lines+markers",
            connectgaps=True, text=hover, meta=metric,
            line={"color": _LINE_COLORS[metric], "width": 2}, marker={"size": 7},
            hovertemplate=f"{metric_name(metric)} %{{y}}<br>%{{text}}<extra></extra>",
        ), row=row, col=col)
        _metric_axis(figure, metric, [v for v in values if v is not None],
                     finite(thresholds.get(metric)), row, col)
    marks = _add_promotions(figure, history, dict(zip(registered, xs, strict=True)), x_axis)
    if x_axis == "time":
        figure.update_xaxes(range=time_range([x for x in [*xs, *marks] if x is not None]),
                            tickformatstops=TIME_TICK_FORMATS)
    else:
        figure.update_xaxes(range=[0.5, len(runs) + 0.5], tickvals=xs, ticktext=labels)
    figure.update_xaxes(title_text="when the run ended" if x_axis == "time" else
                        "version (runs without one by their place)", row=2)
    figure.update_layout(
        template="plotly_white", height=580, margin={"l": 60, "r": 20, "t": 40, "b": 50},
        legend={"orientation": "h", "y": -0.14}, uirevision=uirevision or None,
        hovermode="closest",
    )
    return figure


def _metric_axis(figure: go.Figure, metric: str, values: list[float],
                 threshold: float | None, row: int, col: int) -> None:
    """The panel's y range and threshold line; a note when nothing was logged, or when
    the threshold is too far from the runs to draw on their scale."""
    if not values:
        figure.add_annotation(text=f"no {metric_name(metric)} logged", row=row, col=col,
                              xref="x domain", yref="y domain", x=0.5, y=0.5,
                              showarrow=False, font=_NOTE_FONT)
        figure.update_yaxes(showticklabels=False, row=row, col=col)
        return
    (bottom, top), step = value_range(values, threshold)
    figure.update_yaxes(range=[bottom, top], dtick=step, tick0=0, row=row, col=col)
    if threshold is None:
        return
    text = f"threshold {format_metric(metric, threshold)}"
    if not reaches(values, threshold):
        where = "above" if threshold > top else "below"
        figure.add_annotation(text=f"{text}: far {where} every run", row=row, col=col,
                              xref="x domain", yref="y domain", x=0.01,
                              y=0.97 if where == "above" else 0.03, xanchor="left",
                              yanchor="top" if where == "above" else "bottom",
                              showarrow=False, bgcolor=_LABEL_BACKGROUND,
                              font={"color": _THRESHOLD_COLOR, "size": 11})
        return
    # The label on the side of the line with more room, inside the plot at its left.
    position = "top left" if threshold < (bottom + top) / 2 else "bottom left"
    figure.add_hline(y=threshold, row=row, col=col, line_dash="dash",
                     line_color=_THRESHOLD_COLOR, line_width=1, annotation_text=text,
                     annotation_position=position, annotation_font_size=11,
                     annotation_font_color=_THRESHOLD_COLOR,
                     annotation_bgcolor=_LABEL_BACKGROUND)


def _add_promotions(figure: go.Figure, history: list[dict[str, Any]],
                    positions: dict[str | None, Any], x_axis: str) -> list[Any]:
    """A dotted vertical line per promotion and rollback, at its time or at the run of
    its version (``positions``: version → x); the places drawn."""
    shown: set[str] = set()
    marks = []
    for entry in history:
        action = entry.get("action")
        moment = (parse_time(entry.get("created_at")) if x_axis == "time" else
                  positions.get(str(entry.get("registry_version"))))
        if action not in PROMOTION_ACTIONS or moment is None:
            continue
        color = _ACTION_COLORS[action]
        # Plotly cannot annotate a vline on a date axis, so a legend entry explains it.
        figure.add_vline(x=moment, row="all", col="all", line_color=color, line_width=1.5,
                         line_dash="dot")
        figure.add_trace(go.Scatter(
            x=[moment], y=[None], mode="lines", name=action.replace("_", " "),
            legendgroup=action, showlegend=action not in shown,
            line={"color": color, "dash": "dot"}, hoverinfo="skip",
        ), row=1, col=1)
        shown.add(action)
        marks.append(moment)
    return marks


def comparison_figure(metric: str, comparison: dict[str, Any],
                      colors: dict[str, str] | None = None) -> go.Figure:
    """A bar per domain for ``metric``, domains in alphabetical order and each in its
    colour (``colors``, e.g. ``domain_colors``) so every chart reads alike; the
    ranking in the title (the best, ties together) and the hover ("ranked 2 of 5")."""
    figures = comparison.get("domains", {})
    order = sorted(figures)
    colors = colors or domain_colors(order)
    values = [finite(figures[domain].get(metric)) for domain in order]
    places = _places(metric, dict(zip(order, values, strict=True)))
    figure = go.Figure()
    layout = {"title": {"text": _title(metric), "font": {"size": 15}},
              "template": "plotly_white", "height": 320, "uirevision": metric,
              "margin": {"l": 50, "r": 20, "t": 50, "b": 60}}
    note = _no_figures(metric, figures, values)
    if note:
        _empty_note(figure, note)
        figure.update_layout(**layout, xaxis={"visible": False}, yaxis={"visible": False})
        return figure
    figure.add_trace(go.Bar(
        x=order, y=values, text=[format_metric(metric, v) for v in values],
        customdata=[f"ranked {places[d]} of {len(places)}" if d in places else
                    "not ranked: no value" for d in order],
        textposition="outside", cliponaxis=False,
        marker_color=[colors.get(domain, PALETTE[-1]) for domain in order],
        hovertemplate="%{x}: %{text}<br>%{customdata}<extra></extra>",
    ))
    for domain, value in zip(order, values, strict=True):
        if value is None:  # a bar of height zero would read as a real 0
            figure.add_annotation(x=domain, y=0, text="—", showarrow=False, yshift=10,
                                  hovertext=f"{domain}: no {metric_name(metric)}",
                                  font={"color": "#6b7685", "size": 14})
    best = [domain for domain, place in places.items() if place == 1]
    layout["title"]["text"] += f" · best: {', '.join(best)}" + (" (tied)" if len(best) > 1 else "")
    figure.update_layout(**layout, xaxis={"type": "category"})
    return figure


def _no_figures(metric: str, figures: dict[str, dict[str, Any]],
                values: list[float | None]) -> str | None:
    """Why the chart has nothing to draw, or None when it has."""
    if metric in TRAFFIC_METRICS and not any(f.get("requests") for f in figures.values()):
        return "no traffic yet: these domains served no request in the window"
    if all(value is None for value in values):
        return f"no {metric_name(metric)} logged yet"
    return None


def _places(metric: str, values: dict[str, float | None]) -> dict[str, int]:
    """Each domain with a value: 1 + how many domains did better (ties share a place)."""
    known = {domain: value for domain, value in values.items() if value is not None}
    return {domain: 1 + sum(better(metric, other, value) for other in known.values())
            for domain, value in known.items()}


def _empty_note(figure: go.Figure, text: str, **where: Any) -> None:
    figure.add_annotation(text=text, xref="x domain", yref="y domain", x=0.5, y=0.5,
                          showarrow=False, font=_NOTE_FONT, **where)


def loss_curves_figure(curves: list[dict[str, Any]], uirevision: str = "") -> go.Figure:
    """``training_loss`` and ``validation_loss`` over steps, one line per training run
    (``collector.loss_curves``), each run in one colour in both panels."""
    figure = make_subplots(rows=1, cols=len(LOSS_METRICS), horizontal_spacing=0.08,
                           subplot_titles=[f"{metric_label(m)} by step · lower is better"
                                           for m in LOSS_METRICS])
    for index, run in enumerate(curves):
        name = run.get("training_run_id") or run["run_id"]
        for col, metric in enumerate(LOSS_METRICS, start=1):
            points = run["curves"].get(metric, [])
            figure.add_trace(go.Scatter(
                x=[p["step"] for p in points], y=[p["value"] for p in points], name=name,
                legendgroup=name, showlegend=col == 1, mode="lines+markers",
                meta=metric, line={"color": PALETTE[index % len(PALETTE)], "width": 2},
                marker={"size": 5},
                hovertemplate=f"{name}<br>{metric_name(metric)} %{{y}} at step %{{x}}"
                              "<extra></extra>",
            ), row=1, col=col)
    for col, metric in enumerate(LOSS_METRICS, start=1):
        if not any(run["curves"].get(metric) for run in curves):
            _empty_note(figure, f"no {metric_name(metric)} steps logged by a training run "
                        "in the window", row=1, col=col)
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
