"""Shared fixtures: a real MLflow store per test, one tiny base model per session."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never leave the machine: no model hub, no MLflow usage telemetry. Set before
# anything imports huggingface_hub or mlflow, which read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

from tests.helpers import EXAMPLES, LOCALAI_TEST_KEY, with_search_path

# Variables a developer's shell may carry that would leak into the tests.
ISOLATED_VARIABLES = (
    "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI", "DEPLOY_ACCURACY_THRESHOLD", "DEPLOY_LATENCY_THRESHOLD",
    "DEPLOY_LOSS_THRESHOLD", "DEPLOY_VAL_LOSS_THRESHOLD", "CHECKPOINT_DIR", "MODEL_OUTPUT_DIR",
    "POSTGRES_DSN", "REDIS_URL", "LOCALAI_URL", "LOCALAI_API_KEY",
)


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where the tiny base is built once for the whole session.

    A developer may point DOMAIN_MLFLOW_CACHE_DIR at an existing cache to skip the
    build; CI leaves it unset, so the build itself is exercised every run.
    """
    return os.environ.get("DOMAIN_MLFLOW_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite MLflow store, made once by MLflow itself in a process of its own.

    A new store runs every one of MLflow's schema migrations (about 2 s here); a copy
    of this one is ready in milliseconds.
    """
    folder = tmp_path_factory.mktemp("empty-mlflow-store")
    path = folder / "mlflow.db"
    make = ("import sys; from mlflow.tracking import MlflowClient; "
            "client = MlflowClient(tracking_uri=sys.argv[1], registry_uri=sys.argv[1]); "
            "client.search_experiments(); client.search_registered_models()")
    done = subprocess.run([sys.executable, "-c", make, f"sqlite:///{path}"], cwd=folder,
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.fail(f"MLflow could not create an empty store: {done.stderr[-2000:]}")
    return path


def _new_mlflow_store(empty: Path, folder: Path) -> Path:
    """A copy of ``empty`` in ``folder`` whose Default experiment is as MLflow would make
    it there: artifacts under ``folder/mlruns/0``, created now."""
    path = folder / "mlflow.db"
    shutil.copyfile(empty, path)
    now = int(time.time() * 1000)
    connection = sqlite3.connect(path)
    try:
        connection.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, "
                           "last_update_time = ? WHERE experiment_id = 0",
                           (str(folder / "mlruns" / "0"), now, now))
        connection.commit()
    finally:
        connection.close()
    return path


@pytest.fixture(autouse=True)
def isolated_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_cache_dir: str,
    empty_mlflow_store: Path,
) -> Iterator[str]:
    """A fresh SQLite MLflow store and output folders in ``tmp_path`` for every test."""
    import mlflow

    for name in ISOLATED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    uri = f"sqlite:///{_new_mlflow_store(empty_mlflow_store, tmp_path)}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DOMAIN_MLFLOW_CACHE_DIR", tiny_cache_dir)
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("MODEL_OUTPUT_DIR", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    while mlflow.active_run():
        mlflow.end_run()
    # MLflow remembers the experiment last set in-process; a fresh store has only "0".
    mlflow.tracking.fluent._active_experiment_id = None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def tiny_base(tiny_cache_dir: str) -> Path:
    from domain_mlflow.training.tiny_base import ensure_tiny_base

    return ensure_tiny_base(tiny_cache_dir, progress=False)


@pytest.fixture
def small_sql_data(tmp_path: Path) -> Path:
    """40 records of the SQL example: enough for a split, quick to train and evaluate."""
    lines = (EXAMPLES / "sql_agent.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    path = tmp_path / "small_sql.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- real services --------------------------------------------------------------

TEST_POSTGRES_DSN = os.environ.get("TEST_POSTGRES_DSN",
                                   "postgresql://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(service: str, error: Exception) -> None:
    """Skip on a developer machine without the service; fail in CI, where it must run."""
    message = f"{service} is not reachable: {error}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A DSN whose search_path is a fresh schema, dropped afterwards."""
    import uuid

    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(TEST_POSTGRES_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as error:
        _unavailable("PostgreSQL", error)
    yield with_search_path(TEST_POSTGRES_DSN, schema)
    with psycopg.connect(TEST_POSTGRES_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def store_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The config store the environment names: the SQLite file, or a fresh Postgres schema."""
    if request.param == "postgres":
        monkeypatch.setenv("POSTGRES_DSN", request.getfixturevalue("postgres_dsn"))
    return request.param


@pytest.fixture
def redis_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test Redis, with a key prefix of this test's own (removed afterwards)."""
    import uuid

    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        _unavailable("Redis", error)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)
    yield TEST_REDIS_URL
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def localai(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The LocalAI double on a free port, its models folder and key in the environment."""
    from tests.localai_double import LocalAIDouble

    models = tmp_path / "localai-models"
    models.mkdir()
    with LocalAIDouble(models, api_keys=[LOCALAI_TEST_KEY]) as double:
        monkeypatch.setenv("LOCALAI_URL", double.url)
        monkeypatch.setenv("LOCALAI_API_KEY", LOCALAI_TEST_KEY)
        monkeypatch.setenv("LOCALAI_MODELS_DIR", str(models))
        yield double
