"""The built-in base model (``base_model=tiny``): a small GPT-2 with its own BPE tokenizer.

It is pretrained once, offline, on the bundled synthetic corpus (as plain text,
without the prompt template) and cached under
``{cache_dir}/tiny-base-{fingerprint}/``; later runs load it from there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from domain_mlflow.data.synthetic import pretraining_examples

_log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
_DONE_MARKER = "BUILD_COMPLETE"


@dataclass(frozen=True)
class TinyBaseSpec:
    """Everything that decides the tiny base's weights; it names the cache folder."""

    vocab_size: int = 2048
    n_positions: int = 256
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    corpus_per_domain: int = 3000
    pretrain_steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 1234
    corpus_version: int = 1

    def fingerprint(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:12]


DEFAULT_SPEC = TinyBaseSpec()


def tiny_base_dir(cache_dir: str | os.PathLike[str], spec: TinyBaseSpec = DEFAULT_SPEC) -> Path:
    return Path(cache_dir) / f"tiny-base-{spec.fingerprint()}"


def build_tokenizer(texts: list[str], vocab_size: int, max_length: int) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (GPT-2's scheme, our vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=max_length,
    )


def new_tiny_model(tokenizer: Any, spec: TinyBaseSpec = DEFAULT_SPEC) -> Any:
    """A freshly initialised GPT-2 of the tiny architecture for ``tokenizer``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pretrain(target: Path, spec: TinyBaseSpec, progress: bool | None) -> None:
    import torch

    from domain_mlflow.training.features import EncodedExample
    from domain_mlflow.training.loop import LoopConfig, TrainingLoop

    torch.manual_seed(spec.seed)
    texts = [f"{e.prompt}\n{e.completion}" for e in
             pretraining_examples(spec.seed, spec.corpus_per_domain)]
    tokenizer = build_tokenizer(texts, spec.vocab_size, spec.n_positions)
    model = new_tiny_model(tokenizer, spec)
    encoded = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: spec.n_positions - 1]
        ids.append(tokenizer.eos_token_id)
        encoded.append(EncodedExample(input_ids=ids, labels=ids, truncated=False))
    held_out = max(1, len(encoded) // 50)
    config = LoopConfig(
        max_steps=spec.pretrain_steps,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        weight_decay=0.01,
        warmup_steps=spec.pretrain_steps // 20,
        eval_every=spec.pretrain_steps,
        seed=spec.seed,
    )
    loop = TrainingLoop(model, encoded[held_out:], encoded[:held_out], config,
                        tokenizer.pad_token_id, progress=progress,
                        description="pretraining the tiny base (once)")
    result = loop.run()
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / "pretraining.json").write_text(json.dumps({
        "spec": asdict(spec),
        "examples": len(encoded),
        "training_loss": result.training_loss,
        "validation_loss": result.validation_loss,
        "tokens_per_second": result.tokens_per_second,
    }, indent=2))


def ensure_tiny_base(
    cache_dir: str | os.PathLike[str],
    spec: TinyBaseSpec = DEFAULT_SPEC,
    progress: bool | None = None,
) -> Path:
    """Return the cached tiny base's folder, pretraining it first if it is not there.

    Safe when several processes ask at once: one builds, the others wait and reuse.
    """
    target = tiny_base_dir(cache_dir, spec)
    if (target / _DONE_MARKER).is_file():
        return target
    with _exclusive(target.with_name(target.name + ".lock")):
        if (target / _DONE_MARKER).is_file():
            return target
        _log.info("pretraining the tiny base model once into %s", target)
        staging = target.with_name(target.name + ".building")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _pretrain(staging, spec, progress)
        (staging / _DONE_MARKER).write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target
