"""The loopback stack of ``deploy/stack.py``, started for one test and stopped after it:
the MLflow server, pollers, webhook receivers and dashboard as processes, on a fresh
PostgreSQL database (MLflow) and schema (config store), a Redis key prefix of its own
and the LocalAI double in the test process."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

from tests.helpers import LOCALAI_TEST_KEY, REPO_ROOT, with_search_path

STACK_SCRIPT = REPO_ROOT / "deploy" / "stack.py"
T = TypeVar("T")


@functools.cache
def stack_module() -> ModuleType:
    """``deploy/stack.py`` as a module (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("deploy_stack", STACK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


@dataclass
class RunningStack:
    folder: Path
    config_dsn: str  # the config store every poller and receiver shares
    redis_url: str
    redis_prefix: str
    localai: Any  # tests.localai_double.LocalAIDouble
    env: dict[str, str]  # what deploy/stack.py ran with
    up_output: str

    def state(self) -> dict[str, Any]:
        return json.loads((self.folder / "stack.json").read_text(encoding="utf-8"))

    @property
    def mlflow_url(self) -> str:
        return self.state()["mlflow"]["url"]

    def service(self, name: str) -> dict[str, Any]:
        [record] = [s for s in self.state()["services"] if s["name"] == name]
        return record

    def pids(self, *roles: str) -> set[int]:
        return {s["pid"] for s in self.state()["services"] if s["role"] in roles}

    def script(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(STACK_SCRIPT), *args, "--dir",
                               str(self.folder)], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def kill(self, name: str) -> None:
        """SIGKILL the service's process group, as a crash or the OOM killer would."""
        record = self.service(name)
        os.killpg(record["pid"], signal.SIGKILL)
        wait_for(f"{name} to be gone", lambda: not stack_module().running(record), 10, self)

    def logs(self, lines: int = 15) -> str:
        """The end of every service's log, for failure messages."""
        parts = []
        for log in sorted((self.folder / "logs").glob("*.log")):
            text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            parts.append(f"--- {log.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)


def wait_for(what: str, check: Callable[[], T], timeout: float,
             stack: RunningStack | None = None, last: Callable[[], Any] | None = None) -> T:
    """``check()`` once it is truthy; a clear failure after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as error:  # a service still starting, a row not there yet
            value = error
        if value and not isinstance(value, Exception):
            return value
        time.sleep(0.25)
    seen = last() if last else value
    pytest.fail(f"{what}: not within {timeout:g}s; last seen: {seen!r}\n"
                + (stack.logs() if stack else ""))


def _connect(dsn: str) -> Any:
    import psycopg

    from tests.conftest import _unavailable

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        _unavailable("PostgreSQL", error)


@contextmanager
def loopback_stack(folder: Path, *, pollers: int = 2, receivers: int = 2,
                   poll_interval: float = 1.0) -> Iterator[RunningStack]:
    """``deploy/stack.py up`` against TEST_POSTGRES_DSN and TEST_REDIS_URL with the
    LocalAI double; ``down`` and every database object removed afterwards."""
    import redis

    from tests.conftest import ISOLATED_VARIABLES, TEST_POSTGRES_DSN, TEST_REDIS_URL, _unavailable
    from tests.localai_double import LocalAIDouble

    tag = uuid.uuid4().hex[:10]
    schema, database, prefix = f"stack_{tag}", f"mlflow_stack_{tag}", f"test-stack-{tag}"
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        _unavailable("Redis", error)
    with _connect(TEST_POSTGRES_DSN) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    config_dsn = with_search_path(TEST_POSTGRES_DSN, schema)
    models = folder / "localai-models"
    models.mkdir(parents=True)
    env = {key: value for key, value in os.environ.items() if key not in ISOLATED_VARIABLES}
    env.update(REDIS_KEY_PREFIX=prefix, PROMOTION_RETRY_BASE_SECONDS="0.5",
               PROMOTION_RETRY_MAX_SECONDS="2")
    stack_dir = folder / "stack"
    try:
        with LocalAIDouble(models, api_keys=[LOCALAI_TEST_KEY]) as double:
            done = subprocess.run(
                [sys.executable, str(STACK_SCRIPT), "up", "--dir", str(stack_dir),
                 "--postgres-dsn", config_dsn, "--mlflow-database", database,
                 "--redis-url", TEST_REDIS_URL, "--localai-url", double.url,
                 "--localai-models-dir", str(models), "--localai-api-key", LOCALAI_TEST_KEY,
                 "--pollers", str(pollers), "--receivers", str(receivers),
                 "--mlflow-workers", "2", "--poll-interval", f"{poll_interval:g}",
                 "--host", "127.0.0.1"],
                env=env, capture_output=True, text=True, timeout=300, check=False)
            stack = RunningStack(stack_dir, config_dsn, TEST_REDIS_URL, prefix, double, env,
                                 done.stdout)
            try:
                assert done.returncode == 0, (done.stdout, done.stderr)
                yield stack
            finally:
                if (stack_dir / "stack.json").exists():
                    stack.script("down", "--timeout", "10")
    finally:
        with _connect(TEST_POSTGRES_DSN) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()
