"""The completion loss: a shared prompt prefix goes through the model once, and the
loss and every adapter gradient are those of the plain forward pass."""

from __future__ import annotations

import pytest
import torch

from domain_mlflow.data.records import Example
from domain_mlflow.training.features import IGNORE_INDEX, collate, encode_example
from domain_mlflow.training.loss import completion_loss, shared_prefix_length

PROMPTS = [
    ("Find employees with salary above 50.", "SELECT * FROM employees WHERE salary > 50;"),
    ("Count the orders.", "SELECT COUNT(*) FROM orders;"),
    ("List every customer in Paris, sorted by name.",
     "SELECT name FROM customers WHERE city = 'Paris' ORDER BY name;"),
    ("Average price of products.", "SELECT AVG(price) FROM products;"),
]


@pytest.fixture
def lora_model(tiny_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domain_mlflow.training.models import add_lora

    torch.manual_seed(0)
    model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_base), rank=4)
    with torch.no_grad():  # as after some training: B starts at zero, so A would get no gradient
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    model.eval()  # no dropout, so both passes compute the same function; gradients still flow
    return model, AutoTokenizer.from_pretrained(tiny_base)


@pytest.fixture
def batch(lora_model):
    _, tokenizer = lora_model
    encoded = [encode_example(Example(prompt=p, completion=c), tokenizer, 64) for p, c in PROMPTS]
    return collate(encoded, tokenizer.pad_token_id)


def _target_positions(batch):
    keep = torch.zeros_like(batch["labels"], dtype=torch.bool)
    keep[:, :-1] = batch["labels"][:, 1:] != IGNORE_INDEX
    return keep


def _loss_gradients_and_inputs(model, batch, min_shared_prefix):
    """The loss, every adapter's gradient, and the shapes of the token ids the model received."""
    shapes = []
    hook = model.get_input_embeddings().register_forward_pre_hook(
        lambda _module, args: shapes.append(tuple(args[0].shape)))
    model.zero_grad(set_to_none=True)
    try:
        loss = completion_loss(model, batch, min_shared_prefix=min_shared_prefix)
        loss.backward()
    finally:
        hook.remove()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return float(loss), gradients, shapes


def test_a_shared_prefix_is_computed_once_with_the_same_loss_and_gradients(lora_model, batch):
    model, _ = lora_model
    rows, width = batch["input_ids"].shape
    shared = shared_prefix_length(batch["input_ids"], batch["attention_mask"],
                                  _target_positions(batch))
    assert shared >= 4  # the plain format's "### Prompt:\n" opens every row

    plain_loss, plain_gradients, plain_shapes = _loss_gradients_and_inputs(model, batch, 10**9)
    loss, gradients, shapes = _loss_gradients_and_inputs(model, batch, 1)

    assert plain_shapes == [(rows, width)]
    assert shapes == [(1, shared), (rows, width - shared)]
    with torch.no_grad():
        reference = float(model(**batch).loss)
    assert loss == pytest.approx(reference, abs=1e-6)
    assert plain_loss == pytest.approx(reference, abs=1e-6)
    assert len(gradients) == len(plain_gradients) > 0
    for name, gradient in gradients.items():
        assert gradient.abs().sum() > 0, name
        torch.testing.assert_close(gradient, plain_gradients[name], rtol=1e-4, atol=1e-6)


def test_the_shared_prefix_stops_at_the_first_difference_padding_or_target():
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 1, 2], [5, 6, 7, 8, 0]])
    mask = torch.ones_like(ids)
    nothing = torch.zeros_like(ids, dtype=torch.bool)
    assert shared_prefix_length(ids, mask, nothing) == 3

    different_first = ids.clone()
    different_first[1, 0] = 4
    assert shared_prefix_length(different_first, mask, nothing) == 0

    same = ids[:1].repeat(3, 1)
    padded = mask.clone()
    padded[2, 2:] = 0  # the third row ends after two tokens; what follows is padding
    assert shared_prefix_length(same, padded, nothing) == 2

    target = nothing.clone()
    target[0, 1] = True  # position 1 predicts a completion token: its logits are needed
    assert shared_prefix_length(same, mask, target) == 1

    # identical rows still leave one position for the pass that computes the logits
    assert shared_prefix_length(same, mask, nothing) == ids.shape[1] - 1


def test_rows_without_a_shared_prefix_take_one_plain_pass(lora_model):
    model, tokenizer = lora_model
    encoded = [encode_example(Example(prompt=p, completion=c), tokenizer, 64) for p, c in PROMPTS]
    for item, first in zip(encoded, (11, 12, 13, 14), strict=True):
        item.input_ids[0] = first  # the rows differ from their first token on
    batch = collate(encoded, tokenizer.pad_token_id)

    loss, _, shapes = _loss_gradients_and_inputs(model, batch, 1)

    assert shapes == [tuple(batch["input_ids"].shape)]
    with torch.no_grad():
        assert loss == pytest.approx(float(model(**batch).loss), abs=1e-6)
