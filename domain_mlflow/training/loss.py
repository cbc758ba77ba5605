"""The training loss: cross-entropy on completion tokens, computed with as little work as it needs.

Two savings, both exact (the value and its gradients are those of ``model(**batch).loss``):

- logits only at the positions that predict a target token (``logits_to_keep`` with a
  boolean mask): no vocabulary projection or softmax over prompt and padding positions;
- a shared prompt prefix computed once per batch: when every row starts with the same
  tokens (an instruct model's chat template puts the same system turn in front of every
  prompt), those positions go through the model once, and their keys and values are
  handed to the rest of every row as its cache. Gradients flow back through the cache
  into the one prefix pass.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from domain_mlflow.training.features import IGNORE_INDEX

# Below this many shared tokens the extra forward call costs about what it saves.
MIN_SHARED_PREFIX = 4


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         keep: torch.Tensor) -> int:
    """Leading positions that hold the same attended token in every row and predict no target.

    At least one position of every row is left after it.
    """
    same = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)
    usable = same & ~keep.any(dim=0)
    length = int(usable.int().cumprod(dim=0).sum())
    return min(length, input_ids.shape[1] - 1)


def _cache_keyword(model: Any) -> str:
    """``cache`` in transformers 5, ``past_key_values`` before it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _logits_after_shared_prefix(model: Any, batch: dict[str, torch.Tensor],
                                keep: torch.Tensor, shared: int) -> torch.Tensor | None:
    ids = batch["input_ids"]
    keyword = _cache_keyword(model)
    nothing = torch.zeros((1, shared), dtype=torch.bool)
    prefix = model(input_ids=ids[:1, :shared], use_cache=True, logits_to_keep=nothing)
    cache = getattr(prefix, keyword, None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(ids.shape[0])
    return model(input_ids=ids[:, shared:], attention_mask=batch["attention_mask"],
                 use_cache=True, logits_to_keep=keep[:, shared:], **{keyword: cache}).logits


def completion_loss(model: Any, batch: dict[str, torch.Tensor],
                    min_shared_prefix: int = MIN_SHARED_PREFIX) -> torch.Tensor:
    """Mean cross-entropy over the target tokens, the same value as ``model(**batch).loss``.

    Models that support neither saving fall back to the full forward pass.
    """
    targets = batch["labels"][:, 1:] != IGNORE_INDEX
    keep = torch.zeros_like(batch["labels"], dtype=torch.bool)
    keep[:, :-1] = targets
    shared = 0
    if batch["input_ids"].shape[0] > 1:
        shared = shared_prefix_length(batch["input_ids"], batch["attention_mask"], keep)
    try:
        logits = None
        if shared >= min_shared_prefix:
            logits = _logits_after_shared_prefix(model, batch, keep, shared)
        if logits is None:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False, logits_to_keep=keep).logits
    except TypeError:
        logits = None
    if logits is None or logits.dim() != 2 or logits.shape[0] != int(targets.sum()):
        return model(**batch).loss
    return torch.nn.functional.cross_entropy(logits.float(), batch["labels"][:, 1:][targets])
