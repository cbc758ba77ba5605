"""The dashboard's pure pieces: axis ranges and trend arrows."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from dash_app.components.axes import MIN_TIME_PAD, reaches, time_range, value_range
from dash_app.components.rollout import bucket_text, rollout_label
from dash_app.components.trend import trend_arrow
from domain_mlflow.metrics.trends import trend


@pytest.mark.parametrize(("values", "threshold"), [
    ([0.85, 0.88, 0.912, 0.95], 0.85),
    ([0.95], 0.85),
    ([0.2, 0.5, 0.45, 0.4], 0.3),
    ([1200.0, 1350.0], 1000.0),
    ([0.0, 0.0], None),
])
def test_a_value_range_holds_every_value_and_a_near_threshold_between_ticks(
        values, threshold):
    (bottom, top), step = value_range(values, threshold)
    shown = [*values, threshold] if threshold is not None else values
    # Inside, or on a bottom of zero: a range of values never negative stops there.
    assert all(bottom < v < top or v == bottom == 0 for v in shown)
    assert bottom >= 0
    assert (top - bottom) / step == pytest.approx(round((top - bottom) / step))
    assert bottom / step == pytest.approx(round(bottom / step))


def test_a_threshold_far_from_the_values_stays_off_their_scale():
    assert not reaches([30.0, 40.0], 500.0)
    (bottom, top), _ = value_range([30.0, 40.0], 500.0)
    assert bottom < 30 < 40 < top < 100


def test_a_time_range_pads_runs_seconds_apart_to_minutes():
    first = datetime(2026, 12, 1, 8, 19, 31)
    start, end = time_range([first, first + timedelta(milliseconds=200)])
    assert start == first - MIN_TIME_PAD and end - start >= 2 * MIN_TIME_PAD
    assert time_range([]) is None


@pytest.mark.parametrize(("metric", "values", "arrow", "verdict", "title"), [
    ("latency_ms", [50.0, 44.0], "↓", "trend-better",
     "latency went down 12% against the runs before — better"),
    ("latency_ms", [50.0, 60.0], "↑", "trend-worse",
     "latency went up 20% against the runs before — worse"),
    ("accuracy", [0.8, 0.9], "↑", "trend-better",
     "accuracy went up 12% against the runs before — better"),
    ("validation_loss", [0.5, 0.6], "↑", "trend-worse",
     "validation loss went up 20% against the runs before — worse"),
])
def test_an_arrow_shows_the_values_way_and_its_colour_whether_that_is_better(
        metric, values, arrow, verdict, title):
    span = trend_arrow(metric, trend(metric, values))
    assert (span.children, span.title) == (arrow, title)
    assert verdict in span.className.split()


def test_a_stable_or_too_short_trend_says_so():
    stable = trend_arrow("accuracy", trend("accuracy", [0.9, 0.901]))
    assert (stable.children, stable.className) == ("→", "trend trend-stable")
    lone = trend_arrow("accuracy", trend("accuracy", [0.9]))
    assert lone.children == "·"
    assert lone.title == "accuracy: not enough runs for a trend (it needs two)"


MARK = {"kind": "canary", "label": "canary", "state": "running", "percent": 10.0,
        "registry_version": 2, "model_version": "m-v2", "baseline_registry_version": 1,
        "step": 1, "steps": 3, "metric": None}


@pytest.mark.parametrize(("changes", "label"), [
    ({}, "canary 10% → version 2 (step 1 of 3)"),
    ({"state": "paused"}, "canary 10% → version 2 (step 1 of 3) · paused"),
    ({"state": "aborted"}, "canary of version 2 aborted at 10% (step 1 of 3)"),
    ({"kind": "ab", "label": "A/B test", "percent": 50.0, "steps": 1, "metric": "quality"},
     "A/B test 50% → version 2 on quality"),
])
def test_a_rollouts_mark_names_its_kind_share_candidate_and_step(changes, label):
    assert rollout_label({**MARK, **changes}) == label


@pytest.mark.parametrize(("seconds", "words"), [(1, "1-second"), (90, "90-second"),
                                                (120, "2-minute"), (7200, "2-hour"),
                                                (172800, "2-day")])
def test_a_bucket_width_reads_in_the_largest_whole_unit(seconds, words):
    assert bucket_text(seconds) == words


def _texts(component) -> list[str]:
    """Every string inside a Dash component tree."""
    if isinstance(component, str):
        return [component]
    children = getattr(component, "children", None)
    if children is None:
        return []
    return [text for child in (children if isinstance(children, list) else [children])
            for text in _texts(child)]


def test_an_ab_tests_section_shows_its_decision_with_the_difference_and_interval():
    from dash_app.components.rollout import rollout_section

    arm = {"requests": 40, "errors": 1, "error_rate": 0.025, "latency_p95_ms": 12.0,
           "rated": 40, "quality": 0.9, "quality_variance": 0.09}
    series = {"bucket_seconds": 60, "starts": ["2026-12-01T08:00:00+00:00"],
              "arms": {a: {k: [arm[k]] for k in ("requests", "errors", "error_rate",
                                                 "latency_p95_ms", "quality", "rated")}
                       for a in ("production", "candidate")}, "truncated": False}
    evidence = {"metric": "quality", "difference": 0.4, "interval": [0.21, 0.59],
                "confidence": 0.95, "why": "candidate is better on quality"}
    section = rollout_section({
        **MARK, "kind": "ab", "label": "A/B test", "percent": 50.0, "steps": 1,
        "metric": "quality", "state": "promoted", "baseline_model_version": "m-v1",
        "plan": {"steps": [50.0], "metric": "quality", "max_requests": 2000,
                 "min_requests": 30}, "step_started_at": "2026-12-01T08:00:00+00:00",
        "outcome": "A/B test won by version 2", "now": None, "series": series,
        "arms": {"production": arm, "candidate": arm}, "rollout_id": 7,
        "steps_taken": [], "decisions": [{"step_index": 0, "percent": 50.0,
                                          "decision": "promote", "actor": "monitor",
                                          "created_at": "2026-12-01T08:05:00+00:00",
                                          "evidence": evidence}]})
    text = " ".join(_texts(section))
    assert "A/B test of version 2 promoted at 50% on quality" in text
    assert "quality: difference 0.4, 95% interval [0.21, 0.59]" in text
    assert "step 1 at 50%: promote" in text and "outcome: A/B test won by version 2" in text
