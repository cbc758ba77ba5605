"""Serving overhead of ``DomainClient`` and the throughput of its telemetry path.

1. Overhead: ``DomainClient.complete`` against the LocalAI double vs a bare
   ``requests`` call to the same double (same payload, same auth, both on a kept-alive
   session), interleaved in one run (which goes first alternates). The overhead is the
   difference of the two latency distributions at p50 and p95. ``DomainClient`` here
   resolves its pointer from Redis (cached), calls LocalAI and hands the record to
   its recorder, which writes it to PostgreSQL in the background.
2. Telemetry throughput: ``--records`` records handed to a ``TelemetryRecorder`` on
   PostgreSQL as fast as one thread can, then ``close()``; records/s from the first
   hand-over to the end of ``close()``, and the rows and drop counts found afterwards.

   With ``--split P`` the domain has a canary split of P % (both arms on the one
   served version) and every request carries a routing key: the routing's cost.

    python bench/serving_overhead.py [--requests 2000] [--records 50000] [--split 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from promotion_latency import _fresh_schema, add_service_arguments  # noqa: E402

DOMAIN = "bench-serving"
API_KEY = "bench-key"


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _serving_double(models: Path) -> tuple[Any, str]:
    """The LocalAI double serving one version of DOMAIN under its versioned name."""
    from domain_mlflow.sinks.localai import LocalAIClient, LocalAISink
    from tests.localai_double import LocalAIDouble

    double = LocalAIDouble(models, api_keys=[API_KEY]).__enter__()
    model_version = f"{DOMAIN}-v20261201_000000"
    weights = models / DOMAIN / model_version
    weights.mkdir(parents=True)
    (weights / "config.json").write_text("{}")
    LocalAIClient(double.url, API_KEY).import_config(
        LocalAISink.versioned_config(DOMAIN, model_version))
    return double, model_version


def measure_overhead(args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    import requests

    from domain_mlflow import DomainClient
    from domain_mlflow.services import Services
    from domain_mlflow.settings import load_settings

    with tempfile.TemporaryDirectory() as folder:
        double, model_version = _serving_double(Path(folder))
        settings = load_settings({"REDIS_URL": args.redis_url, "REDIS_KEY_PREFIX":
                                  f"bench-{uuid.uuid4().hex[:8]}", "POSTGRES_DSN": dsn,
                                  "LOCALAI_URL": double.url, "LOCALAI_API_KEY": API_KEY})
        services = Services(settings)
        payload: dict[str, Any] = {"serving_name": DOMAIN, "model_version": model_version}
        if args.split:
            # A canary's split, both arms on the one served version: the routing's cost.
            payload["split"] = {"rollout_id": 1, "kind": "canary", "percent": args.split,
                                "registry_version": 2, "model_version": model_version,
                                "step": 0}
        services.redis.publish_configs([(DOMAIN, payload, "bench")])
        session = requests.Session()
        url = f"{double.url}/v1/completions"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        ours, bare = [], []
        with DomainClient(DOMAIN, services=services) as client:
            for warm in range(20):
                client.complete(f"warm-up {warm}")
                session.post(url, json={"model": model_version, "prompt": "w",
                                        "max_tokens": 64}, headers=headers, timeout=10)
            for number in range(args.requests):
                prompt = f"How many orders in {2000 + number % 50}?"
                key = f"user-{number}" if args.split else None
                calls = [("ours", lambda p=prompt, k=key: client.complete(p, routing_key=k)),
                         ("bare", lambda p=prompt: session.post(
                             url, json={"model": model_version, "prompt": p, "max_tokens": 64},
                             headers=headers, timeout=10).json())]
                for name, call in calls if number % 2 else reversed(calls):
                    started = time.perf_counter()
                    call()
                    (ours if name == "ours" else bare).append(
                        (time.perf_counter() - started) * 1000.0)
            dropped = client.dropped
        with services.store.database.transaction() as tx:
            recorded = tx.execute("SELECT COUNT(*) AS n FROM serving_requests")[0]["n"]
            arms = {row["arm"]: row["n"] for row in tx.execute(
                "SELECT arm, COUNT(*) AS n FROM serving_requests GROUP BY arm")}
        services.close()
        double.__exit__(None, None, None)
    return {"ours": ours, "bare": bare, "recorded": recorded, "dropped": dropped,
            "expected": args.requests + 20, "arms": arms}


def measure_recording(args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    from domain_mlflow.metrics.recorder import TelemetryRecorder
    from domain_mlflow.sinks.config_store import ConfigStore
    from domain_mlflow.sinks.telemetry_store import ServingRequest, TelemetryStore

    store = ConfigStore.open(dsn, "unused.db")
    telemetry = TelemetryStore(store.database)
    now = datetime.now(UTC)
    records = [ServingRequest(domain_id=DOMAIN, serving_name=DOMAIN, model_version="v1",
                              started_at=now, latency_ms=12.5, status="ok",
                              query_pattern="how many orders in <num>?", http_status=200,
                              prompt_tokens=6, completion_tokens=8, request_id=uuid.uuid4().hex)
               for _ in range(args.records)]
    recorder = TelemetryRecorder(telemetry, queue_size=args.records + 1)
    started = time.perf_counter()
    accepted = sum(recorder.record(record, DOMAIN) for record in records)
    handed_over = time.perf_counter() - started
    recorder.close()
    elapsed = time.perf_counter() - started
    with store.database.transaction() as tx:
        rows = tx.execute("SELECT COUNT(*) AS n FROM serving_requests")[0]["n"]
    drops = sum(telemetry.dropped_since(datetime(2000, 1, 1, tzinfo=UTC)).values())
    store.close()
    return {"records": args.records, "accepted": accepted, "rows": rows, "dropped": drops,
            "handed_over_s": handed_over, "elapsed_s": elapsed}


def main() -> int:
    parser = add_service_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--split", type=float, default=0.0, metavar="PERCENT",
                        help="serve through a canary split of this share (routing by key)")
    args = parser.parse_args()

    overhead = measure_overhead(args, _fresh_schema(args.postgres_dsn))
    ours, bare = overhead["ours"], overhead["bare"]
    print(f"{args.requests} requests each, interleaved (latency ms):")
    for name, values in (("DomainClient.complete", ours), ("bare requests call", bare)):
        print(f"  {name:22s} p50 {statistics.median(values):7.3f}  p95 {_p(values, 0.95):7.3f}"
              f"  p99 {_p(values, 0.99):7.3f}")
    print(f"overhead: p50 {statistics.median(ours) - statistics.median(bare):+.3f} ms, "
          f"p95 {_p(ours, 0.95) - _p(bare, 0.95):+.3f} ms")
    print(f"records written by the clients: {overhead['recorded']} of {overhead['expected']}, "
          f"dropped {overhead['dropped']}"
          + (f"; {overhead['arms']}" if args.split else ""))

    recording = measure_recording(args, _fresh_schema(args.postgres_dsn))
    rate = recording["records"] / recording["elapsed_s"]
    print(f"telemetry path: {recording['records']} records handed over in "
          f"{recording['handed_over_s']:.3f} s "
          f"({recording['handed_over_s'] / recording['records'] * 1e6:.1f} µs each), "
          f"all written after {recording['elapsed_s']:.3f} s: {rate:,.0f} records/s; "
          f"rows {recording['rows']}, dropped {recording['dropped']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
