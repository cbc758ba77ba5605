"""The arrow beside a metric: ↑ improving, ↓ degrading, → stable, · too few runs."""

from __future__ import annotations

from dash import html

ARROWS = {"improving": "↑", "degrading": "↓", "stable": "→", "insufficient_data": "·"}


def trend_arrow(metric: str, direction: str | None) -> html.Span:
    """A coloured arrow (class ``trend-<direction>``) with the direction as its tooltip."""
    direction = direction if direction in ARROWS else "insufficient_data"
    return html.Span(ARROWS[direction], className=f"trend trend-{direction}",
                     title=f"{metric}: {direction.replace('_', ' ')}")
