"""Promotion latency: webhook vs polling, and poll cycles over many domains.

    python bench/promotion_latency.py [--postgres-dsn DSN] [--redis-url URL]
        [--versions 20] [--poll-interval 1.0] [--domains 1000] [--old-versions 20]
        [--registry sqlite server-postgres] [--server-workers 2] [--rounds 1]
        [--only latency|cycle]

1. Webhook: a real ``mlflow server`` (SQLite backend) sends ``model_version.created``
   to our receiver; time from ``create_model_version`` returning until the config
   store and the Redis key both name the new version (p50/p95).
2. Polling: the same with no webhook and a poller every ``--poll-interval`` seconds.
3. For each ``--registry`` (a SQLite file used in-process, and ``mlflow server`` on
   PostgreSQL over HTTP), on stores copied from one base (see bench/cycle_stores.py):
   with 1 and with ``--old-versions`` old versions per domain: a long-running
   poller's cycle over ``--domains`` domains that each just got one new passing
   version, MLflow's floor for the registry calls that cycle needs on an identical
   store (warmed up, the median of three rounds), and the cycle with nothing new
   (``--rounds`` of our cycle, each followed by a floor: their medians); then
   with 1 old version per domain, one long-running poller
   process against two on the same burst (bench/poller_process.py), ``--rounds``
   times each (at least twice), interleaved, their medians compared; and MLflow's
   floor with its alias writes made by one client process and by two
   (bench/alias_writer.py), as many rounds, interleaved: what a second process can
   gain on this machine at all.

Postgres and Redis default to the local services; LocalAI is not involved (P2 is
about the config store and Redis). Every figure comes from this one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    parser.add_argument("--registry", nargs="+", choices=("sqlite", "server-postgres"),
                        default=["sqlite", "server-postgres"],
                        help="the MLflow stores the poll cycle runs against")
    parser.add_argument("--old-versions", type=int, default=20,
                        help="old versions per domain in the second store (burst, floor "
                             "and no-op cycle)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of our burst cycle, each followed by a floor, per store, "
                             "and of one poller process against two (at least two) (the "
                             "medians are compared: a SQLite store's commits vary)")
    parser.add_argument("--server-workers", type=int, default=2,
                        help="`mlflow server --workers` for server-postgres")
    return parser


def add_service_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The PostgreSQL and Redis a benchmark runs on (the local ones by default)."""
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    return parser


def _fresh_schema(dsn: str) -> str:
    """A DSN on a new schema of ``dsn``'s database, dropped when the bench exits."""
    import atexit
    import uuid

    import psycopg

    from tests.helpers import with_search_path

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    atexit.register(_drop_schema, dsn, schema)
    return with_search_path(dsn, schema)


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SET lock_timeout = '10s'")  # a connection still in use: say so
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    except psycopg.Error as error:
        print(f"schema {schema} was left in place: {error}", file=sys.stderr)


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
    from bench.cycle_stores import new_version_tags
    from domain_mlflow.registry import register_version

    source, run_id = _shared_source(client)
    tags = new_version_tags(domain, index)
    del tags["semver"]  # derived by register_version, as training's is
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


