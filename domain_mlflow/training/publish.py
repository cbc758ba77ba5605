"""What a finished training run leaves behind: model folders, the pyfunc model, the version."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from domain_mlflow.data.records import Example
from domain_mlflow.gate import GateDecision
from domain_mlflow.sinks.localai import SERVING_PROMPT_FILE
from domain_mlflow.training.features import completion_template_go, prompt_format

_log = logging.getLogger(__name__)
_PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")


def save_model_folders(
    output_dir: Path, model: Any, merged: Any, tokenizer: Any, fine_tune: bool
) -> dict[str, Path]:
    """Write the seed's local layout; returns artifact path → local folder.

    ``adapter/`` (LoRA only), ``merged_model/`` (weights + tokenizer, ready to serve,
    with the prompt format LocalAI needs in ``serving_prompt.json``) and ``tokenizer/``.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    folders: dict[str, Path] = {}
    if fine_tune:
        folders["adapter"] = output_dir / "adapter"
        model.save_pretrained(folders["adapter"])
    folders["merged_model"] = output_dir / "merged_model"
    merged.save_pretrained(folders["merged_model"])
    tokenizer.save_pretrained(folders["merged_model"])
    (folders["merged_model"] / SERVING_PROMPT_FILE).write_text(json.dumps({
        "prompt_format": prompt_format(tokenizer),
        "completion_template": completion_template_go(tokenizer),
    }, indent=2))
    folders["tokenizer"] = output_dir / "tokenizer"
    tokenizer.save_pretrained(folders["tokenizer"])
    return folders


def serving_requirements() -> list[str]:
    from importlib.metadata import version

    # Drop local labels such as "+cpu": the pin must resolve on any index.
    names = ("mlflow", "torch", "transformers")
    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def log_serving_model(merged_folder: Path, tokenizer: Any, train: list[Example]) -> Any:
    """Log the merged model as a pyfunc ("models from code"); returns MLflow's ModelInfo."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from domain_mlflow.training.evaluation import max_new_tokens_for
    from domain_mlflow.training.features import PROMPT_TEMPLATE

    # log_model re-enables its UserWarnings internally ("once"), so they are recorded
    # here rather than filtered: the signature is explicit, and type hints or an input
    # example would only make MLflow re-run the model. They go to the debug log.
    with warnings.catch_warnings(record=True) as caught:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(_PYFUNC_MODEL_FILE),
            artifacts={"model": str(merged_folder)},
            model_config={
                "prompt_template": PROMPT_TEMPLATE,
                "prompt_format": prompt_format(tokenizer),
                # not "max_new_tokens": MLflow logs the model config as run params,
                # and the run's own max_new_tokens (the evaluation cap) is one already
                "serving_max_new_tokens": max_new_tokens_for(train, tokenizer),
            },
            signature=ModelSignature(
                inputs=Schema([ColSpec("string", "prompt")]), outputs=Schema([ColSpec("string")])
            ),
            pip_requirements=serving_requirements(),
        )
    for warning in caught:
        _log.debug("while logging the model: %s", warning.message)
    return info


def version_tags(
    *,
    domain_id: str,
    model_version: str,
    training_run_id: str,
    decision: GateDecision,
    metrics: Mapping[str, float],
    extra: Mapping[str, str],
) -> dict[str, str]:
    """Tags of a new model version: identity, the gate's decision and the metrics."""
    return {
        "domain_id": domain_id,
        "model_version": model_version,
        "training_run_id": training_run_id,
        "validation_status": decision.status,
        "validation_reasons": decision.summary(),
        "gate_thresholds": json.dumps(decision.thresholds.as_dict()),
        **extra,
        **{name: repr(float(value)) for name, value in metrics.items()},
    }
