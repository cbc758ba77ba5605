"""The training loop: a plain torch loop with resumable batches and checkpoints."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from domain_mlflow.exceptions import CheckpointError, TrainingDivergedError
from domain_mlflow.training.distributed import ProcessGroup
from domain_mlflow.training.features import IGNORE_INDEX, EncodedExample, collate
from domain_mlflow.training.loss import completion_loss
from domain_mlflow.training.progress import DEFAULT_INTERVAL_SECONDS, Progress, format_duration


class MetricSink(Protocol):
    def log(self, key: str, value: float, step: int) -> None: ...


class NullSink:
    def log(self, key: str, value: float, step: int) -> None:
        return None


@dataclass(frozen=True)
class LoopConfig:
    max_steps: int
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    eval_every: int = 50
    checkpoint_every: int = 100
    seed: int = 42
    max_seconds: float | None = None  # stop at the next step boundary after this long
    estimate_after: int | None = None  # print the time the run will take after N steps
    # Hand the allocator's freed memory back to the OS after every step (glibc keeps
    # a step's freed activation buffers otherwise, and the next step's peak sits on top).
    trim_memory: bool = False
    # Where no bar is shown, a progress line at least this often (and every 5% of steps).
    progress_seconds: float = DEFAULT_INTERVAL_SECONDS


@dataclass
class LoopResult:
    steps: int
    start_step: int
    training_loss: float
    validation_loss: float
    tokens_per_second: float
    train_tokens: int
    train_seconds: float
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False  # max_seconds ran out; the state at `steps` is checkpointed


def batch_indices(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """The example indices of a global step: a fresh seeded permutation per epoch.

    Stateless, so a resumed run draws exactly the batches the first run would have.
    """
    per_epoch = math.ceil(n_examples / batch_size)
    epoch, position = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_examples, generator=generator)
    return order[position * batch_size : (position + 1) * batch_size].tolist()


def _schedule(config: LoopConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def validation_loss(
    model: Any, examples: list[EncodedExample], pad_token_id: int, batch_size: int = 64
) -> float:
    """Token-weighted mean loss over the completions of ``examples``."""
    was_training = model.training
    model.eval()
    total = tokens = 0.0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_token_id)
        count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        if count:
            total += float(completion_loss(model, batch)) * count
            tokens += count
    model.train(was_training)
    return total / tokens if tokens else float("nan")


def _malloc_trim() -> Callable[[], Any] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


def estimate_line(description: str, per_step: float, done: int, max_steps: int) -> str:
    """What the rest of a run will cost, from the measured seconds per step."""
    left = max_steps - done
    return (f"{description}: {per_step:.2f} s per step measured over steps 2-{done}; "
            f"{left} of {max_steps} steps left, about {format_duration(left * per_step)} "
            "(plus evaluation)")


def _check_finite(name: str, value: float, step: int, learning_rate: float) -> None:
    if not math.isfinite(value):
        raise TrainingDivergedError(
            f"{name} became {value} at step {step}; the run is failed and nothing is "
            f"registered. Lower learning_rate (it was {learning_rate}) or check the data."
        )


class TrainingLoop:
    """Runs ``max_steps`` optimiser steps over encoded examples.

    ``on_checkpoint(step, state)`` receives the state to save every
    ``checkpoint_every`` steps and at the end; ``resume_state`` is such a state.
    With a ``group`` of several ranks, each rank trains on its share of every batch
    and gradients are averaged; the loss reported is the mean over the ranks.
    """

    def __init__(
        self,
        model: Any,
        train: list[EncodedExample],
        validation: list[EncodedExample],
        config: LoopConfig,
        pad_token_id: int,
        sink: MetricSink | None = None,
        on_checkpoint: Callable[[int, dict[str, Any]], None] | None = None,
        progress: bool | None = None,
        description: str = "training",
        group: ProcessGroup | None = None,
    ) -> None:
        self.model = model
        self.group = group or ProcessGroup()
        self.description = description
        self.train_examples = train
        self.validation_examples = validation
        self.config = config
        self.pad_token_id = pad_token_id
        self.sink = sink or NullSink()
        self.on_checkpoint = on_checkpoint
        self.progress = progress  # a bar; None: when stderr is a terminal
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(config))

    def state(self, step: int, losses: list[float]) -> dict[str, Any]:
        trainable = {n: p.detach().clone() for n, p in self.model.named_parameters()
                     if p.requires_grad}
        return {
            "step": step,
            "trainable": trainable,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "last_loss": torch.tensor(losses[-1:], dtype=torch.float64),
        }

    def _restore(self, state: dict[str, Any]) -> tuple[int, list[float]]:
        missing = set(state["trainable"]) ^ {
            n for n, p in self.model.named_parameters() if p.requires_grad
        }
        if missing:
            raise CheckpointError(
                f"checkpoint does not match the model (parameters {sorted(missing)[:5]}); "
                "resume with the same base_model, fine_tune and lora_r"
            )
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                if name in state["trainable"]:
                    parameter.copy_(state["trainable"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        return int(state["step"]), state["last_loss"].tolist()

    def _batches(self, start_step: int) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        n = len(self.train_examples)
        for step in range(start_step, self.config.max_steps):
            indices = batch_indices(step, n, self.config.batch_size, self.config.seed)
            indices = self.group.shard(indices)
            yield step, collate([self.train_examples[i] for i in indices], self.pad_token_id)

    def run(self, resume_state: dict[str, Any] | None = None) -> LoopResult:
        start_step, losses = self._restore(resume_state) if resume_state else (0, [])
        self.group.sync_parameters(self.trainable)
        config = self.config
        self.model.train()
        tokens, seconds, val_loss = 0, 0.0, float("nan")
        progress = Progress(self.description, config.max_steps, start=start_step,
                            bar=self.progress, silent=not self.group.is_main,
                            interval_seconds=config.progress_seconds)
        began, after_first, stopped_early, done = time.monotonic(), 0.0, False, start_step
        trim = _malloc_trim() if config.trim_memory else None
        for step, batch in self._batches(start_step):
            started = time.perf_counter()
            loss = completion_loss(self.model, batch)
            # Every rank sees the same mean, so a divergence stops all of them together.
            value = self.group.mean(float(loss.detach()))
            _check_finite("training_loss", value, step + 1, config.learning_rate)
            loss.backward()
            self.group.average_gradients(self.trainable)
            torch.nn.utils.clip_grad_norm_(self.trainable, config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if trim:
                del loss
                trim()
            seconds += time.perf_counter() - started
            tokens += int(batch["attention_mask"].sum())
            losses.append(value)
            done = step + 1
            self.sink.log("training_loss", value, done)
            progress.update(done, loss=f"{value:.4f}")
            if done % config.eval_every == 0 or done == config.max_steps:
                val_loss = validation_loss(self.model, self.validation_examples, self.pad_token_id)
                _check_finite("validation_loss", val_loss, done, config.learning_rate)
                self.sink.log("validation_loss", val_loss, done)
            if done == start_step + 1:
                after_first = time.monotonic()
            self._estimate(done - start_step, done, after_first)
            out_of_time = done < config.max_steps and self._out_of_time(began)
            if self.on_checkpoint and (
                done % config.checkpoint_every == 0 or done == config.max_steps or out_of_time
            ):
                self.on_checkpoint(done, self.state(done, losses))
            if out_of_time:
                stopped_early = True
                break
        progress.close()
        tokens = int(self.group.total(tokens))
        seconds = self.group.mean(seconds)
        if start_step >= config.max_steps:
            val_loss = validation_loss(self.model, self.validation_examples, self.pad_token_id)
        return LoopResult(
            steps=done if stopped_early else config.max_steps,
            start_step=start_step,
            # the last step's loss: the value MLflow shows as the run's training_loss
            training_loss=losses[-1] if losses else float("nan"),
            validation_loss=val_loss,
            tokens_per_second=tokens / seconds if seconds else 0.0,
            train_tokens=tokens,
            train_seconds=seconds,
            losses=losses,
            stopped_early=stopped_early,
        )

    def _estimate(self, taken: int, done: int, after_first: float) -> None:
        """Once, after ``estimate_after`` steps (the first, slower one left out)."""
        if self.config.estimate_after is None or taken != max(2, self.config.estimate_after):
            return
        per_step = (time.monotonic() - after_first) / (taken - 1)
        if self.group.is_main:
            print(estimate_line(self.description, per_step, done, self.config.max_steps),
                  file=sys.stderr, flush=True)

    def _out_of_time(self, began: float) -> bool:
        """Whether ``max_seconds`` has passed; every rank takes rank 0's view of it."""
        if self.config.max_seconds is None:
            return False
        late = float(time.monotonic() - began >= self.config.max_seconds)
        return self.group.from_main(late) > 0
