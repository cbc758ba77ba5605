"""The prompt format: the plain template on a base without a chat template, the base's
own chat template otherwise, and the loss on the completion tokens only either way."""

from __future__ import annotations

import pytest

from domain_mlflow.data.records import Example
from domain_mlflow.training.features import (
    CHAT_TEMPLATE,
    IGNORE_INDEX,
    PLAIN,
    PROMPT_TEMPLATE,
    encode_example,
    prompt_format,
    render_prompt,
)

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture
def chat_tokenizer(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tokenizer.chat_template = CHATML
    return tokenizer


def test_a_base_without_a_chat_template_gets_the_plain_format(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    assert prompt_format(tokenizer) == PLAIN
    assert render_prompt("q", tokenizer) == PROMPT_TEMPLATE.format(prompt="q")


def test_a_chat_template_renders_one_user_turn_or_the_records_own_turns(chat_tokenizer):
    assert prompt_format(chat_tokenizer) == CHAT_TEMPLATE
    assert render_prompt("q", chat_tokenizer) == (
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n")
    turns = (("system", "be brief"), ("user", "q"))
    assert render_prompt("system: be brief\nuser: q", chat_tokenizer, turns) == (
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nq<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_the_loss_stays_on_the_completion_under_a_chat_template(chat_tokenizer):
    example = Example("q", "SELECT 1;")
    encoded = encode_example(example, chat_tokenizer, max_length=256)
    prompt_ids = chat_tokenizer(render_prompt("q", chat_tokenizer),
                                add_special_tokens=False)["input_ids"]
    completion_ids = chat_tokenizer("SELECT 1;", add_special_tokens=False)["input_ids"]
    assert encoded.input_ids == prompt_ids + completion_ids + [chat_tokenizer.eos_token_id]
    assert encoded.labels == ([IGNORE_INDEX] * len(prompt_ids) + completion_ids
                              + [chat_tokenizer.eos_token_id])


def test_localai_gets_the_same_prompt_text_as_training(tiny_base, chat_tokenizer):
    from transformers import AutoTokenizer

    from domain_mlflow.sinks.localai import PROMPT_TEMPLATE_GO
    from domain_mlflow.training.features import completion_template_go

    plain = AutoTokenizer.from_pretrained(tiny_base)
    assert completion_template_go(plain) == PROMPT_TEMPLATE_GO
    assert completion_template_go(chat_tokenizer) == (
        "<|im_start|>user\n{{.Input}}<|im_end|>\n<|im_start|>assistant\n")
