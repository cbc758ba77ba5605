"""A seeded train/validation split that does not depend on the order of the file."""

from __future__ import annotations

import hashlib

from domain_mlflow.data.records import Example


def _rank(example: Example, seed: int) -> str:
    key = f"{seed}\x00{example.prompt}\x00{example.completion}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def split_examples(
    examples: list[Example], validation_fraction: float = 0.1, seed: int = 42
) -> tuple[list[Example], list[Example]]:
    """Return ``(train, validation)``; the same examples and seed give the same split.

    Each example's side depends only on its content and the seed, so reordering
    the file changes nothing. At least one example lands on each side.
    """
    if len(examples) < 2:
        raise ValueError("need at least two distinct examples to split into train and validation")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    ranked = sorted(examples, key=lambda example: _rank(example, seed))
    n_validation = min(len(examples) - 1, max(1, round(len(examples) * validation_fraction)))
    return ranked[n_validation:], ranked[:n_validation]
