"""Progress of long work: a tqdm bar on a terminal, log lines everywhere else.

Where no bar is shown (CI logs, docker logs, ``| tee``), a line is logged at INFO
at the first step past each 5% of the steps, and at any step when
``interval_seconds`` (``DOMAIN_MLFLOW_PROGRESS_SECONDS``, default 10) have passed
since the last line, whichever comes first; the last step always has its line:
``training: step 120 of 400 (30%), 2.40 steps/s, ETA 1m57s``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from domain_mlflow.settings import Settings

_log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS: float = Settings.progress_seconds  # DOMAIN_MLFLOW_PROGRESS_SECONDS
PERCENT_PER_LINE = 5


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def progress_line(what: str, unit: str, done: int, total: int, taken: int,
                  elapsed: float, extra: dict[str, Any] | None = None) -> str:
    """``what: unit done of total (P%), rate, ETA[, key value...]``; the rate over the
    ``taken`` steps of this process (a resumed run's earlier steps left out)."""
    percent = 100 * done // total if total else 100
    parts = [f"{what}: {unit} {done} of {total} ({percent}%)"]
    if taken > 0 and elapsed > 0:
        per_second = taken / elapsed
        parts.append(f"{per_second:.2f} {unit}s/s" if per_second >= 1
                     else f"{elapsed / taken:.2f} s/{unit}")
        parts.append(f"ETA {format_duration((total - done) / per_second)}")
    parts += [f"{key} {value}" for key, value in (extra or {}).items()]
    return ", ".join(parts)


class ProgressSchedule:
    """When a progress line is due: the rule of the module docstring, on ``clock``."""

    def __init__(self, total: int, start: int = 0,
                 interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.last_time = clock()
        self.last_mark = self._mark(start)

    def _mark(self, done: int) -> int:
        """How many 5% marks ``done`` steps have passed."""
        return math.floor(done * 100 / (PERCENT_PER_LINE * self.total)) if self.total else 0

    def due(self, done: int) -> bool:
        """Whether step ``done`` gets a line; if so, the next one is counted from here."""
        now, mark = self.clock(), self._mark(done)
        if not (done >= self.total or mark > self.last_mark
                or now - self.last_time >= self.interval_seconds):
            return False
        self.last_time, self.last_mark = now, mark
        return True


class Progress:
    """``total`` steps of ``what``: a tqdm bar when ``bar`` (None: when stderr is a
    terminal), otherwise a line logged at INFO when :class:`ProgressSchedule` says so.

    ``silent`` shows neither (the ranks other than 0 of a distributed run).
    """

    def __init__(self, what: str, total: int, *, start: int = 0, unit: str = "step",
                 bar: bool | None = None, silent: bool = False,
                 interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from tqdm.auto import tqdm

        self.what, self.unit, self.total, self.start = what, unit, total, start
        show_bar = not silent and (sys.stderr.isatty() if bar is None else bar)
        self.bar = tqdm(total=total, initial=start, disable=not show_bar, desc=what, unit=unit)
        self.clock = clock
        self.began = clock()
        self.schedule = (None if silent or show_bar
                         else ProgressSchedule(total, start, interval_seconds, clock))

    def update(self, done: int, **postfix: Any) -> None:
        """Step ``done`` (counted from 0, like ``start``) has finished."""
        self.bar.update(done - self.bar.n)
        if postfix:
            self.bar.set_postfix(**postfix)
        if self.schedule is not None and self.schedule.due(done):
            _log.info(progress_line(self.what, self.unit, done, self.total,
                                    done - self.start, self.clock() - self.began, postfix))

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
