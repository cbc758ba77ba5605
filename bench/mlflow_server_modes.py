"""MLflow's server as the stack runs it (gunicorn, no server jobs) beside MLflow's default
(uvicorn, server jobs on), on the same PostgreSQL.

    python bench/mlflow_server_modes.py [--postgres-dsn DSN] [--workers 2] [--writes 1000]
        [--concurrency 8] [--rounds 2]

For each mode, on a fresh database: seconds until ``/health`` answers; the CPU seconds
the server's processes use, idle, in the settling pause after that; what one keep-alive
``GET registered-models/get`` takes, one at a time (p50 of 50); ``--writes`` alias
writes through MlflowClient, ``--concurrency`` at a time, as the poller makes them
(``--rounds`` rounds), with the CPU seconds of the server's processes and of this
process. One mode after the other, in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.promotion_latency import add_service_arguments  # noqa: E402

MODES = ("uvicorn (MLflow's default)", "gunicorn, no server jobs (the stack)")
SETTLE_SECONDS = 45  # the default's job consumers are still importing MLflow before this


def make_parser() -> argparse.ArgumentParser:
    parser = add_service_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    return parser


def _command(mode: str, store_uri: str, folder: Path, workers: int, port: int
             ) -> tuple[list[str], dict[str, str]]:
    from tests.mlflow_server import stack_server_command

    argv, env = stack_server_command(folder, port, backend_store_uri=store_uri,
                                     workers=workers, webhook_cache_ttl=10)
    if mode == MODES[0]:
        at = argv.index("--gunicorn-opts")
        del argv[at : at + 2]
        del env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]
    return argv, env


def _tree_cpu(pid: int) -> float:
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def bench_mode(mode: str, args: argparse.Namespace) -> dict[str, float]:
    import psycopg
    import requests
    from mlflow.tracking import MlflowClient

    from bench.cycle_stores import _database_uri
    from domain_mlflow.registry import _writer
    from tests.mlflow_server import free_port, running_server

    database = f"bench_modes_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres_dsn, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {database}")
    folder = Path(tempfile.mkdtemp(prefix="bench-modes-"))
    port = free_port()
    argv, env = _command(mode, _database_uri(args.postgres_dsn, database), folder,
                         args.workers, port)
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    figures: dict[str, float] = {}
    try:
        with running_server(argv, env, port, folder / "server.log", 180) as server:
            figures["healthy after"] = time.perf_counter() - started
            settling = _tree_cpu(server.pid)
            time.sleep(SETTLE_SECONDS)
            figures[f"server CPU, {SETTLE_SECONDS} s after healthy"] = \
                _tree_cpu(server.pid) - settling
            client = MlflowClient(tracking_uri=url, registry_uri=url)
            models = 200
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(lambda i: (client.create_registered_model(f"m{i}"),
                                         client.create_model_version(f"m{i}", source="s3://b/m",
                                                                     run_id=None)),
                              range(models)))
            session, answers = requests.Session(), []
            for _ in range(51):
                at = time.perf_counter()
                session.get(f"{url}/api/2.0/mlflow/registered-models/get", params={"name": "m0"},
                            timeout=10).raise_for_status()
                answers.append(time.perf_counter() - at)
            figures["keep-alive GET p50 (ms)"] = statistics.median(answers[1:]) * 1000
            writer = _writer(client)
            for round_number in range(1, args.rounds + 1):
                server_cpu, own_cpu = _tree_cpu(server.pid), time.process_time()
                at = time.perf_counter()
                with ThreadPoolExecutor(args.concurrency) as pool:
                    list(pool.map(lambda i, r=round_number: writer.set_registered_model_alias(
                        f"m{i % models}", f"r{r}-{i // models}", "1"), range(args.writes)))
                figures[f"{args.writes} alias writes, round {round_number}"] = \
                    time.perf_counter() - at
                figures[f"  server CPU, round {round_number}"] = _tree_cpu(server.pid) - server_cpu
                figures[f"  client CPU, round {round_number}"] = time.process_time() - own_cpu
    finally:
        with psycopg.connect(args.postgres_dsn, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    return figures


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    results = {mode: bench_mode(mode, args) for mode in MODES}
    print(f"{'':34}" + "".join(f"{mode:>40}" for mode in MODES))
    for key in results[MODES[0]]:
        print(f"{key:34}" + "".join(f"{results[mode][key]:>40.2f}" for mode in MODES))
    return 0


if __name__ == "__main__":
    sys.exit(main(make_parser().parse_args()))
