"""``domain-mlflow demo``: the two bundled example domains, trained, gated and promoted.

The SQL agent reaches the default gate and goes to production; the vector agent
does not and is rejected with its reasons. Everything uses what is configured:
on a fresh machine the SQLite MLflow store and the embedded config store, with
``POSTGRES_DSN`` / ``REDIS_URL`` / ``LOCALAI_URL`` set those as well.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from domain_mlflow.exceptions import DataFileNotFoundError
from domain_mlflow.settings import Settings, load_settings

EXAMPLE_DOMAINS = (
    ("0x5678-SQLAgent", "sql_agent.jsonl"),
    ("0x3579-VectorProcessingAgent", "vector_agent.jsonl"),
)


def examples_dir() -> Path:
    """``examples/data`` of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[1] / "examples" / "data"


def run_demo(data_dir: str | os.PathLike[str] | None = None, *,
             max_steps: int | None = None, settings: Settings | None = None,
             progress: bool | None = None, base_model: str = "tiny") -> dict[str, Any]:
    """Train both example domains (each promoted through the gate) and report where
    everything landed."""
    from mlflow.tracking import get_tracking_uri

    from domain_mlflow.redaction import Redactor
    from domain_mlflow.workflow import DomainTrainer

    settings = settings or load_settings()
    folder = Path(data_dir) if data_dir else examples_dir()
    files = [(domain_id, folder / name) for domain_id, name in EXAMPLE_DOMAINS]
    for _, path in files:
        if not path.is_file():
            raise DataFileNotFoundError(
                str(path), "example data not found; run the demo from a source checkout or "
                "pass --data-dir with sql_agent.jsonl and vector_agent.jsonl")
    options: dict[str, Any] = {"base_model": base_model}
    if max_steps is not None:
        options["max_steps"] = max_steps
    domains = {}
    with DomainTrainer(settings=settings, progress=progress) as trainer:
        for domain_id, path in files:
            result = trainer.train_domain_model(domain_id, path, fine_tune=True, **options)
            domains[domain_id] = _summary(result)
    redact = Redactor.from_settings(settings)
    return {
        "domains": domains,
        "tracking_uri": redact(get_tracking_uri()),
        "config_store": _config_store_location(settings),
        "redis": "configured" if settings.redis_url else "not configured (REDIS_URL unset)",
        "localai": (redact(settings.localai_url) if settings.localai_url
                    else "not configured (LOCALAI_URL unset)"),
    }


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    deployment = result.get("deployment") or {}
    evaluation = result["evaluation"]
    return {
        "training_run_id": result["training_run_id"],
        "mlflow_run_id": result["mlflow_run_id"],
        "registry_version": result.get("registry_version"),
        "model_version": result.get("model_version"),
        "accuracy": evaluation["accuracy"],
        "latency_ms": evaluation["latency_ms"],
        "training_loss": evaluation["training_loss"],
        "validation_loss": evaluation["validation_loss"],
        "gate": result["gate"]["status"],
        "reasons": result["gate"]["reasons"],
        "production": bool(deployment.get("deployed")),
        "promotion": deployment.get("state"),
        "promotion_reason": deployment.get("reason"),
    }


def _config_store_location(settings: Settings) -> str:
    from domain_mlflow.settings import redact_url
    from domain_mlflow.sinks.config_store import ConfigStore

    if settings.postgres_dsn:
        return redact_url(settings.postgres_dsn)
    return str(ConfigStore.embedded_path(settings).resolve())
