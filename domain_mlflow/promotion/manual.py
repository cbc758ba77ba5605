"""Manual operations: promote, rollback, history and status of a domain.

Each first finishes whatever the domain left unfinished (a crash mid-promotion),
then does its own work through the same state machine, so the registry, the
config store, Redis and LocalAI end in agreement.
"""

from __future__ import annotations

import uuid
from typing import Any

from domain_mlflow.exceptions import PromotionError, SinkError, UnknownVersionError
from domain_mlflow.naming import registered_model_name, validate_domain_id
from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.promotion.trigger import promotion_result
from domain_mlflow.registry import production_version, registered_model_tags


def _known_domain(promoter: Promoter, domain_id: str) -> str:
    validate_domain_id(domain_id)
    if registered_model_tags(promoter.client, domain_id) is None:
        raise UnknownVersionError(
            f"unknown domain {domain_id!r}: there is no registered model "
            f"{registered_model_name(domain_id)!r}"
        )
    return domain_id


def promote(promoter: Promoter, domain_id: str, version: int, *, force: bool = False,
            reason: str = "") -> dict[str, Any]:
    """Move production to ``version``: through the gate, or past it with ``force`` + reason."""
    _known_domain(promoter, domain_id)
    if force and not reason.strip():
        raise PromotionError("--force needs --reason: say why the gate is overridden")
    promoter.process_domain(domain_id)
    current = promoter.store.get_config(domain_id)
    if current and current.registry_version == version and \
            production_version(promoter.client, domain_id) == version:
        return {"deployed": True, "reason": f"version {version} is already in production",
                "registry_version": str(version), "model_version": current.model_version,
                "domain_id": domain_id, "state": "done", "changed": False}
    promotion = promoter.request(
        domain_id, version, kind="force" if force else "promote",
        request_key=f"manual:{domain_id}:{version}:{uuid.uuid4().hex}",
        reason=reason or f"promoted by hand to version {version}",
    )
    return {**promotion_result(promoter.run(promotion)), "changed": True}


def rollback(promoter: Promoter, domain_id: str, to: int | None = None,
             reason: str = "") -> dict[str, Any]:
    """Move production back to ``to`` (default: the version production replaced)."""
    _known_domain(promoter, domain_id)
    promoter.process_domain(domain_id)
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
    promotion = promoter.request(
        domain_id, target, kind="rollback",
        request_key=f"rollback:{domain_id}:{target}:{uuid.uuid4().hex}",
        reason=reason or f"rollback from version {current.registry_version} to {target}",
    )
    return {**promotion_result(promoter.run(promotion)), "changed": True}


def history(promoter: Promoter, domain_id: str, limit: int = 100) -> list[dict[str, Any]]:
    validate_domain_id(domain_id)
    return [entry.as_dict() for entry in promoter.store.history(domain_id, limit)]


def status(promoter: Promoter, domain_id: str | None = None) -> list[dict[str, Any]]:
    """Per domain: the config store's view, the registry alias, Redis and LocalAI."""
    configs = ([promoter.store.get_config(validate_domain_id(domain_id))] if domain_id
               else promoter.store.all_configs())
    configs = [c for c in configs if c is not None]
    if domain_id and not configs:
        _known_domain(promoter, domain_id)
    served = _localai_names(promoter)
    rows = []
    for config in configs:
        redis_value = _redis_value(promoter, config.domain_id)
        rows.append({
            "domain_id": config.domain_id,
            "model_version": config.model_version,
            "registry_version": config.registry_version,
            "previous_registry_version": config.previous_registry_version,
            "version_number": config.version_number,
            "updated_at": config.updated_at.isoformat(),
            "metrics": config.metrics,
            "registry_production": production_version(promoter.client, config.domain_id),
            "redis_model_version": redis_value,
            "localai_serving": (None if served is None
                                else config.serving_name in served),
            "open_promotions": [p.id for p in promoter.store.open_promotions(config.domain_id)],
        })
    return rows


def _redis_value(promoter: Promoter, domain_id: str) -> str | None:
    if promoter.redis is None:
        return None
    try:
        value = promoter.redis.get(domain_id)
    except SinkError as error:
        return f"error: {error}"
    return value.get("model_version") if value else "missing"


def _localai_names(promoter: Promoter) -> set[str] | None:
    if promoter.localai is None:
        return None
    try:
        return promoter.localai.serving_names()
    except SinkError:
        return set()
