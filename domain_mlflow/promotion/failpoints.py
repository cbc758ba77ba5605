"""Failpoints: where the crash-recovery tests end a promoting process on purpose."""

from __future__ import annotations

import os
from collections.abc import Callable


def env_failpoint() -> Callable[[str], None] | None:
    """``DOMAIN_MLFLOW_FAILPOINT=<point>`` ends the process (exit code 99) right after a
    state is recorded (``<point>`` a state name), or right after a side effect and before
    its record (``redis-written``, ``localai-imported``, ``localai-pointed``,
    ``alias-moved``): how the crash-recovery tests kill a promotion mid-way."""
    point = os.environ.get("DOMAIN_MLFLOW_FAILPOINT")
    if not point:
        return None

    def crash(reached: str) -> None:
        if reached == point:
            os._exit(99)

    return crash
