"""One training run inside one MLflow run: start, fit, evaluate, publish, register.

Training ends at a registered version; what happens to it next (the promotion) is
composed above, through :attr:`RunContext.deploy`."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from domain_mlflow.data import LoadedData
from domain_mlflow.data.records import Example
from domain_mlflow.exceptions import TrainingTimeLimitReached
from domain_mlflow.gate import GateDecision, decide
from domain_mlflow.naming import model_version, utc_now
from domain_mlflow.redaction import Redactor
from domain_mlflow.settings import Settings
from domain_mlflow.training.checkpoints import Checkpoint, CheckpointStore
from domain_mlflow.training.config import TrainingConfig
from domain_mlflow.training.distributed import ProcessGroup
from domain_mlflow.training.stopping import (
    redacted_failure_reason,
    run_status,
    signals_interrupt_training,
)

# Given the domain and the ModelVersion just registered; returns the deployment result.
Deploy = Callable[[str, Any], dict[str, Any]]

_log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    data: LoadedData
    train: list[Example]
    validation: list[Example]
    model: Any
    tokenizer: Any
    base: Any  # the ResolvedBase: where it was loaded from, its kind, a GGUF file's digest
    encoded_train: list[Any] = field(default_factory=list)
    encoded_validation: list[Any] = field(default_factory=list)

    @property
    def real_base(self) -> bool:
        return bool(self.base.is_real)

    def base_summary(self) -> dict[str, Any]:
        """How the base was found and adapted: logged as params."""
        from domain_mlflow.training.features import prompt_format

        summary = {"base_model_path": self.base.location,
                   "base_model_kind": self.base.kind,
                   "base_model_digest": self.base.digest or "none",
                   "prompt_format": prompt_format(self.tokenizer)}
        peft_config = getattr(self.model, "peft_config", {}).get("default")
        if peft_config is not None:
            summary["lora_target_modules"] = ",".join(sorted(peft_config.target_modules))
        return summary

    def data_summary(self) -> dict[str, Any]:
        truncated = sum(e.truncated for e in self.encoded_train + self.encoded_validation)
        return {
            "path": os.path.abspath(self.data.path),
            "digest": self.data.digest,
            "records": self.data.total_records,
            "train_examples": len(self.train),
            "validation_examples": len(self.validation),
            "duplicates_dropped": self.data.duplicates_dropped,
            "other_domain_records": self.data.other_domain_records,
            "truncated_examples": truncated,
        }


@dataclass(frozen=True)
class RunContext:
    """What a training run takes from its trainer."""

    settings: Settings
    model_output_dir: str
    progress: bool | None = None
    deploy: Deploy | None = None
    client: Any = None  # an MlflowClient to share; one is made on first use otherwise


class TrainingRun:
    """One training run inside one MLflow run: start, fit, evaluate, publish."""

    def __init__(
        self,
        context: RunContext,
        config: TrainingConfig,
        prepared: PreparedData,
        store: CheckpointStore,
        training_run_id: str,
        checkpoint: Checkpoint | None,
        group: ProcessGroup | None = None,
    ) -> None:
        self.context = context
        self.group = group or ProcessGroup()
        self.config = config
        self.prepared = prepared
        self.store = store
        self.training_run_id = training_run_id
        self.checkpoint = checkpoint
        self.output_dir = Path(context.model_output_dir) / config.domain_id / training_run_id
        self.mlflow_run_id = ""
        self.redact = Redactor.from_settings(context.settings)  # for params and tags

    @cached_property
    def client(self) -> Any:
        """Made on first use: ranks other than 0 never open the tracking store."""
        from mlflow.tracking import MlflowClient

        return self.context.client or MlflowClient()

    def execute(self) -> dict[str, Any]:
        import mlflow

        if not self.group.is_main:
            return self._train_only()

        if self.config.experiment_name:
            mlflow.set_experiment(self.config.experiment_name)
        nested = mlflow.active_run() is not None
        # While the run is open, SIGTERM and SIGINT raise TrainingInterrupted, so that a
        # stopped run ends as KILLED instead of staying RUNNING.
        with mlflow.start_run(run_name=self.training_run_id, nested=nested) as run, \
                signals_interrupt_training():
            self.mlflow_run_id = run.info.run_id
            try:
                self._start()
                outcome = self._fit()
                merged, metrics, evaluated = self._evaluate(outcome)
                results = self._publish(merged, metrics, outcome, evaluated)
            except BaseException as error:
                mlflow.set_tag("failure_reason", redacted_failure_reason(error, self.redact))
                mlflow.end_run(status=run_status(error))  # start_run's exit would say FAILED
                raise
            results["experiment_id"] = run.info.experiment_id
        return results

    def _start(self) -> None:
        import mlflow

        from domain_mlflow.tracking import log_params_once

        config, prepared = self.config, self.prepared
        mlflow.set_tags({
            "domain_id": config.domain_id,
            "training_run_id": self.training_run_id,
            "fine_tune": str(config.fine_tune).lower(),
            "base_model": self.redact(config.base_model),
        })
        if self.checkpoint:
            mlflow.set_tag("resumed_from_checkpoint", str(self.checkpoint.path))
        summary = prepared.data_summary()
        summary.pop("path")
        params = {
            **config.hyperparameters(),
            **prepared.base_summary(),
            "trainable_parameters": _count(prepared.model, trainable_only=True),
            "total_parameters": _count(prepared.model, trainable_only=False),
            "world_size": self.group.world_size,
            **{f"data_{key}": value for key, value in summary.items()},
        }
        log_params_once(self.client, self.mlflow_run_id,
                        {key: str(value) for key, value in self._redacted(params).items()})
        self._log_datasets()

    def _redacted(self, values: dict[str, Any]) -> dict[str, Any]:
        """Text values with any secret masked (a base_model or path may carry one)."""
        return {key: self.redact(value) if isinstance(value, str) else value
                for key, value in values.items()}

    def _log_datasets(self) -> None:
        import mlflow
        import pandas as pd
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        with warnings.catch_warnings():
            # MLflow registers its local-file source twice, then warns that it had to choose.
            warnings.filterwarnings("ignore", message="The specified dataset source can be")
            source = resolve_dataset_source(os.path.abspath(self.prepared.data.path))
        for context, examples in (("training", self.prepared.train),
                                  ("validation", self.prepared.validation)):
            frame = pd.DataFrame(
                [{"prompt": e.prompt, "completion": e.completion} for e in examples]
            )
            dataset = mlflow.data.from_pandas(
                frame, source=source, name=f"{self.config.domain_id}-{context}"
            )
            mlflow.log_input(dataset, context=context)

    def _train_only(self) -> dict[str, Any]:
        """A rank other than 0: its share of every batch, nothing logged or written."""
        outcome = self._loop(sink=None, on_checkpoint=None).run(
            self.checkpoint.load_state() if self.checkpoint else None)
        return {"domain_id": self.config.domain_id, "training_run_id": self.training_run_id,
                "rank": self.group.rank, "world_size": self.group.world_size,
                "steps": outcome.steps}

    def _loop(self, sink: Any, on_checkpoint: Any) -> Any:
        from domain_mlflow.training.loop import LoopConfig, TrainingLoop

        config, prepared = self.config, self.prepared
        return TrainingLoop(
            prepared.model, prepared.encoded_train, prepared.encoded_validation,
            LoopConfig(
                max_steps=config.max_steps,
                batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                eval_every=config.eval_every,
                checkpoint_every=config.checkpoint_every,
                seed=config.seed,
                warmup_steps=max(1, min(100, config.max_steps // 20)),
                max_seconds=config.max_minutes * 60 if config.max_minutes else None,
                estimate_after=3 if prepared.real_base else None,
                trim_memory=prepared.real_base,
                progress_seconds=self.context.settings.progress_seconds,
            ),
            prepared.tokenizer.pad_token_id,
            sink=sink,
            on_checkpoint=on_checkpoint,
            progress=self.context.progress,
            group=self.group,
        )

    def _fit(self) -> Any:
        from domain_mlflow.tracking import BatchedMetricLogger

        sink = BatchedMetricLogger(self.client, self.mlflow_run_id)
        loop = self._loop(sink, self._save_checkpoint)
        try:
            outcome = loop.run(self.checkpoint.load_state() if self.checkpoint else None)
        finally:
            sink.close()
        if outcome.stopped_early:
            raise TrainingTimeLimitReached(
                f"stopped at step {outcome.steps} of {self.config.max_steps} after "
                f"max_minutes={self.config.max_minutes:g}; nothing was registered. The "
                f"checkpoint is in {self.store.domain_dir / self.training_run_id}: run again "
                "with resume=true to continue")
        return outcome

    def _save_checkpoint(self, step: int, state: dict[str, Any]) -> None:
        self.store.save(self.training_run_id, step, state, {
            "base_model": self.config.base_model,
            "fine_tune": self.config.fine_tune,
            "lora_r": self.config.lora_r,
            "data_digest": self.prepared.data.digest,
            "max_steps": self.config.max_steps,
            "mlflow_run_id": self.mlflow_run_id,
        })

    def _evaluate(self, outcome: Any) -> tuple[Any, dict[str, float], int]:
        import mlflow
        import pandas as pd

        from domain_mlflow.training.evaluation import (
            evaluate_generation,
            max_new_tokens_for,
            resolve_normalizer,
        )
        from domain_mlflow.training.models import merged_copy

        config, prepared = self.config, self.prepared
        merged = merged_copy(prepared.model)
        count, token_cap = config.evaluation_budget(prepared.real_base)
        examples = prepared.validation[:count]
        evaluation = evaluate_generation(
            merged, prepared.tokenizer, examples,
            resolve_normalizer(config.normalizer, config.domain_id),
            max_new_tokens=max_new_tokens_for(examples, prepared.tokenizer, token_cap),
            warmup=1 if prepared.real_base else 3,
            progress=self.context.progress,
            progress_seconds=self.context.settings.progress_seconds,
        )
        metrics = {
            "accuracy": evaluation.accuracy,
            "latency_ms": evaluation.latency_ms,
            "latency_p95_ms": evaluation.latency_p95_ms,
            "training_loss": outcome.training_loss,
            "validation_loss": outcome.validation_loss,
            "tokens_per_second": outcome.tokens_per_second,
        }
        # The loop logged training_loss and validation_loss at the last step already.
        logged_by_loop = outcome.start_step < outcome.steps
        mlflow.log_metrics(
            {key: value for key, value in metrics.items()
             if not (logged_by_loop and key in ("training_loss", "validation_loss"))}
            | {"eval_examples": evaluation.examples},
            step=outcome.steps,
        )
        mlflow.log_table(
            pd.DataFrame(evaluation.predictions,
                         columns=["prompt", "reference", "prediction", "correct", "latency_ms"]),
            "validation_predictions.json",
        )
        return merged, metrics, evaluation.examples

    def _publish(
        self, merged: Any, metrics: dict[str, float], outcome: Any, evaluated: int
    ) -> dict[str, Any]:
        import mlflow

        from domain_mlflow.registry import domain_thresholds
        from domain_mlflow.training.publish import save_model_folders

        config, prepared = self.config, self.prepared
        folders = save_model_folders(self.output_dir, prepared.model, merged,
                                     prepared.tokenizer, config.fine_tune)
        for artifact_path, folder in folders.items():
            mlflow.log_artifacts(str(folder), artifact_path)
        thresholds = domain_thresholds(self.client, config.domain_id,
                                       self.context.settings.thresholds)
        decision = decide(metrics, thresholds)
        mlflow.set_tags({"validation_status": decision.status,
                         "validation_reasons": decision.summary()})
        results = {
            "domain_id": config.domain_id,
            "training_run_id": self.training_run_id,
            "mlflow_run_id": self.mlflow_run_id,
            "model_path": str(folders["merged_model"]),
            "adapter_path": str(folders["adapter"]) if "adapter" in folders else None,
            "output_dir": str(self.output_dir),
            "checkpoint_dir": str(self.store.domain_dir / self.training_run_id),
            "resumed_from": str(self.checkpoint.path) if self.checkpoint else None,
            "evaluation": {**metrics, "eval_examples": evaluated},
            "gate": decision.to_dict(),
            "should_deploy": decision.passed,
            "data": prepared.data_summary(),
            "hyperparameters": self._redacted(config.hyperparameters()),
            "steps": {"start": outcome.start_step, "end": outcome.steps},
            "registered_model": None,
            "registry_version": None,
            "model_version": None,
            "model_uri": None,
            "deployment": None,
        }
        if config.register:
            version, registered = self._register(metrics, decision, folders["merged_model"])
            results.update(registered)
            if config.deploy and self.context.deploy:
                results["deployment"] = self.context.deploy(config.domain_id, version)
        (self.output_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
        mlflow.log_dict(json.loads(json.dumps(results, default=str)), "results.json")
        return results

    def _register(
        self, metrics: dict[str, float], decision: GateDecision, merged_folder: Path
    ) -> tuple[Any, dict[str, Any]]:
        import mlflow

        from domain_mlflow.registry import register_version
        from domain_mlflow.training.publish import log_serving_model, version_tags

        info = log_serving_model(merged_folder, self.prepared.tokenizer, self.prepared.train)
        version_string = self._fresh_model_version()
        tags = version_tags(
            domain_id=self.config.domain_id,
            model_version=version_string,
            training_run_id=self.training_run_id,
            decision=decision,
            metrics=metrics,
            extra={
                "fine_tune": str(self.config.fine_tune).lower(),
                "base_model": self.redact(self.config.base_model),
                "base_model_digest": self.prepared.base.digest or "none",
                "data_digest": self.prepared.data.digest,
            },
        )
        version = register_version(self.client, self.config.domain_id, info.model_uri,
                                   self.mlflow_run_id, tags, model_id=info.model_id)
        mlflow.set_tags({
            "model_version": version_string,
            "registered_model": version.name,
            "registry_version": str(version.version),
        })
        _log.info("registered %s version %s as %s (gate %s)", version.name, version.version,
                  version_string, decision.status)
        return version, {
            "registered_model": version.name,
            "registry_version": str(version.version),
            "model_version": version_string,
            "semver": version.tags.get("semver"),
            "model_uri": f"models:/{version.name}/{version.version}",
            "logged_model_uri": info.model_uri,
        }

    def _fresh_model_version(self) -> str:
        """``{domain_id}-v{YYYYMMDD_HHMMSS}``, waiting out a second another version took:
        the string names LocalAI's folder and config, so it must be unique."""
        from domain_mlflow.naming import registered_model_name

        name = registered_model_name(self.config.domain_id)
        for _ in range(5):
            candidate = model_version(self.config.domain_id, utc_now())
            taken = self.client.search_model_versions(
                f"name = '{name}' AND tags.model_version = '{candidate}'")
            if not taken:
                return candidate
            time.sleep(1.0)
        return candidate

def _count(model: Any, trainable_only: bool) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
