"""Telling people: a Redis publish on ``{prefix}:{channel}`` and a POST to
``ALERT_WEBHOOK_URL``, both best effort (what they announce is already recorded)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from domain_mlflow.exceptions import DomainMlflowError

_log = logging.getLogger(__name__)


def announce(redis: Any, webhook_url: str | None, channel: str, event: dict[str, Any],
             redact: Callable[[str], str]) -> None:
    """Publish ``event`` on Redis (when configured) and POST it to ``webhook_url`` (when
    set, up to 3 attempts); failures are logged, redacted, and never raised."""
    if redis is not None:
        try:
            redis.publish_event(channel, event)
        except DomainMlflowError as error:
            _log.error("could not publish on Redis %s: %s", channel, redact(str(error)))
    if not webhook_url:
        return
    import requests

    for attempt in range(3):
        try:
            requests.post(webhook_url, json=event, timeout=5)
            return
        except requests.RequestException as error:
            if attempt == 2:
                # requests' errors quote the URL, with any token in its query
                _log.error("could not POST the %s event: %s", channel, redact(str(error)))
