"""The config store: ``domain_configs``, ``domain_config_history`` and the promotion records.

Every write that changes what a domain serves happens in one transaction together
with its history row and the promotion's state change, so a crash leaves either
all of it or none of it.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from domain_mlflow.sinks.database import Database, Transaction, open_database, utc_now
from domain_mlflow.sinks.migrations import apply_migrations
from domain_mlflow.sinks.rows import (
    OPEN_STATES,
    DomainConfig,
    HistoryEntry,
    Promotion,
    config_from_row,
    default_sqlite_path,
    history_from_row,
    promotion_from_row,
)

__all__ = ["ConfigStore", "DomainConfig", "HistoryEntry", "Promotion", "default_sqlite_path"]


class ConfigStore:
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

    @staticmethod
    def embedded_path(settings: Any) -> Path:
        """The SQLite file used without a DSN: ``CONFIG_STORE_PATH``, else beside the
        MLflow SQLite store, else in the current folder."""
        from mlflow.tracking import get_tracking_uri

        return Path(settings.config_store_path or default_sqlite_path(get_tracking_uri()))

    def close(self) -> None:
        self.database.close()

    # --- domain configs -----------------------------------------------------------

    def get_config(self, domain_id: str) -> DomainConfig | None:
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT * FROM domain_configs WHERE domain_id = %s", (domain_id,))
        return config_from_row(rows[0]) if rows else None

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
                "FROM domain_config_history WHERE action <> 'reject' GROUP BY domain_id) m "
                "ON h.id = m.id"
            )
        return {row["domain_id"]: history_from_row(row) for row in rows}

    # --- promotions ---------------------------------------------------------------

    def create_promotion(
        self,
        *,
        request_key: str,
        domain_id: str,
        registry_version: int,
        kind: str,
        actor: str,
        reason: str,
        metrics: dict[str, Any],
        model_version: str | None,
        model_uri: str | None,
        run_id: str | None,
        targets: dict[str, str],
        training_run_id: str | None = None,
    ) -> tuple[Promotion, bool]:
        """Create the record unless ``request_key`` exists; returns (record, created)."""
        now = utc_now()
        with self.database.transaction() as tx:
            inserted = tx.execute(
                "INSERT INTO promotions (request_key, domain_id, registry_version, kind, state, "
                "model_version, model_uri, run_id, training_run_id, metrics, actor, reason, "
                "targets, attempts, next_attempt_at, created_at, updated_at) VALUES (%s, %s, %s, "
                "%s, 'pending', %s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s) "
                "ON CONFLICT (request_key) DO NOTHING RETURNING id",
                (request_key, domain_id, registry_version, kind, model_version, model_uri,
                 run_id, training_run_id, json.dumps(metrics), actor, reason,
                 json.dumps(targets), now, now, now),
            )
            rows = tx.execute("SELECT * FROM promotions WHERE request_key = %s", (request_key,))
        return promotion_from_row(rows[0]), bool(inserted)

    def get_promotion(self, promotion_id: int) -> Promotion:
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT * FROM promotions WHERE id = %s", (promotion_id,))
        return promotion_from_row(rows[0])

    def open_promotions(self, domain_id: str | None = None, due_only: bool = False
                        ) -> list[Promotion]:
        """Unfinished promotions, oldest first (optionally one domain, optionally due now)."""
        sql = "SELECT * FROM promotions WHERE state IN (%s, %s, %s, %s, %s)"
        params: list[Any] = list(OPEN_STATES)
        if domain_id is not None:
            sql += " AND domain_id = %s"
            params.append(domain_id)
        if due_only:
            sql += " AND next_attempt_at <= %s"
            params.append(utc_now())
        with self.database.transaction() as tx:
            rows = tx.execute(sql + " ORDER BY id", params)
        return [promotion_from_row(row) for row in rows]

    def versions_with_promotions(self, domain_ids: list[str]) -> set[tuple[str, int]]:
        """(domain, version) pairs that have any promotion record, for these domains."""
        found: set[tuple[str, int]] = set()
        with self.database.transaction() as tx:
            for start in range(0, len(domain_ids), 500):
                chunk = domain_ids[start : start + 500]
                marks = ", ".join(["%s"] * len(chunk))
                rows = tx.execute(
                    "SELECT DISTINCT domain_id, registry_version FROM promotions "
                    f"WHERE domain_id IN ({marks})", chunk,
                )
                found.update((row["domain_id"], int(row["registry_version"])) for row in rows)
        return found

    def known_request_keys(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` already have a promotion record (one query per 500 keys)."""
        found: set[str] = set()
        with self.database.transaction() as tx:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ", ".join(["%s"] * len(chunk))
                rows = tx.execute(
                    f"SELECT request_key FROM promotions WHERE request_key IN ({marks})", chunk
                )
                found.update(row["request_key"] for row in rows)
        return found

    def latest_promotions(self, domain_id: str, limit: int = 20) -> list[Promotion]:
        with self.database.transaction() as tx:
            rows = tx.execute(
                "SELECT * FROM promotions WHERE domain_id = %s ORDER BY id DESC LIMIT %s",
                (domain_id, limit),
            )
        return [promotion_from_row(row) for row in rows]

    def advance(self, promotion: Promotion, to_state: str, **changes: Any) -> Promotion:
        """Move ``promotion`` from its current state to ``to_state`` (compare-and-set)."""
        with self.database.transaction() as tx:
            self._advance(tx, promotion, to_state, **changes)
            rows = tx.execute("SELECT * FROM promotions WHERE id = %s", (promotion.id,))
        return promotion_from_row(rows[0])

    def _advance(self, tx: Transaction, promotion: Promotion, to_state: str,
                 **changes: Any) -> None:
        encoded = {key: json.dumps(value) if key in ("decision", "targets", "metrics") else value
                   for key, value in changes.items()}
        columns = ", ".join(f"{key} = %s" for key in encoded)
        extra = f", {columns}" if columns else ""
        rows = tx.execute(
            f"UPDATE promotions SET state = %s, updated_at = %s{extra} "
            "WHERE id = %s AND state = %s RETURNING id",
            (to_state, utc_now(), *encoded.values(), promotion.id, promotion.state),
        )
        if not rows:
            from domain_mlflow.exceptions import PromotionError

            raise PromotionError(
                f"promotion {promotion.id} of {promotion.domain_id} moved on concurrently "
                f"(expected state {promotion.state!r})"
            )

    def record_failure(self, promotion: Promotion, error: str, retry_in: timedelta,
                       targets: dict[str, str]) -> Promotion:
        with self.database.transaction() as tx:
            tx.execute(
                "UPDATE promotions SET attempts = attempts + 1, last_error = %s, "
                "next_attempt_at = %s, targets = %s, updated_at = %s WHERE id = %s",
                (error[:2000], utc_now() + retry_in, json.dumps(targets), utc_now(),
                 promotion.id),
            )
            rows = tx.execute("SELECT * FROM promotions WHERE id = %s", (promotion.id,))
        return promotion_from_row(rows[0])

    def reject(self, promotion: Promotion, decision: dict[str, Any], reason: str,
               targets: dict[str, str]) -> Promotion:
        """Record the gate's refusal: history row and terminal state together."""
        with self.database.transaction() as tx:
            self._history_row(tx, promotion, "reject", reason, None, None)
            self._advance(tx, promotion, "rejected", decision=decision, targets=targets)
            rows = tx.execute("SELECT * FROM promotions WHERE id = %s", (promotion.id,))
        return promotion_from_row(rows[0])

    def write_config(self, promotion: Promotion, *, action: str, registered_model: str,
                     serving_name: str, targets: dict[str, str]) -> Promotion:
        """Point the domain at the promotion's version: config row, history row, state."""
        now = utc_now()
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT * FROM domain_configs WHERE domain_id = %s",
                              (promotion.domain_id,))
            current = config_from_row(rows[0]) if rows else None
            if current and current.registry_version == promotion.registry_version:
                # Already pointing here (a repeated request): no new row, no history.
                self._advance(tx, promotion, "config_written", targets=targets)
                rows = tx.execute("SELECT * FROM promotions WHERE id = %s", (promotion.id,))
                return promotion_from_row(rows[0])
            previous = current.registry_version if current else None
            number = (current.version_number if current else 0) + 1
            tx.execute(
                "INSERT INTO domain_configs (domain_id, model_version, registered_model, "
                "registry_version, previous_registry_version, model_uri, serving_name, "
                "training_run_id, metrics, version_number, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (domain_id) DO UPDATE SET model_version = excluded.model_version, "
                "registered_model = excluded.registered_model, "
                "registry_version = excluded.registry_version, "
                "previous_registry_version = excluded.previous_registry_version, "
                "model_uri = excluded.model_uri, serving_name = excluded.serving_name, "
                "training_run_id = excluded.training_run_id, metrics = excluded.metrics, "
                "version_number = excluded.version_number, updated_at = excluded.updated_at",
                (promotion.domain_id, promotion.model_version, registered_model,
                 promotion.registry_version, previous, promotion.model_uri, serving_name,
                 promotion.training_run_id, json.dumps(promotion.metrics), number, now),
            )
            self._history_row(tx, promotion, action, promotion.reason, previous, number)
            self._advance(tx, promotion, "config_written", targets=targets)
            rows = tx.execute("SELECT * FROM promotions WHERE id = %s", (promotion.id,))
        return promotion_from_row(rows[0])

    def _history_row(self, tx: Transaction, promotion: Promotion, action: str, reason: str,
                     previous: int | None, version_number: int | None) -> None:
        tx.execute(
            "INSERT INTO domain_config_history (domain_id, action, registry_version, "
            "model_version, previous_registry_version, version_number, actor, reason, metrics, "
            "promotion_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (promotion_id, action) DO NOTHING",
            (promotion.domain_id, action, promotion.registry_version, promotion.model_version,
             previous, version_number, promotion.actor, reason, json.dumps(promotion.metrics),
             promotion.id, utc_now()),
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
