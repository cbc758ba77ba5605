"""A real ``mlflow server`` on loopback (SQLite backend unless told), set up to send webhooks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stack_server_command(folder: Path, port: int, *, backend_store_uri: str | None = None,
                         workers: int = 1, webhook_cache_ttl: int = 1
                         ) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of the server as the loopback stack runs it
    (deploy/stack.py), with a fresh webhook secret key."""
    from cryptography.fernet import Fernet

    from tests.stack import stack_module

    stack = stack_module()
    env = {**os.environ, **stack.mlflow_server_env(Fernet.generate_key().decode(),
                                                   webhook_cache_ttl),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = stack.mlflow_server_command(
        backend_store_uri or f"sqlite:///{folder / 'server.db'}",
        str(folder / "server-artifacts"), workers, "127.0.0.1", port)
    return [sys.executable, *stack.PROGRAMS[command[0]], *command[1:]], env


@contextmanager
def running_server(argv: Sequence[str], env: Mapping[str, str], port: int, log_path: Path,
                   startup_seconds: float = 90.0) -> Iterator[subprocess.Popen]:
    """Run ``argv`` in its own process group, wait until ``/health`` on ``port``
    answers, yield the process; stop the whole group (workers, job consumers) after."""
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(list(argv), env=dict(env), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log_path}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not become healthy in time: {log_path}")
            time.sleep(0.25)
        yield process
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def mlflow_server(folder: Path, startup_seconds: float = 90.0, *,
                  backend_store_uri: str | None = None, workers: int = 1) -> Iterator[str]:
    """Start the server as the loopback stack runs it, wait for ``/health``, yield its
    URL, stop it. MLflow's list of webhooks is cached for 1 s."""
    port = free_port()
    argv, env = stack_server_command(folder, port, backend_store_uri=backend_store_uri,
                                     workers=workers)
    with running_server(argv, env, port, folder / "mlflow-server.log", startup_seconds):
        yield f"http://127.0.0.1:{port}"
