"""``AutoDeploymentTrigger``: the seed's deployment API over the promotion state machine."""

from __future__ import annotations

import logging
from typing import Any

from domain_mlflow.exceptions import ConfigStoreError
from domain_mlflow.gate import decide
from domain_mlflow.naming import registered_model_name, validate_domain_id
from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.promotion.service import build_promoter
from domain_mlflow.registry import domain_thresholds, set_version_tags
from domain_mlflow.settings import Settings, load_settings
from domain_mlflow.sinks.config_store import Promotion

_log = logging.getLogger(__name__)


def promotion_result(promotion: Promotion) -> dict[str, Any]:
    """What callers see of a promotion: the seed's keys plus each target's status."""
    if promotion.state == "done":
        reason = f"version {promotion.registry_version} is in production"
    elif promotion.state == "rejected":
        reason = "; ".join((promotion.decision or {}).get("reasons", [])) or "rejected"
    else:
        reason = f"pending at {promotion.state}: {promotion.last_error or 'in progress'}"
    return {
        "deployed": promotion.state == "done",
        "reason": reason,
        "model_version": promotion.model_version,
        "registry_version": str(promotion.registry_version),
        "domain_id": promotion.domain_id,
        "promotion_id": promotion.id,
        "state": promotion.state,
        "gate": promotion.decision,
        "targets": promotion.targets,
        "attempts": promotion.attempts,
        "last_error": promotion.last_error,
    }


def _tag_pending(domain_id: str, registry_version: int | str, error: str) -> None:
    """With the config store down, the registry is where a pending promotion shows."""
    from mlflow.tracking import MlflowClient

    try:
        set_version_tags(MlflowClient(), domain_id, registry_version,
                         {"promotion_status": "pending", "promotion_error": error[:500]})
    except Exception as tag_error:  # best effort: the registry may be down too
        _log.debug("could not tag %s v%s as pending: %s", registered_model_name(domain_id),
                   registry_version, tag_error)


class AutoDeploymentTrigger:
    """Checks a trained model against the gate and promotes it everywhere it is served.

    Every argument is optional and defaults to the environment. Without
    ``postgres_dsn`` the config store is the embedded SQLite file; Redis and LocalAI
    are skipped (with that status) when their URLs are unset.
    """

    def __init__(self, localai_url: str | None = None, postgres_dsn: str | None = None,
                 redis_url: str | None = None, *, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.localai_url = localai_url
        self.postgres_dsn = postgres_dsn
        self.redis_url = redis_url
        self._promoter: Promoter | None = None

    @property
    def promoter(self) -> Promoter:
        """Built on first use: constructing the trigger opens no connection."""
        if self._promoter is None:
            self._promoter = build_promoter(
                self.settings, role="trigger", postgres_dsn=self.postgres_dsn,
                redis_url=self.redis_url, localai_url=self.localai_url,
            )
        return self._promoter

    def deploy_version(self, domain_id: str, registry_version: int | str) -> dict[str, Any]:
        """The automatic decision for a registered version, carried out to the end."""
        validate_domain_id(domain_id)
        try:
            promoter = self.promoter
            promotion = promoter.request(domain_id, int(registry_version))
        except ConfigStoreError as error:
            _tag_pending(domain_id, registry_version, str(error))
            raise
        return promotion_result(promoter.run(promotion))

    def check_and_deploy(self, domain_id: str, training_run_id: str, metrics: dict[str, Any],
                         model_path: str | None = None) -> dict[str, Any]:
        """The seed's call: gate ``metrics``, then promote the version of ``training_run_id``.

        The gate runs first on the metrics given; a refusal needs no registry version.
        A passing result promotes the registered version tagged with the training run.
        """
        from mlflow.tracking import MlflowClient

        validate_domain_id(domain_id)
        client = MlflowClient()
        decision = decide(metrics, domain_thresholds(client, domain_id, self.settings.thresholds))
        version = self._version_of_run(client, domain_id, training_run_id)
        base = {"domain_id": domain_id, "training_run_id": training_run_id,
                "model_path": model_path, "gate": decision.to_dict()}
        if version is None:
            reason = (decision.summary() if not decision.passed else
                      f"no version of {registered_model_name(domain_id)} carries "
                      f"training_run_id={training_run_id}; train it with DomainTrainer first")
            return {**base, "deployed": False, "reason": reason, "model_version": None,
                    "registry_version": None, "state": None, "targets": {}}
        promoter = self.promoter
        promotion = promoter.request(domain_id, int(version), metrics=dict(metrics))
        return {**base, **promotion_result(promoter.run(promotion))}

    @staticmethod
    def _version_of_run(client: Any, domain_id: str, training_run_id: str) -> str | None:
        if "'" in training_run_id or "\\" in training_run_id:
            return None  # our run ids never hold quotes; nothing can match
        found = client.search_model_versions(
            f"name = '{registered_model_name(domain_id)}' "
            f"AND tags.training_run_id = '{training_run_id}'")
        return max((v.version for v in found), key=int, default=None)
