"""The config store's reads of promotion records (:class:`ConfigStore` inherits them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain_mlflow.sinks.database import Database, to_datetime, utc_now
from domain_mlflow.sinks.rows import (
    DUE_STATES,
    OPEN_STATES,
    Promotion,
    RegistryReads,
    promotion_from_row,
)
from domain_mlflow.sinks.sql import chunks

# The readers of ``registry_reads``: any read of the new versions, and full sweeps.
READ, FULL_SWEEP = "poller", "full-sweep"


class PromotionReads:
    """Queries of ``promotions``; never writes."""

    database: Database

    def get_promotion(self, promotion_id: int) -> Promotion:
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT * FROM promotions WHERE id = %s", (promotion_id,))
        return promotion_from_row(rows[0])

    def open_promotions(self, domain_id: str | None = None, due_only: bool = False
                        ) -> list[Promotion]:
        """Unfinished promotions, oldest first (optionally one domain, optionally due now)."""
        if domain_id is not None:
            return self.open_promotions_of([domain_id], due_only)
        return self._open_promotions("", [], due_only)

    def open_promotions_of(self, domain_ids: list[str], due_only: bool = False
                           ) -> list[Promotion]:
        """Unfinished promotions of these domains, oldest first."""
        found: list[Promotion] = []
        for chunk in chunks(domain_ids):
            marks = ", ".join(["%s"] * len(chunk))
            found += self._open_promotions(f" AND domain_id IN ({marks})", chunk, due_only)
        return sorted(found, key=lambda promotion: promotion.id)

    def _open_promotions(self, where: str, params: list[Any], due_only: bool
                         ) -> list[Promotion]:
        """``due_only``: those the promoter carries on now (not awaiting a person, not
        waiting out a retry's backoff)."""
        states = DUE_STATES if due_only else OPEN_STATES
        marks = ", ".join(["%s"] * len(states))
        sql = f"SELECT * FROM promotions WHERE state IN ({marks})" + where
        params = [*map(str, states), *params]
        if due_only:
            sql += " AND next_attempt_at <= %s"
            params.append(utc_now())
        with self.database.transaction() as tx:
            rows = tx.execute(sql + " ORDER BY id", params)
        return [promotion_from_row(row) for row in rows]

    def known_versions(self, pairs: list[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which of these (domain, version) pairs have any promotion record: the cost
        follows ``pairs``, not the domains' history."""
        found: set[tuple[str, int]] = set()
        with self.database.transaction() as tx:
            for chunk in chunks(sorted(set(pairs)), 250):
                where = " OR ".join(["(domain_id = %s AND registry_version = %s)"] * len(chunk))
                rows = tx.execute("SELECT DISTINCT domain_id, registry_version FROM promotions "
                                  f"WHERE {where}", [value for pair in chunk for value in pair])
                found.update((row["domain_id"], int(row["registry_version"])) for row in rows)
        return found

    def newest_registration(self) -> datetime | None:
        """When the newest version with a promotion record was registered (the poller's
        watermark), or None before the first."""
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT MAX(registered_at) AS newest FROM promotions")
        return to_datetime(rows[0]["newest"]) if rows else None

    def registry_reads(self) -> RegistryReads:
        """When the newest read of the registry's new versions whose requests are all
        recorded began, and the newest such full sweep (any poller's:
        ``ConfigStore.add_requests(..., read_at=, full_sweep=)``)."""
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT reader, read_at FROM registry_reads")
        found = {row["reader"]: to_datetime(row["read_at"]) for row in rows}
        return RegistryReads(latest=found.get(READ), full_sweep=found.get(FULL_SWEEP))

    def known_request_keys(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` already have a promotion record (one query per 500 keys)."""
        found: set[str] = set()
        with self.database.transaction() as tx:
            for chunk in chunks(keys):
                marks = ", ".join(["%s"] * len(chunk))
                rows = tx.execute(
                    f"SELECT request_key FROM promotions WHERE request_key IN ({marks})", chunk
                )
                found.update(row["request_key"] for row in rows)
        return found

    def awaiting_approval(self, domain_ids: list[str] | None = None) -> list[Promotion]:
        """Promotions waiting for a person's decision, oldest first."""
        where, params = " AND state = %s", ["awaiting_approval"]
        if domain_ids is None:
            return self._open_promotions(where, params, due_only=False)
        found: list[Promotion] = []
        for chunk in chunks(domain_ids):
            marks = ", ".join(["%s"] * len(chunk))
            found += self._open_promotions(f"{where} AND domain_id IN ({marks})",
                                           [*params, *chunk], due_only=False)
        return sorted(found, key=lambda promotion: promotion.id)

    def promotions_since(self, since: Any, domain_ids: list[str] | None = None
                         ) -> list[Promotion]:
        """Every promotion created at or after ``since`` (optionally of these domains),
        oldest first: what the fleet rates are computed from."""
        sql, params = "SELECT * FROM promotions WHERE created_at >= %s", [since]
        if domain_ids is not None:
            if not domain_ids:
                return []
            found: list[Promotion] = []
            with self.database.transaction() as tx:
                for chunk in chunks(domain_ids):
                    marks = ", ".join(["%s"] * len(chunk))
                    found += [promotion_from_row(row) for row in tx.execute(
                        f"{sql} AND domain_id IN ({marks}) ORDER BY id", [*params, *chunk])]
            return sorted(found, key=lambda promotion: promotion.id)
        with self.database.transaction() as tx:
            return [promotion_from_row(row) for row in tx.execute(f"{sql} ORDER BY id", params)]

    def promotions_of_version(self, domain_id: str, registry_version: int) -> list[Promotion]:
        """Every promotion of one version, oldest first."""
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT * FROM promotions WHERE domain_id = %s AND "
                              "registry_version = %s ORDER BY id", (domain_id, registry_version))
        return [promotion_from_row(row) for row in rows]

    def newest_promotions(self, domain_ids: list[str] | None = None) -> dict[str, Promotion]:
        """Each domain's newest promotion (optionally of these domains only), in one query."""
        sql = ("SELECT p.* FROM promotions p JOIN (SELECT domain_id, MAX(id) AS id FROM "
               "promotions GROUP BY domain_id) m ON p.id = m.id")
        with self.database.transaction() as tx:
            rows = tx.execute(sql)
        newest = {row["domain_id"]: promotion_from_row(row) for row in rows}
        return newest if domain_ids is None else \
            {domain: newest[domain] for domain in domain_ids if domain in newest}

    def latest_promotions(self, domain_id: str, limit: int = 20) -> list[Promotion]:
        with self.database.transaction() as tx:
            rows = tx.execute(
                "SELECT * FROM promotions WHERE domain_id = %s ORDER BY id DESC LIMIT %s",
                (domain_id, limit),
            )
        return [promotion_from_row(row) for row in rows]
