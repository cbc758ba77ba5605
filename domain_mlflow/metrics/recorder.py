"""Serving telemetry recorded off the request path: a bounded queue, flushed in batches.

``DomainClient`` hands each request's record (and each ``feedback``) to a
:class:`TelemetryRecorder`; a background thread writes them in batches, one
multi-row statement per batch, in the order they were handed over. A full queue
never blocks a request: the record is dropped and counted, and the count is itself
written (``telemetry_drops``) with the next batch. ``close()`` (also on context
exit and at interpreter exit) writes everything still queued.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from domain_mlflow.exceptions import DomainMlflowError
from domain_mlflow.sinks.database import utc_now
from domain_mlflow.sinks.telemetry_store import ServingRequest, TelemetryStore

_log = logging.getLogger(__name__)

QUEUE_SIZE = 100_000
BATCH_SIZE = 1_000
FLUSH_SECONDS = 0.2
_CLOSE = object()


@dataclass(frozen=True)
class Feedback:
    """A live quality signal for one request, by its request id."""

    request_id: str
    score: float


class TelemetryRecorder:
    """Records :class:`ServingRequest` and :class:`Feedback` items asynchronously."""

    def __init__(self, store: TelemetryStore, *, queue_size: int = QUEUE_SIZE,
                 batch_size: int = BATCH_SIZE, flush_seconds: float = FLUSH_SECONDS,
                 on_error: Callable[[str], str] | None = None) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.redact = on_error or str
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._dropped: dict[str, int] = {}  # per domain, not yet written
        self.dropped_total = 0
        self.written = 0
        self.failed_batches = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="telemetry-recorder",
                                        daemon=True)
        self._thread.start()
        _open_recorders.add(self)

    # --- the request path -------------------------------------------------------------

    def record(self, item: ServingRequest | Feedback, domain_id: str) -> bool:
        """Queue ``item``; False (and counted as dropped) when the queue is full or the
        recorder is closed. Never blocks."""
        if not self._closed:
            try:
                self._queue.put_nowait(item)
                return True
            except queue.Full:
                pass
        with self._lock:
            self._dropped[domain_id] = self._dropped.get(domain_id, 0) + 1
            self.dropped_total += 1
        return False

    # --- the writer ---------------------------------------------------------------------

    def _run(self) -> None:
        closing = False
        while not closing:
            batch: list[Any] = []
            with contextlib.suppress(queue.Empty):
                batch.append(self._queue.get(timeout=self.flush_seconds))
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            closing = any(item is _CLOSE for item in batch)
            self._write([item for item in batch
                         if isinstance(item, ServingRequest | Feedback)])
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()  # a flush() waits for it: everything before it is written

    def _write(self, batch: list[Any]) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, {}
        if not batch and not dropped:
            return
        requests = [item for item in batch if isinstance(item, ServingRequest)]
        feedback = [item for item in batch if isinstance(item, Feedback)]
        try:
            self.store.record_batch(requests, [(f.request_id, f.score) for f in feedback],
                                    dropped, utc_now())
            self.written += len(requests) + len(feedback)
        except DomainMlflowError as error:  # the store is down: these are lost, and counted
            self.failed_batches += 1
            _log.error("could not record %d serving records: %s", len(batch),
                       self.redact(str(error)))
            with self._lock:
                for item in requests:
                    self._dropped[item.domain_id] = self._dropped.get(item.domain_id, 0) + 1
                for domain, count in dropped.items():
                    self._dropped[domain] = self._dropped.get(domain, 0) + count
                self.dropped_total += len(requests)

    # --- shutdown -----------------------------------------------------------------------

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued before this call is written (or given up on)."""
        if self._closed or not self._thread.is_alive():
            return False
        written = threading.Event()
        self._queue.put(written)  # waits for room: the writer is draining
        return written.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_CLOSE)  # waits for room: the writer is draining
        self._thread.join(timeout)
        _open_recorders.discard(self)

    def __enter__(self) -> TelemetryRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_open_recorders: weakref.WeakSet[TelemetryRecorder] = weakref.WeakSet()


@atexit.register
def _close_open_recorders() -> None:
    for recorder in list(_open_recorders):
        recorder.close()
