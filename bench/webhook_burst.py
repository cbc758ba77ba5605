"""Webhook bursts: our receiver under 500 concurrent deliveries, beside MLflow's own
``test_webhook`` round trip.

    python bench/webhook_burst.py [--postgres-dsn DSN] [--redis-url URL]
        [--deliveries 500] [--concurrency 500] [--versions 4]
        [--reference 200] [--reference-concurrency 50] [--sequential 50]

1. Ours: ``domain-mlflow webhook`` in its own process (Postgres config store, Redis;
   no LocalAI) receives ``--deliveries`` signed ``model_version.created`` deliveries,
   ``--concurrency`` at a time, over loopback (distinct delivery ids over ``--versions``
   versions): deliveries/s, answer time p50/p95/max, statuses, receiver RSS.
2. Reference: a real ``mlflow server`` (SQLite backend) with a webhook pointing at the
   same receiver; ``MlflowClient.test_webhook(id)`` makes MLflow sign and send its test
   event and report the answer: ``--reference`` calls, ``--reference-concurrency`` at a
   time, and ``--sequential`` one at a time, each beside as many deliveries of ours at
   the same concurrency.
Every figure comes from this one run; printed side by side.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.promotion_latency import _fresh_schema, add_service_arguments  # noqa: E402


def make_parser() -> argparse.ArgumentParser:
    parser = add_service_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--deliveries", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--versions", type=int, default=4)
    parser.add_argument("--reference", type=int, default=200,
                        help="concurrent test_webhook calls, and as many deliveries of ours")
    parser.add_argument("--reference-concurrency", type=int, default=50,
                        help="how many at a time, for both")
    parser.add_argument("--sequential", type=int, default=50,
                        help="one-at-a-time round trips of each kind")
    return parser


def _summary(label: str, results: list[tuple[Any, float]], wall: float) -> str:
    seconds = sorted(duration for _, duration in results)
    p95 = seconds[min(len(seconds) - 1, int(0.95 * len(seconds) + 0.5) - 1)]
    statuses = dict(collections.Counter(status for status, _ in results))
    p50 = statistics.median(seconds)
    return (f"{label:44s} {len(results) / wall:8.1f}/s  p50 {p50 * 1000:7.1f} ms  "
            f"p95 {p95 * 1000:7.1f} ms  max {seconds[-1] * 1000:7.1f} ms  {statuses}")


def _timed_calls(call: Any, count: int, concurrency: int) -> tuple[list[tuple[Any, float]], float]:
    def one(_: int) -> tuple[Any, float]:
        started = time.perf_counter()
        try:
            status = call()
        except Exception as error:  # a failed call is a figure here, not a crash
            status = type(error).__name__
        return status, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(count)))
    return results, time.perf_counter() - started


def main(args: argparse.Namespace) -> int:
    import mlflow
    import requests
    from mlflow.tracking import MlflowClient

    from domain_mlflow.promotion.webhook import PATH, register_webhook
    from tests.mlflow_server import free_port, mlflow_server
    from tests.promotion.test_webhook_burst import (
        rss_bytes,
        send_all,
        signed_delivery,
        start_receiver,
    )
    from tests.promotion_helpers import PASSING, register_domain_version

    secret = "bench-burst-secret"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["REDIS_URL"] = args.redis_url
    os.environ["REDIS_KEY_PREFIX"] = f"bench-{os.getpid()}"
    os.environ["WEBHOOK_SECRET"] = secret
    for name in ("LOCALAI_URL", "LOCALAI_MODELS_DIR", "LOCALAI_API_KEY"):
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        os.chdir(workdir)
        with mlflow_server(workdir) as url:
            os.environ["MLFLOW_TRACKING_URI"] = url
            mlflow.set_tracking_uri(url)
            mlflow.set_registry_uri(url)
            os.environ["POSTGRES_DSN"] = _fresh_schema(args.postgres_dsn)
            client = MlflowClient()
            versions = [register_domain_version(f"burst-{n}", PASSING, client)
                        for n in range(args.versions)]
            port = free_port()
            receiver_url = f"http://127.0.0.1:{port}{PATH}"
            with (workdir / "receiver.log").open("w") as log:
                receiver = start_receiver(port, log)
                try:
                    rss_before = rss_bytes(receiver.pid)
                    deliveries = [signed_delivery(versions[n % len(versions)], secret)
                                  for n in range(args.deliveries)]
                    started = time.perf_counter()
                    burst = send_all(receiver_url, deliveries, args.concurrency)
                    burst_wall = time.perf_counter() - started
                    time.sleep(1)
                    rss_after = rss_bytes(receiver.pid)

                    def one_delivery() -> int:
                        body, headers = signed_delivery(versions[0], secret)
                        return requests.post(receiver_url, data=body, headers=headers,
                                             timeout=60).status_code

                    single, single_wall = _timed_calls(one_delivery, args.sequential, 1)
                    alike, alike_wall = _timed_calls(one_delivery, args.reference,
                                                     args.reference_concurrency)

                    webhook = register_webhook(client, receiver_url, secret)
                    time.sleep(2)  # MLFLOW_WEBHOOK_CACHE_TTL is 1 s in tests.mlflow_server

                    def reference() -> int | str:
                        result = client.test_webhook(webhook.webhook_id)
                        return result.response_status or result.error_message or "failed"

                    sequential, sequential_wall = _timed_calls(reference, args.sequential, 1)
                    concurrent, concurrent_wall = _timed_calls(
                        reference, args.reference, args.reference_concurrency)
                finally:
                    receiver.terminate()
                    receiver.wait(timeout=30)
    print(f"(receiver RSS {rss_before / 2**20:.0f} MB before the burst, "
          f"{rss_after / 2**20:.0f} MB after)")
    print(_summary(f"ours: {args.deliveries} deliveries, {args.concurrency} at a time",
                   burst, burst_wall))
    print(_summary(f"ours: {args.reference} deliveries, "
                   f"{args.reference_concurrency} at a time", alike, alike_wall))
    print(_summary(f"MLflow test_webhook: {args.reference} calls, "
                   f"{args.reference_concurrency} at a time", concurrent, concurrent_wall))
    print(_summary(f"ours: {args.sequential} deliveries, one at a time", single, single_wall))
    print(_summary(f"MLflow test_webhook: {args.sequential} calls, one at a time",
                   sequential, sequential_wall))
    return 0


if __name__ == "__main__":
    sys.exit(main(make_parser().parse_args()))
