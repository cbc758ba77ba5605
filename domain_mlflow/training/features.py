"""From examples to token ids: the prompt format, loss masking and padded batches.

A base whose tokenizer has a chat template (an instruct model) is prompted the way it
was trained: the example becomes chat turns (a ``messages`` record its own turns, any
other record one user turn) rendered by the template up to the assistant's turn.
Without a template, the plain format :data:`PROMPT_TEMPLATE` is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from domain_mlflow.data.records import Example

PROMPT_TEMPLATE = "### Prompt:\n{prompt}\n### Response:\n"
IGNORE_INDEX = -100
PLAIN = "plain"
CHAT_TEMPLATE = "chat_template"


def prompt_format(tokenizer: Any) -> str:
    """:data:`CHAT_TEMPLATE` when the tokenizer has a chat template, else :data:`PLAIN`."""
    return CHAT_TEMPLATE if getattr(tokenizer, "chat_template", None) else PLAIN


def chat_turns(prompt: str, context: Sequence[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """The turns before the answer: a record's own, or the prompt as one user turn."""
    pairs = context or (("user", prompt),)
    return [{"role": role, "content": content} for role, content in pairs]


GO_INPUT = "{{.Input}}"  # where LocalAI's completion template puts the prompt


def completion_template_go(tokenizer: Any) -> str:
    """:func:`render_prompt` as a LocalAI (Go text/template) completion template: the
    same text around the prompt, so that LocalAI prompts the model as it was trained."""
    return render_prompt(GO_INPUT, tokenizer)


def render_prompt(prompt: str, tokenizer: Any = None,
                  context: Sequence[tuple[str, str]] = ()) -> str:
    """The text the model is conditioned on; generation continues right after it."""
    if tokenizer is None or prompt_format(tokenizer) == PLAIN:
        return PROMPT_TEMPLATE.format(prompt=prompt)
    return tokenizer.apply_chat_template(chat_turns(prompt, context), tokenize=False,
                                         add_generation_prompt=True)


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
    prompt_ids = tokenizer(render_prompt(example.prompt, tokenizer, example.context),
                           add_special_tokens=False)["input_ids"]
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
