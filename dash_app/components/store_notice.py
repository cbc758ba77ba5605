"""Why a page shows no production, promotions or usage: no config store yet, or one
that did not answer; and the heading of a page that shows it."""

from __future__ import annotations

from typing import Any

from dash import html


def store_notice(status: dict[str, Any]) -> html.Div | None:
    """A note for ``store_note`` (nothing promoted yet), an error for ``store_error``;
    None when the config store was read. ``status`` is ``store_status()`` or a domain's
    metrics."""
    if status.get("store_error"):
        return html.Div(f"{status['store_error']} (production, promotions and usage "
                        "cannot be shown)", className="store-notice store-error")
    if status.get("store_note"):
        return html.Div(status["store_note"], className="store-notice")
    return None


def page_heading(title: str, loading: str, page: str) -> list[Any]:
    """A page's title, its status line (id ``{page}-status``, ``loading`` until the first
    refresh) and the place of its store notice (id ``{page}-store``)."""
    return [html.H1(title), html.P(loading, id=f"{page}-status", className="muted"),
            html.Div(id=f"{page}-store")]
