"""The built-in base model (``base_model=tiny``): a small GPT-2 with its own BPE tokenizer.

It is pretrained once, offline, on the bundled synthetic corpus (as plain text,
without the prompt template) and cached under
``{cache_dir}/tiny-base-{fingerprint}/``; later runs load it from there. The
pretraining checkpoints itself in its staging folder, so a killed build continues
from its last checkpoint instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from domain_mlflow.data.synthetic import pretraining_examples
from domain_mlflow.training.base_cache import MODEL_CONFIG, build_once, save_model_folder
from domain_mlflow.training.progress import DEFAULT_INTERVAL_SECONDS

_log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
_STATE_FILE = "pretraining-state.pt"


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


def _pretrain(target: Path, spec: TinyBaseSpec, progress: bool | None,
              progress_seconds: float) -> None:
    import torch
    from transformers import AutoTokenizer

    from domain_mlflow.training.features import EncodedExample
    from domain_mlflow.training.loop import LoopConfig, TrainingLoop

    torch.manual_seed(spec.seed)
    texts = [f"{e.prompt}\n{e.completion}" for e in
             pretraining_examples(spec.seed, spec.corpus_per_domain)]
    state_file = target / _STATE_FILE
    resume_state = None
    if state_file.is_file() and (target / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(target)
        resume_state = torch.load(state_file, map_location="cpu", weights_only=True)
        _log.warning("continuing the tiny base's pretraining from step %s",
                     int(resume_state["step"]))
    else:
        tokenizer = build_tokenizer(texts, spec.vocab_size, spec.n_positions)
        tokenizer.save_pretrained(target)
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
        checkpoint_every=max(1, spec.pretrain_steps // 6),
        seed=spec.seed,
        progress_seconds=progress_seconds,
    )

    def checkpoint(step: int, state: dict[str, Any]) -> None:
        partial = state_file.with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, state_file)

    loop = TrainingLoop(model, encoded[held_out:], encoded[:held_out], config,
                        tokenizer.pad_token_id, progress=progress, on_checkpoint=checkpoint,
                        description="pretraining the tiny base (once)")
    result = loop.run(resume_state)
    save_model_folder(model, tokenizer, target)
    state_file.unlink(missing_ok=True)  # only once the model is saved: a failed save resumes
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
    progress_seconds: float = DEFAULT_INTERVAL_SECONDS,
) -> Path:
    """Return the cached tiny base's folder, pretraining it first if it is not there.

    Safe when several processes ask at once: one builds, the others wait and reuse.
    ``progress`` and ``progress_seconds`` show the pretraining (see
    :class:`~domain_mlflow.training.progress.Progress`).
    """
    return build_once(tiny_base_dir(cache_dir, spec),
                      lambda staging: _pretrain(staging, spec, progress, progress_seconds),
                      "the tiny base model", resumable=True, required=(MODEL_CONFIG,))
