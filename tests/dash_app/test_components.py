"""The dashboard's pure pieces: trend arrows."""

from __future__ import annotations

import pytest

from dash_app.components.trend import trend_arrow
from domain_mlflow.metrics.trends import trend


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
