"""Axis ranges at the scale of the data: every point inside, ticks a person reads."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

# The date axis spans at least this much on each side of its points: a few runs a
# second apart would otherwise get ticks in fractions of a millisecond.
MIN_TIME_PAD = timedelta(minutes=5)
TIME_TICK_FORMATS = [
    {"dtickrange": [None, 60_000], "value": "%H:%M:%S<br>%b %d"},
    {"dtickrange": [60_000, 86_400_000], "value": "%H:%M<br>%b %d"},
    {"dtickrange": [86_400_000, None], "value": "%b %d<br>%Y"},
]
# The share of the data's span left empty above and below it.
PAD = 0.15
# A threshold further from the data than this many spans is named, not drawn to scale.
THRESHOLD_REACH = 2.0
TICKS = 4


def time_range(moments: list[datetime]) -> list[datetime] | None:
    """The first and last moment, padded by 5% of the span and at least MIN_TIME_PAD."""
    if not moments:
        return None
    first, last = min(moments), max(moments)
    pad = max((last - first) * 0.05, MIN_TIME_PAD)
    return [first - pad, last + pad]


def nice_step(rough: float) -> float:
    """The round tick step (1, 2, 2.5 or 5 times a power of ten) at or above ``rough``."""
    power = 10.0 ** math.floor(math.log10(rough))
    return next(power * m for m in (1, 2, 2.5, 5, 10) if power * m >= rough * (1 - 1e-9))


def reaches(values: list[float], threshold: float | None) -> bool:
    """Whether ``threshold`` is near enough to ``values`` to be drawn on their scale."""
    if threshold is None:
        return False
    low, high = min(values), max(values)
    span = _span(low, high)
    return low - THRESHOLD_REACH * span <= threshold <= high + THRESHOLD_REACH * span


def value_range(values: list[float], threshold: float | None = None
                ) -> tuple[list[float], float]:
    """A y range holding every value (and ``threshold`` when it ``reaches`` them) with
    room above and below, ending on ticks; and the tick step. A range of values that
    are never negative does not go below zero."""
    shown = [*values, threshold] if reaches(values, threshold) else list(values)
    low, high = min(shown), max(shown)
    pad = _span(low, high) * PAD
    bottom, top = low - pad, high + pad
    if low >= 0:
        bottom = max(bottom, 0.0)
    step = nice_step((top - bottom) / TICKS)
    return [_round(math.floor(bottom / step) * step), _round(math.ceil(top / step) * step)], step


def _span(low: float, high: float) -> float:
    return (high - low) or abs(high) * 0.2 or 1.0


def _round(value: float) -> float:
    return float(f"{value:.12g}")
