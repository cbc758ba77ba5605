"""Small helpers over MLflow's tracking client: batched metrics, params logged once."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

# MLflow caps one log_batch call at 1000 metrics and 100 params.
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100


class BatchedMetricLogger:
    """Collects per-step metrics and sends them in asynchronous ``log_batch`` calls.

    One call per ``flush_every`` values instead of one synchronous call per step
    keeps logging off the training step's critical path.
    """

    def __init__(self, client: MlflowClient, run_id: str, flush_every: int = 50) -> None:
        self.client = client
        self.run_id = run_id
        self.flush_every = max(1, min(flush_every, _MAX_METRICS_PER_BATCH))
        self._pending: list[Metric] = []
        self._operations: list[Any] = []

    def log(self, key: str, value: float, step: int) -> None:
        self._pending.append(Metric(key, float(value), int(time.time() * 1000), step))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            operation = self.client.log_batch(self.run_id, metrics=batch, synchronous=False)
            if operation is not None:
                self._operations.append(operation)

    def close(self) -> None:
        """Send what is pending and wait until MLflow has stored every batch."""
        self.flush()
        for operation in self._operations:
            operation.wait()
        self._operations.clear()


def log_params_once(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log ``params`` except those the run already has.

    ``mlflow run`` logs the MLproject parameters itself, spelled as the user typed
    them (``2e-3``); logging ``0.002`` under the same key would be refused.
    """
    existing = client.get_run(run_id).data.params
    fresh = [Param(key, str(value)) for key, value in params.items() if key not in existing]
    for start in range(0, len(fresh), _MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=fresh[start : start + _MAX_PARAMS_PER_BATCH])
