"""The config store: ``domain_configs``, ``domain_config_history`` and the promotion records.

Every write that changes what a domain serves happens in one transaction together
with its history row and the promotion's state change, so a crash leaves either
all of it or none of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from domain_mlflow.exceptions import PromotionError
from domain_mlflow.sinks.database import (
    Database,
    Transaction,
    open_database,
    to_datetime,
    utc_now,
)
from domain_mlflow.sinks.migrations import apply_migrations
from domain_mlflow.sinks.promotion_reads import FULL_SWEEP, READ, PromotionReads
from domain_mlflow.sinks.rollouts import RolloutRecords
from domain_mlflow.sinks.rows import (
    OPEN_STATES,
    DomainConfig,
    HistoryEntry,
    Promotion,
    State,
    as_read,
    config_from_row,
    default_sqlite_path,
    history_from_row,
    promotion_from_row,
)
from domain_mlflow.sinks.sql import UPSERT_CONFIG, chunks, domain_lock_name, encode

__all__ = ["ConfigStore", "ConfigWrite", "DomainConfig", "HistoryEntry", "Promotion",
           "default_sqlite_path", "domain_lock_name"]


@dataclass(frozen=True)
class ConfigWrite:
    """One domain pointed at a promotion's version by :meth:`ConfigStore.write_configs`."""

    promotion: Promotion
    action: str  # history action: promote, force_promote, rollback
    registered_model: str
    serving_name: str
    targets: dict[str, str]


def _upsert_values(config: DomainConfig) -> tuple[Any, ...]:
    """The parameters of UPSERT_CONFIG that write ``config``."""
    return (config.domain_id, config.model_version, config.registered_model,
            config.registry_version, config.previous_registry_version, config.model_uri,
            config.serving_name, config.training_run_id, json.dumps(config.metrics),
            config.version_number, config.updated_at, config.semver)


_INSERT_REQUEST = (
    "INSERT INTO promotions (request_key, domain_id, registry_version, kind, state, "
    "model_version, model_uri, run_id, training_run_id, metrics, actor, reason, targets, "
    "attempts, next_attempt_at, created_at, updated_at, noted_in_registry, semver, "
    "registered_at) VALUES (%s, %s, %s, %s, 'pending', %s, %s, %s, %s, %s, %s, %s, %s, 0, "
    "%s, %s, %s, %s, %s, %s) ON CONFLICT (request_key) DO NOTHING"
)


def _request_values(r: dict[str, Any], now: Any) -> tuple[Any, ...]:
    return (r["request_key"], r["domain_id"], r["registry_version"], str(r["kind"]),
            r["model_version"], r["model_uri"], r["run_id"], r.get("training_run_id"),
            json.dumps(r["metrics"]), r["actor"], r["reason"], json.dumps(r["targets"]),
            now, now, now, int(bool(r.get("noted_in_registry"))), r.get("semver"),
            r.get("registered_at"))


