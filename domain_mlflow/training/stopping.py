"""How a training run ends when it does not finish: on a signal, or on an error."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from domain_mlflow.exceptions import (
    DomainMlflowError,
    TrainingInterrupted,
    TrainingTimeLimitReached,
)

# Stopped on purpose, by a signal or the time limit: the run is KILLED, not FAILED.
_STOPS = (TrainingInterrupted, TrainingTimeLimitReached, KeyboardInterrupt)

# Each signal with Python's own handler for it: only those are replaced, so a handler
# a host program installed on purpose (a graceful stop, say) keeps working.
_DEFAULT_HANDLERS = ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler))


@contextmanager
def signals_interrupt_training() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`TrainingInterrupted`.

    Outside the main thread nothing changes (only it may set handlers). The
    previous handlers are back when the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    replaced = {number: signal.getsignal(number) for number, default in _DEFAULT_HANDLERS
                if signal.getsignal(number) is default}
    for number in replaced:
        signal.signal(number, _interrupt)
    try:
        yield
    finally:
        for number, handler in replaced.items():
            signal.signal(number, handler)


def _interrupt(number: int, frame: FrameType | None) -> None:
    raise TrainingInterrupted(number, signal.Signals(number).name)


def run_status(error: BaseException) -> str:
    """The MLflow status of a run that ``error`` ended: KILLED when it was stopped."""
    return "KILLED" if isinstance(error, _STOPS) else "FAILED"


def failure_reason(error: BaseException) -> str:
    """The ``failure_reason`` tag: our message as it is, anything else with its type."""
    if isinstance(error, DomainMlflowError):
        return str(error)
    name = type(error).__name__
    return f"{name}: {error}" if str(error) else name
