"""What ``mlflow deployments predict -t localai`` accepts, as (prompt, options) pairs."""

from __future__ import annotations

from numbers import Integral
from typing import Any, TypeVar

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

TARGET = "localai"  # the MLflow deployments target these inputs are for
_T = TypeVar("_T")


def completion_requests(inputs: Any) -> list[tuple[str, dict[str, int]]]:
    """``(prompt, options)`` pairs from a str, a list of str, ``{"prompt": ...,
    "max_tokens": N}`` or a DataFrame with a ``prompt`` (and ``max_tokens``) column."""
    import pandas as pd

    if isinstance(inputs, pd.DataFrame):
        unknown = set(inputs.columns) - {"prompt", "max_tokens"}
        if "prompt" not in inputs.columns or unknown:
            raise _bad_inputs(f"a table needs a 'prompt' column and no other than 'max_tokens'"
                              f" (got columns {sorted(map(str, inputs.columns))})")
        rows = inputs.to_dict(orient="records")
        return _nonempty([(_prompt(row["prompt"]), _options(row.get("max_tokens")))
                          for row in rows])
    if isinstance(inputs, dict):
        unknown = set(inputs) - {"prompt", "max_tokens"}
        if "prompt" not in inputs or unknown:
            raise _bad_inputs(f"a dict needs the key 'prompt' and no other than 'max_tokens' "
                              f"(got {sorted(map(str, inputs))})")
        options = _options(inputs.get("max_tokens"))
        return [(prompt, options) for prompt in _prompts(inputs["prompt"])]
    return [(prompt, {}) for prompt in _prompts(inputs)]


def _prompts(value: Any) -> list[str]:
    prompts = [value] if isinstance(value, str) else value
    if not isinstance(prompts, list | tuple):
        raise _bad_inputs(f"got {type(value).__name__}")
    return _nonempty([_prompt(prompt) for prompt in prompts])


def _prompt(value: Any) -> str:
    if not isinstance(value, str):
        raise _bad_inputs(f"a prompt must be a string, not {type(value).__name__}")
    return value


def _options(max_tokens: Any) -> dict[str, int]:
    if max_tokens is None or (isinstance(max_tokens, float) and max_tokens != max_tokens):
        return {}  # absent, or NaN where a table row left it empty
    if isinstance(max_tokens, float) and max_tokens.is_integer():
        max_tokens = int(max_tokens)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, Integral) or max_tokens < 1:
        raise _bad_inputs(f"max_tokens must be a whole number >= 1, not {max_tokens!r}")
    return {"max_tokens": int(max_tokens)}


def _nonempty(items: list[_T]) -> list[_T]:
    if not items:
        raise _bad_inputs("there are no prompts")
    return items


def _bad_inputs(problem: str) -> MlflowException:
    return MlflowException(
        f"predict inputs for target {TARGET!r} are not usable: {problem}. Give a string, a "
        "list of strings, {\"prompt\": ..., \"max_tokens\": N} or a table with a 'prompt' "
        "column", INVALID_PARAMETER_VALUE)
