"""Loading a base model, wrapping it with LoRA adapters, and merging them for serving."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from domain_mlflow.exceptions import BaseModelError
from domain_mlflow.training.bases import TINY, ResolvedBase, resolve_base
from domain_mlflow.training.progress import DEFAULT_INTERVAL_SECONDS
from domain_mlflow.training.tiny_base import new_tiny_model

# LoRA targets per architecture (``config.model_type``): every attention and MLP
# projection, because our bases are small and rank-limited adapters on attention
# alone learn too little. Others fall back to peft's own table, then "all-linear".
# Each name is checked against the loaded model's modules before it is used.
LORA_TARGET_MODULES: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}


@dataclass
class LoadedBase:
    model: Any
    tokenizer: Any
    source: str  # the base_model argument
    resolved: ResolvedBase

    @property
    def resolved_path(self) -> str:  # where the weights came from
        return self.resolved.location


def lora_target_modules(model: Any) -> list[str] | str:
    """The projection names to adapt, as they are named in ``model`` itself."""
    model_type = model.config.model_type
    if model_type in LORA_TARGET_MODULES:
        wanted = LORA_TARGET_MODULES[model_type]
    else:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        wanted = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type, [])
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [name for name in wanted if name in present]
    return found or "all-linear"


def load_base(base_model: str, cache_dir: str | os.PathLike[str], from_scratch: bool,
              progress: bool | None = None,
              progress_seconds: float = DEFAULT_INTERVAL_SECONDS) -> LoadedBase:
    """Load the tokenizer and model of ``base_model``; random weights when ``from_scratch``.

    ``progress`` and ``progress_seconds`` show a build the base needs first (the tiny
    base's pretraining)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_base(base_model, cache_dir, progress, progress_seconds)
    location, is_local = resolved.location, resolved.is_local
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=is_local)
        if from_scratch:
            if base_model == TINY:
                model = new_tiny_model(tokenizer)
            else:
                config = AutoConfig.from_pretrained(location, local_files_only=is_local)
                model = AutoModelForCausalLM.from_config(config)
        else:
            model = AutoModelForCausalLM.from_pretrained(location, local_files_only=is_local)
    except (OSError, ValueError) as error:
        where = "folder" if is_local else "hub id (is the hub reachable?)"
        raise BaseModelError(
            f"cannot load base_model {base_model!r} as a {where}: {str(error).splitlines()[0]}"
        ) from None
    if tokenizer.eos_token_id is None:
        raise BaseModelError(f"the tokenizer of base_model {base_model!r} has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedBase(model=model, tokenizer=tokenizer, source=base_model, resolved=resolved)


def add_lora(model: Any, rank: int, alpha: float | None = None, dropout: float = 0.0) -> Any:
    """Freeze ``model`` and wrap it with trainable LoRA adapters of rank ``rank``."""
    from peft import LoraConfig, get_peft_model

    targets = lora_target_modules(model)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=targets,
        fan_in_fan_out=model.config.model_type == "gpt2",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def merged_copy(model: Any) -> Any:
    """A plain transformers model with adapters folded into the weights (for serving)."""
    import copy

    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model
