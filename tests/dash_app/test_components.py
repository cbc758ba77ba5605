"""The dashboard's pure pieces: axis ranges and trend arrows."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from dash_app.components.axes import MIN_TIME_PAD, reaches, time_range, value_range
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
