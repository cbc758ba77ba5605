"""``AutoDeploymentTrigger``: the seed's deployment API over the promotion state machine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain_mlflow.exceptions import ConfigStoreError
from domain_mlflow.gate import decide
from domain_mlflow.naming import registered_model_name, validate_domain_id
from domain_mlflow.outcomes import outcome_reason
from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.registry import version_metrics
from domain_mlflow.services import Services
from domain_mlflow.settings import Settings
from domain_mlflow.sinks.config_store import Promotion
from domain_mlflow.sinks.rows import State
from domain_mlflow.sinks.targets import ServingTargets


def promotion_result(promotion: Promotion) -> dict[str, Any]:
    """What callers see of a promotion: the seed's keys plus each target's status."""
    return {
        "deployed": promotion.state is State.DONE,
        "reason": outcome_reason(promotion),
        "model_version": promotion.model_version,
        "registry_version": str(promotion.registry_version),
        "domain_id": promotion.domain_id,
        "promotion_id": promotion.id,
        "state": str(promotion.state),
        "gate": promotion.decision.to_dict() if promotion.decision else None,
        "targets": promotion.targets,
        "attempts": promotion.attempts,
        "last_error": promotion.last_error,
        "semver": promotion.semver,
        "approval": ({"by": promotion.approved_by, "at": promotion.approved_at.isoformat(),
                      "reason": promotion.approval_reason}
                     if promotion.approved_at else None),
    }


class AutoDeploymentTrigger:
    """Checks a trained model against the gate and promotes it everywhere it is served.

    Every argument is optional and defaults to the environment. Without
    ``postgres_dsn`` the config store is the embedded SQLite file; Redis and LocalAI
    are skipped (with that status) when their URLs are unset. ``services`` wires the
    trigger to a process's :class:`Services` instead.
    """

    def __init__(self, localai_url: str | None = None, postgres_dsn: str | None = None,
                 redis_url: str | None = None, *, settings: Settings | None = None,
                 services: Services | None = None) -> None:
        self.services = services or Services.from_settings(
            settings, postgres_dsn=postgres_dsn, redis_url=redis_url, localai_url=localai_url)
        self.settings = self.services.settings
        self._promoter: Promoter | None = None

    @property
    def promoter(self) -> Promoter:
        """Built on first use: constructing the trigger opens no connection."""
        if self._promoter is None:
            self._promoter = Promoter.from_services(self.services, "trigger")
        return self._promoter

    def deploy(self, domain_id: str, version: Any) -> dict[str, Any]:
        """The automatic decision for a registered ``ModelVersion``, carried out to the end.
        With the config store down, the version is tagged pending and the error raised."""
        validate_domain_id(domain_id)
        try:
            promoter = self.promoter
            promotion = promoter.request_for(domain_id, version, reason="deploy after training")
        except ConfigStoreError as error:
            # With no store, the registry is where the pending promotion shows.
            ServingTargets(self.services.registry, redact=self.services.redact).note_pending(
                domain_id, version.version, str(error))
            raise
        return promotion_result(promoter.run(promotion))

    def deploy_version(self, domain_id: str, registry_version: int | str) -> dict[str, Any]:
        """:meth:`deploy` for a version number of the domain's registered model."""
        validate_domain_id(domain_id)
        return self.deploy(domain_id,
                           self.services.registry.version(domain_id, registry_version))

    def approve(self, domain_id: str, version: int | str, *, by: str, reason: str = "",
                semver: str | None = None) -> dict[str, Any]:
        """Approve a version awaiting approval (manual mode) and carry its promotion out."""
        from domain_mlflow.promotion.review import approve

        return approve(self.promoter, domain_id, int(version), by=by, reason=reason,
                       semver=semver)

    def reject(self, domain_id: str, version: int | str, *, by: str,
               reason: str) -> dict[str, Any]:
        """Reject a version awaiting approval; it is never deployed (unless forced)."""
        from domain_mlflow.promotion.review import reject

        return reject(self.promoter, domain_id, int(version), by=by, reason=reason)

    def pending(self) -> list[dict[str, Any]]:
        """What waits for approval, oldest first."""
        from domain_mlflow.promotion.review import pending

        return pending(self.promoter)

    def check_and_deploy(self, domain_id: str, training_run_id: str,
                         metrics: Mapping[str, Any] | None = None,
                         model_path: str | None = None) -> dict[str, Any]:
        """The seed's call: promote the version of ``training_run_id`` if it passes.

        The version's own recorded figures decide, under today's thresholds.
        ``metrics`` may only add restrictions: each gated metric it names must pass
        too, and a refusal on them (a missing or NaN value included) refuses this call
        only, leaving the version promotable later. Every reason is listed.
        """
        validate_domain_id(domain_id)
        registry = self.services.registry
        version = registry.version_of_run(domain_id, training_run_id)
        thresholds = registry.thresholds(domain_id)
        asked = decide(metrics or {}, thresholds, only_given=True)
        refused = {"domain_id": domain_id, "training_run_id": training_run_id,
                   "model_path": model_path, "deployed": False, "state": None, "targets": {}}
        if version is None:
            reasons = [f"no version of {registered_model_name(domain_id)} carries "
                       f"training_run_id={training_run_id}; train it with DomainTrainer first",
                       *(f"caller's metrics: {reason}" for reason in asked.reasons)]
            return {**refused, "model_version": None, "registry_version": None,
                    "gate": asked.to_dict(), "reason": "; ".join(reasons)}
        if not asked.passed:
            gate = decide(version_metrics(version), thresholds).combined(asked, "caller's metrics")
            return {**refused, "model_version": version.tags.get("model_version"),
                    "registry_version": str(version.version), "gate": gate.to_dict(),
                    "reason": "refused for this call, the version stays promotable: "
                              + gate.summary()}
        return {"training_run_id": training_run_id, "model_path": model_path,
                **self.deploy(domain_id, version)}
