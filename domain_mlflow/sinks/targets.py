"""``ServingTargets``: the one writer of every place that says what a domain serves.

The config store's pointers (``domain_configs`` and its history, a rollout's split),
the Redis key and its publish, LocalAI's versioned config and stable name, the registry alias
``production`` and the version tags that mirror a promotion: promotion steps,
drift repair, ``sync --rebuild-redis``, rollback and the deployments plugin all
write through this object, and nothing else writes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from domain_mlflow.exceptions import PromotionError
from domain_mlflow.redaction import Redactor
from domain_mlflow.registry import DomainRegistry, move_production_alias, set_version_tags
from domain_mlflow.sinks.config_store import ConfigStore, ConfigWrite, DomainConfig, Promotion
from domain_mlflow.sinks.localai import LocalAISink, merged_model_fetcher
from domain_mlflow.sinks.redis_sink import RedisSink
from domain_mlflow.sinks.rows import TargetStatus

_log = logging.getLogger(__name__)

NO_REDIS = TargetStatus.SKIPPED.text("REDIS_URL is not set")
NO_LOCALAI = TargetStatus.SKIPPED.text("LOCALAI_URL or LOCALAI_MODELS_DIR is not set")
DONE = TargetStatus.DONE.value


class ServingTargets:
    """Writes serving pointers; each write returns the target's status text.

    ``reached(point)`` is called right after each side effect, before its caller
    records it (how the crash tests stop a process between the two)."""

    def __init__(self, registry: DomainRegistry, store: ConfigStore | None = None,
                 redis: RedisSink | None = None, localai: LocalAISink | None = None,
                 reached: Callable[[str], None] | None = None,
                 redact: Callable[[str], str] | None = None) -> None:
        self.registry = registry
        self.redact = redact or Redactor()
        self.store = store
        self.redis = redis
        self.localai = localai
        self.reached = reached

    def _reached(self, point: str) -> None:
        if self.reached:
            self.reached(point)

    # --- LocalAI ------------------------------------------------------------------

    def make_servable(self, domain_id: str, model_version: str, run_id: str | None,
                      semver: str | None = None) -> str:
        """Export the version's merged model and serve it under its versioned name,
        confirmed by ``GET /v1/models``; no pointer names it yet."""
        if self.localai is None:
            return NO_LOCALAI
        if not run_id:
            raise PromotionError(f"{model_version} has no training run to export from")
        self.localai.export(domain_id, model_version,
                            merged_model_fetcher(run_id, self.registry.client.tracking_uri))
        self.localai.serve_version(domain_id, model_version, semver)
        self._reached("localai-imported")
        return DONE

    def point_serving_name(self, serving_name: str, model_version: str,
                           replaced_version: str | None) -> str:
        """Point LocalAI's stable name at a servable version; unload the one it replaces."""
        if self.localai is None:
            return NO_LOCALAI
        self.localai.point(serving_name, model_version, replaced_version)
        self._reached("localai-pointed")
        return DONE

    def serve(self, serving_name: str, domain_id: str, model_version: str, run_id: str | None,
              replaced_version: str | None, semver: str | None = None) -> str:
        """:meth:`make_servable`, then :meth:`point_serving_name` (repair, the plugin)."""
        status = self.make_servable(domain_id, model_version, run_id, semver)
        if status != DONE:
            return status
        return self.point_serving_name(serving_name, model_version, replaced_version)

    # --- the config store ---------------------------------------------------------

    def write_configs(self, writes: list[ConfigWrite]) -> list[tuple[Promotion, DomainConfig]]:
        """Point domains at their promotions' versions (config + history rows + state)."""
        return self._store().write_configs(writes)

    # --- rollouts: the split is in the config store first, Redis follows (publish) ------

    def start_rollout(self, promotion: Promotion, **fields: Any) -> tuple[Any, DomainConfig]:
        """A canary or A/B split beside production (:meth:`ConfigStore.start_rollout`)."""
        return self._store().start_rollout(promotion, **fields)

    def step_rollout(self, rollout: Any, **fields: Any) -> tuple[Any, DomainConfig]:
        """The next step's share (:meth:`ConfigStore.step_rollout`)."""
        return self._store().step_rollout(rollout, **fields)

    def end_rollout(self, rollout: Any, **fields: Any
                    ) -> tuple[Any, Promotion, DomainConfig | None]:
        """The rollout's last decision (:meth:`ConfigStore.end_rollout`)."""
        return self._store().end_rollout(rollout, **fields)

    def _store(self) -> ConfigStore:
        if self.store is None:
            raise PromotionError("no config store is configured")
        return self.store

    # --- Redis --------------------------------------------------------------------

    def publish(self, changes: list[tuple[DomainConfig, str]]) -> str:
        """SET each domain's key to its config and PUBLISH it, all in one MULTI/EXEC."""
        if self.redis is None:
            return NO_REDIS
        if changes:
            self.redis.publish_configs([(config.domain_id, config.serving_payload(), event)
                                        for config, event in changes])
            self._reached("redis-written")
        return DONE

    def repair_redis(self, configs: list[DomainConfig]) -> list[DomainConfig]:
        """Rewrite the Redis keys that differ from these configs (one MGET, then one
        MULTI/EXEC for the drifted ones); returns those."""
        if self.redis is None or not configs:
            return []
        stored = self.redis.get_many([config.domain_id for config in configs])
        drifted = [c for c in configs if stored.get(c.domain_id) != c.serving_payload()]
        self.publish([(config, "repair") for config in drifted])
        return drifted

    # --- the registry -------------------------------------------------------------

    def move_alias(self, domain_id: str, version: int, replaced: int | None, *,
                   clear_pending_note: bool = False) -> str:
        """``production`` → ``version`` (``previous`` → the replaced one), stage tags."""
        client = self.registry.client
        move_production_alias(client, domain_id, version, replaced)
        if clear_pending_note:
            set_version_tags(client, domain_id, version, {"promotion_status": "promoted"})
        self._reached("alias-moved")
        return DONE

    def tag_decision(self, domain_id: str, version: int, status: str, reason: str) -> None:
        """Mirror a decision on the version (the config store already holds it)."""
        try:
            set_version_tags(self.registry.client, domain_id, version,
                             {"promotion_status": status,
                              "promotion_reason": self.redact(reason)[:500]})
        except Exception as error:  # the tag only mirrors what is recorded
            _log.warning("could not tag %s v%s as %s: %s", domain_id, version, status,
                         self.redact(str(error)))

    def tag_review(self, domain_id: str, version: int, tags: dict[str, str]) -> None:
        """Mirror a review (``approval`` = pending, approved, rejected, closed; who, why) on
        the version; best effort, the config store already holds it."""
        try:
            set_version_tags(self.registry.client, domain_id, version,
                             {key: self.redact(value)[:500] for key, value in tags.items()})
        except Exception as error:  # the tag only mirrors what is recorded
            _log.warning("could not tag the review of %s v%s: %s", domain_id, version,
                         self.redact(str(error)))

    def note_pending(self, domain_id: str, version: int | str, error: str) -> bool:
        """Best effort: a pending promotion shows on the version even with the store down."""
        try:
            set_version_tags(self.registry.client, domain_id, version,
                             {"promotion_status": "pending",
                              "promotion_error": self.redact(error)[:500]})
        except Exception as tag_error:  # the registry may be down as well
            _log.debug("could not tag the pending promotion: %s", self.redact(str(tag_error)))
            return False
        return True

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()


def status_is_done(text: Any) -> bool:
    return isinstance(text, str) and TargetStatus.of(text) is TargetStatus.DONE
