"""The bundled SQL example, trained with the default parameters, clears the default gate."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from domain_mlflow import DomainTrainer
from tests.helpers import EXAMPLES


@pytest.mark.slow
def test_default_training_on_the_sql_example_passes_the_gate(tiny_base):
    results = DomainTrainer().train_domain_model("0x5678-SQLAgent", EXAMPLES / "sql_agent.jsonl")
    evaluation = results["evaluation"]
    assert evaluation["accuracy"] >= 0.85, results["gate"]["reasons"]
    assert results["should_deploy"] is True, results["gate"]["reasons"]
    assert evaluation["eval_examples"] == 60
    version = MlflowClient().get_model_version("domain.0x5678-SQLAgent",
                                               results["registry_version"])
    assert version.tags["validation_status"] == "passed"
