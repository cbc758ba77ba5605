"""The arguments of one training run, checked before anything is loaded or logged."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.naming import validate_domain_id

DEFAULT_MAX_STEPS = 400
DEFAULT_LEARNING_RATE = 1e-2
# Evaluation budgets when none is given: the tiny base generates in milliseconds, a
# real base in a fraction of a second per token (about 0.2 s for 135 M parameters on
# two CPU cores), so there both are bounded harder.
EVAL_EXAMPLES = {"tiny": 200, "real": 20}
MAX_NEW_TOKENS = {"tiny": 256, "real": 64}


@dataclass
class TrainingConfig:
    """One training run; the defaults reach the gate on the bundled SQL example."""

    domain_id: str
    data: str
    fine_tune: bool = True
    base_model: str = "tiny"
    max_steps: int = DEFAULT_MAX_STEPS
    learning_rate: float = DEFAULT_LEARNING_RATE
    lora_r: int = 16
    lora_alpha: float | None = None
    batch_size: int = 32
    max_length: int = 256
    validation_fraction: float = 0.1
    eval_every: int = 50
    checkpoint_every: int = 100
    eval_max_examples: int | None = None  # default: EVAL_EXAMPLES by kind of base
    max_new_tokens: int | None = None  # default: longest reference + 8, up to MAX_NEW_TOKENS
    max_minutes: float | None = None  # stop at a step boundary, checkpointed, after this
    seed: int = 42
    resume: bool = False
    normalizer: str | None = None
    experiment_name: str | None = None
    register: bool = True
    deploy: bool = True

    def __post_init__(self) -> None:
        validate_domain_id(self.domain_id)
        positive = {
            "max_steps": self.max_steps,
            "lora_r": self.lora_r,
            "batch_size": self.batch_size,
            "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every,
        }
        optional = {"eval_max_examples": self.eval_max_examples,
                    "max_new_tokens": self.max_new_tokens}
        positive.update({name: value for name, value in optional.items() if value is not None})
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")
        if not isinstance(self.max_length, int) or not 16 <= self.max_length <= 32768:
            raise ConfigError(f"max_length must be between 16 and 32768, got {self.max_length!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(
                f"learning_rate must be a positive number, got {self.learning_rate!r}"
            )
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(
                f"validation_fraction must be between 0 and 1, got {self.validation_fraction!r}"
            )
        if self.max_minutes is not None and not (
                math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise ConfigError(f"max_minutes must be a positive number, got {self.max_minutes!r}")
        if not self.base_model:
            raise ConfigError("base_model must be 'tiny', 'smollm2-135m', a .gguf file, a local "
                              "folder or a hub id")

    def evaluation_budget(self, real_base: bool) -> tuple[int, int]:
        """(validation examples generated, cap on new tokens per example)."""
        kind = "real" if real_base else "tiny"
        return (self.eval_max_examples or EVAL_EXAMPLES[kind],
                self.max_new_tokens or MAX_NEW_TOKENS[kind])

    def hyperparameters(self) -> dict[str, Any]:
        """What is logged as MLflow params (paths and switches included, no secrets)."""
        params = asdict(self)
        params.pop("register")
        params.pop("deploy")
        params.pop("experiment_name")
        params["lora_alpha"] = self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r
        if not self.fine_tune:
            for key in ("lora_r", "lora_alpha"):
                params.pop(key)
        params["fine_tune"] = str(self.fine_tune).lower()
        params["resume"] = str(self.resume).lower()
        params["normalizer"] = self.normalizer or "default"
        for key in ("eval_max_examples", "max_new_tokens", "max_minutes"):
            if params[key] is None:
                params[key] = "default"
        return params