def bench_cycles(args: argparse.Namespace, workdir: Path, kind: str) -> dict[str, float]:
    """At 1 and at ``--old-versions`` old versions per domain: our cycle over a burst
    of one new version per domain, MLflow's floor for it on an identical store and the
    cycle with nothing new; then one poller against two on the burst; seconds."""
    from bench.cycle_stores import base_registry, fresh_config_store

    domains, old = args.domains, args.old_versions
    started = time.perf_counter()
    bases = {1: base_registry(kind, workdir, domains, 1, args.postgres_dsn),
             old: base_registry(kind, workdir, domains, old, args.postgres_dsn)}
    print(f"[{kind}] set-up: {domains} domains with 1 and with {old} old versions each in "
          f"{time.perf_counter() - started:.0f}s")
    figures: dict[str, float] = {}
    rounds: dict[str, list[float]] = {}
    for count, base in bases.items():
        for _ in range(args.rounds):  # ours, then the floor: a drift meets both alike
            store = base.copy("ours")
            dsn = fresh_config_store(args.postgres_dsn, domains, count)
            with store.serving(args.server_workers) as uri:
                for key, value in _our_cycles(store, uri, dsn, domains).items():
                    rounds.setdefault(f"{key} ({count} old)", []).append(value)
            store.drop()
            rounds.setdefault(f"floor ({count} old)", []).append(
                _floor(base, count, args.server_workers, domains))
    figures.update({key: statistics.median(values) for key, values in rounds.items()})
    # One poller against two in --rounds interleaved pairs (at least two): on two busy
    # cores one round of each says little.
    for round_number, pollers in _interleaved(max(2, args.rounds)):
        store = bases[1].copy(f"pollers{round_number}_{pollers}")
        dsn = fresh_config_store(args.postgres_dsn, domains, 1)
        with store.serving(args.server_workers) as uri:
            seconds = _poll_processes(store, uri, dsn, pollers, domains)
        store.drop()
        figures[f"{pollers} poller process(es), burst, round {round_number + 1}"] = seconds
        rounds.setdefault(f"{pollers} poller process(es), burst", []).append(seconds)
    # What a second client process gains MLflow itself on this machine: the floor's
    # alias writes split over one process and over two, interleaved as the pollers were.
    for processes, values in _split_floors(bases[1], args.server_workers, domains,
                                           max(2, args.rounds)).items():
        rounds[f"MLflow's floor over {processes} client process(es)"] = values
        figures[f"MLflow's floor over {processes} client process(es)"] = \
            statistics.median(values)
    for base in bases.values():
        base.drop()
    for count in bases:
        cycle, floor = figures[f"burst cycle ({count} old)"], figures[f"floor ({count} old)"]
        print(f"[{kind}] our cycle over {domains} new versions with {count} old each "
              f"{cycle:.2f}s, MLflow's floor {floor:.2f}s ({cycle / floor:.2f}x)")
    one, two = (statistics.median(rounds[f"{n} poller process(es), burst"]) for n in (1, 2))
    print(f"[{kind}] one poller process on the burst {one:.2f}s, two {two:.2f}s "
          f"(medians of {len(rounds['1 poller process(es), burst'])} rounds each, "
          f"{two / one:.2f}x)")
    alone, split = (figures[f"MLflow's floor over {n} client process(es)"] for n in (1, 2))
    print(f"[{kind}] MLflow's floor over one client process {alone:.2f}s, over two "
          f"{split:.2f}s ({split / alone:.2f}x): what a second process can gain here")
    for key, value in figures.items():
        each = rounds.get(key, [])
        print(f"[{kind}]   {key}: {value:.2f}s" + (
            f" (median of {', '.join(f'{v:.2f}' for v in each)})" if len(each) > 1 else ""))
    return figures


def _interleaved(count: int) -> list[tuple[int, int]]:
    """``count`` rounds of one process against two, as (round, processes) in the order
    1, 2, 2, 1, 1, 2, ...: a drift of the machine during the run meets both alike."""
    return [(round_number, processes) for round_number in range(count)
            for processes in ((1, 2) if round_number % 2 == 0 else (2, 1))]


@contextmanager
def _floor_twin(base: Any, name: str, workers: int, domains: int
                ) -> Iterator[tuple[str, int, float]]:
    """A copy of ``base`` with a new version per domain, served and warmed up: its URI,
    when the burst began (milliseconds) and the warm-up's seconds. Dropped after.

    A round on another alias warms the server as our poller's first cycle warmed it.
    Each measured round creates the production aliases, as our cycle does (an alias
    that exists already is cheaper to set), so the caller deletes them in between."""
    from bench.cycle_stores import register_new_versions

    twin = base.copy(name)
    since = int(time.time() * 1000)
    register_new_versions(twin, domains)
    with twin.serving(workers) as uri:
        yield uri, since, registry_floor(uri, since, alias="bench-warm-up")
    twin.drop()


def _floor(base: Any, old: int, workers: int, domains: int) -> float:
    """MLflow's floor for the burst cycle on a copy of ``base``: the median of three
    rounds after a warm-up; seconds."""
    with _floor_twin(base, "floor", workers, domains) as (uri, since, warm_up):
        rounds = []
        for _ in range(3):
            rounds.append(registry_floor(uri, since))
            delete_aliases(uri, since)
    floor = statistics.median(rounds)
    print(f"  MLflow's floor with {old} old version(s): {floor:.2f}s (rounds "
          f"{', '.join(f'{value:.2f}' for value in rounds)}s after a warm-up of "
          f"{warm_up:.2f}s)", flush=True)
    return floor


