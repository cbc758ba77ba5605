"""The promotion state machine.

    pending ─gate─▶ approved ─▶ config_written ─▶ redis_synced ─▶ localai_synced ─▶ done
       └──────────▶ rejected

Each arrow is recorded in the config store before the next step starts; a step
that fails leaves the promotion where it was, with the error and the time of the
next attempt (exponential backoff). The registry alias ``production`` moves last,
so production never names a version that is not in the config store and synced.
All work on one domain happens under that domain's lock.
"""

from __future__ import annotations

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
    version_metrics,
)
from domain_mlflow.settings import Settings
from domain_mlflow.sinks.config_store import ConfigStore, DomainConfig, Promotion
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
        promotion, _ = self.store.create_promotion(
            request_key=request_key or auto_request_key(domain_id, int(version.version)),
            domain_id=domain_id,
            registry_version=int(version.version),
            kind=kind,
            actor=self.actor,
            reason=reason or f"{kind} requested",
            metrics=metrics if metrics is not None else version_metrics(version),
            model_version=version.tags.get("model_version"),
            model_uri=f"models:/{version.name}/{version.version}",
            run_id=version.run_id,
            training_run_id=version.tags.get("training_run_id"),
            targets={**dict.fromkeys(TARGETS, "pending"),
                     **({"registry": PENDING_NOTE} if version.tags.get("promotion_status")
                        == "pending" else {})},
        )
        return promotion

    def process_domain(self, domain_id: str) -> list[Promotion]:
        """Finish every due, unfinished promotion of the domain, oldest first."""
        finished: list[Promotion] = []
        with self.store.database.lock(f"domain:{domain_id}", timeout=LOCK_TIMEOUT_SECONDS) as got:
            if not got:
                raise PromotionError(f"domain {domain_id!r} is locked by another promoter")
            for promotion in self.store.open_promotions(domain_id, due_only=True):
                finished.append(self._run(promotion))
                if finished[-1].is_open:
                    break  # keep order: later promotions wait for this one
        return finished

    def run(self, promotion: Promotion) -> Promotion:
        """Process the domain of ``promotion`` and return its latest record."""
        self.process_domain(promotion.domain_id)
        return self.store.get_promotion(promotion.id)

    # --- the state machine ------------------------------------------------------------

    def _run(self, promotion: Promotion) -> Promotion:
        steps: dict[str, Callable[[Promotion], Promotion]] = {
            "pending": self._gate,
            "approved": self._write_config,
            "config_written": self._sync_redis,
            "redis_synced": self._sync_localai,
            "localai_synced": self._move_alias,
        }
        while promotion.is_open:
            step = steps[promotion.state]
            try:
                promotion = step(promotion)
            except ConfigStoreError:
                self._note_in_registry(promotion, "config store unreachable")
                raise
            except (SinkError, PromotionError, DomainMlflowError, OSError) as error:
                return self._failed(promotion, error)
            except Exception as error:  # MLflow and HTTP client errors: retry later too
                if type(error).__module__.split(".")[0] not in ("mlflow", "requests", "redis"):
                    raise
                return self._failed(promotion, error)
            if self.failpoint:
                self.failpoint(promotion.state)
        return promotion

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
            name = registered_model_name(promotion.domain_id)
            version = str(promotion.registry_version)
            self.client.set_model_version_tag(name, version, "promotion_status", "pending")
            self.client.set_model_version_tag(name, version, "promotion_error", error[:500])
        except Exception as tag_error:  # the registry may be down as well
            _log.debug("could not tag the pending promotion: %s", tag_error)

    def _gate(self, promotion: Promotion) -> Promotion:
        targets = dict(promotion.targets)
        if promotion.kind == "rollback":
            return self.store.advance(promotion, "approved", targets=targets)
        thresholds = self.thresholds(promotion.domain_id)
        current = self.store.get_config(promotion.domain_id)
        champion = current.metrics if current and self.settings.champion_challenger else None
        decision = decide(promotion.metrics, thresholds, champion=champion).to_dict()
        if promotion.kind == "promote" and current and \
                promotion.registry_version < current.registry_version and \
                promotion.request_key.startswith("auto:"):
            decision["passed"] = False
            decision["reasons"].append(
                f"superseded: production is already version {current.registry_version}")
        if promotion.kind == "promote" and not decision["passed"]:
            reason = "; ".join(decision["reasons"])
            for target in TARGETS:
                targets[target] = "skipped: rejected by the gate"
            rejected = self.store.reject(promotion, decision, reason, targets)
            self._tag_decision(rejected, "rejected", reason)
            return rejected
        return self.store.advance(promotion, "approved", decision=decision, targets=targets)

    def _tag_decision(self, promotion: Promotion, status: str, reason: str) -> None:
        name = registered_model_name(promotion.domain_id)
        version = str(promotion.registry_version)
        self.client.set_model_version_tag(name, version, "promotion_status", status)
        self.client.set_model_version_tag(name, version, "promotion_reason", reason[:500])

    def _write_config(self, promotion: Promotion) -> Promotion:
        if not promotion.model_version:
            raise PromotionError(
                f"version {promotion.registry_version} of {promotion.domain_id} has no "
                "model_version tag; register it with domain-mlflow train"
            )
        return self.store.write_config(
            promotion,
            action=KINDS[promotion.kind],
            registered_model=registered_model_name(promotion.domain_id),
            serving_name=serving_name(promotion.domain_id),
            targets={**promotion.targets, "config_store": "done"},
        )

    def _current(self, promotion: Promotion) -> DomainConfig | None:
        """The domain's config if it still names this promotion's version, else None."""
        config = self.store.get_config(promotion.domain_id)
        if config is None or config.registry_version != promotion.registry_version:
            return None
        return config

    def _superseded(self, promotion: Promotion) -> Promotion:
        """A later promotion already took the domain over: nothing left to sync for this one."""
        targets = {key: value if value == "done" else "skipped: superseded by a later promotion"
                   for key, value in promotion.targets.items()}
        return self.store.advance(promotion, "done", targets=targets)

    def _sync_redis(self, promotion: Promotion) -> Promotion:
        config = self._current(promotion)
        if config is None:
            return self._superseded(promotion)
        if self.redis is None:
            status = "skipped: REDIS_URL is not set"
        else:
            self.redis.publish_config(config.domain_id, config.serving_payload(),
                                      KINDS[promotion.kind])
            status = "done"
        return self.store.advance(promotion, "redis_synced",
                                  targets={**promotion.targets, "redis": status})

    def _sync_localai(self, promotion: Promotion) -> Promotion:
        config = self._current(promotion)
        if config is None:
            return self._superseded(promotion)
        if self.localai is None:
            status = "skipped: LOCALAI_URL or LOCALAI_MODELS_DIR is not set"
        else:
            sync_localai(self.localai, self.client, config, promotion.run_id,
                         self._model_version_of(config.previous_registry_version, promotion))
            status = "done"
        return self.store.advance(promotion, "localai_synced",
                                  targets={**promotion.targets, "localai": status})

    def _model_version_of(self, registry_version: int | None, promotion: Promotion
                          ) -> str | None:
        if registry_version is None:
            return None
        version = get_domain_version(self.client, promotion.domain_id, registry_version)
        return version.tags.get("model_version")

    def _move_alias(self, promotion: Promotion) -> Promotion:
        config = self._current(promotion)
        if config is None:
            return self._superseded(promotion)
        # The config store recorded which version this one replaced, before any sink moved.
        move_production_alias(self.client, promotion.domain_id, promotion.registry_version,
                              config.previous_registry_version)
        if promotion.targets.get("registry", "").startswith(PENDING_NOTE):
            # Overwrite the "pending" an earlier failed attempt left on the version.
            self.client.set_model_version_tag(registered_model_name(promotion.domain_id),
                                              str(promotion.registry_version),
                                              "promotion_status", "promoted")
        _log.info("%s v%s (%s) is in production", promotion.domain_id,
                  promotion.registry_version, promotion.model_version)
        return self.store.advance(promotion, "done",
                                  targets={**promotion.targets, "registry": "done"})


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
