"""The promotion state machine.

    pending ─gate─▶ approved ─▶ config_written ─▶ redis_synced ─▶ localai_synced ─▶ done
       └──────────▶ rejected

Each arrow is recorded in the config store before the next step starts; a step
that fails leaves the promotion where it was, with the error and the time of the
next attempt (exponential backoff). The registry alias ``production`` moves last,
so production never names a version that is not in the config store and synced.
All work on one domain happens under that domain's lock. Many domains can go
through together (the poller's batches): then each step is one transaction for
all of their promotions, recorded before any of them takes the next step.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from domain_mlflow.exceptions import (
    ConfigStoreError,
    DomainMlflowError,
    PromotionError,
    SinkError,
)
from domain_mlflow.gate import Thresholds, decide
from domain_mlflow.naming import registered_model_name
from domain_mlflow.registry import (
    domain_thresholds,
    get_domain_version,
    move_production_alias,
    set_version_tags,
    version_metrics,
)
from domain_mlflow.settings import Settings
from domain_mlflow.sinks.config_store import (
    ConfigStore,
    ConfigWrite,
    DomainConfig,
    Promotion,
)
from domain_mlflow.sinks.localai import LocalAISink, merged_model_fetcher
from domain_mlflow.sinks.redis_sink import RedisSink

_log = logging.getLogger(__name__)

KINDS = {"promote": "promote", "force": "force_promote", "rollback": "rollback"}
TARGETS = ("config_store", "redis", "localai", "registry")
LOCK_TIMEOUT_SECONDS = 120.0
THRESHOLD_CACHE_SECONDS = 10.0
# targets["registry"] while the version carries a promotion_status=pending tag of ours
PENDING_NOTE = "pending (noted on the version)"


def default_actor(role: str) -> str:
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


def auto_request_key(domain_id: str, registry_version: int) -> str:
    """The one automatic decision per version: poller, webhook and trainer share it."""
    return f"auto:{domain_id}:{registry_version}"


@dataclass
class Promoter:
    """Runs promotions to completion against the registry and every configured sink."""

    store: ConfigStore
    client: Any  # MlflowClient
    settings: Settings
    redis: RedisSink | None = None
    localai: LocalAISink | None = None
    actor: str = field(default_factory=lambda: default_actor("promoter"))
    failpoint: Callable[[str], None] | None = None

    _thresholds: dict[str, tuple[float, Thresholds]] = field(default_factory=dict)

    def thresholds(self, domain_id: str) -> Thresholds:
        """The domain's thresholds (environment + registered-model tags), cached briefly:
        a changed ``threshold.*`` tag applies within THRESHOLD_CACHE_SECONDS."""
        now = time.monotonic()
        cached = self._thresholds.get(domain_id)
        if cached and cached[0] > now:
            return cached[1]
        value = domain_thresholds(self.client, domain_id, self.settings.thresholds)
        self._thresholds[domain_id] = (now + THRESHOLD_CACHE_SECONDS, value)
        return value

    def prime_thresholds(self, domain_id: str, tags: dict[str, str]) -> None:
        """Fill the cache from registered-model tags already fetched (the poller's search)."""
        from domain_mlflow.registry import threshold_overrides

        value = self.settings.thresholds.with_overrides(
            threshold_overrides(tags, f"registered model {registered_model_name(domain_id)!r}"))
        self._thresholds[domain_id] = (time.monotonic() + THRESHOLD_CACHE_SECONDS, value)

    # --- requests -------------------------------------------------------------------

    def request(self, domain_id: str, registry_version: int, *, kind: str = "promote",
                request_key: str | None = None, reason: str = "",
                metrics: dict[str, Any] | None = None) -> Promotion:
        """Record the intent to move ``domain_id`` to ``registry_version`` (idempotent by key)."""
        if kind not in KINDS:
            raise PromotionError(f"unknown promotion kind {kind!r}")
        version = get_domain_version(self.client, domain_id, registry_version)
        return self.request_for(domain_id, version, kind=kind, request_key=request_key,
                                reason=reason, metrics=metrics)

    def request_for(self, domain_id: str, version: Any, *, kind: str = "promote",
                    request_key: str | None = None, reason: str = "",
                    metrics: dict[str, Any] | None = None) -> Promotion:
        """Like :meth:`request`, for a ModelVersion already fetched from the registry."""
        promotion, _ = self.store.create_promotion(**self.request_fields(
            domain_id, version, kind=kind, request_key=request_key, reason=reason,
            metrics=metrics))
        return promotion

    def request_fields(self, domain_id: str, version: Any, *, kind: str = "promote",
                       request_key: str | None = None, reason: str = "",
                       metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """The promotion record :meth:`request_for` creates, for ``store.create_promotions``."""
        return {
            "request_key": request_key or auto_request_key(domain_id, int(version.version)),
            "domain_id": domain_id,
            "registry_version": int(version.version),
            "kind": kind,
            "actor": self.actor,
            "reason": reason or f"{kind} requested",
            "metrics": metrics if metrics is not None else version_metrics(version),
            "model_version": version.tags.get("model_version"),
            "model_uri": f"models:/{version.name}/{version.version}",
            "run_id": version.run_id,
            "training_run_id": version.tags.get("training_run_id"),
            "targets": {**dict.fromkeys(TARGETS, "pending"),
                        **({"registry": PENDING_NOTE} if version.tags.get("promotion_status")
                           == "pending" else {})},
        }

    # --- processing -------------------------------------------------------------------

    def process_domain(self, domain_id: str) -> list[Promotion]:
        """Finish every due, unfinished promotion of the domain, oldest first."""
        with self.store.database.lock(f"domain:{domain_id}", timeout=LOCK_TIMEOUT_SECONDS) as got:
            if not got:
                raise PromotionError(f"domain {domain_id!r} is locked by another promoter")
            return self._process_locked([domain_id])

    def process_domains(self, domain_ids: list[str]) -> tuple[list[Promotion], list[str]]:
        """:meth:`process_domain` for many domains at once: each step is one transaction
        (and one Redis round trip) for all of them. Returns the promotions processed and
        the domains skipped because another promoter holds their lock."""
        names = {f"domain:{domain_id}": domain_id for domain_id in domain_ids}
        with self.store.database.lock_many(list(names)) as held:
            locked = [domain for name, domain in names.items() if name in held]
            busy = [domain for name, domain in names.items() if name not in held]
            return self._process_locked(locked), busy

    def run(self, promotion: Promotion) -> Promotion:
        """Process the domain of ``promotion`` and return its latest record."""
        self.process_domain(promotion.domain_id)
        return self.store.get_promotion(promotion.id)

    def _process_locked(self, domain_ids: list[str]) -> list[Promotion]:
        # Under their locks only this promoter writes these domains' configs: read them once.
        configs = self.store.get_configs(domain_ids)
        queues: dict[str, list[Promotion]] = {}
        for promotion in self.store.open_promotions_of(domain_ids, due_only=True):
            queues.setdefault(promotion.domain_id, []).append(promotion)
        finished: list[Promotion] = []
        while queues:
            # Each domain's oldest promotion; the domain's later ones wait for it.
            wave = self._run_wave([queue.pop(0) for queue in queues.values()], configs)
            finished += wave
            stuck = {promotion.domain_id for promotion in wave if promotion.is_open}
            queues = {domain: queue for domain, queue in queues.items()
                      if queue and domain not in stuck}
        return finished

    # --- the state machine ------------------------------------------------------------

    def _run_wave(self, promotions: list[Promotion], configs: dict[str, DomainConfig]
                  ) -> list[Promotion]:
        """Take each promotion (at most one per domain) as far as it goes. Every step is
        recorded for all of them before the next step starts; ``configs`` follows along."""
        steps: list[tuple[str, Callable[[list[Promotion], dict[str, DomainConfig]],
                                        list[Promotion]]]] = [
            ("pending", self._gate),
            ("approved", self._write_config),
            ("config_written", self._sync_redis),
            ("redis_synced", self._sync_localai),
            ("localai_synced", self._move_alias),
        ]
        latest = {promotion.id: promotion for promotion in promotions}
        for state, step in steps:
            group = [promotion for promotion in latest.values() if promotion.state == state]
            if not group:
                continue
            try:
                moved = step(group, configs)
            except ConfigStoreError:
                for promotion in group:
                    self._note_in_registry(promotion, "config store unreachable")
                raise
            latest.update((promotion.id, promotion) for promotion in moved)
            if self.failpoint:
                for reached in dict.fromkeys(p.state for p in moved if p.state != state):
                    self.failpoint(reached)
        return list(latest.values())

    def _each(self, group: list[Promotion], action: Callable[[Promotion], Any]
              ) -> tuple[list[tuple[Promotion, Any]], list[Promotion]]:
        """Run ``action`` on each promotion: (promotion, result) pairs for those it
        worked on, and the others, their failure recorded for a retry with backoff."""
        worked, failed = [], []
        for promotion in group:
            result, error = _attempt(functools.partial(action, promotion))
            if error is None:
                worked.append((promotion, result))
            else:
                failed.append(self._failed(promotion, error))
        return worked, failed

    def _failed(self, promotion: Promotion, error: BaseException) -> Promotion:
        attempts = promotion.attempts + 1
        delay = min(self.settings.promotion_retry_max_seconds,
                    self.settings.promotion_retry_base_seconds * 2 ** (attempts - 1))
        targets = dict(promotion.targets)
        step = _TARGET_OF_STATE.get(promotion.state)
        if step:
            targets[step] = f"failed: {error}"[:500]
        # _note_in_registry marks the version pending; success must clear that mark.
        targets["registry"] = (PENDING_NOTE if step != "registry"
                               else f"{PENDING_NOTE}, failed: {error}"[:500])
        _log.warning("promotion %s of %s v%s failed at %s (attempt %s, retry in %.1fs): %s",
                     promotion.id, promotion.domain_id, promotion.registry_version,
                     promotion.state, attempts, delay, error)
        self._note_in_registry(promotion, str(error))
        return self.store.record_failure(promotion, f"{type(error).__name__}: {error}",
                                         timedelta(seconds=delay), targets)

    def _note_in_registry(self, promotion: Promotion, error: str) -> None:
        """Best effort: a pending promotion is visible on the version even if the store is down."""
        try:
            set_version_tags(self.client, promotion.domain_id, promotion.registry_version,
                             {"promotion_status": "pending", "promotion_error": error[:500]})
        except Exception as tag_error:  # the registry may be down as well
            _log.debug("could not tag the pending promotion: %s", tag_error)

    def _gate(self, group: list[Promotion], configs: dict[str, DomainConfig]
              ) -> list[Promotion]:
        decided, failed = self._each(
            group, lambda promotion: self._decide(promotion, configs.get(promotion.domain_id)))
        approvals, refusals = [], []
        for promotion, decision in decided:
            if promotion.kind == "promote" and decision and not decision["passed"]:
                refusals.append((promotion, decision, "; ".join(decision["reasons"]),
                                 {**promotion.targets,
                                  **dict.fromkeys(TARGETS, "skipped: rejected by the gate")}))
            else:
                approvals.append((promotion, "approved",
                                  {"targets": dict(promotion.targets),
                                   **({"decision": decision} if decision else {})}))
        moved = self.store.advance_many(approvals) if approvals else []
        for rejected, (_, _, reason, _) in zip(
                self.store.reject_many(refusals) if refusals else [], refusals, strict=True):
            self._tag_decision(rejected, "rejected", reason)
            moved.append(rejected)
        return moved + failed

    def _decide(self, promotion: Promotion, current: DomainConfig | None
                ) -> dict[str, Any] | None:
        """The gate's decision (None for a rollback, which skips the gate)."""
        if promotion.kind == "rollback":
            return None
        champion = current.metrics if current and self.settings.champion_challenger else None
        decision = decide(promotion.metrics, self.thresholds(promotion.domain_id),
                          champion=champion).to_dict()
        if promotion.kind == "promote" and current and \
                promotion.registry_version < current.registry_version and \
                promotion.request_key.startswith("auto:"):
            decision["passed"] = False
            decision["reasons"].append(
                f"superseded: production is already version {current.registry_version}")
        return decision

    def _tag_decision(self, promotion: Promotion, status: str, reason: str) -> None:
        try:
            set_version_tags(self.client, promotion.domain_id, promotion.registry_version,
                             {"promotion_status": status, "promotion_reason": reason[:500]})
        except Exception as error:  # the decision is recorded; the tag only mirrors it
            _log.warning("could not tag %s v%s as %s: %s", promotion.domain_id,
                         promotion.registry_version, status, error)

    def _write_config(self, group: list[Promotion], configs: dict[str, DomainConfig]
                      ) -> list[Promotion]:
        writes, failed = self._each(group, self._config_write)
        moved = []
        for promotion, config in self.store.write_configs([w for _, w in writes]) if writes \
                else []:
            configs[config.domain_id] = config
            moved.append(promotion)
        return moved + failed

    def _config_write(self, promotion: Promotion) -> ConfigWrite:
        if not promotion.model_version:
            raise PromotionError(
                f"version {promotion.registry_version} of {promotion.domain_id} has no "
                "model_version tag; register it with domain-mlflow train"
            )
        return ConfigWrite(promotion, KINDS[promotion.kind],
                           registered_model_name(promotion.domain_id),
                           serving_name(promotion.domain_id),
                           {**promotion.targets, "config_store": "done"})

    def _sync(self, group: list[Promotion], configs: dict[str, DomainConfig], to_state: str,
              target: str, sync: Callable[[list[Promotion]], tuple[
                  list[tuple[Promotion, str]], list[Promotion]]]) -> list[Promotion]:
        """One sync step: ``sync`` the promotions the domain's config still names, give up
        on the ones a later promotion superseded, record both in one transaction."""
        live = [p for p in group if _names(configs.get(p.domain_id), p)]
        moves: list[tuple[Promotion, str, dict[str, Any]]] = [
            (p, "done", {"targets": {key: value if value == "done"
                                     else "skipped: superseded by a later promotion"
                                     for key, value in p.targets.items()}})
            for p in group if p not in live]
        worked, failed = sync(live) if live else ([], [])
        moves += [(p, to_state, {"targets": {**p.targets, target: status}})
                  for p, status in worked]
        return (self.store.advance_many(moves) if moves else []) + failed

    def _sync_redis(self, group: list[Promotion], configs: dict[str, DomainConfig]
                    ) -> list[Promotion]:
        def publish(live: list[Promotion]) -> tuple[list[tuple[Promotion, str]],
                                                    list[Promotion]]:
            if self.redis is None:
                return [(p, "skipped: REDIS_URL is not set") for p in live], []
            redis = self.redis
            changes = [(p.domain_id, configs[p.domain_id].serving_payload(), KINDS[p.kind])
                       for p in live]
            # One pipeline for all: it is applied whole or not at all.
            _, error = _attempt(lambda: redis.publish_configs(changes))
            if error is not None:
                return [], [self._failed(p, error) for p in live]
            return [(p, "done") for p in live], []

        return self._sync(group, configs, "redis_synced", "redis", publish)

    def _sync_localai(self, group: list[Promotion], configs: dict[str, DomainConfig]
                      ) -> list[Promotion]:
        def switch(live: list[Promotion]) -> tuple[list[tuple[Promotion, str]],
                                                   list[Promotion]]:
            if self.localai is None:
                return [(p, "skipped: LOCALAI_URL or LOCALAI_MODELS_DIR is not set")
                        for p in live], []
            localai = self.localai
            worked, failed = self._each(live, lambda p: sync_localai(
                localai, self.client, configs[p.domain_id], p.run_id,
                self._model_version_of(configs[p.domain_id].previous_registry_version, p)))
            return [(p, "done") for p, _ in worked], failed

        return self._sync(group, configs, "localai_synced", "localai", switch)

    def _model_version_of(self, registry_version: int | None, promotion: Promotion
                          ) -> str | None:
        if registry_version is None:
            return None
        version = get_domain_version(self.client, promotion.domain_id, registry_version)
        return version.tags.get("model_version")

    def _move_alias(self, group: list[Promotion], configs: dict[str, DomainConfig]
                    ) -> list[Promotion]:
        def point(promotion: Promotion) -> None:
            # The config store recorded which version this one replaced, before any sink moved.
            move_production_alias(self.client, promotion.domain_id, promotion.registry_version,
                                  configs[promotion.domain_id].previous_registry_version)
            if promotion.targets.get("registry", "").startswith(PENDING_NOTE):
                # Overwrite the "pending" an earlier failed attempt left on the version.
                set_version_tags(self.client, promotion.domain_id, promotion.registry_version,
                                 {"promotion_status": "promoted"})
            _log.info("%s v%s (%s) is in production", promotion.domain_id,
                      promotion.registry_version, promotion.model_version)

        def move(live: list[Promotion]) -> tuple[list[tuple[Promotion, str]],
                                                 list[Promotion]]:
            worked, failed = self._each(live, point)
            return [(p, "done") for p, _ in worked], failed

        return self._sync(group, configs, "done", "registry", move)


def _attempt(action: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """(result, None), or (None, error) for an error worth a retry; any other is raised."""
    try:
        return action(), None
    except ConfigStoreError:
        raise  # the store itself is down: nothing can be recorded, the caller must know
    except (SinkError, PromotionError, DomainMlflowError, OSError) as error:
        return None, error
    except Exception as error:  # MLflow and HTTP client errors: retry later too
        if type(error).__module__.split(".")[0] not in ("mlflow", "requests", "redis"):
            raise
        return None, error


def _names(config: DomainConfig | None, promotion: Promotion) -> bool:
    """Whether the domain's config still names this promotion's version."""
    return config is not None and config.registry_version == promotion.registry_version


_TARGET_OF_STATE = {"approved": "config_store", "config_written": "redis",
                    "redis_synced": "localai", "localai_synced": "registry"}


def serving_name(domain_id: str) -> str:
    """The stable name clients use for a domain's production model in LocalAI."""
    return domain_id


def sync_localai(sink: LocalAISink, client: Any, config: DomainConfig, run_id: str | None,
                 replaced_model_version: str | None) -> None:
    """Export the version's merged model if needed and point the serving name at it."""
    def fetch(tmp: Path) -> Path:
        if not run_id:
            raise PromotionError(f"version {config.registry_version} has no run to export from")
        return merged_model_fetcher(run_id, client.tracking_uri)(tmp)

    sink.export(config.domain_id, config.model_version, fetch)
    sink.switch(config.serving_name, config.domain_id, config.model_version,
                replaced_model_version)


def env_failpoint() -> Callable[[str], None] | None:
    """``DOMAIN_MLFLOW_FAILPOINT=<state>`` ends the process right after that state is
    recorded (exit code 99): how the crash-recovery tests kill a promotion mid-way."""
    state = os.environ.get("DOMAIN_MLFLOW_FAILPOINT")
    if not state:
        return None

    def crash(reached: str) -> None:
        if reached == state:
            os._exit(99)

    return crash
