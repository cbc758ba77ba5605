"""Promotion latency: webhook vs polling, and one poll cycle over many domains.

    python bench/promotion_latency.py [--postgres-dsn DSN] [--redis-url URL]
        [--versions 20] [--poll-interval 1.0] [--domains 1000] [--cycle-rounds 1]
        [--only latency|cycle] [--cycle-store-uri URI] [--sqlite-wal]

1. Webhook: a real ``mlflow server`` (SQLite backend) sends ``model_version.created``
   to our receiver; time from ``create_model_version`` returning until the config
   store and the Redis key both name the new version (p50/p95).
2. Polling: the same with no webhook and a poller every ``--poll-interval`` seconds.
3. One ``poll_once`` over ``--domains`` domains with one new passing version each,
   on a SQLite MLflow store (registry calls in-process), then the next cycle; and,
   on an identical copy of that store, the MLflow calls alone that any cycle must
   make (one search of versions, one of models, alias + ``stage`` tag per version).

Postgres and Redis default to the local services; LocalAI is not involved (P2 is
about the config store and Redis). Every figure comes from this one run.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_parser() -> argparse.ArgumentParser:
    parser = add_service_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--only", choices=("latency", "cycle"), default=None,
                        help="run only the webhook/polling latencies or only the poll cycle")
    parser.add_argument("--cycle-rounds", type=int, default=1,
                        help="poll-cycle rounds, each on fresh stores (medians reported)")
    parser.add_argument("--sqlite-wal", action="store_true",
                        help="put the poll cycle's SQLite MLflow store in WAL journal mode")
    parser.add_argument("--cycle-store-uri", default=None,
                        help="MLflow store for the poll cycle (default: a new SQLite file)")
    return parser


def add_service_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The PostgreSQL and Redis a benchmark runs on (the local ones by default)."""
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    return parser


def _fresh_schema(dsn: str) -> str:
    import uuid

    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{dsn}{'&' if '?' in dsn else '?'}options=-csearch_path%3D{schema}"


_SOURCE: dict[str, tuple[str, str]] = {}


def _shared_source(client: Any) -> tuple[str, str]:
    """One run with a small ``merged_model/`` artifact that every bench version points at."""
    import mlflow

    key = mlflow.get_tracking_uri()
    if key not in _SOURCE:
        with tempfile.TemporaryDirectory() as folder, mlflow.start_run() as run:
            Path(folder, "config.json").write_text("{}")
            mlflow.log_artifacts(folder, "merged_model")
        _SOURCE[key] = (f"{run.info.artifact_uri}/merged_model", run.info.run_id)
    return _SOURCE[key]


def _new_version(client: Any, domain: str, index: int) -> Any:
    from datetime import timedelta

    from domain_mlflow.gate import Thresholds, decide
    from domain_mlflow.naming import model_version
    from domain_mlflow.registry import register_version
    from domain_mlflow.training.publish import version_tags
    from tests.promotion_helpers import _EPOCH, PASSING

    at = _EPOCH + timedelta(seconds=index)
    tags = version_tags(domain_id=domain, model_version=model_version(domain, at),
                        training_run_id=f"{domain}_bench_{index}",
                        decision=decide(PASSING, Thresholds()), metrics=PASSING, extra={})
    source, run_id = _shared_source(client)
    return register_version(client, domain, source, run_id, tags)