def _split_floors(base: Any, workers: int, domains: int, count: int) -> dict[int, list[float]]:
    """MLflow's floor on a copy of ``base`` with its alias writes made by one client
    process and by two (bench/alias_writer.py, half the burst each), ``count`` rounds
    of each interleaved as the pollers are, after a warm-up; seconds per round."""
    seconds: dict[int, list[float]] = {1: [], 2: []}
    with _floor_twin(base, "split", workers, domains) as (uri, since, _warm_up):
        for _round, processes in _interleaved(count):
            seconds[processes].append(_floor_over_processes(uri, since, processes))
            delete_aliases(uri, since)
    print("  MLflow's floor over one / two client processes: "
          + " / ".join(", ".join(f"{value:.2f}" for value in seconds[n]) for n in (1, 2))
          + "s", flush=True)
    return seconds


def _floor_over_processes(uri: str, since_millis: int, count: int) -> float:
    """:func:`registry_floor` with its alias writes split over ``count`` processes that
    are running already: the searches here, then each process sets half (or all) of the
    aliases; seconds until every process is done."""
    import json

    processes = _ready_processes("alias_writer.py", count, {"MLFLOW_TRACKING_URI": uri,
                                                            "MLFLOW_REGISTRY_URI": uri})
    client, calls, _writer, pattern = _registry_calls(uri)
    started = time.perf_counter()
    versions = _floor_reads(client, calls, pattern, since_millis)
    pairs = sorted((version.name, version.version) for version in versions)
    if not pairs:
        raise RuntimeError("no new versions to set aliases on")
    for index, process in enumerate(processes):
        process.stdin.write(json.dumps(pairs[index::count]) + "\n")
        process.stdin.flush()
    for process in processes:
        if process.stdout.readline().strip() != "done":
            raise RuntimeError("an alias writer failed")
    elapsed = time.perf_counter() - started
    for process in processes:
        process.communicate(timeout=60)
    return elapsed


def _ready_processes(script: str, count: int, environment: dict[str, str]) -> list[Any]:
    """``count`` processes of ``bench/<script>``, each past its ``ready`` line."""
    import subprocess

    processes = [subprocess.Popen([sys.executable, str(REPO / "bench" / script)],
                                  env={**os.environ, **environment}, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(count)]
    for process in processes:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"bench/{script} did not start")
    return processes


def _our_cycles(store: Any, uri: str, dsn: str, domains: int) -> dict[str, float]:
    """A long-running poller: its first cycle (a full sweep over the old versions), the
    burst, the next cycle once the burst is older than the lookback (it still re-reads the
    versions registered within the lookback before the burst cycle's read), then two
    steady cycles with nothing new."""
    from bench.cycle_stores import (
        analyze_config_store,
        environment,
        register_new_versions,
        wait_out_lookback,
    )
    from domain_mlflow.promotion.engine import Promoter
    from domain_mlflow.promotion.poller import Poller, settle_heap
    from domain_mlflow.services import Services
    from domain_mlflow.settings import load_settings

    environment(uri, dsn)
    poller = Poller(Promoter.from_services(Services(load_settings()), "poller"))
    timed: dict[str, float] = {}
    timed["first cycle, a full sweep"], _ = _timed(poller.poll_once)
    settle_heap()  # as Poller.run does after its first cycle (the floor's rounds gain too)
    print(f"  first cycle (a full sweep, nothing new): {timed['first cycle, a full sweep']:.2f}s",
          flush=True)
    register_new_versions(store, domains)
    registered = time.time()
    timed["burst cycle"], report = _timed(poller.poll_once)
    print(f"  burst cycle: {timed['burst cycle']:.2f}s", flush=True)
    if (report.promoted, report.errors) != (domains, []):
        raise RuntimeError(f"the burst cycle did not promote every domain: {report}")
    wait_out_lookback(registered)
    store.analyze()  # as autovacuum would have after the burst
    analyze_config_store(dsn)
    timed["next cycle, re-reading the lookback"], _ = _timed(poller.poll_once)
    for key in ("cycle with nothing new", "another cycle with nothing new"):
        timed[key], report = _timed(poller.poll_once)
        if report.requested or report.processed or report.repaired:
            raise RuntimeError(f"the cycle with nothing new did something: {report}")
    print("  " + ", ".join(f"{key} {value:.2f}s" for key, value in list(timed.items())[2:])
          + f" ({report.versions_seen} version(s) read)", flush=True)
    return timed


