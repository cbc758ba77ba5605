"""Manual operations: promote, rollback, history and status of a domain.

Each first finishes whatever the domain left unfinished (a crash mid-promotion),
then does its own work through the same state machine, so the registry, the
config store, Redis and LocalAI end in agreement.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from domain_mlflow.exceptions import ConfigError, PromotionError, SinkError, UnknownVersionError
from domain_mlflow.naming import REGISTERED_MODEL_PREFIX, registered_model_name, validate_domain_id
from domain_mlflow.outcomes import domain_state
from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.promotion.trigger import promotion_result
from domain_mlflow.redaction import redact
from domain_mlflow.registry import PRODUCTION_ALIAS, domain_of, paged, production_version
from domain_mlflow.semver import SEMVER_TAG, parse_semver
from domain_mlflow.sinks.rows import Kind, State


def registered_model(promoter: Promoter, domain_id: str) -> Any:
    validate_domain_id(domain_id)
    model = promoter.registry.model(domain_id)
    if model is None:
        raise UnknownVersionError(
            f"unknown domain {domain_id!r}: there is no registered model "
            f"{registered_model_name(domain_id)!r}"
        )
    return model


def _move(promoter: Promoter, domain_id: str, version: int, kind: Kind, request_key: str,
          reason: str) -> dict[str, Any]:
    """Under the lock already held: record the request and carry it out."""
    promotion = promoter.request(domain_id, version, kind=kind, request_key=request_key,
                                 reason=reason)
    promoter.process_locked([domain_id])
    return {**promotion_result(promoter.store.get_promotion(promotion.id)), "changed": True}


def promote(promoter: Promoter, domain_id: str, version: int, *, force: bool = False,
            reason: str = "", semver: str | None = None) -> dict[str, Any]:
    """Move production to ``version``: through the gate, or past it with ``force`` + reason.
    In manual mode a version that passes the gate stops at ``awaiting_approval``.
    ``semver`` replaces the version's semantic version first.

    One read of the registered model, one of the version, one hold of the domain's lock:
    first whatever the domain left unfinished, then this promotion."""
    check_promote_arguments(force, reason, semver)
    model = registered_model(promoter, domain_id)
    with promoter.domain_locked(domain_id):
        refuse_during_rollout(promoter, domain_id)
        promoter.process_locked([domain_id])
        if semver is not None:
            set_semver(promoter, domain_id, version, semver)
        waiting = [p for p in promoter.store.promotions_of_version(domain_id, version)
                   if p.state is State.AWAITING_APPROVAL]
        if waiting and not force:
            return {**promotion_result(waiting[-1]), "changed": False}
        current = promoter.store.get_config(domain_id)
        alias = model.aliases.get(PRODUCTION_ALIAS)
        if current and current.registry_version == version and alias is not None \
                and int(alias) == version:
            return {"deployed": True, "reason": f"version {version} is already in production",
                    "registry_version": str(version), "model_version": current.model_version,
                    "domain_id": domain_id, "state": "done", "changed": False}
        return _move(promoter, domain_id, version, Kind.FORCE if force else Kind.PROMOTE,
                     f"manual:{domain_id}:{version}:{uuid.uuid4().hex}",
                     reason or f"promoted by hand to version {version}")


def refuse_during_rollout(promoter: Promoter, domain_id: str) -> None:
    """A canary or A/B test decides the domain's next move: a hand-made one waits."""
    rollout = promoter.store.active_rollout(domain_id)
    if rollout is not None:
        command = "canary" if rollout.kind == "canary" else "ab"
        raise PromotionError(
            f"{domain_id} has a {command} of version {rollout.registry_version} "
            f"{rollout.state}: end it first (domain-mlflow {command} abort|promote "
            f"{domain_id} --by NAME)")


def check_promote_arguments(force: bool, reason: str, semver: str | None) -> None:
    """The mistakes in a promote request found before anything is opened."""
    if force and not reason.strip():
        raise ConfigError("--force needs --reason: say why the gate is overridden")
    if semver is not None:
        parse_semver(semver)


def set_semver(promoter: Promoter, domain_id: str, version: int, semver: str) -> None:
    """Give ``version`` the semantic version ``semver`` (refused when another version of
    the domain has it): its tag, and its open promotions' record."""
    taken = [v for v in promoter.client.search_model_versions(
        f"name = '{registered_model_name(domain_id)}' AND tags.{SEMVER_TAG} = '{semver}'")
        if int(v.version) != version]
    if taken:
        raise PromotionError(f"semver {semver} is already version {taken[0].version} of "
                             f"{domain_id}")
    promoter.registry.version(domain_id, version)  # an unknown version is refused here
    promoter.targets.tag_review(domain_id, version, {SEMVER_TAG: semver})
    promoter.store.set_semver(domain_id, version, semver)


