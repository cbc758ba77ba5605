"""A production alias that differs from the config store: repaired or carried out.

The poller's drift repair and the webhook receiver's ``model_version_alias.created``
events both come here, always under the domain's lock (no promotion of the domain
is moving the alias meanwhile), so an alias move of our own, or an event about one
that arrives late, is never mistaken for a person's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain_mlflow.sinks.rows import Kind

if TYPE_CHECKING:
    from domain_mlflow.promotion.engine import Promoter
    from domain_mlflow.sinks.config_store import DomainConfig


def reconcile_alias(promoter: Promoter, config: DomainConfig, alias: int | None) -> str | None:
    """A missing alias is put back on the config's version; one someone moved in the
    registry is carried out everywhere as a forced promotion. Returns what was done."""
    if alias is None:
        promoter.targets.move_alias(config.domain_id, config.registry_version, None)
        return f"{config.domain_id}: registry alias was missing"
    if alias == config.registry_version:
        return None
    promoter.request(config.domain_id, alias, kind=Kind.FORCE,
                     request_key=f"alias:{config.domain_id}:{alias}:{config.version_number}",
                     reason=f"production alias set to version {alias} in the registry")
    return f"{config.domain_id}: registry alias → v{alias}"