def _timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _poll_processes(store: Any, uri: str, dsn: str, count: int, domains: int) -> float:
    """Seconds from the burst reaching ``count`` long-running poller processes (each
    past its first cycle, see bench/poller_process.py) until each has reported its
    cycle. Also printed: the CPU seconds the pollers used in that time and those the
    whole machine used and left idle (the rest is the server and PostgreSQL)."""
    import json

    from bench.cycle_stores import register_new_versions

    processes = _ready_processes("poller_process.py", count, {
        "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri, "POSTGRES_DSN": dsn})
    register_new_versions(store, domains)
    pollers_cpu, (busy, idle) = _cpu_seconds(processes), _machine_cpu_seconds()
    started = time.perf_counter()
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    reports = [json.loads(process.stdout.readline()) for process in processes]
    elapsed = time.perf_counter() - started
    pollers_cpu = _cpu_seconds(processes) - pollers_cpu
    busy_after, idle_after = _machine_cpu_seconds()
    busy, idle = busy_after - busy, idle_after - idle
    for process in processes:
        process.communicate(timeout=900)
    promoted = [report["promoted"] for report in reports]
    if sum(promoted) != domains:
        raise RuntimeError(f"{count} poller(s) promoted {promoted} of {domains}")
    print(f"  {count} poller(s) promoted {promoted} in {elapsed:.2f}s; CPU: the pollers "
          f"{pollers_cpu:.1f}s, the machine {busy:.1f}s busy and {idle:.1f}s idle",
          flush=True)
    return elapsed


def _cpu_seconds(processes: list[Any]) -> float:
    """User and system CPU seconds of running ``processes`` so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for process in processes:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _machine_cpu_seconds() -> tuple[float, float]:
    """All cores' busy and idle (idle + iowait) CPU seconds since boot (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = [int(field) for field in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / ticks, idle / ticks


def _registry_calls(uri: str) -> tuple[Any, Any, Any, str]:
    """The client, the bounded calls (REGISTRY_CONCURRENCY or the store's default) and
    the alias writer a poller on ``uri`` uses, and the filter of our models."""
    from mlflow.tracking import MlflowClient

    from domain_mlflow.naming import REGISTERED_MODEL_PREFIX
    from domain_mlflow.registry import DomainRegistry, _writer, default_concurrency
    from domain_mlflow.settings import load_settings

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    settings = load_settings()
    calls = DomainRegistry(client, settings.thresholds,
                           concurrency=settings.registry_concurrency or default_concurrency(uri))
    return client, calls, _writer(client), f"name LIKE '{REGISTERED_MODEL_PREFIX}%'"


def registry_floor(uri: str, since_millis: int, alias: str | None = None) -> float:
    """Seconds for the MLflow calls a cycle over a burst cannot do without, made as the
    poller makes them: the search of the versions registered since ``since_millis``,
    the searches for the registered models' policy tags, the ``production`` alias (or
    ``alias``) per new version (side by side, REGISTRY_CONCURRENCY or the store's
    default)."""
    from domain_mlflow.registry import PRODUCTION_ALIAS

    client, calls, writer, pattern = _registry_calls(uri)
    started = time.perf_counter()
    versions = _floor_reads(client, calls, pattern, since_millis)
    calls.each(lambda version: writer.set_registered_model_alias(
        version.name, alias or PRODUCTION_ALIAS, version.version), versions)
    return time.perf_counter() - started


def _floor_reads(client: Any, calls: Any, pattern: str, since_millis: int) -> list[Any]:
    """The reads of MLflow's floor before its alias writes: the versions registered
    since ``since_millis`` (returned) and the registered models' policy tags."""
    from domain_mlflow.registry import policy_tags, versions_since

    versions = versions_since(client, pattern, since_millis)
    policy_tags(client, pattern, calls.each)
    return versions


def delete_aliases(uri: str, since_millis: int) -> None:
    """Remove the ``production`` alias from the versions registered since ``since_millis``."""
    from domain_mlflow.registry import PRODUCTION_ALIAS, versions_since

    client, calls, writer, pattern = _registry_calls(uri)
    calls.each(lambda version: writer.delete_registered_model_alias(
        version.name, PRODUCTION_ALIAS), versions_since(client, pattern, since_millis))


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
        for kind in args.registry:
            (workdir / kind).mkdir()
            bench_cycles(args, workdir / kind, kind)
    return 0


if __name__ == "__main__":
    sys.exit(main(make_parser().parse_args()))