def rollback(promoter: Promoter, domain_id: str, to: int | None = None,
             reason: str = "") -> dict[str, Any]:
    """Move production back to ``to`` (default: the version production replaced)."""
    registered_model(promoter, domain_id)
    with promoter.domain_locked(domain_id):
        refuse_during_rollout(promoter, domain_id)
        promoter.process_locked([domain_id])
        current = promoter.store.get_config(domain_id)
        if current is None:
            raise PromotionError(f"{domain_id} has nothing in production to roll back")
        target = to if to is not None else current.previous_registry_version
        if target is None:
            raise PromotionError(
                f"{domain_id} has no earlier production version; pass --to VERSION"
            )
        if target == current.registry_version:
            return {"deployed": True, "reason": f"version {target} is already in production",
                    "registry_version": str(target), "domain_id": domain_id, "state": "done",
                    "changed": False}
        return _move(promoter, domain_id, target, Kind.ROLLBACK,
                     f"rollback:{domain_id}:{target}:{uuid.uuid4().hex}",
                     reason or f"rollback from version {current.registry_version} to {target}")


def history(promoter: Promoter, domain_id: str, limit: int = 100) -> list[dict[str, Any]]:
    validate_domain_id(domain_id)
    redact = promoter.targets.redact  # rows written before redaction, or typed by a user
    return [{key: redact(value) if isinstance(value, str) else value
             for key, value in entry.as_dict().items()}
            for entry in promoter.store.history(domain_id, limit)]


def in_flight(promotion: Any, redact: Callable[[str], str] = redact) -> dict[str, Any]:
    """What an unfinished promotion shows: where it moves to, the step, the error."""
    return {"registry_version": promotion.registry_version,
            "model_version": promotion.model_version, "kind": str(promotion.kind),
            "state": str(promotion.state),
            "semver": promotion.semver,
            "error": redact(promotion.last_error) if promotion.last_error else None,
            "attempts": promotion.attempts, "promotion_id": promotion.id}


def status(promoter: Promoter, domain_id: str | None = None) -> list[dict[str, Any]]:
    """Per domain the registry or the config store knows: its ``state`` (in production,
    awaiting approval, in flight, rejected, not decided yet) and ``reason``; what serves
    (the config store's view, the registry alias, Redis and LocalAI), and apart from it
    the promotion in flight and the canary or A/B test running, if any."""
    store = promoter.store
    if domain_id:
        validate_domain_id(domain_id)
        configs = store.get_configs([domain_id])
        open_promotions = store.open_promotions(domain_id)
        newest = store.newest_promotions([domain_id])
        if not configs and not newest:
            registered_model(promoter, domain_id)  # an unknown domain is an error
        domains = {domain_id}
    else:
        configs = {c.domain_id: c for c in store.all_configs()}
        open_promotions = store.open_promotions()
        newest = store.newest_promotions()
        pattern = f"name LIKE '{REGISTERED_MODEL_PREFIX}%'"
        domains = {domain_of(m.name) for m in paged(promoter.client.search_registered_models,
                                                    filter_string=pattern, max_results=1000)}
        domains = {d for d in domains if d} | set(configs) | set(newest)
    moving: dict[str, Any] = {}
    for promotion in open_promotions:  # oldest first: the one being carried out
        moving.setdefault(promotion.domain_id, promotion)
    served = _localai_names(promoter)
    trials = {r.domain_id: r for r in store.active_rollouts(
        [domain_id] if domain_id else None)}
    rows = []
    for domain in sorted(domains):
        config = configs.get(domain)
        state, reason = domain_state(config, moving.get(domain), newest.get(domain),
                                     promoter.targets.redact)
        rows.append({
            "domain_id": domain,
            "state": state,
            "reason": reason,
            "model_version": config.model_version if config else None,
            "registry_version": config.registry_version if config else None,
            "semver": config.semver if config else None,
            "previous_registry_version": config.previous_registry_version if config else None,
            "version_number": config.version_number if config else None,
            "updated_at": config.updated_at.isoformat() if config else None,
            "metrics": config.metrics if config else {},
            "registry_production": production_version(promoter.client, domain),
            "redis_model_version": _redis_value(promoter, domain),
            "localai_serving": (None if served is None or config is None
                                else config.serving_name in served),
            "in_flight": (in_flight(moving[domain], promoter.targets.redact)
                          if domain in moving else None),
            "open_promotions": [p.id for p in open_promotions if p.domain_id == domain],
            "rollout": trials[domain].mark() if domain in trials else None,
        })
    return rows


def _redis_value(promoter: Promoter, domain_id: str) -> str | None:
    redis = promoter.targets.redis
    if redis is None:
        return None
    try:
        value = redis.get(domain_id)
    except SinkError as error:
        return f"error: {promoter.targets.redact(str(error))}"
    return value.get("model_version") if value else "missing"


def _localai_names(promoter: Promoter) -> set[str] | None:
    localai = promoter.targets.localai
    if localai is None:
        return None
    try:
        return localai.serving_names()
    except SinkError:
        return set()
