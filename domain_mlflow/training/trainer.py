"""``Trainer``: data → training → evaluation → gate → MLflow run and registry version.

It ends at the registered version; the seed's ``DomainTrainer``
(:mod:`domain_mlflow.workflow`) composes the promotion after it."""

from __future__ import annotations

import os
import time
from typing import Any

from domain_mlflow.data import load_training_data, split_examples
from domain_mlflow.exceptions import CheckpointError, ConfigError, NoUsableRecordsError
from domain_mlflow.naming import training_run_id, utc_now
from domain_mlflow.settings import Settings, load_settings
from domain_mlflow.training.checkpoints import Checkpoint, CheckpointStore
from domain_mlflow.training.config import TrainingConfig
from domain_mlflow.training.distributed import join_process_group, planned_world_size
from domain_mlflow.training.run import Deploy, PreparedData, RunContext, TrainingRun

# What the resume checkpoint must share with the new run.
_RESUME_KEYS = ("base_model", "fine_tune", "lora_r", "data_digest")


class Trainer:
    """Trains one model per domain and records everything in MLflow.

    Every argument is optional and defaults to the environment (see ``Settings``).
    ``deploy`` is called with the domain and each newly registered ModelVersion; its
    result is the result dict's ``deployment``.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        model_output_dir: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        progress: bool | None = None,
        deploy: Deploy | None = None,
        client: Any = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.checkpoint_dir = str(checkpoint_dir or self.settings.checkpoint_dir)
        self.model_output_dir = str(model_output_dir or self.settings.model_output_dir)
        self.progress = progress
        self.deploy = deploy
        self.client = client

    def train_domain_model(
        self,
        domain_id: str,
        training_data_path: str | os.PathLike[str],
        fine_tune: bool = True,
        **options: Any,
    ) -> dict[str, Any]:
        """The seed's entry point; ``options`` are any other :class:`TrainingConfig` field
        (``max_steps`` defaults to ``TRAINING_MAX_STEPS``)."""
        options.setdefault("max_steps", self.settings.training_max_steps)
        config = TrainingConfig(
            domain_id=domain_id, data=os.fspath(training_data_path), fine_tune=fine_tune, **options
        )
        return self.train(config)

    def train(self, config: TrainingConfig) -> dict[str, Any]:
        """Run ``config`` end to end and return the result dict (also ``results.json``)."""
        world_size = planned_world_size()
        if config.batch_size < world_size:
            raise ConfigError(f"batch_size {config.batch_size} is smaller than the "
                              f"{world_size} training processes; raise it")
        store = CheckpointStore(self.checkpoint_dir, config.domain_id)
        checkpoint = _resume_checkpoint(config, store)
        # Before the process group starts: a base built once into the cache is then
        # written by whichever process holds the cache's lock (transformers writes a
        # model only from rank 0 of a started group).
        prepared = _prepare(config, self.settings, self.progress)
        group = join_process_group()
        if checkpoint:
            _check_resumable(checkpoint, config, prepared.data.digest)
            run_id = checkpoint.training_run_id
        else:
            # Under torchrun every rank must use rank 0's id (clocks tick apart).
            run_id = group.from_main(
                _new_training_run_id(config.domain_id, store) if group.is_main else None)
        context = RunContext(self.settings, self.model_output_dir, self.progress, self.deploy,
                             self.client)
        return TrainingRun(context, config, prepared, store, run_id, checkpoint,
                           group).execute()


def _resume_checkpoint(config: TrainingConfig, store: CheckpointStore) -> Checkpoint | None:
    if not config.resume:
        return None
    checkpoint = store.latest()
    if checkpoint is None:
        raise CheckpointError(
            f"resume=true but there is no checkpoint of domain {config.domain_id!r} under "
            f"{store.domain_dir}; run without resume first"
        )
    return checkpoint


def _check_resumable(checkpoint: Checkpoint, config: TrainingConfig, data_digest: str) -> None:
    wanted = {"base_model": config.base_model, "fine_tune": config.fine_tune,
              "lora_r": config.lora_r, "data_digest": data_digest}
    differing = [key for key in _RESUME_KEYS if checkpoint.meta.get(key) != wanted[key]]
    if differing:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} was made with other {', '.join(differing)}; "
            "resume with the same data and model settings, or train without resume"
        )


def _new_training_run_id(domain_id: str, store: CheckpointStore) -> str:
    """``{domain_id}_{YYYYMMDD_HHMMSS}``, waiting out a second already taken by another run."""
    for _ in range(5):
        candidate = training_run_id(domain_id, utc_now())
        if not (store.domain_dir / candidate).exists():
            return candidate
        time.sleep(1.0)
    return candidate


def _prepare(config: TrainingConfig, settings: Settings, progress: bool | None) -> PreparedData:
    """Everything that can fail on bad input, done before any MLflow run exists."""
    import torch

    from domain_mlflow.training.features import encode_example
    from domain_mlflow.training.models import add_lora, load_base

    data = load_training_data(config.data, domain_id=config.domain_id)
    if len(data.examples) < 2:
        raise NoUsableRecordsError(
            data.path, "only one distinct record; at least two are needed for a validation split"
        )
    train, validation = split_examples(data.examples, config.validation_fraction, config.seed)
    torch.manual_seed(config.seed)
    base = load_base(config.base_model, settings.cache_dir, from_scratch=not config.fine_tune,
                     progress=progress, progress_seconds=settings.progress_seconds)
    model = base.model
    if config.fine_tune:
        model = add_lora(model, config.lora_r, config.lora_alpha)
    prepared = PreparedData(data, train, validation, model, base.tokenizer, base.resolved)
    prepared.encoded_train = [encode_example(e, base.tokenizer, config.max_length) for e in train]
    prepared.encoded_validation = [encode_example(e, base.tokenizer, config.max_length)
                                   for e in validation]
    return prepared


