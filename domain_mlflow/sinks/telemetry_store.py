"""Serving telemetry in the config store: one row per request, and the alerts raised on it."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain_mlflow.sinks.database import Database, to_datetime, utc_now

_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
PATTERN_LENGTH = 80


def query_pattern(prompt: str) -> str:
    """The shape of a prompt: case-folded, quoted text and numbers replaced, 80 chars."""
    text = _QUOTED.sub("<str>", prompt.casefold())
    text = _NUMBER.sub("<num>", text)
    return " ".join(text.split())[:PATTERN_LENGTH]


@dataclass(frozen=True)
class ServingRequest:
    domain_id: str
    serving_name: str
    model_version: str | None
    started_at: datetime
    latency_ms: float
    status: str  # "ok" or "error"
    query_pattern: str
    http_status: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    quality: float | None = None
    error: str | None = None


class TelemetryStore:
    """Writes and aggregates ``serving_requests`` and ``alerts``."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def record(self, request: ServingRequest) -> None:
        with self.database.transaction() as tx:
            tx.execute(
                "INSERT INTO serving_requests (domain_id, model_version, serving_name, "
                "started_at, latency_ms, status, http_status, prompt_tokens, completion_tokens, "
                "query_pattern, quality, error) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (request.domain_id, request.model_version, request.serving_name,
                 request.started_at, request.latency_ms, request.status, request.http_status,
                 request.prompt_tokens, request.completion_tokens, request.query_pattern,
                 request.quality, request.error),
            )

    def usage(self, since: datetime, top: int = 5) -> dict[str, dict[str, Any]]:
        """Per domain since ``since``: counts, errors, tokens, quality, top query patterns.

        Two grouped queries for all domains together.
        """
        with self.database.transaction() as tx:
            totals = tx.execute(
                "SELECT domain_id, COUNT(*) AS requests, "
                "SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors, "
                "AVG(latency_ms) AS mean_latency_ms, MIN(started_at) AS first_at, "
                "MAX(started_at) AS last_at, SUM(completion_tokens) AS completion_tokens, "
                "AVG(quality) AS quality, COUNT(quality) AS rated "
                "FROM serving_requests WHERE started_at >= %s GROUP BY domain_id", (since,),
            )
            patterns = tx.execute(
                "SELECT domain_id, query_pattern, COUNT(*) AS requests FROM serving_requests "
                "WHERE started_at >= %s GROUP BY domain_id, query_pattern", (since,),
            )
        by_domain: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for row in patterns:
            by_domain[row["domain_id"]].append((int(row["requests"]), row["query_pattern"]))
        usage = {}
        for row in totals:
            ranked = sorted(by_domain[row["domain_id"]], key=lambda item: (-item[0], item[1]))
            usage[row["domain_id"]] = {
                "requests": int(row["requests"]),
                "errors": int(row["errors"] or 0),
                "mean_latency_ms": float(row["mean_latency_ms"] or 0.0),
                "first_at": to_datetime(row["first_at"]),
                "last_at": to_datetime(row["last_at"]),
                "completion_tokens": int(row["completion_tokens"] or 0),
                "quality": float(row["quality"]) if row["quality"] is not None else None,
                "rated": int(row["rated"] or 0),
                "top_query_patterns": [{"pattern": p, "requests": n} for n, p in ranked[:top]],
            }
        return usage

    def window(self, domain_id: str, model_version: str | None, since: datetime
               ) -> list[dict[str, Any]]:
        """Status and latency of one version's requests since ``since`` (the alert window)."""
        with self.database.transaction() as tx:
            return tx.execute(
                "SELECT status, latency_ms FROM serving_requests WHERE domain_id = %s "
                "AND model_version = %s AND started_at >= %s", (domain_id, model_version, since),
            )

    def record_alert(self, *, domain_id: str, model_version: str | None, kind: str,
                     value: float, threshold: float, window_seconds: float, requests: int,
                     action: str) -> None:
        with self.database.transaction() as tx:
            tx.execute(
                "INSERT INTO alerts (domain_id, model_version, kind, value, threshold, "
                "window_seconds, requests, action, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (domain_id, model_version, kind, value, threshold, window_seconds, requests,
                 action, utc_now()),
            )

    def alerted_since(self, domain_id: str, model_version: str | None, kind: str,
                      since: datetime) -> bool:
        """Whether this alert was already raised for this version within the window."""
        with self.database.transaction() as tx:
            return bool(tx.execute(
                "SELECT id FROM alerts WHERE domain_id = %s AND model_version = %s AND kind = %s "
                "AND created_at >= %s LIMIT 1", (domain_id, model_version, kind, since)))

    def alerts(self, domain_id: str, limit: int = 20) -> list[dict[str, Any]]:
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT * FROM alerts WHERE domain_id = %s ORDER BY id DESC "
                              "LIMIT %s", (domain_id, limit))
        return [{**row, "created_at": to_datetime(row["created_at"]).isoformat()}
                for row in rows]
