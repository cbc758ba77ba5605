"""From examples to token ids: the prompt template, loss masking and padded batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from domain_mlflow.data.records import Example

PROMPT_TEMPLATE = "### Prompt:\n{prompt}\n### Response:\n"
IGNORE_INDEX = -100


def render_prompt(prompt: str) -> str:
    """The text the model is conditioned on; generation continues right after it."""
    return PROMPT_TEMPLATE.format(prompt=prompt)


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def encode_example(example: Example, tokenizer: Any, max_length: int) -> EncodedExample:
    """Token ids of prompt + completion + EOS, with the loss only on the completion.

    Prompt and completion are tokenised apart, exactly as they are at generation
    time. Too long: the prompt loses tokens from its start, then the completion
    from its end.
    """
    prompt_ids = tokenizer(render_prompt(example.prompt), add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    completion_ids = [*completion_ids, tokenizer.eos_token_id]
    truncated = len(prompt_ids) + len(completion_ids) > max_length
    if truncated:
        completion_ids = completion_ids[: max_length - 1]
        prompt_ids = prompt_ids[-(max_length - len(completion_ids)) :]
    return EncodedExample(
        input_ids=prompt_ids + completion_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + completion_ids,
        truncated=truncated,
    )


def collate(batch: list[EncodedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padded positions get no attention and no loss."""
    width = max(len(item.input_ids) for item in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        length = len(item.input_ids)
        input_ids[row, :length] = torch.tensor(item.input_ids)
        labels[row, :length] = torch.tensor(item.labels)
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
