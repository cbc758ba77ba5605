"""The promotion state machine.

    pending ─gate─▶ approved ─▶ servable ─▶ config_written ─▶ redis_synced ─▶ localai_synced ─▶ done
       │   └─ manual mode ─▶ awaiting_approval ─approve─▶ approved
       │                            └─ reject, superseded, expired ─▶ rejected
       ├─ canary / A/B start ─▶ in_rollout ─promote─▶ approved
       │                              └─ abort, concluded ─▶ rejected
       └──────────▶ rejected

The new version is made servable first (LocalAI: merged model exported, versioned
config imported, listed by ``GET /v1/models``); only then do the pointers flip,
one per step: the config store, the Redis key, LocalAI's stable name, the registry
alias ``production``. So no pointer ever names a version that is not serving. Each
arrow is recorded in the config store before the next step starts; a step that
fails leaves the promotion where it was, with the error and the time of the next
attempt (exponential backoff). Without LocalAI its two steps have nothing to do:
their statuses are recorded with the next step's (approved ─▶ config_written,
config_written ─▶ localai_synced). All writes to the targets go through
:class:`~domain_mlflow.sinks.targets.ServingTargets`. All work on one domain
happens under that domain's lock. Many domains can go through together (the
poller's batches): then each step is one transaction for all of their
promotions, recorded before any of them takes the next step.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlflow.exceptions import MlflowException

from domain_mlflow.exceptions import ConfigStoreError, DomainMlflowError, PromotionError
from domain_mlflow.gate import GateDecision, decide
from domain_mlflow.naming import registered_model_name, serving_name
from domain_mlflow.promotion import awaiting
from domain_mlflow.promotion.failpoints import env_failpoint
from domain_mlflow.registry import DomainRegistry, version_metrics
from domain_mlflow.semver import SEMVER_TAG
from domain_mlflow.services import Services
from domain_mlflow.settings import Settings
from domain_mlflow.sinks.config_store import (
    ConfigStore,
    ConfigWrite,
    DomainConfig,
    Promotion,
    domain_lock_name,
)
from domain_mlflow.sinks.database import utc_now
from domain_mlflow.sinks.rows import Kind, State, Target, TargetStatus, initial_targets
from domain_mlflow.sinks.targets import NO_LOCALAI, ServingTargets

_log = logging.getLogger(__name__)

LOCK_TIMEOUT_SECONDS = 120.0
# Errors a later attempt may not meet: the target or the registry was down or refused.
_RETRYABLE = (DomainMlflowError, MlflowException, OSError)

Step = Callable[[list[Promotion], dict[str, DomainConfig]], list[Promotion]]


def default_actor(role: str) -> str:
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


def auto_request_key(domain_id: str, registry_version: int) -> str:
    """The one automatic decision per version: poller, webhook and trainer share it."""
    return f"auto:{domain_id}:{registry_version}"


@dataclass
class Promoter:
    """Runs promotions to completion against the registry and every configured target."""

    store: ConfigStore
    registry: DomainRegistry
    targets: ServingTargets
    settings: Settings
    actor: str = field(default_factory=lambda: default_actor("promoter"))
    failpoint: Callable[[str], None] | None = None

    @classmethod
    def from_services(cls, services: Services, role: str = "promoter") -> Promoter:
        """A promoter over a process's parts, its recorded actor naming ``role``."""
        targets = services.targets  # first: it reports a settings mistake before connecting
        return cls(store=services.store, registry=services.registry, targets=targets,
                   settings=services.settings, actor=default_actor(role),
                   failpoint=env_failpoint())

    def __post_init__(self) -> None:
        # Points inside a step (after a side effect, before its record) reach the same hook.
        self.targets.reached = self.reached

    def reached(self, point: str) -> None:
        """A failpoint: the crash tests end the process here (``env_failpoint``)."""
        if self.failpoint:
            self.failpoint(point)

    @property
    def client(self) -> Any:
        """The MlflowClient of this process."""
        return self.registry.client

    # --- requests -------------------------------------------------------------------

    def request(self, domain_id: str, registry_version: int, *, kind: Kind = Kind.PROMOTE,
                request_key: str | None = None, reason: str = "") -> Promotion:
        """Record the intent to move ``domain_id`` to ``registry_version`` (idempotent by key)."""
        version = self.registry.version(domain_id, registry_version)
        return self.request_for(domain_id, version, kind=kind, request_key=request_key,
                                reason=reason)

    def request_for(self, domain_id: str, version: Any, *, kind: Kind = Kind.PROMOTE,
                    request_key: str | None = None, reason: str = "") -> Promotion:
        """Like :meth:`request`, for a ModelVersion already fetched from the registry."""
        promotion, _ = self.store.create_promotion(**self.request_fields(
            domain_id, version, kind=kind, request_key=request_key, reason=reason))
        return promotion

    def request_fields(self, domain_id: str, version: Any, *, kind: Kind = Kind.PROMOTE,
                       request_key: str | None = None, reason: str = "") -> dict[str, Any]:
        """The promotion record :meth:`request_for` creates, for ``store.create_promotions``.
        Its metrics are the version's own recorded figures: they are what the gate reads."""
        kind = Kind(kind)
        return {
            "request_key": request_key or auto_request_key(domain_id, int(version.version)),
            "domain_id": domain_id,
            "registry_version": int(version.version),
            "kind": kind,
            "actor": self.actor,
            "reason": reason or f"{kind} requested",
            "metrics": version_metrics(version),
            "model_version": version.tags.get("model_version"),
            "model_uri": f"models:/{version.name}/{version.version}",
            "run_id": version.run_id,
            "training_run_id": version.tags.get("training_run_id"),
            "targets": initial_targets(),
            "noted_in_registry": version.tags.get("promotion_status") == "pending",
            "semver": version.tags.get(SEMVER_TAG),
            "registered_at": registered_at(version),
        }

    # --- processing -------------------------------------------------------------------

    @contextmanager
    def domain_locked(self, domain_id: str) -> Iterator[None]:
        """Hold the domain's lock (waiting up to LOCK_TIMEOUT_SECONDS) for the block."""
        with self.store.domain_lock(domain_id, timeout=LOCK_TIMEOUT_SECONDS) as got:
            if not got:
                raise PromotionError(f"domain {domain_id!r} is locked by another promoter")
            yield

    def process_domain(self, domain_id: str) -> list[Promotion]:
        """Finish every due, unfinished promotion of the domain, oldest first."""
        with self.domain_locked(domain_id):
            return self.process_locked([domain_id])

    def process_domains(self, domain_ids: list[str]) -> tuple[list[Promotion], list[str]]:
        """:meth:`process_domain` for many domains at once: each step is one transaction
        (and one Redis round trip) for all of them. Returns the promotions processed and
        the domains skipped because another promoter holds their lock."""
        names = {domain_lock_name(domain_id): domain_id for domain_id in domain_ids}
        with self.store.lock_many(list(names)) as held:
            locked = [domain for name, domain in names.items() if name in held]
            busy = [domain for name, domain in names.items() if name not in held]
            return self.process_locked(locked), busy

    def run(self, promotion: Promotion) -> Promotion:
        """Process the domain of ``promotion`` and return its latest record."""
        self.process_domain(promotion.domain_id)
        return self.store.get_promotion(promotion.id)

    def process_locked(self, domain_ids: list[str]) -> list[Promotion]:
        """:meth:`process_domains` for domains whose locks the caller holds."""
        # Under their locks only this promoter writes these domains' configs: read them once.
        configs = self.store.get_configs(domain_ids)
        # A canary or A/B test decides its domain's next move: the others wait for it.
        trying = {rollout.domain_id for rollout in self.store.active_rollouts(domain_ids)}
        queues: dict[str, list[Promotion]] = {}
        for promotion in self.store.open_promotions_of(domain_ids, due_only=True):
            if promotion.domain_id not in trying:
                queues.setdefault(promotion.domain_id, []).append(promotion)
        finished: list[Promotion] = []
        while queues:
            # Each domain's oldest promotion; the domain's later ones wait for it.
            wave = self._run_wave([queue.pop(0) for queue in queues.values()], configs)
            finished += wave
            # One awaiting a person does not hold up the domain's later versions.
            stuck = {promotion.domain_id for promotion in wave if promotion.state.is_due}
            queues = {domain: queue for domain, queue in queues.items()
                      if queue and domain not in stuck}
        return finished

    # --- the state machine ------------------------------------------------------------

    def _steps(self) -> list[tuple[State, Step]]:
        # Without LocalAI its two steps have nothing to do: each one's status is recorded
        # in the next step's transaction (approved ─▶ config_written, config_written ─▶
        # localai_synced) instead of in one of its own.
        localai = self.targets.localai is not None
        return [
            (State.PENDING, self._gate),
            (State.APPROVED, self._make_servable if localai else self._write_config),
            (State.SERVABLE, self._write_config),
            (State.CONFIG_WRITTEN, self._sync_redis),
            (State.REDIS_SYNCED, self._point_localai),
            (State.LOCALAI_SYNCED, self._move_alias),
        ]

    def _run_wave(self, promotions: list[Promotion], configs: dict[str, DomainConfig]
                  ) -> list[Promotion]:
        """Take each promotion (at most one per domain) as far as it goes. Every step is
        recorded for all of them before the next step starts; ``configs`` follows along."""
        latest = {promotion.id: promotion for promotion in promotions}
        for state, step in self._steps():
            group = [promotion for promotion in latest.values() if promotion.state == state]
            if not group:
                continue
            try:
                moved = step(group, configs)
            except ConfigStoreError as error:
                for promotion in group:
                    self.targets.note_pending(promotion.domain_id, promotion.registry_version,
                                              f"config store unreachable: {error}")
                raise
            latest.update((promotion.id, promotion) for promotion in moved)
            for reached in dict.fromkeys(p.state for p in moved if p.state != state):
                self.reached(reached)
        return list(latest.values())

    def _each(self, group: list[Promotion], action: Callable[[Promotion], Any], *,
              registry: bool = False) -> tuple[list[tuple[Promotion, Any]], list[Promotion]]:
        """Run ``action`` on each promotion: (promotion, result) pairs for those it
        worked on, and the others, their failure recorded for a retry with backoff.
        ``registry``: the action is registry calls, made side by side (bounded)."""
        def attempt(promotion: Promotion) -> tuple[Any, BaseException | None]:
            return _attempt(functools.partial(action, promotion))

        outcomes = (self.registry.each(attempt, group) if registry
                    else [attempt(promotion) for promotion in group])
        worked, failed = [], []
        for promotion, (result, error) in zip(group, outcomes, strict=True):
            if error is None:
                worked.append((promotion, result))
            else:
                failed.append(self._failed(promotion, error))
        return worked, failed

    def _failed(self, promotion: Promotion, error: BaseException) -> Promotion:
        attempts = promotion.attempts + 1
        delay = min(self.settings.promotion_retry_max_seconds,
                    self.settings.promotion_retry_base_seconds * 2 ** (attempts - 1))
        message = self.targets.redact(str(error))  # recorded, tagged and logged below
        targets = dict(promotion.targets)
        target = _TARGET_OF_STATE.get(promotion.state)
        if target:
            targets[target] = TargetStatus.FAILED.text(message)
        _log.warning("promotion %s of %s v%s failed at %s (attempt %s, retry in %.1fs): %s",
                     promotion.id, promotion.domain_id, promotion.registry_version,
                     promotion.state, attempts, delay, message)
        noted = self.targets.note_pending(promotion.domain_id, promotion.registry_version,
                                          message)
        return self.store.record_failure(promotion, f"{type(error).__name__}: {message}",
                                         timedelta(seconds=delay), targets, noted)

    def _advance(self, moves: list[tuple[Promotion, State, dict[str, Any]]]
                 ) -> list[Promotion]:
        return self.store.advance_many(moves) if moves else []

    # --- gate -----------------------------------------------------------------------

    def _gate(self, group: list[Promotion], configs: dict[str, DomainConfig]
              ) -> list[Promotion]:
        decided, failed = self._each(
            group, lambda promotion: self._decide(promotion, configs.get(promotion.domain_id)))
        approvals: list[tuple[Promotion, State, dict[str, Any]]] = []
        refusals = []
        for promotion, decision in decided:
            gated = promotion.kind is Kind.PROMOTE and decision is not None
            if gated and not decision.passed:
                skipped = TargetStatus.SKIPPED.text("rejected by the gate")
                refusals.append((promotion, decision, decision.summary(),
                                 {**promotion.targets, **dict.fromkeys(Target, skipped)}))
            elif gated and self.registry.promotion_mode(promotion.domain_id) == "manual":
                approvals.append((promotion, State.AWAITING_APPROVAL,
                                  {"decision": decision, "awaiting_since": utc_now()}))
            else:
                approvals.append((promotion, State.APPROVED,
                                  {"targets": dict(promotion.targets),
                                   **({"decision": decision} if decision else {})}))
        moved = self._advance(approvals)
        waiting = [p for p in moved if p.state is State.AWAITING_APPROVAL]
        if waiting:
            moved = [p for p in moved if p.state is not State.AWAITING_APPROVAL]
            moved += awaiting.review_requested(self, waiting)
        rejected = self.store.reject_many(refusals) if refusals else []
        self.registry.each(lambda pair: self.targets.tag_decision(
            pair[0].domain_id, pair[0].registry_version, "rejected", pair[1][2]),
            list(zip(rejected, refusals, strict=True)))
        return moved + rejected + failed

    def _decide(self, promotion: Promotion, current: DomainConfig | None
                ) -> GateDecision | None:
        """The gate's decision on the version's recorded figures (None for a rollback)."""
        if promotion.kind is Kind.ROLLBACK:
            return None
        champion = current.metrics if current and self.settings.champion_challenger else None
        decision = decide(promotion.metrics, self.registry.thresholds(promotion.domain_id),
                          champion=champion)
        if promotion.kind is Kind.PROMOTE and current and \
                promotion.registry_version < current.registry_version and \
                promotion.request_key.startswith("auto:"):
            decision = decision.refused(
                f"superseded: production is already version {current.registry_version}")
        return decision

    # --- make servable, then flip the pointers ----------------------------------------

    def _make_servable(self, group: list[Promotion], configs: dict[str, DomainConfig]
                       ) -> list[Promotion]:
        worked, failed = self._each(group, self._serve)
        return self._advance([(p, State.SERVABLE,
                               {"targets": {**p.targets, Target.SERVING: status}})
                              for p, status in worked]) + failed

    def _serve(self, promotion: Promotion) -> str:
        if not promotion.model_version:
            raise PromotionError(
                f"version {promotion.registry_version} of {promotion.domain_id} has no "
                "model_version tag; register it with domain-mlflow train")
        return self.targets.make_servable(promotion.domain_id, promotion.model_version,
                                          promotion.run_id, promotion.semver)

    def _write_config(self, group: list[Promotion], configs: dict[str, DomainConfig]
                      ) -> list[Promotion]:
        failed: list[Promotion] = []
        approved = [p for p in group if p.state is State.APPROVED]
        if approved:  # no LocalAI (see _steps): the servable step's status goes along
            worked, failed = self._each(approved, self._serve)
            serving = {p.id: {**p.targets, Target.SERVING: status} for p, status in worked}
            group = [dataclasses.replace(p, targets=serving[p.id]) if p.id in serving else p
                     for p in group if p.state is not State.APPROVED or p.id in serving]
        writes = [ConfigWrite(p, p.kind.history_action, registered_model_name(p.domain_id),
                              serving_name(p.domain_id),
                              {**p.targets, Target.CONFIG_STORE: TargetStatus.DONE.value})
                  for p in group]
        moved = []
        for promotion, config in self.targets.write_configs(writes) if writes else []:
            configs[config.domain_id] = config
            moved.append(promotion)
        return moved + failed

    def _sync(self, group: list[Promotion], configs: dict[str, DomainConfig], to_state: State,
              target: Target, sync: Callable[[list[Promotion]], tuple[
                  list[tuple[Promotion, str]], list[Promotion]]],
              also: dict[Target, str] | None = None) -> list[Promotion]:
        """One pointer step: ``sync`` the promotions the domain's config still names, give
        up on the ones a later promotion superseded, record both in one transaction.
        ``also``: the statuses of a later step with nothing to do, recorded with this one."""
        live = [p for p in group if _names(configs.get(p.domain_id), p)]
        live_ids = {p.id for p in live}
        superseded = TargetStatus.SKIPPED.text("superseded by a later promotion")
        moves: list[tuple[Promotion, State, dict[str, Any]]] = [
            (p, State.DONE, {"targets": {key: value if value == TargetStatus.DONE else superseded
                                         for key, value in p.targets.items()}})
            for p in group if p.id not in live_ids]
        worked, failed = sync(live) if live else ([], [])
        moves += [(p, to_state, {"targets": {**p.targets, target: status, **(also or {})}})
                  for p, status in worked]
        return self._advance(moves) + failed

    def _sync_redis(self, group: list[Promotion], configs: dict[str, DomainConfig]
                    ) -> list[Promotion]:
        def publish(live: list[Promotion]) -> tuple[list[tuple[Promotion, str]],
                                                    list[Promotion]]:
            # One MULTI/EXEC for all: it is applied whole or not at all.
            status, error = _attempt(lambda: self.targets.publish(
                [(configs[p.domain_id], p.kind.history_action) for p in live]))
            if error is not None:
                return [], [self._failed(p, error) for p in live]
            return [(p, status) for p in live], []

        if self.targets.localai is None:  # LocalAI's step has nothing to do (see _steps)
            return self._sync(group, configs, State.LOCALAI_SYNCED, Target.REDIS, publish,
                              also={Target.LOCALAI: NO_LOCALAI})
        return self._sync(group, configs, State.REDIS_SYNCED, Target.REDIS, publish)

    def _point_localai(self, group: list[Promotion], configs: dict[str, DomainConfig]
                       ) -> list[Promotion]:
        def point(promotion: Promotion) -> str:
            config = configs[promotion.domain_id]
            return self.targets.point_serving_name(
                config.serving_name, config.model_version,
                self._model_version_of(promotion.domain_id, config.previous_registry_version))

        def switch(live: list[Promotion]) -> tuple[list[tuple[Promotion, str]],
                                                   list[Promotion]]:
            return self._each(live, point)

        return self._sync(group, configs, State.LOCALAI_SYNCED, Target.LOCALAI, switch)

    def _model_version_of(self, domain_id: str, registry_version: int | None) -> str | None:
        if registry_version is None or self.targets.localai is None:
            return None
        return self.registry.version(domain_id, registry_version).tags.get("model_version")

    def _move_alias(self, group: list[Promotion], configs: dict[str, DomainConfig]
                    ) -> list[Promotion]:
        def point(promotion: Promotion) -> str:
            # The config store recorded which version this one replaced, before any pointer.
            status = self.targets.move_alias(
                promotion.domain_id, promotion.registry_version,
                configs[promotion.domain_id].previous_registry_version,
                clear_pending_note=promotion.noted_in_registry)
            _log.info("%s v%s (%s) is in production", promotion.domain_id,
                      promotion.registry_version, promotion.model_version)
            return status

        def move(live: list[Promotion]) -> tuple[list[tuple[Promotion, str]],
                                                 list[Promotion]]:
            return self._each(live, point, registry=True)

        return self._sync(group, configs, State.DONE, Target.REGISTRY, move)


def registered_at(version: Any) -> datetime | None:
    """When the registry created ``version`` (None when it does not say)."""
    millis = getattr(version, "creation_timestamp", None)
    return datetime.fromtimestamp(millis / 1000, UTC) if millis else None


def _attempt(action: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """(result, None), or (None, error) for an error worth a retry; any other is raised."""
    try:
        return action(), None
    except ConfigStoreError:
        raise  # the store itself is down: nothing can be recorded, the caller must know
    except _RETRYABLE as error:
        return None, error


def _names(config: DomainConfig | None, promotion: Promotion) -> bool:
    """Whether the domain's config still names this promotion's version."""
    return config is not None and config.registry_version == promotion.registry_version


_TARGET_OF_STATE = {State.APPROVED: Target.SERVING, State.SERVABLE: Target.CONFIG_STORE,
                    State.CONFIG_WRITTEN: Target.REDIS, State.REDIS_SYNCED: Target.LOCALAI,
                    State.LOCALAI_SYNCED: Target.REGISTRY}
