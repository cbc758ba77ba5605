"""Rows of the config store as Python objects, and their conversion from query results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from domain_mlflow.gate import GateDecision
from domain_mlflow.sinks.database import to_datetime


class State(StrEnum):
    """Where a promotion stands; each is recorded before the next step starts.

    The new version is made servable before any pointer moves, then the pointers
    flip one by one: config store, Redis, LocalAI's stable name, registry alias."""

    PENDING = "pending"  # requested, not yet gated
    # passed the gate in manual mode: waits for a person's approval; nothing is synced
    AWAITING_APPROVAL = "awaiting_approval"
    # passed the gate and serves a share of live traffic (a canary or an A/B test); the
    # rollout's evaluator moves it on: to approved (promote) or rejected (abort)
    IN_ROLLOUT = "in_rollout"
    APPROVED = "approved"  # passed the gate (or skips it: force, rollback) and may deploy
    SERVABLE = "servable"  # LocalAI serves the version under its versioned name
    CONFIG_WRITTEN = "config_written"  # domain_configs names it
    REDIS_SYNCED = "redis_synced"  # the Redis key names it (and was published)
    LOCALAI_SYNCED = "localai_synced"  # LocalAI's stable name points at it
    DONE = "done"  # the registry alias ``production`` names it
    REJECTED = "rejected"  # refused: by the gate, by a reviewer, superseded or expired

    @property
    def is_open(self) -> bool:
        return self not in (State.DONE, State.REJECTED)

    @property
    def is_due(self) -> bool:
        """Whether the promoter carries it on by itself (a person decides an awaiting one,
        live traffic one in a rollout)."""
        return self.is_open and self not in (State.AWAITING_APPROVAL, State.IN_ROLLOUT)


OPEN_STATES = tuple(state for state in State if state.is_open)
DUE_STATES = tuple(state for state in State if state.is_due)
TERMINAL_STATES = (State.DONE, State.REJECTED)


class Kind(StrEnum):
    """What a promotion asks for."""

    PROMOTE = "promote"  # through the gate
    FORCE = "force"  # past the gate, with a reason
    ROLLBACK = "rollback"  # back to an earlier version, past the gate

    @property
    def history_action(self) -> str:
        """The ``domain_config_history.action`` of a config written for this kind."""
        return "force_promote" if self is Kind.FORCE else self.value


class Target(StrEnum):
    """The places a promotion writes, in the order it writes them."""

    SERVING = "serving"  # the versioned model in LocalAI (servable, not yet pointed at)
    CONFIG_STORE = "config_store"
    REDIS = "redis"
    LOCALAI = "localai"  # LocalAI's stable serving name
    REGISTRY = "registry"


class TargetStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"

    def text(self, detail: str = "") -> str:
        """How the status is stored: ``status`` or ``status: detail``."""
        return f"{self.value}: {detail}"[:500] if detail else self.value

    @classmethod
    def of(cls, text: str) -> TargetStatus:
        return cls(text.split(":", 1)[0])


def initial_targets() -> dict[str, str]:
    return dict.fromkeys(Target, TargetStatus.PENDING.value)


@dataclass
class DomainConfig:
    domain_id: str
    model_version: str
    registered_model: str
    registry_version: int
    model_uri: str
    serving_name: str
    metrics: dict[str, float]
    version_number: int
    updated_at: datetime
    previous_registry_version: int | None = None
    training_run_id: str | None = None
    semver: str | None = None
    # A canary or A/B test: the candidate version and its share of the requests (rollouts).
    split: dict[str, Any] | None = None

    def serving_payload(self) -> dict[str, Any]:
        """What Redis holds for the domain: the serving config as JSON-ready values (with
        ``split`` while a rollout runs)."""
        payload = {
            "domain_id": self.domain_id,
            "model_version": self.model_version,
            "registered_model": self.registered_model,
            "registry_version": self.registry_version,
            "model_uri": self.model_uri,
            "serving_name": self.serving_name,
            "metrics": self.metrics,
            "version_number": self.version_number,
            "semver": self.semver,
            "updated_at": self.updated_at.isoformat(),
        }
        if self.split:
            payload["split"] = self.split
        return payload


@dataclass
class Promotion:
    id: int
    request_key: str
    domain_id: str
    registry_version: int
    kind: str
    state: str
    actor: str
    reason: str
    metrics: dict[str, Any]
    targets: dict[str, str]
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    updated_at: datetime
    model_version: str | None = None
    model_uri: str | None = None
    run_id: str | None = None
    training_run_id: str | None = None
    decision: GateDecision | None = None
    last_error: str | None = None
    # The version carries our promotion_status=pending tag, which success must overwrite.
    noted_in_registry: bool = False
    semver: str | None = None
    registered_at: datetime | None = None  # the registry version's creation time
    awaiting_since: datetime | None = None  # entered awaiting_approval (manual mode)
    approved_by: str | None = None  # who approved or rejected it by hand
    approved_at: datetime | None = None
    approval_reason: str | None = None

    def __post_init__(self) -> None:
        self.kind = Kind(self.kind)
        self.state = State(self.state)

    @property
    def is_open(self) -> bool:
        return self.state.is_open


