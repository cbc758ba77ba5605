"""Registry versions shaped like training's, and promoters wired to real services."""

from __future__ import annotations

import itertools
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from domain_mlflow.gate import Thresholds, decide
from domain_mlflow.naming import model_version as model_version_string
from domain_mlflow.naming import training_run_id as training_run_id_string
from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.registry import register_version
from domain_mlflow.services import Services
from domain_mlflow.settings import load_settings
from domain_mlflow.sinks.localai import LocalAIClient
from domain_mlflow.sinks.redis_sink import RedisSink
from domain_mlflow.training.publish import version_tags
from tests.helpers import LOCALAI_TEST_KEY

PASSING = {"accuracy": 0.93, "latency_ms": 30.0, "latency_p95_ms": 41.0, "training_loss": 0.2,
           "validation_loss": 0.27, "tokens_per_second": 9000.0}
FAILING = {**PASSING, "accuracy": 0.15, "training_loss": 1.1}

# Distinct, increasing timestamps: many versions are made within one second here.
_clock = itertools.count()
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def register_domain_version(domain_id: str, metrics: dict[str, float] = PASSING,
                            client: MlflowClient | None = None) -> Any:
    """A run with a ``merged_model/`` artifact and a version tagged as training tags it."""
    import tempfile

    client = client or MlflowClient()
    at = _EPOCH + timedelta(seconds=next(_clock))
    run_id_string = training_run_id_string(domain_id, at)
    with mlflow.start_run(run_name=run_id_string) as run:
        mlflow.set_tags({"domain_id": domain_id, "training_run_id": run_id_string})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "config.json").write_text(json.dumps({"model_type": "gpt2"}))
            Path(folder, "model.safetensors").write_bytes(run_id_string.encode())
            mlflow.log_artifacts(folder, "merged_model")
    return register_version(client, domain_id, f"{run.info.artifact_uri}/merged_model",
                            run.info.run_id, training_tags(domain_id, metrics, at))


def training_tags(domain_id: str, metrics: dict[str, float] = PASSING,
                  at: datetime | None = None) -> dict[str, str]:
    """The tags training gives a version of ``domain_id`` trained at ``at`` (by default
    the next distinct time) with ``metrics``."""
    at = at or _EPOCH + timedelta(seconds=next(_clock))
    return version_tags(
        domain_id=domain_id,
        model_version=model_version_string(domain_id, at),
        training_run_id=training_run_id_string(domain_id, at),
        decision=decide(metrics, Thresholds()),
        metrics=metrics,
        extra={"fine_tune": "true", "base_model": "tiny"},
    )


def make_promoter(role: str = "test", **overrides: Any) -> Promoter:
    """A promoter from the environment (see conftest), with keyword overrides."""
    return Promoter.from_services(Services(load_settings(), **overrides), role)


def assert_everywhere(localai: Any, version: Any, domain: str = "0x5678-SQLAgent") -> None:
    """Registry alias, config store, Redis and LocalAI all name ``version``."""
    expected = version.tags["model_version"]
    client = MlflowClient()
    promoter = make_promoter()
    assert str(client.get_registered_model(f"domain.{domain}").aliases["production"]) == \
        str(version.version)
    config = promoter.store.get_config(domain)
    assert (config.model_version, config.registry_version) == (expected, int(version.version))
    redis_value = RedisSink(os.environ["REDIS_URL"], os.environ["REDIS_KEY_PREFIX"]).get(domain)
    assert redis_value["model_version"] == expected
    assert localai.config(domain)["alias"] == expected
    answer = LocalAIClient(localai.url, LOCALAI_TEST_KEY).complete(domain, "How many orders?")
    assert answer["choices"][0]["text"].startswith(f"[{expected}]")
