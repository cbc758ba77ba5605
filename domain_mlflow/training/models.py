"""Loading a base model, wrapping it with LoRA adapters, and merging them for serving."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain_mlflow.exceptions import BaseModelError
from domain_mlflow.training.tiny_base import ensure_tiny_base, new_tiny_model

TINY = "tiny"

# LoRA targets per architecture (``config.model_type``): every attention and MLP
# projection, because our bases are small and rank-limited adapters on attention
# alone learn too little. Others fall back to peft's own table, then "all-linear".
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
    source: str  # "tiny", a local folder, or a hub id
    resolved_path: str  # where the weights came from


def lora_target_modules(model_type: str) -> list[str] | str:
    if model_type in LORA_TARGET_MODULES:
        return LORA_TARGET_MODULES[model_type]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    return TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type, "all-linear")


def _resolve(base_model: str, cache_dir: str | os.PathLike[str]) -> tuple[str, bool]:
    """Return ``(path or hub id, is_local)`` for a ``base_model`` argument."""
    if base_model == TINY:
        return str(ensure_tiny_base(cache_dir)), True
    if os.path.isdir(base_model):
        if not Path(base_model, "config.json").is_file():
            raise BaseModelError(
                f"base_model folder {base_model!r} has no config.json; save it with "
                "save_pretrained() or pass 'tiny'"
            )
        return os.path.abspath(base_model), True
    if base_model.startswith((".", "/", "~")):
        raise BaseModelError(f"base_model folder {base_model!r} does not exist")
    return base_model, False


def load_base(base_model: str, cache_dir: str | os.PathLike[str], from_scratch: bool) -> LoadedBase:
    """Load the tokenizer and model of ``base_model``; random weights when ``from_scratch``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    location, is_local = _resolve(base_model, cache_dir)
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
    return LoadedBase(model=model, tokenizer=tokenizer, source=base_model, resolved_path=location)


def add_lora(model: Any, rank: int, alpha: float | None = None, dropout: float = 0.0) -> Any:
    """Freeze ``model`` and wrap it with trainable LoRA adapters of rank ``rank``."""
    from peft import LoraConfig, get_peft_model

    targets = lora_target_modules(model.config.model_type)
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
