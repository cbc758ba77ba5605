"""How a training run ends when it does not finish: on a signal, or on an error."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from domain_mlflow.exceptions import (
    DomainMlflowError,
    InvalidDomainIdError,
    TrainingInterrupted,
    TrainingTimeLimitReached,
)
from domain_mlflow.naming import training_run_id, utc_now, validate_domain_id

_log = logging.getLogger(__name__)

MAX_REASON_LENGTH = 5000

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


def redacted_failure_reason(error: BaseException, redact: Callable[[str], str]) -> str:
    """The ``failure_reason`` tag's value: secrets masked, at most 5000 characters."""
    return redact(failure_reason(error))[:MAX_REASON_LENGTH]


def record_entry_point_failure(client: Any, run_id: str, domain_id: str, error: BaseException,
                               redact: Callable[[str], str]) -> None:
    """Leave the run MLflow opened for a failed entry point an honest record.

    The run gets the ``domain_id`` and ``failure_reason`` tags, the name a training run
    of the domain gets (``{domain_id}_{YYYYMMDD_HHMMSS}``; an id that is not a valid
    domain id leaves MLflow's name) and :func:`run_status`. A run the training has
    recorded already (it has a ``failure_reason``) is left as it is.
    """
    if "failure_reason" in client.get_run(run_id).data.tags:
        return
    client.set_tag(run_id, "domain_id", redact(domain_id)[:MAX_REASON_LENGTH])
    client.set_tag(run_id, "failure_reason", redacted_failure_reason(error, redact))
    # An invalid id keeps MLflow's name; the failure_reason says what is wrong with it.
    with contextlib.suppress(InvalidDomainIdError):
        client.update_run(run_id, name=training_run_id(validate_domain_id(domain_id), utc_now()))
    client.set_terminated(run_id, run_status(error))


Handler = Callable[[argparse.Namespace], int]


def recording_failures(handler: Handler) -> Handler:
    """``handler`` (given ``args.domain_id``), recording a failure on the run MLflow
    opened for the entry point (``MLFLOW_RUN_ID``) before the error goes on."""
    def run(args: argparse.Namespace) -> int:
        run_id = os.environ.get("MLFLOW_RUN_ID")  # start_run takes it out of the environment
        try:
            return handler(args)
        except BaseException as error:
            if run_id:
                _record_or_warn(run_id, args.domain_id, error)
            raise

    return run


def _record_or_warn(run_id: str, domain_id: str, error: BaseException) -> None:
    """The record, if MLflow takes it: its own failure must not hide ``error``."""
    from mlflow.tracking import MlflowClient

    from domain_mlflow.redaction import Redactor

    try:
        record_entry_point_failure(MlflowClient(), run_id, domain_id, error,
                                   Redactor.from_environment())
    except Exception as problem:
        _log.warning("could not record the failure on MLflow run %s: %s", run_id, problem)
