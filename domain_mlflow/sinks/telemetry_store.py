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
    request_id: str | None = None
    arm: str | None = None  # production or candidate, while a rollout splits the traffic
    rollout_id: int | None = None


_INSERT_REQUEST = (
    "INSERT INTO serving_requests (domain_id, model_version, serving_name, started_at, "
    "latency_ms, status, http_status, prompt_tokens, completion_tokens, query_pattern, quality, "
    "error, request_id, arm, rollout_id) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def _request_row(request: ServingRequest) -> tuple[Any, ...]:
    return (request.domain_id, request.model_version, request.serving_name, request.started_at,
            request.latency_ms, request.status, request.http_status, request.prompt_tokens,
            request.completion_tokens, request.query_pattern, request.quality, request.error,
            request.request_id, request.arm, request.rollout_id)


class TelemetryStore:
    """Writes and aggregates ``serving_requests`` and ``alerts``."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def record(self, request: ServingRequest) -> None:
        self.record_batch([request], [], {}, utc_now())

    def record_batch(self, requests: list[ServingRequest], feedback: list[tuple[str, float]],
                     dropped: dict[str, int], at: datetime) -> None:
        """One transaction: the requests (one multi-row statement), then the feedback
        scores by request id, then the counts of records dropped per domain."""
        with self.database.transaction() as tx:
            if requests:
                tx.execute_many(_INSERT_REQUEST, [_request_row(r) for r in requests])
            if feedback:
                tx.execute_many("UPDATE serving_requests SET quality = %s WHERE request_id = %s",
                                [(score, request_id) for request_id, score in feedback])
            if dropped:
                tx.execute_many("INSERT INTO telemetry_drops (domain_id, dropped, recorded_at) "
                                "VALUES (%s, %s, %s)",
                                [(domain, count, at) for domain, count in dropped.items()])

    def dropped_since(self, since: datetime) -> dict[str, int]:
        """Records dropped per domain since ``since`` (the client's queue was full, or the
        store did not answer a batch)."""
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT domain_id, SUM(dropped) AS dropped FROM telemetry_drops "
                              "WHERE recorded_at >= %s GROUP BY domain_id", (since,))
        return {row["domain_id"]: int(row["dropped"] or 0) for row in rows}

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
