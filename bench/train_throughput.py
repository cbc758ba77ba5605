"""Training throughput: our loop vs Hugging Face ``Trainer`` with its MLflow callback.

Same tiny base model with the same LoRA adapters, same data (the SQL example),
same batch size, steps and optimiser. Each variant runs ``--repeats`` times in
rotation and the median tokens/s is reported:

- ours + MLflow: ``TrainingLoop`` logging ``training_loss`` every step to MLflow
  (batched, asynchronous), exactly as ``domain-mlflow train`` does;
- ours, no logging: the same loop with a null sink (for the logging overhead,
  also measured directly as the time the training thread spends in logging calls);
- HF Trainer + MLflow: ``transformers.Trainer`` with ``report_to=["mlflow"]`` and
  ``logging_steps=1``.

    python bench/train_throughput.py [--steps 60] [--repeats 5]

Tokens are the non-padding tokens of the batches each variant actually trained on;
time is the wall time of the whole training call, logging included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per variant")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache-dir", default=None, help="tiny base cache (default: settings)")
    return parser


def _setup(cache_dir: str) -> tuple[Any, list[Any], int]:
    from transformers import AutoTokenizer

    from domain_mlflow.data import load_training_data, split_examples
    from domain_mlflow.training.features import encode_example
    from domain_mlflow.training.tiny_base import ensure_tiny_base

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_base(cache_dir))
    data = load_training_data(REPO / "examples" / "data" / "sql_agent.jsonl")
    train, _ = split_examples(data.examples, 0.1, 42)
    encoded = [encode_example(e, tokenizer, 256) for e in train]
    return tokenizer, encoded, tokenizer.pad_token_id


def _fresh_lora_model(cache_dir: str) -> Any:
    import torch

    from domain_mlflow.training.models import add_lora, load_base

    torch.manual_seed(0)
    return add_lora(load_base("tiny", cache_dir, from_scratch=False).model, rank=16)


class TimedSink:
    """Wraps a sink and adds up the time the training thread spends inside it."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.seconds = 0.0

    def log(self, key: str, value: float, step: int) -> None:
        started = time.perf_counter()
        self.sink.log(key, value, step)
        self.seconds += time.perf_counter() - started

    def close(self) -> None:
        started = time.perf_counter()
        self.sink.close()
        self.seconds += time.perf_counter() - started


LOGGING_SHARE: list[float] = []


def run_ours(cache_dir: str, encoded: list[Any], pad: int, args: argparse.Namespace,
             log_to_mlflow: bool) -> float:
    import mlflow
    from mlflow.tracking import MlflowClient

    from domain_mlflow.tracking import BatchedMetricLogger
    from domain_mlflow.training.loop import LoopConfig, NullSink, TrainingLoop

    model = _fresh_lora_model(cache_dir)
    config = LoopConfig(max_steps=args.steps, batch_size=args.batch_size, learning_rate=1e-2,
                        warmup_steps=3, eval_every=10**9, checkpoint_every=10**9)
    run = mlflow.start_run() if log_to_mlflow else None
    sink = TimedSink(BatchedMetricLogger(MlflowClient(), run.info.run_id)) if run else NullSink()
    loop = TrainingLoop(model, encoded, encoded[:1], config, pad, sink=sink, progress=False)
    started = time.perf_counter()
    result = loop.run()
    if run:
        sink.close()
    elapsed = time.perf_counter() - started
    if run:
        mlflow.end_run()
        LOGGING_SHARE.append(sink.seconds / elapsed)
    return result.train_tokens / elapsed


def run_hf_trainer(cache_dir: str, encoded: list[Any], pad: int,
                   args: argparse.Namespace, output_dir: str) -> float:
    from transformers import Trainer, TrainingArguments

    from domain_mlflow.training.features import collate

    model = _fresh_lora_model(cache_dir)
    tokens = 0

    def collator(features: list[Any]) -> dict[str, Any]:
        nonlocal tokens
        batch = collate(features, pad)
        tokens += int(batch["attention_mask"].sum())
        return batch

    training_args = TrainingArguments(
        output_dir=output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-2,
        lr_scheduler_type="cosine",
        warmup_steps=3,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        logging_steps=1,
        report_to=["mlflow"],
        save_strategy="no",
        eval_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=0,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=encoded,
                      data_collator=collator)
    started = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - started
    return tokens / elapsed


def main(args: argparse.Namespace) -> int:
    import mlflow
    from transformers.utils import logging as hf_logging

    from domain_mlflow.settings import load_settings

    hf_logging.set_verbosity_error()
    cache_dir = args.cache_dir or load_settings().cache_dir
    _, encoded, pad = _setup(cache_dir)
    with tempfile.TemporaryDirectory() as workdir:
        uri = f"sqlite:///{workdir}/bench.db"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ["HF_MLFLOW_LOG_ARTIFACTS"] = "false"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("train-throughput")
        variants = {
            "ours + MLflow": lambda _: run_ours(cache_dir, encoded, pad, args, True),
            "ours, no logging": lambda _: run_ours(cache_dir, encoded, pad, args, False),
            "HF Trainer + MLflow": lambda repeat: run_hf_trainer(
                cache_dir, encoded, pad, args, f"{workdir}/hf{repeat}"),
        }
        figures: dict[str, list[float]] = {name: [] for name in variants}
        run_ours(cache_dir, encoded, pad, args, log_to_mlflow=True)  # warm-up, not counted
        LOGGING_SHARE.clear()
        names = list(variants)
        for repeat in range(args.repeats):
            # Rotate the order so that no variant always runs first or last.
            for name in names[repeat % 3:] + names[: repeat % 3]:
                figures[name].append(variants[name](repeat))
            print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(
                f"{name} {values[-1]:.0f}" for name, values in figures.items()), flush=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    print(f"\n{args.steps} steps x batch {args.batch_size}, {args.repeats} runs each, "
          "median tokens/s:")
    for name, value in medians.items():
        print(f"  {name:22s} {value:8.0f}")
    for name, values in figures.items():
        print(f"  {name:22s} range {min(values):.0f}-{max(values):.0f}")
    ratio = medians["ours + MLflow"] / medians["HF Trainer + MLflow"]
    per_repeat = [ours / hf for ours, hf in zip(figures["ours + MLflow"],
                                                 figures["HF Trainer + MLflow"], strict=True)]
    print(f"ratio ours/HF Trainer (both logging to MLflow): {ratio:.2f}x of medians, "
          f"{statistics.median(per_repeat):.2f}x median of per-repeat ratios")
    overheads = [1 - logged / bare for logged, bare in zip(figures["ours + MLflow"],
                                                          figures["ours, no logging"],
                                                          strict=True)]
    print(f"MLflow logging overhead in our loop, median of per-repeat pairs: "
          f"{statistics.median(overheads) * 100:.1f}% (run-to-run noise is larger)")
    share = statistics.median(LOGGING_SHARE)
    print(f"time the training thread spends in MLflow logging calls: {share * 100:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(make_parser().parse_args()))
