"""A real ``mlflow server`` on loopback (SQLite backend unless told), set up to send webhooks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def mlflow_server(folder: Path, startup_seconds: float = 90.0, *,
                  backend_store_uri: str | None = None, workers: int = 1) -> Iterator[str]:
    """Start the server as the loopback stack runs it (deploy/stack.py), wait for
    ``/health``, yield its URL, stop it. MLflow's list of webhooks is cached for 1 s."""
    from cryptography.fernet import Fernet

    from tests.stack import stack_module

    stack = stack_module()
    port = free_port()
    env = {**os.environ, **stack.mlflow_server_env(Fernet.generate_key().decode(), 1),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = stack.mlflow_server_command(
        backend_store_uri or f"sqlite:///{folder / 'server.db'}",
        str(folder / "server-artifacts"), workers, "127.0.0.1", port)
    log = (folder / "mlflow-server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, *stack.PROGRAMS[command[0]], *command[1:]],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(folder / 'mlflow-server.log')}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not become healthy in time")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
