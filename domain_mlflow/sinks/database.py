"""A thin dialect layer: the same SQL on PostgreSQL (psycopg 3 + pool) and embedded SQLite.

SQL is written once with ``%s`` placeholders; SQLite gets them as ``?``. Types that
differ (ids, timestamps) come from :class:`Dialect`. Named locks are Postgres
advisory locks, or file locks next to the SQLite file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from domain_mlflow.exceptions import ConfigStoreError
from domain_mlflow.redaction import Redactor


@dataclass(frozen=True)
class Dialect:
    name: str
    id_column: str
    timestamp: str


POSTGRES = Dialect("postgresql", "BIGSERIAL PRIMARY KEY", "TIMESTAMPTZ")
SQLITE = Dialect("sqlite", "INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT")


class Transaction(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run ``sql`` once per parameter row (one round trip where the driver can);
        returns the number of rows changed."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_datetime(value: Any) -> datetime | None:
    """Timestamps come back as datetime (Postgres) or ISO text (SQLite)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Database:
    """Connections, transactions and named locks for one config store."""

    dialect: Dialect
    description: str

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        raise NotImplementedError

    def lock(self, name: str, blocking: bool = True, timeout: float = 60.0
             ) -> contextlib.AbstractContextManager[bool]:
        """Hold the named lock for the block; yields False if not acquired."""
        raise NotImplementedError

    @contextlib.contextmanager
    def lock_many(self, names: list[str]) -> Iterator[set[str]]:
        """Try each named lock without waiting; yields the names held for the block."""
        with contextlib.ExitStack() as stack:
            yield {name for name in dict.fromkeys(names)
                   if stack.enter_context(self.lock(name, blocking=False))}

    def close(self) -> None:
        return None

    @property
    def lock_holders(self) -> int:
        """How many threads may hold a lock while still opening transactions."""
        return 64


class _SQLiteTransaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.connection.execute(sql.replace("%s", "?"), _sqlite_values(params))
        if cursor.description is None:
            return []
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        cursor = self.connection.executemany(sql.replace("%s", "?"),
                                             [_sqlite_values(row) for row in rows])
        return cursor.rowcount


def _sqlite_values(params: Sequence[Any]) -> list[Any]:
    return [v.isoformat() if isinstance(v, datetime) else v for v in params]


class SQLiteDatabase(Database):
    """An embedded store: one file, WAL journal, writers serialised by SQLite itself.

    ``read_only`` opens the file as it is (never creating it) and refuses writes."""

    dialect = SQLITE

    def __init__(self, path: str | os.PathLike[str], read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.description = f"sqlite:///{self.path}"

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            # mode=ro fails on a missing file instead of creating it.
            connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                         timeout=30.0, isolation_level=None)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA busy_timeout=30000")
        return connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        try:
            connection = self._connect()
        except sqlite3.Error as error:
            raise ConfigStoreError(f"cannot open config store {self.path}: {error}") from None
        try:
            # IMMEDIATE takes the write lock up front: no upgrade deadlocks between writers.
            # A reader takes no lock until it reads, and never blocks a writer.
            connection.execute("BEGIN" if self.read_only else "BEGIN IMMEDIATE")
            yield _SQLiteTransaction(connection)
            connection.execute("COMMIT")
        except sqlite3.OperationalError as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise ConfigStoreError(f"config store {self.path} failed: {error}") from None
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

    @contextlib.contextmanager
    def lock(self, name: str, blocking: bool = True, timeout: float = 60.0) -> Iterator[bool]:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        # One hidden folder beside the store holds them: `.domain_configs.db.locks/`.
        lock_path = self.path.with_name(f".{self.path.name}.locks") / f"{digest}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            acquired = _flock(handle, blocking, timeout)
            try:
                yield acquired
            finally:
                if acquired:
                    fcntl.flock(handle, fcntl.LOCK_UN)