@dataclass(frozen=True)
class RegistryReads:
    """When the newest recorded read of the registry's new versions began, and the
    newest recorded full sweep (any poller's); None before the first."""

    latest: datetime | None = None
    full_sweep: datetime | None = None


@dataclass
class HistoryEntry:
    id: int
    domain_id: str
    action: str
    registry_version: int
    actor: str
    reason: str
    created_at: datetime
    model_version: str | None = None
    previous_registry_version: int | None = None
    version_number: int | None = None
    promotion_id: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    semver: str | None = None
    evidence: dict[str, Any] | None = None  # a rollout's decision: per-arm figures, statistic

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": self.created_at.isoformat()}


def default_sqlite_path(tracking_uri: str) -> Path:
    """Beside a SQLite MLflow store (``sqlite:///x/mlflow.db`` → ``x/domain_configs.db``),
    else in the current folder."""
    parts = urlsplit(tracking_uri)
    if parts.scheme == "sqlite" and parts.path not in ("", "/", "/:memory:"):
        return Path(parts.path[1:] if parts.path.startswith("/") else parts.path).with_name(
            "domain_configs.db"
        )
    return Path("domain_configs.db")


def config_from_row(row: dict[str, Any]) -> DomainConfig:
    return DomainConfig(
        domain_id=row["domain_id"],
        model_version=row["model_version"],
        registered_model=row["registered_model"],
        registry_version=int(row["registry_version"]),
        model_uri=row["model_uri"],
        serving_name=row["serving_name"],
        metrics=json.loads(row["metrics"]),
        version_number=int(row["version_number"]),
        updated_at=to_datetime(row["updated_at"]),
        previous_registry_version=row["previous_registry_version"],
        training_run_id=row["training_run_id"],
        semver=row.get("semver"),
        split=json.loads(row["split"]) if row.get("split") else None,
    )


def decoded(column: str, value: Any) -> Any:
    """A promotions column's value as :func:`promotion_from_row` reads it back."""
    if column in ("metrics", "targets"):
        return json.loads(value)
    if column == "decision":
        loaded = json.loads(value) if value else None
        return GateDecision.from_dict(loaded) if loaded else None
    return value


def as_read(column: str, value: Any) -> Any:
    """A promotions column's new value as :func:`promotion_from_row` will read it back,
    without the JSON round trip: plain string keys (and values, for ``targets``), a
    decision as a :class:`GateDecision`."""
    if column == "targets":
        return {str(key): str(status) for key, status in value.items()}
    if column == "metrics":
        return {str(key): number for key, number in value.items()}
    if column == "decision" and isinstance(value, dict):
        return GateDecision.from_dict(value)
    return value


def promotion_from_row(row: dict[str, Any]) -> Promotion:
    return Promotion(
        id=int(row["id"]),
        request_key=row["request_key"],
        domain_id=row["domain_id"],
        registry_version=int(row["registry_version"]),
        kind=row["kind"],
        state=row["state"],
        actor=row["actor"],
        reason=row["reason"],
        metrics=decoded("metrics", row["metrics"]),
        targets=decoded("targets", row["targets"]),
        attempts=int(row["attempts"]),
        next_attempt_at=to_datetime(row["next_attempt_at"]),
        created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]),
        model_version=row["model_version"],
        model_uri=row["model_uri"],
        run_id=row["run_id"],
        training_run_id=row["training_run_id"],
        decision=decoded("decision", row["decision"]),
        last_error=row["last_error"],
        noted_in_registry=bool(row.get("noted_in_registry")),
        semver=row.get("semver"),
        registered_at=_maybe_datetime(row.get("registered_at")),
        awaiting_since=_maybe_datetime(row.get("awaiting_since")),
        approved_by=row.get("approved_by"),
        approved_at=_maybe_datetime(row.get("approved_at")),
        approval_reason=row.get("approval_reason"),
    )


def _maybe_datetime(value: Any) -> datetime | None:
    return None if value is None else to_datetime(value)


def history_from_row(row: dict[str, Any]) -> HistoryEntry:
    return HistoryEntry(
        id=int(row["id"]),
        domain_id=row["domain_id"],
        action=row["action"],
        registry_version=int(row["registry_version"]),
        actor=row["actor"],
        reason=row["reason"],
        created_at=to_datetime(row["created_at"]),
        model_version=row["model_version"],
        previous_registry_version=row["previous_registry_version"],
        version_number=row["version_number"],
        promotion_id=row["promotion_id"],
        metrics=json.loads(row["metrics"]),
        semver=row.get("semver"),
        evidence=json.loads(row["evidence"]) if row.get("evidence") else None,
    )
