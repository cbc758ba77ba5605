"""Training runs' loss curves: every logged step of ``training_loss`` and
``validation_loss``, from MLflow's metric history.

Two queries per run, so only a domain's newest few training runs are read.
"""

from __future__ import annotations

from typing import Any

from domain_mlflow.metrics.trends import finite

LOSS_METRICS = ("training_loss", "validation_loss")
CURVE_RUNS = 5


def training_runs(runs: list[Any], limit: int = CURVE_RUNS) -> list[Any]:
    """The newest ``limit`` training runs (tagged ``training_run_id``, as training tags
    them) of ``runs`` (oldest first), oldest first."""
    tagged = [run for run in runs if run.data.tags.get("training_run_id")]
    return tagged[-limit:] if limit > 0 else []


def loss_curves(client: Any, runs: list[Any], limit: int = CURVE_RUNS) -> list[dict[str, Any]]:
    """Per training run, oldest first: its ids, start time and, per loss metric, the
    ``[{step, value}]`` it logged, by step (a non-finite value is None)."""
    curves = []
    for run in training_runs(runs, limit):
        steps = {}
        for metric in LOSS_METRICS:
            history = sorted(client.get_metric_history(run.info.run_id, metric),
                             key=lambda point: (point.step, point.timestamp))
            steps[metric] = [{"step": point.step, "value": finite(point.value)}
                             for point in history]
        curves.append({"run_id": run.info.run_id,
                       "training_run_id": run.data.tags["training_run_id"],
                       "start_time": run.info.start_time, "curves": steps})
    return curves
