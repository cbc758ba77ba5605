"""Identical MLflow registries for the poll-cycle benchmark, on SQLite or on
``mlflow server`` over PostgreSQL, and the config stores that go with them.

A *base* registry holds ``domains`` registered models with ``old`` versions each,
registered a day ago and already decided (a rejected promotion record each in the
config store). The old versions beyond the first are copies of it made in SQL, so
that 20 per domain take seconds to set up. Every measured store is a copy of a base,
and the new versions it gets are registered through MLflow's own API.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DAY_MILLIS = 86_400_000
_VERSION_TABLES = ("model_versions", "model_version_tags")


def new_version_tags(domain: str, index: int) -> dict[str, str]:
    """The tags training gives a passing version (model_version, metrics, semver)."""
    from tests.promotion_helpers import _EPOCH, PASSING, training_tags

    tags = training_tags(domain, PASSING, _EPOCH + timedelta(seconds=index))
    return {**tags, "semver": f"1.0.{index}"}


def domain_name(index: int) -> str:
    return f"cycle-{index:04d}"


@dataclass
class Registry:
    """One MLflow store: a SQLite file, or a PostgreSQL database behind ``mlflow server``."""

    kind: str  # sqlite | server-postgres
    uri: str  # where set-up writes in-process (sqlite:///..., postgresql+psycopg://...)
    folder: Path
    admin_dsn: str | None = None
    database: str | None = None

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def sql(self, statements: list[str]) -> None:
        if self.kind == "sqlite":
            connection = sqlite3.connect(self.uri[len("sqlite:///"):])
            try:
                for statement in statements:
                    connection.execute(statement)
                connection.commit()
            finally:
                connection.close()
            return
        import psycopg

        with psycopg.connect(_database_dsn(self.admin_dsn, self.database)) as connection:
            for statement in statements:
                connection.execute(statement)

    def analyze(self) -> None:
        """What PostgreSQL's autovacuum does within a minute of a burst: fresh planner
        statistics (autovacuum is off on the PostgreSQL here). Without them MLflow's
        query for the registered models' latest versions runs as a nested loop over
        every version: 1.7 s for a page of 20 models over 2,000 versions, 4 ms after."""
        if self.kind != "sqlite":
            self.sql(["ANALYZE"])

    def copy(self, name: str) -> Registry:
        """An identical copy of this store (no one may be connected to it meanwhile)."""
        if self.kind == "sqlite":
            path = self.folder / f"{name}.db"
            shutil.copyfile(self.uri[len("sqlite:///"):], path)
            return Registry("sqlite", f"sqlite:///{path}", self.folder)
        import psycopg

        database = f"{self.database}_{name}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as connection:
            connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = %s AND pid <> pg_backend_pid()",
                               (self.database,))
            connection.execute(f"CREATE DATABASE {database} TEMPLATE {self.database}")
        return Registry(self.kind, _database_uri(self.admin_dsn, database), self.folder,
                        self.admin_dsn, database)

    @contextmanager
    def serving(self, workers: int = 2) -> Iterator[str]:
        """The URI a poller uses: the SQLite file itself, or an ``mlflow server`` on the
        database with proxied artifacts."""
        if self.kind == "sqlite":
            yield self.uri
            return
        from tests.mlflow_server import mlflow_server

        folder = self.folder / f"server-{self.database}"
        folder.mkdir(exist_ok=True)
        with mlflow_server(folder, backend_store_uri=self.uri, workers=workers) as url:
            yield url

    def drop(self) -> None:
        if self.kind == "sqlite":
            return
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as connection:
            connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = %s AND pid <> pg_backend_pid()",
                               (self.database,))
            connection.execute(f"DROP DATABASE IF EXISTS {self.database}")


def _database_dsn(admin_dsn: str, database: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    return make_conninfo(**{**conninfo_to_dict(admin_dsn), "dbname": database})


def _database_uri(admin_dsn: str, database: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(admin_dsn)
    user = parts.get("user", "postgres")
    password = f":{parts['password']}" if parts.get("password") else ""
    host, port = parts.get("host", "127.0.0.1"), parts.get("port", "5432")
    return f"postgresql+psycopg://{user}{password}@{host}:{port}/{database}"


def base_registry(kind: str, folder: Path, domains: int, old: int,
                  admin_dsn: str | None = None) -> Registry:
    """``domains`` registered models with ``old`` versions each, all registered a day ago."""
    if kind == "sqlite":
        registry = Registry(kind, f"sqlite:///{folder / f'base-{old}.db'}", folder)
    else:
        import psycopg

        database = f"bench_{uuid.uuid4().hex[:8]}_{old}"
        with psycopg.connect(admin_dsn, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {database}")
        registry = Registry(kind, _database_uri(admin_dsn, database), folder, admin_dsn,
                            database)
    client = registry.client()
    for index in range(domains):
        name = f"domain.{domain_name(index)}"
        client.create_registered_model(name, tags={"domain_id": domain_name(index)})
        client.create_model_version(name, source=f"file:///tmp/bench-models/{index}", run_id=None,
                                    tags=new_version_tags(domain_name(index), index))
    columns = {table: _columns(registry, table) for table in _VERSION_TABLES}
    statements = [f"UPDATE model_versions SET creation_time = creation_time - {DAY_MILLIS}, "
                  f"last_updated_time = last_updated_time - {DAY_MILLIS}"]
    for number in range(2, old + 1):  # copies of version 1, one minute apart, still a day old
        for table in _VERSION_TABLES:
            chosen = ", ".join(columns[table])
            shifted = ", ".join(
                f"version + {number - 1}" if column == "version"
                else f"{column} + {(number - 1) * 60_000}"
                if column in ("creation_time", "last_updated_time") else column
                for column in columns[table])
            statements.append(f"INSERT INTO {table} ({chosen}) SELECT {shifted} FROM {table} "
                              "WHERE version = 1")
    # As MLflow stamps them: a registered model was last updated when its newest version was.
    statements.append("UPDATE registered_models SET last_updated_time = (SELECT "
                      "MAX(creation_time) FROM model_versions "
                      "WHERE model_versions.name = registered_models.name)")
    registry.sql(statements)
    registry.analyze()  # a copy takes its statistics along
    return registry


def _columns(registry: Registry, table: str) -> list[str]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(registry.uri)
    try:
        return [column["name"] for column in sqlalchemy.inspect(engine).get_columns(table)]
    finally:
        engine.dispose()


def register_new_versions(registry: Registry, domains: int) -> float:
    """One new passing version per domain through MLflow's API; returns seconds taken."""
    client = registry.client()
    started = time.perf_counter()
    for index in range(domains):
        client.create_model_version(f"domain.{domain_name(index)}",
                                    source=f"file:///tmp/bench-models/{index}", run_id=None,
                                    tags=new_version_tags(domain_name(index), 10_000 + index))
    return time.perf_counter() - started


