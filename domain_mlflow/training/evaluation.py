"""Evaluation: exact match of greedy generation, and latency of that same generation."""

from __future__ import annotations

import importlib
import math
import re
import statistics
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from domain_mlflow.data.records import Example
from domain_mlflow.exceptions import ConfigError
from domain_mlflow.training.features import render_prompt
from domain_mlflow.training.progress import DEFAULT_INTERVAL_SECONDS, Progress

Normalizer = Callable[[str], str]

WARMUP_GENERATIONS = 3


def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: the default comparison."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def normalize_sql(text: str) -> str:
    """The default, plus no trailing semicolons and no spaces inside brackets or before commas."""
    text = normalize_text(text).rstrip("; ")
    text = re.sub(r"\s*([,)])", r"\1", text)
    return re.sub(r"\(\s*", "(", text)


NORMALIZERS: dict[str, Normalizer] = {
    "default": normalize_text,
    "exact": str.strip,
    "sql": normalize_sql,
}
_DOMAIN_NORMALIZERS: dict[str, Normalizer] = {}


def register_normalizer(domain_id: str, normalizer: Normalizer) -> None:
    """Use ``normalizer`` for ``domain_id`` whenever no normaliser is passed explicitly."""
    _DOMAIN_NORMALIZERS[domain_id] = normalizer


def resolve_normalizer(spec: str | Normalizer | None, domain_id: str) -> Normalizer:
    """A callable, a name in :data:`NORMALIZERS`, or ``"package.module:function"``."""
    if callable(spec):
        return spec
    if spec is None:
        return _DOMAIN_NORMALIZERS.get(domain_id, normalize_text)
    if spec in NORMALIZERS:
        return NORMALIZERS[spec]
    module_name, _, attribute = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute) if attribute else None
    except (ImportError, AttributeError, ValueError):
        found = None
    if not callable(found):
        raise ConfigError(
            f"normalizer {spec!r} is neither one of {sorted(NORMALIZERS)} nor an importable "
            "'package.module:function'"
        )
    return found


@dataclass
class EvaluationResult:
    accuracy: float
    latency_ms: float
    latency_p95_ms: float
    examples: int
    predictions: list[dict[str, Any]] = field(default_factory=list)


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def generate(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int,
             context: tuple[tuple[str, str], ...] = ()) -> str:
    """Greedy continuation of the rendered prompt (KV cache on), special tokens dropped."""
    import torch

    ids = tokenizer(render_prompt(prompt, tokenizer, context), add_special_tokens=False,
                    return_tensors="pt")
    with torch.no_grad():
        output = model.generate(
            **ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = output[0, ids["input_ids"].shape[1] :]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def max_new_tokens_for(examples: list[Example], tokenizer: Any, limit: int = 256) -> int:
    """Room for the longest reference completion plus a margin, capped at ``limit``."""
    longest = max(len(tokenizer(e.completion, add_special_tokens=False)["input_ids"])
                  for e in examples)
    return min(limit, longest + 8)


def _timed_generation(model: Any, tokenizer: Any, example: Example,
                      budget: int) -> tuple[str, float]:
    """The prediction for ``example`` and how long it took, in milliseconds."""
    started = time.perf_counter()
    prediction = generate(model, tokenizer, example.prompt, budget, example.context)
    return prediction, (time.perf_counter() - started) * 1000.0


def evaluate_generation(
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    normalizer: Normalizer = normalize_text,
    max_new_tokens: int | None = None,
    warmup: int = WARMUP_GENERATIONS,
    progress: bool | None = None,
    progress_seconds: float = DEFAULT_INTERVAL_SECONDS,
) -> EvaluationResult:
    """Exact match (after ``normalizer``) of greedy generation, with per-example latency.

    A few untimed generations warm the model up first, so that latency reflects
    steady serving rather than first-call allocation. ``progress`` and
    ``progress_seconds`` are :class:`~domain_mlflow.training.progress.Progress`'s
    ``bar`` and ``interval_seconds``.
    """
    model.eval()
    budget = max_new_tokens or max_new_tokens_for(examples, tokenizer)
    for example in examples[:warmup]:
        generate(model, tokenizer, example.prompt, budget, example.context)
    predictions: list[dict[str, Any]] = []
    latencies: list[float] = []
    correct = 0
    with Progress("evaluation", len(examples), unit="example", bar=progress,
                  interval_seconds=progress_seconds) as shown:
        for done, example in enumerate(examples, start=1):
            prediction, latency = _timed_generation(model, tokenizer, example, budget)
            hit = normalizer(prediction) == normalizer(example.completion)
            correct += hit
            latencies.append(latency)
            predictions.append({
                "prompt": example.prompt,
                "reference": example.completion,
                "prediction": prediction,
                "correct": hit,
                "latency_ms": round(latency, 3),
            })
            shown.update(done)
    return EvaluationResult(
        accuracy=correct / len(examples) if examples else float("nan"),
        latency_ms=statistics.median(latencies) if latencies else float("nan"),
        latency_p95_ms=_percentile(latencies, 0.95),
        examples=len(examples),
        predictions=predictions,
    )
