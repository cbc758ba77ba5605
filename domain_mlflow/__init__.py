"""domain-mlflow: one model per domain, trained, gated and registered with MLflow.

The seed's classes are importable from here; heavy modules load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from domain_mlflow.exceptions import DomainMlflowError
from domain_mlflow.gate import GateDecision, Thresholds, decide
from domain_mlflow.settings import Settings, load_settings

if TYPE_CHECKING:
    from dash_app.dashboard import DomainDashboard
    from domain_mlflow.metrics.collector import DomainMetricsCollector
    from domain_mlflow.metrics.telemetry import DomainClient
    from domain_mlflow.pipeline import TrainingPipeline
    from domain_mlflow.promotion.trigger import AutoDeploymentTrigger
    from domain_mlflow.training.config import TrainingConfig
    from domain_mlflow.workflow import DomainTrainer

__version__ = "0.1.0"

_LAZY = {
    "AutoDeploymentTrigger": "domain_mlflow.promotion.trigger",
    "DomainClient": "domain_mlflow.metrics.telemetry",
    "DomainDashboard": "dash_app.dashboard",
    "DomainMetricsCollector": "domain_mlflow.metrics.collector",
    "DomainTrainer": "domain_mlflow.workflow",
    "TrainingConfig": "domain_mlflow.training.config",
    "TrainingPipeline": "domain_mlflow.pipeline",
}

__all__ = [
    "AutoDeploymentTrigger",
    "DomainClient",
    "DomainDashboard",
    "DomainMetricsCollector",
    "DomainMlflowError",
    "DomainTrainer",
    "GateDecision",
    "Settings",
    "Thresholds",
    "TrainingConfig",
    "TrainingPipeline",
    "decide",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'domain_mlflow' has no attribute {name!r}")
