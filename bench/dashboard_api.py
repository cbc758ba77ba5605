"""``GET /api/metrics`` over many domains vs a naive per-domain ``mlflow.search_runs`` loop.

    python bench/dashboard_api.py [--domains 100] [--runs 100] [--repeats 5] [--store PATH]

Seeds ``--domains`` × ``--runs`` runs (tag ``domain_id``, the seed's metrics) in a
SQLite MLflow store (reused when ``--store`` already holds them), serves the
dashboard on loopback and times, in the same run:

- cold: the first ``/api/metrics`` of a fresh dashboard (its snapshot is empty);
- warm: the following requests (the snapshot is cached for 30 s);
- naive: for each domain one ``mlflow.search_runs`` filtered on its tag, then its
  newest figures — what a dashboard without the collector would do.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METRICS = ("accuracy", "latency_ms", "training_loss", "validation_loss")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--runs", type=int, default=100, help="runs per domain")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--store", default="/tmp/domain-mlflow-bench/dashboard.db",
                        help="SQLite MLflow store to seed or reuse")
    return parser


def seed(domains: int, runs: int) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name("dashboard-bench")
    if experiment is not None:
        existing = client.search_runs([experiment.experiment_id], max_results=1)
        if existing:
            return
        experiment_id = experiment.experiment_id
    else:
        experiment_id = client.create_experiment("dashboard-bench")
    started = time.perf_counter()
    now = int(time.time() * 1000)
    for index in range(runs):
        for domain in range(domains):
            run = client.create_run(experiment_id, start_time=now - (runs - index) * 60_000,
                                    tags={"domain_id": f"domain-{domain:03d}"})
            values = {"accuracy": 0.5 + 0.004 * index + 0.001 * domain,
                      "latency_ms": 200.0 - index, "training_loss": 1.0 / (index + 1),
                      "validation_loss": 1.2 / (index + 1)}
            client.log_batch(run.info.run_id, metrics=[
                Metric(key, value, now, 0) for key, value in values.items()])
            client.set_terminated(run.info.run_id)
    print(f"(seeded {domains * runs} runs in {time.perf_counter() - started:.0f}s)")


def naive(domains: int) -> float:
    import mlflow

    started = time.perf_counter()
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    figures = {}
    for domain in range(domains):
        frame = mlflow.search_runs(experiment_ids=experiments,
                                   filter_string=f"tags.domain_id = 'domain-{domain:03d}'",
                                   order_by=["attributes.start_time DESC"])
        newest = frame.iloc[0] if len(frame) else None
        figures[domain] = {m: None if newest is None else newest.get(f"metrics.{m}")
                           for m in METRICS}
    assert len(figures) == domains
    return time.perf_counter() - started


def serve(collector: Any) -> tuple[str, Any]:
    from werkzeug.serving import make_server

    from dash_app.app import create_app

    app = create_app(collector)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def timed_get(url: str, domains: int) -> float:
    import requests

    started = time.perf_counter()
    answer = requests.get(f"{url}/api/metrics", timeout=120)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200 and len(answer.json()["domains"]) == domains, answer.text
    return elapsed


def main(args: argparse.Namespace) -> int:
    import mlflow

    from domain_mlflow.metrics.collector import DomainMetricsCollector

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    Path(args.store).parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{args.store}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["CONFIG_STORE_PATH"] = str(Path(args.store).with_name("bench-configs.db"))
    os.environ.pop("POSTGRES_DSN", None)
    mlflow.set_tracking_uri(uri)
    seed(args.domains, args.runs)
    cold, warm, naive_times = [], [], []
    for _ in range(args.repeats):
        url, server = serve(DomainMetricsCollector(cache_seconds=30))
        cold.append(timed_get(url, args.domains))
        warm.extend(timed_get(url, args.domains) for _ in range(5))
        server.shutdown()
        naive_times.append(naive(args.domains))
    c, w, n = (statistics.median(x) for x in (cold, warm, naive_times))
    print(f"{args.domains} domains x {args.runs} runs, medians of {args.repeats} rounds:")
    print(f"  /api/metrics cold  {c * 1000:8.0f} ms")
    print(f"  /api/metrics warm  {w * 1000:8.0f} ms   (p95 "
          f"{sorted(warm)[int(0.95 * len(warm)) - 1] * 1000:.0f} ms over {len(warm)})")
    print(f"  naive loop         {n * 1000:8.0f} ms   ({args.domains} search_runs)")
    print(f"warm is {n / w:.0f}x faster than the naive loop; cold is {n / c:.1f}x of it")
    return 0


if __name__ == "__main__":
    sys.exit(main(make_parser().parse_args()))