def fresh_config_store(admin_dsn: str, domains: int, old: int) -> str:
    """A config store in a new schema where every old version has a rejected record."""
    from bench.promotion_latency import _fresh_schema
    from domain_mlflow.promotion.engine import Promoter
    from domain_mlflow.sinks.config_store import ConfigStore

    dsn = _fresh_schema(admin_dsn)
    store = ConfigStore.open(dsn, None)
    day_ago = datetime.now(UTC) - timedelta(days=1)
    fields = Promoter.request_fields
    records = []
    for index in range(domains):
        domain = domain_name(index)
        for number in range(1, old + 1):
            version = SimpleNamespace(
                name=f"domain.{domain}", version=number, run_id=None,
                tags=new_version_tags(domain, index),
                creation_timestamp=int((day_ago.timestamp() + 60 * (number - 1)) * 1000))
            records.append(fields(SimpleNamespace(actor="bench"), domain, version,
                                  reason="decided before the bench"))
    store.create_promotions(records)
    with store.database.transaction() as tx:
        tx.execute("UPDATE promotions SET state = 'rejected'")
    store.close()
    analyze_config_store(dsn)
    return dsn


def analyze_config_store(dsn: str) -> None:
    """Fresh planner statistics for the config store's tables in ``dsn``'s schema (see
    :meth:`Registry.analyze`)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as connection:
        tables = connection.execute("SELECT tablename FROM pg_tables "
                                    "WHERE schemaname = current_schema()").fetchall()
        for (table,) in tables:
            connection.execute(f'ANALYZE "{table}"')


def wait_out_lookback(since: float) -> None:
    """Sleep until the poller's lookback no longer reaches the versions registered at
    ``since`` (``time.time()``), so the next cycle is the steady one."""
    from domain_mlflow.settings import load_settings

    remaining = since + load_settings().poll_lookback_seconds + 1 - time.time()
    if remaining > 0:
        time.sleep(remaining)


def environment(tracking_uri: str, dsn: str) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ["MLFLOW_REGISTRY_URI"] = tracking_uri
    os.environ["POSTGRES_DSN"] = dsn
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