def _flock(handle: Any, blocking: bool, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if not blocking or time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


class _PostgresTransaction:
    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        self.cursor.execute(sql, tuple(params))
        return list(self.cursor.fetchall()) if self.cursor.description else []

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        self.cursor.executemany(sql, [tuple(row) for row in rows])  # pipelined by psycopg
        return self.cursor.rowcount


class PostgresDatabase(Database):
    """PostgreSQL through a psycopg 3 connection pool, opened on first use.

    ``read_only`` makes every transaction ``READ ONLY``: the server refuses writes."""

    dialect = POSTGRES

    def __init__(self, dsn: str, max_size: int = 16, connect_timeout: float = 5.0,
                 read_only: bool = False) -> None:
        self.dsn = dsn
        self.redact = Redactor.for_urls(dsn)
        self.description = self.redact(dsn)
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.read_only = read_only
        self._pool: Any = None
        self._schema_name: str | None = None

    def _get_pool(self) -> Any:
        if self._pool is None:
            from psycopg_pool import ConnectionPool, PoolTimeout

            pool = ConnectionPool(
                self.dsn, min_size=1, max_size=self.max_size, open=False,
                kwargs={"connect_timeout": max(1, int(self.connect_timeout))},
                timeout=self.connect_timeout,
                configure=_read_only_transactions if self.read_only else None,
            )
            try:
                pool.open(wait=True, timeout=self.connect_timeout)
            except PoolTimeout:
                pool.close()
                raise ConfigStoreError(
                    f"config store {self.description} unreachable: no connection within "
                    f"{self.connect_timeout:g}s"
                ) from None
            self._pool = pool
        return self._pool

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._get_pool().connection() as connection:
                yield connection
        except (PoolTimeout, psycopg.OperationalError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigStoreError(
                self.redact(f"config store {self.description} unreachable: {message}")
            ) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        import psycopg
        from psycopg.rows import dict_row

        try:
            with self._connection() as connection, connection.transaction(), \
                    connection.cursor(row_factory=dict_row) as cursor:
                yield _PostgresTransaction(cursor)
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            # A connection lost mid-transaction: the work rolled back; say so plainly.
            raise ConfigStoreError(self.redact(
                f"config store {self.description} failed: {str(error).splitlines()[0]}"
            )) from None

    @contextlib.contextmanager
    def lock(self, name: str, blocking: bool = True, timeout: float = 60.0) -> Iterator[bool]:
        with self._connection() as connection:
            connection.autocommit = True
            try:
                # Advisory locks are per database; config stores in different schemas of
                # one database (separate deployments, parallel test runs) must not share.
                key = _lock_key(f"{self._schema(connection)}/{name}")
                acquired = self._advisory(connection, key, blocking, timeout)
                try:
                    yield acquired
                finally:
                    if acquired:
                        connection.execute("SELECT pg_advisory_unlock(%s)", (key,))
            finally:
                connection.autocommit = False

    @contextlib.contextmanager
    def lock_many(self, names: list[str]) -> Iterator[set[str]]:
        # One connection holds them all (a connection per lock would drain the pool).
        with self._connection() as connection:
            connection.autocommit = True
            try:
                schema = self._schema(connection)
                keys = {_lock_key(f"{schema}/{name}"): name for name in dict.fromkeys(names)}
                rows = connection.execute(
                    "SELECT key, pg_try_advisory_lock(key) FROM unnest(%s::bigint[]) AS key",
                    (list(keys),)).fetchall()
                held = [key for key, acquired in rows if acquired]
                try:
                    yield {keys[key] for key in held}
                finally:
                    if held:
                        connection.execute("SELECT pg_advisory_unlock(key) FROM "
                                           "unnest(%s::bigint[]) AS key", (held,))
            finally:
                connection.autocommit = False

    def _schema(self, connection: Any) -> str:
        """The schema this DSN writes to (read once: it is fixed by the DSN's options)."""
        if self._schema_name is None:
            [(self._schema_name,)] = connection.execute("SELECT current_schema()").fetchall()
        return self._schema_name

    @staticmethod
    def _advisory(connection: Any, key: int, blocking: bool, timeout: float) -> bool:
        if not blocking:
            return bool(connection.execute("SELECT pg_try_advisory_lock(%s)",
                                           (key,)).fetchone()[0])
        import psycopg

        # Waits in the server, which wakes it the moment the holder lets go; PostgreSQL's
        # lock_timeout ends the wait.
        connection.execute("SELECT set_config('lock_timeout', %s, false)",
                           (f"{max(1, round(timeout * 1000))}ms",))
        try:
            connection.execute("SELECT pg_advisory_lock(%s)", (key,))
            return True
        except psycopg.errors.LockNotAvailable:
            return False
        finally:
            connection.execute("RESET lock_timeout")

    @property
    def lock_holders(self) -> int:
        # An advisory lock pins a pooled connection; its holder needs another for its work.
        return self.max_size // 2

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _read_only_transactions(connection: Any) -> None:
    connection.read_only = True


def open_database(postgres_dsn: str | None, sqlite_path: str | os.PathLike[str],
                  read_only: bool = False) -> Database:
    """Postgres when a DSN is given, else the embedded SQLite file (see ``read_only``
    on each)."""
    if postgres_dsn:
        return PostgresDatabase(postgres_dsn, read_only=read_only)
    return SQLiteDatabase(sqlite_path, read_only=read_only)