class ConfigStore(PromotionReads, RolloutRecords):
    """Reads and writes of the config store; every method is one transaction."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @classmethod
    def open(cls, postgres_dsn: str | None, sqlite_path: str | os.PathLike[str]) -> ConfigStore:
        """Connect (Postgres if a DSN is given, else SQLite) and apply pending migrations."""
        store = cls(open_database(postgres_dsn, sqlite_path))
        apply_migrations(store.database)
        return store

    @classmethod
    def from_settings(cls, settings: Any, postgres_dsn: str | None = None) -> ConfigStore:
        """Postgres when a DSN is configured, else the SQLite file beside the MLflow store."""
        return cls.open(postgres_dsn or settings.postgres_dsn, cls.embedded_path(settings))

    @classmethod
    def open_existing(cls, postgres_dsn: str | None, sqlite_path: str | os.PathLike[str]
                      ) -> ConfigStore | None:
        """The store, read-only, if one was ever migrated there; else None. Creates,
        migrates and writes nothing: a look at the dashboard must leave no trace."""
        from domain_mlflow.sinks.migrations import has_schema

        if not postgres_dsn and not Path(sqlite_path).exists():
            return None
        store, migrated = cls(open_database(postgres_dsn, sqlite_path, read_only=True)), False
        try:
            migrated = has_schema(store.database)
        finally:
            if not migrated:
                store.close()
        return store if migrated else None

    @staticmethod
    def embedded_path(settings: Any) -> Path:
        """The SQLite file used without a DSN: ``CONFIG_STORE_PATH``, else beside the
        MLflow SQLite store, else in the current folder."""
        from mlflow.tracking import get_tracking_uri

        return Path(settings.config_store_path or default_sqlite_path(get_tracking_uri()))

    def close(self) -> None:
        self.database.close()

    # --- locks ----------------------------------------------------------------------

    def lock(self, name: str, blocking: bool = True, timeout: float = 60.0
             ) -> contextlib.AbstractContextManager[bool]:
        """A named lock shared by every process on this store (advisory lock / file lock)."""
        return self.database.lock(name, blocking=blocking, timeout=timeout)

    def lock_many(self, names: list[str]) -> contextlib.AbstractContextManager[set[str]]:
        """Try every named lock at once; yields the names this caller now holds."""
        return self.database.lock_many(names)

    @contextlib.contextmanager
    def domain_lock(self, domain_id: str, timeout: float = 120.0) -> Iterator[bool]:
        """The lock under which one promoter at a time works on a domain."""
        with self.lock(domain_lock_name(domain_id), timeout=timeout) as got:
            yield got

    @property
    def lock_holders(self) -> int:
        """How many locks can be held side by side (pool size)."""
        return self.database.lock_holders

    # --- domain configs -----------------------------------------------------------

    def get_config(self, domain_id: str) -> DomainConfig | None:
        return self.get_configs([domain_id]).get(domain_id)

    def get_configs(self, domain_ids: list[str]) -> dict[str, DomainConfig]:
        """The configs of these domains (those that have one), by domain id."""
        with self.database.transaction() as tx:
            return self._configs(tx, domain_ids)

    def all_configs(self) -> list[DomainConfig]:
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT * FROM domain_configs ORDER BY domain_id")
        return [config_from_row(row) for row in rows]

    def history(self, domain_id: str, limit: int = 100) -> list[HistoryEntry]:
        with self.database.transaction() as tx:
            rows = tx.execute(
                "SELECT * FROM domain_config_history WHERE domain_id = %s ORDER BY id DESC "
                "LIMIT %s", (domain_id, limit),
            )
        return [history_from_row(row) for row in rows]

    def last_actions(self) -> dict[str, HistoryEntry]:
        """Each domain's newest promote, force_promote or rollback, in one query."""
        with self.database.transaction() as tx:
            rows = tx.execute(
                "SELECT h.* FROM domain_config_history h JOIN (SELECT domain_id, MAX(id) AS id "
                "FROM domain_config_history WHERE action IN "
                "('promote', 'force_promote', 'rollback') GROUP BY domain_id) m "
                "ON h.id = m.id"
            )
        return {row["domain_id"]: history_from_row(row) for row in rows}

    # --- promotions ---------------------------------------------------------------

    def create_promotion(self, **request: Any) -> tuple[Promotion, bool]:
        """Create the record unless ``request_key`` exists; returns (record, created).

        Keywords: ``request_key``, ``domain_id``, ``registry_version``, ``kind``,
        ``actor``, ``reason``, ``metrics``, ``model_version``, ``model_uri``, ``run_id``,
        ``targets`` and optionally ``training_run_id``, ``noted_in_registry``, ``semver``,
        ``registered_at``."""
        return self.create_promotions([request])[0]

    def create_promotions(self, requests: list[dict[str, Any]]) -> list[tuple[Promotion, bool]]:
        """:meth:`create_promotion` for many requests, in one transaction."""
        now = utc_now()
        results = []
        with self.database.transaction() as tx:
            for request in requests:
                inserted = tx.execute(f"{_INSERT_REQUEST} RETURNING *",
                                      _request_values(request, now))
                rows = inserted or tx.execute("SELECT * FROM promotions WHERE request_key = %s",
                                              (request["request_key"],))
                results.append((promotion_from_row(rows[0]), bool(inserted)))
        return results

    def add_requests(self, requests: list[dict[str, Any]], *,
                     read_at: datetime | None = None, full_sweep: bool = False) -> int:
        """Insert the requests whose ``request_key`` is new, in one transaction and one
        round trip; returns how many were new (for callers that need no records back).
        ``read_at``: when the read of the registry they come from began (``full_sweep``:
        a read of every version), recorded in the same transaction
        (:meth:`registry_reads`; an earlier one never replaces a later one)."""
        now = utc_now()
        readers = [] if read_at is None else [READ, FULL_SWEEP] if full_sweep else [READ]
        with self.database.transaction() as tx:
            added = tx.execute_many(_INSERT_REQUEST, [_request_values(r, now)
                                                      for r in requests]) if requests else 0
            for reader in readers:
                tx.execute("INSERT INTO registry_reads (reader, read_at) VALUES (%s, %s) "
                           "ON CONFLICT (reader) DO UPDATE SET read_at = excluded.read_at "
                           "WHERE registry_reads.read_at < excluded.read_at",
                           (reader, read_at))
            return added

    def set_semver(self, domain_id: str, registry_version: int, semver: str) -> None:
        """Record a version's new semantic version on its open promotions (and on the
        domain's config when that names the version)."""
        marks = ", ".join(["%s"] * len(OPEN_STATES))
        with self.database.transaction() as tx:
            tx.execute(f"UPDATE promotions SET semver = %s WHERE domain_id = %s AND "
                       f"registry_version = %s AND state IN ({marks})",
                       (semver, domain_id, registry_version, *map(str, OPEN_STATES)))
            tx.execute("UPDATE domain_configs SET semver = %s WHERE domain_id = %s AND "
                       "registry_version = %s", (semver, domain_id, registry_version))

    def advance(self, promotion: Promotion, to_state: str, **changes: Any) -> Promotion:
        """Move ``promotion`` from its current state to ``to_state`` (compare-and-set)."""
        return self.advance_many([(promotion, to_state, changes)])[0]

    def advance_many(self, moves: list[tuple[Promotion, str, dict[str, Any]]]
                     ) -> list[Promotion]:
        """:meth:`advance` for many (promotion, state, changes), in one transaction."""
        with self.database.transaction() as tx:
            return self._advance(tx, moves)

    def _advance(self, tx: Transaction, moves: list[tuple[Promotion, str, dict[str, Any]]]
                 ) -> list[Promotion]:
        """Compare-and-set each move (from the state its promotion was read in); one
        statement per set of changed columns, the moved records in the order given, as
        the rows now read (built from what was written, not read back). A promotion that
        another writer moved meanwhile fails the whole transaction, named."""
        now = utc_now()
        statements: dict[tuple[str, ...], list[tuple[tuple[Any, ...], Promotion, str]]] = {}
        moved = []
        for promotion, to_state, changes in moves:
            statements.setdefault(tuple(changes), []).append((
                (str(to_state), now, *(encode(key, value) for key, value in changes.items()),
                 promotion.id, str(promotion.state)), promotion, str(to_state)))
            moved.append(dataclasses.replace(
                promotion, state=State(to_state), updated_at=now,
                **{key: as_read(key, value) for key, value in changes.items()}))
        for columns, group in statements.items():
            extra = "".join(f", {column} = %s" for column in columns)
            changed = tx.execute_many(f"UPDATE promotions SET state = %s, updated_at = %s{extra} "
                                      "WHERE id = %s AND state = %s",
                                      [row for row, _, _ in group])
            if changed != len(group):
                self._moved_elsewhere(tx, [(promotion, to) for _, promotion, to in group], now)
        return moved

    def _moved_elsewhere(self, tx: Transaction, moves: list[tuple[Promotion, str]],
                         now: datetime) -> NoReturn:
        """Raise, naming the first of ``moves`` whose row this transaction did not just
        move (to its state, stamped ``now``): another writer moved it first."""
        found: dict[int, tuple[str, datetime | None]] = {}
        for chunk in chunks([promotion.id for promotion, _ in moves]):
            marks = ", ".join(["%s"] * len(chunk))
            found.update((int(row["id"]), (row["state"], to_datetime(row["updated_at"])))
                         for row in tx.execute("SELECT id, state, updated_at FROM promotions "
                                               f"WHERE id IN ({marks})", chunk))
        for promotion, to_state in moves:
            state, stamp = found.get(promotion.id, (None, None))
            if (state, stamp) != (to_state, now):
                raise PromotionError(
                    f"promotion {promotion.id} of {promotion.domain_id} moved on concurrently "
                    f"(expected state {promotion.state!r}, found {state!r})")
        raise PromotionError(f"promotions of {moves[0][0].domain_id} and others moved on "
                             "concurrently")

    def _promotions(self, tx: Transaction, ids: list[int]) -> list[Promotion]:
        found: dict[int, Promotion] = {}
        for chunk in chunks(ids):
            marks = ", ".join(["%s"] * len(chunk))
            rows = tx.execute(f"SELECT * FROM promotions WHERE id IN ({marks})", chunk)
            found.update((int(row["id"]), promotion_from_row(row)) for row in rows)
        return [found[promotion_id] for promotion_id in ids]

    def record_failure(self, promotion: Promotion, error: str, retry_in: timedelta,
                       targets: dict[str, str], noted_in_registry: bool = False) -> Promotion:
        """Count a failed attempt: the error, the time of the next one, the targets.
        ``noted_in_registry``: the version now carries our pending tag."""
        with self.database.transaction() as tx:
            rows = tx.execute(
                "UPDATE promotions SET attempts = attempts + 1, last_error = %s, "
                "next_attempt_at = %s, targets = %s, updated_at = %s, "
                "noted_in_registry = CASE WHEN %s = 1 THEN 1 ELSE noted_in_registry END "
                "WHERE id = %s RETURNING *",
                (error[:2000], utc_now() + retry_in, json.dumps(targets), utc_now(),
                 int(noted_in_registry), promotion.id),
            )
        return promotion_from_row(rows[0])

    def reject(self, promotion: Promotion, decision: Any, reason: str,
               targets: dict[str, str]) -> Promotion:
        """Record the gate's refusal: history row and terminal state together."""
        return self.reject_many([(promotion, decision, reason, targets)])[0]

    def reject_many(self, refusals: list[tuple[Promotion, Any, str, dict[str, str]]]
                    ) -> list[Promotion]:
        """:meth:`reject` for many (promotion, decision, reason, targets), in one transaction."""
        with self.database.transaction() as tx:
            self._history(tx, [(promotion, "reject", reason, None, None)
                               for promotion, _, reason, _ in refusals])
            return self._advance(tx, [(promotion, "rejected",
                                       {"decision": decision, "targets": targets})
                                      for promotion, decision, _, targets in refusals])

    def record_review(self, promotion: Promotion, *, approved: bool, by: str | None,
                      reason: str, semver: str | None = None,
                      targets: dict[str, str] | None = None) -> Promotion:
        """The decision on a version awaiting approval: the state (``approved`` or
        ``rejected``), who (``by``; None when it was closed for a reason of its own:
        superseded, expired), when and why, and its history row (``approve`` or
        ``reject``), in one transaction."""
        changes: dict[str, Any] = {"approved_by": by, "approved_at": utc_now(),
                                   "approval_reason": reason}
        if semver:
            changes["semver"] = semver
        if targets is not None:
            changes["targets"] = targets
        with self.database.transaction() as tx:
            moved = self._advance(tx, [(promotion, "approved" if approved else "rejected",
                                        changes)])[0]
            self._history(tx, [(moved, "approve" if approved else "reject", reason, None, None)],
                          actor=by)
        return moved

    def write_config(self, promotion: Promotion, *, action: str, registered_model: str,
                     serving_name: str, targets: dict[str, str]
                     ) -> tuple[Promotion, DomainConfig]:
        """Point the domain at the promotion's version: config row, history row, state.

        Returns the promotion and the domain's config as they now stand."""
        return self.write_configs([ConfigWrite(promotion, action, registered_model,
                                               serving_name, targets)])[0]

    def write_configs(self, writes: list[ConfigWrite]) -> list[tuple[Promotion, DomainConfig]]:
        """:meth:`write_config` for many promotions, one per domain, in one transaction."""
        domains = [write.promotion.domain_id for write in writes]
        if len(set(domains)) != len(domains):
            raise ValueError("write_configs takes at most one promotion per domain")
        now = utc_now()
        with self.database.transaction() as tx:
            configs = self._configs(tx, domains)
            upserts, history = [], []
            for write in writes:
                promotion, config = write.promotion, configs.get(write.promotion.domain_id)
                if config and config.registry_version == promotion.registry_version:
                    continue  # already pointing here (a repeated request): no row, no history
                previous = config.registry_version if config else None
                number = (config.version_number if config else 0) + 1
                configs[promotion.domain_id] = written = DomainConfig(
                    domain_id=promotion.domain_id, model_version=promotion.model_version,
                    registered_model=write.registered_model,
                    registry_version=promotion.registry_version, model_uri=promotion.model_uri,
                    serving_name=write.serving_name, metrics=as_read("metrics", promotion.metrics),
                    version_number=number, updated_at=now, previous_registry_version=previous,
                    training_run_id=promotion.training_run_id, semver=promotion.semver)
                upserts.append(_upsert_values(written))
                history.append((promotion, write.action, promotion.reason, previous, number))
            if upserts:
                tx.execute_many(UPSERT_CONFIG, upserts)
                self._history(tx, history)
            moved = self._advance(tx, [(write.promotion, "config_written",
                                        {"targets": write.targets}) for write in writes])
        # As the rows now read: the upsert wrote each config built here (and ended any split).
        return [(promotion, configs[promotion.domain_id]) for promotion in moved]

    def _configs(self, tx: Transaction, domain_ids: list[str]) -> dict[str, DomainConfig]:
        found: dict[str, DomainConfig] = {}
        for chunk in chunks(domain_ids):
            marks = ", ".join(["%s"] * len(chunk))
            rows = tx.execute(f"SELECT * FROM domain_configs WHERE domain_id IN ({marks})",
                              chunk)
            found.update((row["domain_id"], config_from_row(row)) for row in rows)
        return found

    def _history(self, tx: Transaction,
                 entries: list[tuple[Promotion, str, str, int | None, int | None]],
                 actor: str | None = None, evidence: dict[str, Any] | None = None) -> None:
        """History rows: (promotion, action, reason, previous version, version_number);
        the actor is the promotion's unless ``actor`` is given; ``evidence``: a rollout's
        decision."""
        now = utc_now()
        tx.execute_many(
            "INSERT INTO domain_config_history (domain_id, action, registry_version, "
            "model_version, previous_registry_version, version_number, actor, reason, metrics, "
            "promotion_id, created_at, semver, evidence) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (promotion_id, action) DO NOTHING",
            [(promotion.domain_id, action, promotion.registry_version, promotion.model_version,
              previous, number, actor or promotion.actor, reason, json.dumps(promotion.metrics),
              promotion.id, now, promotion.semver,
              json.dumps(evidence, default=str) if evidence is not None else None)
             for promotion, action, reason, previous, number in entries],
        )

    # --- webhook deliveries --------------------------------------------------------

    def has_delivery(self, delivery_id: str) -> bool:
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT delivery_id FROM webhook_deliveries WHERE delivery_id = %s",
                              (delivery_id,))
        return bool(rows)

    def remember_delivery(self, delivery_id: str, event: str) -> bool:
        """True the first time a delivery id is seen, False for a replay."""
        with self.database.transaction() as tx:
            rows = tx.execute(
                "INSERT INTO webhook_deliveries (delivery_id, event, received_at) "
                "VALUES (%s, %s, %s) ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id",
                (delivery_id, event, utc_now()),
            )
        return bool(rows)

    def forget_delivery(self, delivery_id: str) -> None:
        """Remove a delivery's record: it was not handled, and MLflow's retry must be."""
        with self.database.transaction() as tx:
            tx.execute("DELETE FROM webhook_deliveries WHERE delivery_id = %s", (delivery_id,))