def _wait_live(promoter: Any, domain: str, model_version: str, timeout: float = 30.0) -> float:
    """Seconds until the config store and Redis both name ``model_version``."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        config = promoter.store.get_config(domain)
        if config and config.model_version == model_version:
            value = promoter.targets.redis.get(domain)
            if value and value["model_version"] == model_version:
                return time.perf_counter() - started
        time.sleep(0.005)
    raise TimeoutError(f"{domain} never went live with {model_version}")


def _percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered) + 0.5) - 1)]
    return (f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
            f"max {ordered[-1] * 1000:.0f} ms over {len(ordered)} versions")


def bench_webhook_and_polling(args: argparse.Namespace, workdir: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from domain_mlflow.promotion.engine import Promoter
    from domain_mlflow.promotion.poller import Poller
    from domain_mlflow.promotion.webhook import PATH, WebhookReceiver, register_webhook
    from domain_mlflow.services import Services
    from domain_mlflow.settings import load_settings
    from tests.mlflow_server import mlflow_server

    secret = "bench-secret"
    with mlflow_server(workdir) as url:
        os.environ["MLFLOW_TRACKING_URI"] = url
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        os.environ["POSTGRES_DSN"] = _fresh_schema(args.postgres_dsn)
        promoter = Promoter.from_services(Services(load_settings()), "bench")
        receiver = WebhookReceiver(
            Promoter.from_services(Services(load_settings()), "webhook"), secret)
        server = receiver.serve("127.0.0.1", 0)
        webhook = register_webhook(MlflowClient(), f"http://127.0.0.1:"
                                   f"{server.server_address[1]}{PATH}", secret)
        time.sleep(2)  # the server caches its webhook list for MLFLOW_WEBHOOK_CACHE_TTL (1 s)
        client = MlflowClient()
        by_webhook = []
        for index in range(args.versions):
            version = _new_version(client, "bench-webhook", index)
            by_webhook.append(_wait_live(promoter, "bench-webhook",
                                         version.tags["model_version"]))
        receiver.stop()
        client.delete_webhook(webhook.webhook_id)
        print(f"webhook → live (config store + Redis): {_percentiles(by_webhook)}")

        stop = threading.Event()
        poller = Poller(Promoter.from_services(Services(load_settings()), "poller"))
        thread = threading.Thread(target=poller.run, args=(args.poll_interval, stop),
                                  daemon=True)
        thread.start()
        by_polling = []
        for index in range(args.versions):
            version = _new_version(client, "bench-poll", 1000 + index)
            by_polling.append(_wait_live(promoter, "bench-poll", version.tags["model_version"]))
        stop.set()
        thread.join()
        print(f"polling every {args.poll_interval:g}s → live: {_percentiles(by_polling)}")


def bench_poll_cycle(args: argparse.Namespace, workdir: Path) -> tuple[float, float, float]:
    """(first cycle, next cycle, MLflow alone) in seconds; MLflow alone is NaN unless the
    cycle's store is a SQLite file (it runs on a copy of it)."""
    import shutil

    import mlflow
    from mlflow.tracking import MlflowClient

    from domain_mlflow.promotion.engine import Promoter
    from domain_mlflow.promotion.poller import Poller
    from domain_mlflow.services import Services
    from domain_mlflow.settings import load_settings

    uri = args.cycle_store_uri or f"sqlite:///{workdir / 'cycle.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    os.environ["POSTGRES_DSN"] = _fresh_schema(args.postgres_dsn)
    client = MlflowClient()
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    if path and args.sqlite_wal:
        client.search_registered_models()  # MLflow creates its tables
        _sqlite(path, "PRAGMA journal_mode=WAL")  # kept in the file: the twin has it too
    started = time.perf_counter()
    for index in range(args.domains):
        _new_version(client, f"cycle-{index:04d}", index)
    print(f"(set-up: {args.domains} domains registered in {time.perf_counter() - started:.1f}s)")
    twin = None
    if path:
        twin = workdir / "floor.db"
        _sqlite(path, "PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
        shutil.copyfile(path, twin)
    poller = Poller(Promoter.from_services(Services(load_settings()), "poller"))
    started = time.perf_counter()
    report = poller.poll_once()
    elapsed = time.perf_counter() - started
    print(f"one poll cycle over {args.domains} domains, one new version each: {elapsed:.2f}s "
          f"(requested {report.requested}, promoted {report.promoted}, errors "
          f"{len(report.errors)}, {poller.workers} worker(s))")
    started = time.perf_counter()
    report = poller.poll_once()
    nothing_new = time.perf_counter() - started
    print(f"the next cycle, nothing new: {nothing_new:.2f}s (repaired {len(report.repaired)})")
    floor = math.nan
    if twin is not None:
        floor = registry_floor(f"sqlite:///{twin}")
        print(f"MLflow alone on an identical copy of the store, the registry calls a cycle "
              f"cannot do without: {floor:.2f}s (our own work in the cycle: "
              f"{elapsed - floor:.2f}s)")
    return elapsed, nothing_new, floor


def _sqlite(path: str, statement: str) -> None:
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        connection.execute(statement).fetchall()
    finally:
        connection.close()


def registry_floor(uri: str) -> float:
    """Seconds for the MLflow calls any poll cycle must make: one search of the versions,
    one of the registered models (their thresholds), and per version the ``production``
    alias and the ``stage`` tag, made the way the promoter makes them."""
    from mlflow.tracking import MlflowClient

    from domain_mlflow.naming import REGISTERED_MODEL_PREFIX
    from domain_mlflow.promotion.poller import _paged
    from domain_mlflow.registry import PRODUCTION_ALIAS, STAGE_TAG, _writer

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    pattern = f"name LIKE '{REGISTERED_MODEL_PREFIX}%'"
    started = time.perf_counter()
    versions = _paged(client.search_model_versions, filter_string=pattern)
    _paged(client.search_registered_models, filter_string=pattern)
    writer = _writer(client)
    for version in versions:
        writer.set_registered_model_alias(version.name, PRODUCTION_ALIAS, version.version)
        writer.set_model_version_tag(version.name, version.version, STAGE_TAG, "production")
    return time.perf_counter() - started


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["REDIS_URL"] = args.redis_url
    os.environ["REDIS_KEY_PREFIX"] = f"bench-{os.getpid()}"
    for name in ("LOCALAI_URL", "LOCALAI_MODELS_DIR"):
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        os.chdir(workdir)
        if args.only != "cycle":
            bench_webhook_and_polling(args, workdir)
        if args.only == "latency":
            return 0
        rounds = []
        for number in range(args.cycle_rounds):
            (workdir / f"cycle-{number}").mkdir()
            rounds.append(bench_poll_cycle(args, workdir / f"cycle-{number}"))
        if len(rounds) > 1:
            cycle, nothing_new, floor = (statistics.median(column)
                                         for column in zip(*rounds, strict=True))
            print(f"medians over {len(rounds)} rounds: cycle {cycle:.2f}s, next cycle "
                  f"{nothing_new:.2f}s, MLflow alone {floor:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(make_parser().parse_args()))
