"""The seed's ``DomainTrainer``: training, then the promotion of the version it registered.

Training (:mod:`domain_mlflow.training`) ends at a registered version; this class
composes the deployment above it and hands that same ModelVersion to the promoter:
no second registry read, and one gate, the promoter's, on the version's recorded
figures.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from domain_mlflow.exceptions import DomainMlflowError, TrainingInterrupted
from domain_mlflow.services import Services
from domain_mlflow.settings import Settings
from domain_mlflow.training.trainer import Trainer

_log = logging.getLogger(__name__)


class DomainTrainer(Trainer):
    """Trains one model per domain, records everything in MLflow and promotes the new
    version when it passes the gate.

    Every argument is optional and defaults to the environment (see ``Settings``).
    ``localai_url``, ``postgres_dsn`` and ``redis_url`` are where the promotion
    writes; they are never logged. ``services`` wires it to a process's
    :class:`Services` instead. Those it made itself it closes in :meth:`close`, or at
    the end of a ``with`` block.
    """

    def __init__(
        self,
        localai_url: str | None = None,
        postgres_dsn: str | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        model_output_dir: str | os.PathLike[str] | None = None,
        *,
        redis_url: str | None = None,
        settings: Settings | None = None,
        progress: bool | None = None,
        services: Services | None = None,
    ) -> None:
        self._owns_services = services is None
        self.services = services or Services.from_settings(
            settings, postgres_dsn=postgres_dsn, redis_url=redis_url, localai_url=localai_url)
        super().__init__(checkpoint_dir, model_output_dir, settings=self.services.settings,
                         progress=progress, deploy=self._deploy)

    def close(self) -> None:
        """Close the connections of the services this trainer made (not those handed in)."""
        if self._owns_services:
            self.services.close()

    def __enter__(self) -> DomainTrainer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _deploy(self, domain_id: str, version: Any) -> dict[str, Any]:
        """Promote the new version; a target that is down leaves the promotion pending
        for the poller: training itself has succeeded either way."""
        from domain_mlflow.promotion.trigger import AutoDeploymentTrigger

        try:
            return AutoDeploymentTrigger(services=self.services).deploy(domain_id, version)
        except TrainingInterrupted:
            raise  # a signal, not a target that is down: the poller finishes the promotion
        except DomainMlflowError as error:
            _log.warning("version %s registered, promotion pending: %s", version.version, error)
            return {"deployed": False, "reason": f"promotion pending: {error}",
                    "registry_version": str(version.version), "state": "pending"}
