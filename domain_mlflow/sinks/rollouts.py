"""Rollouts in the config store: a canary or an A/B test of one version against production.

A rollout's row says which version takes which share of the requests (``percent``)
at which step; the domain's config carries the same split (``domain_configs.split``)
so that Redis, rebuilt from the config store, says it too. Every change of a
rollout (start, each step, the end) is one transaction with the split, the
promotion's state, the step's decision row and a history row holding the evidence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain_mlflow.exceptions import PromotionError
from domain_mlflow.sinks.database import Transaction, to_datetime, utc_now
from domain_mlflow.sinks.rows import DomainConfig, Promotion, State
from domain_mlflow.sinks.sql import chunks

RUNNING, PAUSED = "running", "paused"
ACTIVE_STATES = (RUNNING, PAUSED)
ENDED_STATES = ("aborted", "promoted", "concluded")
KINDS = ("canary", "ab")
KIND_LABELS = {"canary": "canary", "ab": "A/B test"}  # how messages and pages name a kind
# The arm of a request: the version in production, or the one on trial.
PRODUCTION_ARM, CANDIDATE_ARM = "production", "candidate"


@dataclass
class Rollout:
    id: int
    domain_id: str
    kind: str  # canary or ab
    promotion_id: int
    registry_version: int
    model_version: str
    baseline_registry_version: int
    baseline_model_version: str
    plan: dict[str, Any]  # steps, bake_seconds, min_requests; metric, max_requests (A/B)
    step_index: int
    percent: float
    state: str
    step_started_at: datetime
    actor: str
    created_at: datetime
    updated_at: datetime
    evidence: dict[str, Any] | None = None  # the newest decision's
    outcome: str | None = None  # why it ended

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    def mark(self) -> dict[str, Any]:
        """The rollout in a few words: kind, state, candidate and share, and its step
        (1-based) of how many (``status``, the overview cards)."""
        return {"rollout_id": self.id, "kind": self.kind, "label": KIND_LABELS[self.kind],
                "state": self.state, "percent": self.percent,
                "registry_version": self.registry_version, "model_version": self.model_version,
                "baseline_registry_version": self.baseline_registry_version,
                "step": self.step_index + 1, "steps": len(self.plan["steps"]),
                "metric": self.plan.get("metric")}

    def split(self) -> dict[str, Any]:
        """What clients route by (Redis and ``domain_configs.split``)."""
        return {"rollout_id": self.id, "kind": self.kind, "percent": self.percent,
                "registry_version": self.registry_version, "model_version": self.model_version,
                "step": self.step_index}

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "step_started_at": self.step_started_at.isoformat(),
                "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


def rollout_from_row(row: dict[str, Any]) -> Rollout:
    return Rollout(
        id=int(row["id"]), domain_id=row["domain_id"], kind=row["kind"],
        promotion_id=int(row["promotion_id"]), registry_version=int(row["registry_version"]),
        model_version=row["model_version"],
        baseline_registry_version=int(row["baseline_registry_version"]),
        baseline_model_version=row["baseline_model_version"], plan=json.loads(row["plan"]),
        step_index=int(row["step_index"]), percent=float(row["percent"]), state=row["state"],
        step_started_at=to_datetime(row["step_started_at"]), actor=row["actor"],
        created_at=to_datetime(row["created_at"]), updated_at=to_datetime(row["updated_at"]),
        evidence=json.loads(row["evidence"]) if row.get("evidence") else None,
        outcome=row.get("outcome"),
    )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class RolloutRecords:
    """The config store's rollout reads and writes (a mixin of ``ConfigStore``, whose
    ``_advance``, ``_history``, ``_configs`` and ``_promotions`` it uses)."""

    database: Any
    _advance: Any
    _history: Any
    _configs: Any
    _promotions: Any

    # --- reads ------------------------------------------------------------------------

    def active_rollouts(self, domain_ids: list[str] | None = None) -> list[Rollout]:
        """Running and paused rollouts (of these domains), oldest first."""
        sql = "SELECT * FROM rollouts WHERE state IN (%s, %s)"
        rows: list[dict[str, Any]] = []
        with self.database.transaction() as tx:
            if domain_ids is None:
                rows = tx.execute(sql, ACTIVE_STATES)
            for chunk in chunks(domain_ids or []):
                rows += tx.execute(sql + f" AND domain_id IN ({', '.join(['%s'] * len(chunk))})",
                                   (*ACTIVE_STATES, *chunk))
        return sorted((rollout_from_row(row) for row in rows), key=lambda r: r.id)

    def active_rollout(self, domain_id: str) -> Rollout | None:
        found = self.active_rollouts([domain_id])
        return found[0] if found else None

    def rollout_domains_since(self, since: datetime) -> list[str]:
        """Domains with a rollout running, or one that changed since ``since``."""
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT DISTINCT domain_id FROM rollouts WHERE state IN (%s, %s) "
                              "OR updated_at >= %s ORDER BY domain_id", (*ACTIVE_STATES, since))
        return [row["domain_id"] for row in rows]

    def get_rollout(self, rollout_id: int) -> Rollout:
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT * FROM rollouts WHERE id = %s", (rollout_id,))
        if not rows:
            raise PromotionError(f"no rollout {rollout_id}")
        return rollout_from_row(rows[0])

    def rollouts(self, domain_id: str, limit: int = 20) -> list[Rollout]:
        """The domain's rollouts, newest first."""
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT * FROM rollouts WHERE domain_id = %s ORDER BY id DESC "
                              "LIMIT %s", (domain_id, limit))
        return [rollout_from_row(row) for row in rows]

    def rollout_decisions(self, rollout_id: int) -> list[dict[str, Any]]:
        """Each decided step of a rollout, in order, with its evidence."""
        with self.database.transaction() as tx:
            rows = tx.execute("SELECT * FROM rollout_decisions WHERE rollout_id = %s "
                              "ORDER BY step_index", (rollout_id,))
        return [{**row, "evidence": json.loads(row["evidence"]),
                 "created_at": to_datetime(row["created_at"]).isoformat()} for row in rows]

    def rollout_requests(self, rollout_id: int, since: datetime) -> list[dict[str, Any]]:
        """Arm, status, latency and quality of the rollout's requests since ``since``."""
        with self.database.transaction() as tx:
            return tx.execute("SELECT arm, status, latency_ms, quality FROM serving_requests "
                              "WHERE rollout_id = %s AND started_at >= %s",
                              (rollout_id, since))

    def rollout_series(self, rollout_id: int, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` requests of a rollout, newest first: arm, time, status,
        latency, quality (the dashboard's series)."""
        with self.database.transaction() as tx:
            return tx.execute("SELECT arm, started_at, status, latency_ms, quality "
                              "FROM serving_requests WHERE rollout_id = %s "
                              "ORDER BY started_at DESC LIMIT %s", (rollout_id, limit))

    # --- writes -----------------------------------------------------------------------

    def start_rollout(self, promotion: Promotion, *, kind: str, plan: dict[str, Any],
                      percent: float, actor: str, reason: str,
                      approval: dict[str, Any] | None = None) -> tuple[Rollout, DomainConfig]:
        """Put ``promotion``'s version on trial beside production: the rollout row, the
        split on the domain's config, the promotion ``in_rollout`` (with ``approval``'s
        fields: who approved it, when, why) and a ``<kind>_start`` history row. Refused
        while the domain has a rollout running or nothing in production."""
        now = utc_now()
        with self.database.transaction() as tx:
            domain = promotion.domain_id
            if tx.execute("SELECT id FROM rollouts WHERE domain_id = %s AND state IN (%s, %s)",
                          (domain, *ACTIVE_STATES)):
                raise PromotionError(f"{domain} already has a rollout running: one at a time "
                                     "(domain-mlflow canary status)")
            config = self._configs(tx, [domain]).get(domain)
            if config is None:
                raise PromotionError(f"{domain} has nothing in production to compare with; "
                                     "promote a first version")
            if config.registry_version == promotion.registry_version:
                raise PromotionError(f"version {promotion.registry_version} of {domain} is "
                                     "already in production")
            row = tx.execute(
                "INSERT INTO rollouts (domain_id, kind, promotion_id, registry_version, "
                "model_version, baseline_registry_version, baseline_model_version, plan, "
                "step_index, percent, state, step_started_at, actor, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s, %s) RETURNING *",
                (domain, kind, promotion.id, promotion.registry_version,
                 promotion.model_version, config.registry_version, config.model_version,
                 _json(plan), percent, RUNNING, now, actor, now, now))
            rollout = rollout_from_row(row[0])
            self._advance(tx, [(promotion, State.IN_ROLLOUT, approval or {})])
            if approval and approval.get("approved_by"):
                self._history(tx, [(promotion, "approve", approval["approval_reason"], None,
                                    None)], actor=approval["approved_by"])
            self._set_split(tx, domain, rollout.split())
            self._history(tx, [(promotion, f"{kind}_start", reason,
                                config.registry_version, None)],
                          actor=actor, evidence={"plan": plan, "percent": percent})
            config = self._configs(tx, [domain])[domain]
        return rollout, config

    def step_rollout(self, rollout: Rollout, *, percent: float, evidence: dict[str, Any],
                     actor: str) -> tuple[Rollout, DomainConfig]:
        """The step passed: its decision row, then the next step's share (compare-and-set on
        the step: a second evaluator of the same step changes nothing and is told so)."""
        now = utc_now()
        with self.database.transaction() as tx:
            self._move(tx, rollout, "step_index = %s, percent = %s, step_started_at = %s, "
                       "evidence = %s", (rollout.step_index + 1, percent, now, _json(evidence)))
            self._decide_step(tx, rollout, "next_step", evidence, actor)
            moved = self._rollout(tx, rollout.id)
            self._set_split(tx, rollout.domain_id, moved.split())
            config = self._configs(tx, [rollout.domain_id])[rollout.domain_id]
        return moved, config

    def set_rollout_state(self, rollout: Rollout, state: str) -> Rollout:
        """Pause or resume (``paused`` / ``running``); the split stays as it is."""
        with self.database.transaction() as tx:
            self._move(tx, rollout, "state = %s", (state,))
            return self._rollout(tx, rollout.id)

    def end_rollout(self, rollout: Rollout, *, state: str, decision: str,
                    evidence: dict[str, Any], actor: str, reason: str, promote: bool
                    ) -> tuple[Rollout, Promotion, DomainConfig | None]:
        """The rollout's last decision (``state``: aborted, promoted or concluded): its
        decision row; the promotion ``approved`` (``promote``: the promotion machine
        deploys it, and its config write ends the split) or ``rejected`` (the split is
        removed now); a ``<kind>_<decision>`` history row with the evidence."""
        with self.database.transaction() as tx:
            self._move(tx, rollout, "state = %s, outcome = %s, evidence = %s",
                       (state, reason[:2000], _json(evidence)))
            self._decide_step(tx, rollout, decision, evidence, actor)
            promotion = self._promotions(tx, [rollout.promotion_id])[0]
            changes = {} if promote else {"approved_by": None, "approved_at": utc_now(),
                                          "approval_reason": reason[:2000]}
            promotion = self._advance(tx, [(
                promotion, State.APPROVED if promote else State.REJECTED, changes)])[0]
            if not promote:
                self._set_split(tx, rollout.domain_id, None)
            self._history(tx, [(promotion, f"{rollout.kind}_{decision}",
                                reason, rollout.baseline_registry_version, None)],
                          actor=actor, evidence=evidence)
            config = self._configs(tx, [rollout.domain_id]).get(rollout.domain_id)
            return self._rollout(tx, rollout.id), promotion, config

    # --- inside a transaction ---------------------------------------------------------

    def _rollout(self, tx: Transaction, rollout_id: int) -> Rollout:
        return rollout_from_row(tx.execute("SELECT * FROM rollouts WHERE id = %s",
                                           (rollout_id,))[0])

    def _move(self, tx: Transaction, rollout: Rollout, assignments: str,
              values: tuple[Any, ...]) -> None:
        """Compare-and-set: only from the state and step ``rollout`` was read at."""
        changed = tx.execute_many(
            f"UPDATE rollouts SET {assignments}, updated_at = %s WHERE id = %s AND state = %s "
            "AND step_index = %s", [(*values, utc_now(), rollout.id, rollout.state,
                                     rollout.step_index)])
        if changed != 1:
            raise PromotionError(f"rollout {rollout.id} of {rollout.domain_id} moved on "
                                 f"concurrently (expected {rollout.state} at step "
                                 f"{rollout.step_index})")

    def _decide_step(self, tx: Transaction, rollout: Rollout, decision: str,
                     evidence: dict[str, Any], actor: str) -> None:
        tx.execute("INSERT INTO rollout_decisions (rollout_id, step_index, percent, decision, "
                   "evidence, actor, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                   (rollout.id, rollout.step_index, rollout.percent, decision, _json(evidence),
                    actor, utc_now()))

    def _set_split(self, tx: Transaction, domain_id: str, split: dict[str, Any] | None) -> None:
        tx.execute("UPDATE domain_configs SET split = %s WHERE domain_id = %s",
                   (_json(split) if split else None, domain_id))
