"""Training throughput: our loop vs Hugging Face ``Trainer`` with its MLflow callback.

Same base model with the same LoRA adapters, same data (the SQL example), the same
batches in the same order (our loop's seeded draw, handed to the ``Trainer`` as they
are), same steps and optimiser. Each variant runs ``--repeats`` times in rotation
and the median tokens/s is reported:

- ours + MLflow: ``TrainingLoop`` logging ``training_loss`` every step to MLflow
  (batched, asynchronous), exactly as ``domain-mlflow train`` does;
- ours, no logging: the same loop with a null sink (for the logging overhead,
  also measured directly as the time the training thread spends in logging calls);
  tiny base only;
- HF Trainer + MLflow: ``transformers.Trainer`` with ``report_to=["mlflow"]`` and
  ``logging_steps=1``.

    python bench/train_throughput.py [--steps 60] [--repeats 5]
    python bench/train_throughput.py --base smollm2-135m [--steps 6] [--repeats 2]

``--base tiny`` (the built-in 1 M-parameter GPT-2) runs every variant in this
process. ``--base smollm2-135m`` (SmolLM2-135M-Instruct, 134.5 M parameters) runs
each run in a fresh process, which also reports its peak RSS and how far its RSS
grew during the training call; the first ``--warmup-steps`` steps of each run are
left out of the timing.

Tokens are the non-padding tokens of the timed batches each variant actually trained
on; time is the wall time from the end of the last warm-up step (without warm-up,
the start of the call) to the end of the training call, logging included. Memory
figures read ``/proc/self`` and need Linux.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LORA_RANK = 16
LEARNING_RATE = 1e-2
SEED = 42  # of our loop's batch order, which both variants train on
STEP_METRIC = "training_loss"  # the metric our loop logs once at the end of every step

OURS, BARE, HF = "ours", "ours-bare", "hf-trainer"
VARIANTS = {OURS: "ours + MLflow", BARE: "ours, no logging", HF: "HF Trainer + MLflow"}


@dataclass(frozen=True)
class Sizes:
    """How much each run does; every field is also a command-line option."""

    steps: int = field(metadata={"help": "timed optimiser steps per run", "min": 1})
    repeats: int = field(metadata={"help": "runs per variant", "min": 1})
    batch_size: int = field(metadata={"help": "examples per step", "min": 1})
    max_length: int = field(metadata={"help": "examples are cut to this many tokens", "min": 16})
    warmup_steps: int = field(metadata={"help": "untimed steps at the start of every run",
                                        "min": 0})
    threads: int | None = field(default=None, metadata={"help": "torch threads", "min": 1})


@dataclass(frozen=True)
class BaseProfile:
    sizes: Sizes  # the defaults
    variants: tuple[str, ...]
    isolated: bool  # every run in a fresh process that reports its own memory


PROFILES = {
    "tiny": BaseProfile(Sizes(steps=60, repeats=5, batch_size=32, max_length=256,
                              warmup_steps=0), (OURS, BARE, HF), isolated=False),
    # One LoRA step of SmolLM2 takes seconds on 2 CPU cores: these sizes keep the
    # whole benchmark (4 processes) to about 6-8 minutes there.
    "smollm2-135m": BaseProfile(Sizes(steps=6, repeats=2, batch_size=8, max_length=64,
                                      warmup_steps=1, threads=2), (OURS, HF), isolated=True),
}


@dataclass(frozen=True)
class BenchConfig:
    base: str
    cache_dir: str
    sizes: Sizes

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchConfig:
        """The command line's sizes, the base's defaults for those not given."""
        from domain_mlflow.settings import load_settings

        given = {f.name: getattr(args, f.name) for f in fields(Sizes)
                 if getattr(args, f.name) is not None}
        return cls(args.base, args.cache_dir or str(load_settings().cache_dir),
                   replace(PROFILES[args.base].sizes, **given))

    def argv(self) -> list[str]:
        """The options that make a child process run with this configuration."""
        options = ["--base", self.base, "--cache-dir", self.cache_dir]
        for f in fields(Sizes):
            if (value := getattr(self.sizes, f.name)) is not None:
                options += [f"--{f.name.replace('_', '-')}", str(value)]
        return options


def _at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        if (value := int(text)) < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", choices=sorted(PROFILES), default="tiny",
                        help="base model; the defaults of the sizes below depend on it")
    for f in fields(Sizes):
        values = [(base, getattr(profile.sizes, f.name)) for base, profile in PROFILES.items()]
        defaults = ", ".join(f"{base} {'torch default' if value is None else value}"
                             for base, value in values)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=_at_least(f.metadata["min"]),
                            help=f"{f.metadata['help']} ({defaults})")
    parser.add_argument("--cache-dir", default=None, help="base model cache (default: settings)")
    # One run of one variant in this process: the isolated bases' child processes.
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    return parser


def _fresh_lora_model(base: str, cache_dir: str) -> tuple[Any, Any]:
    """``base`` freshly loaded and wrapped with the benchmark's LoRA adapters, and its tokenizer."""
    import torch

    from domain_mlflow.training.models import add_lora, load_base

    torch.manual_seed(0)
    loaded = load_base(base, cache_dir, from_scratch=False)
    return add_lora(loaded.model, rank=LORA_RANK), loaded.tokenizer


def _training_data(tokenizer: Any, max_length: int) -> tuple[list[Any], int]:
    """The SQL example's training split, encoded, and the pad token id."""
    from domain_mlflow.data import load_training_data, split_examples
    from domain_mlflow.training.features import encode_example

    data = load_training_data(REPO / "examples" / "data" / "sql_agent.jsonl")
    train, _ = split_examples(data.examples, 0.1, 42)
    return [encode_example(e, tokenizer, max_length) for e in train], tokenizer.pad_token_id


def _use_tracking_store(uri: str) -> None:
    import mlflow

    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["HF_MLFLOW_LOG_ARTIFACTS"] = "false"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("train-throughput")


def _status_kib(name: str) -> int:
    """A memory figure of this process from ``/proc/self/status``, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise KeyError(f"/proc/self/status has no {name}")


@dataclass(frozen=True)
class MemoryFigures:
    before_training_kib: int  # RSS right before the training call (model and trainer built)
    training_peak_kib: int  # the highest RSS during the call
    peak_kib: int  # the process's highest RSS, while loading or training
    after_loading_kib: int | None = None  # RSS right after the model was loaded

    @property
    def growth_kib(self) -> int:
        """What the training call itself added to the RSS at its peak."""
        return self.training_peak_kib - self.before_training_kib


class TrainingMemory:
    """This process's RSS right before the training call and its peak during it.

    Peaks are the kernel's high-water mark (VmHWM), reset right before the call so
    that the training peak is the call's own. Not ``ru_maxrss``: a child's also
    carries the peak of the process it was started from.
    """

    def __init__(self) -> None:
        self.peak_before = _status_kib("VmHWM")
        self.before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the high-water mark

    def figures(self) -> MemoryFigures:
        training_peak = _status_kib("VmHWM")
        return MemoryFigures(self.before, training_peak, max(self.peak_before, training_peak))


@dataclass
class StepClock:
    """When each optimiser step ended, the logging time until then, and its tokens."""

    warmup_steps: int
    tokens: list[int] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    logged: list[float] = field(default_factory=list)

    def step_ended(self, at: float, logging_seconds: float = 0.0) -> None:
        self.ends.append(at)
        self.logged.append(logging_seconds)

    def timed(self, started: float, finished: float, steps: int,
              logging_seconds: float) -> tuple[int, float, float]:
        """Tokens, tokens/s and the share of the time spent logging, after the warm-up steps."""
        warm = self.warmup_steps
        begin, logged_before = started, 0.0
        if warm:
            begin, logged_before = self.ends[warm - 1], self.logged[warm - 1]
        elapsed = finished - begin
        tokens = sum(self.tokens[warm : warm + steps])
        return tokens, tokens / elapsed, (logging_seconds - logged_before) / elapsed


class TimedSink:
    """Wraps a sink, notes when each step ends and adds up the time spent inside it."""

    def __init__(self, sink: Any, clock: StepClock) -> None:
        self.sink = sink
        self.clock = clock
        self.seconds = 0.0

    def log(self, key: str, value: float, step: int) -> None:
        started = time.perf_counter()
        if key == STEP_METRIC:
            self.clock.step_ended(started, self.seconds)
        self.sink.log(key, value, step)
        self.seconds += time.perf_counter() - started

    def close(self) -> None:
        started = time.perf_counter()
        if hasattr(self.sink, "close"):
            self.sink.close()
        self.seconds += time.perf_counter() - started


@dataclass(frozen=True)
class RunFigures:
    tokens: int  # trained on in the timed steps
    tokens_per_second: float
    logging_share: float | None  # of the timed window, in MLflow logging calls (ours only)
    memory: MemoryFigures

    @classmethod
    def from_json(cls, text: str) -> RunFigures:
        data = json.loads(text)
        return cls(**{**data, "memory": MemoryFigures(**data["memory"])})


def _batch_order(n_examples: int, sizes: Sizes) -> list[list[int]]:
    """The example indices of every step of a run, as our loop draws them (stateless)."""
    from domain_mlflow.training.loop import batch_indices

    return [batch_indices(step, n_examples, sizes.batch_size, SEED)
            for step in range(sizes.warmup_steps + sizes.steps)]


def run_ours(model: Any, encoded: list[Any], pad: int, sizes: Sizes,
             log_to_mlflow: bool, real_base: bool) -> RunFigures:
    import mlflow
    from mlflow.tracking import MlflowClient

    from domain_mlflow.tracking import BatchedMetricLogger
    from domain_mlflow.training.loop import LoopConfig, NullSink, TrainingLoop

    loop_config = LoopConfig(max_steps=sizes.warmup_steps + sizes.steps,
                             batch_size=sizes.batch_size, learning_rate=LEARNING_RATE,
                             warmup_steps=3, eval_every=10**9, checkpoint_every=10**9, seed=SEED,
                             trim_memory=real_base)  # as `domain-mlflow train` sets it
    clock = StepClock(sizes.warmup_steps, tokens=[
        sum(len(encoded[i].input_ids) for i in batch) for batch in _batch_order(len(encoded), sizes)
    ])
    run = mlflow.start_run() if log_to_mlflow else None
    sink = TimedSink(BatchedMetricLogger(MlflowClient(), run.info.run_id) if run else NullSink(),
                     clock)
    loop = TrainingLoop(model, encoded, encoded[:1], loop_config, pad, sink=sink, progress=False)
    memory = TrainingMemory()
    started = time.perf_counter()
    loop.run()
    sink.close()
    finished = time.perf_counter()
    memory_figures = memory.figures()
    if run:
        mlflow.end_run()
    tokens, tokens_per_second, share = clock.timed(started, finished, sizes.steps, sink.seconds)
    return RunFigures(tokens, tokens_per_second, share if run else None, memory_figures)


def run_hf_trainer(model: Any, encoded: list[Any], pad: int, sizes: Sizes,
                   output_dir: str) -> RunFigures:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from domain_mlflow.training.features import collate

    clock = StepClock(sizes.warmup_steps)
    # One item per step: a whole batch of our loop's order (its end-of-epoch batches
    # are shorter), read in sequence.
    batches = [[encoded[i] for i in batch] for batch in _batch_order(len(encoded), sizes)]

    def collator(features: list[list[Any]]) -> dict[str, Any]:
        # Called once per step, in order (the data loader may fetch one ahead).
        batch = collate(features[0], pad)
        clock.tokens.append(int(batch["attention_mask"].sum()))
        return batch

    class StepEnds(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.step_ended(time.perf_counter())

    training_args = TrainingArguments(
        output_dir=output_dir,
        max_steps=sizes.warmup_steps + sizes.steps,
        per_device_train_batch_size=1,  # one item: one batch of sizes.batch_size examples
        train_sampling_strategy="sequential",
        learning_rate=LEARNING_RATE,
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
    trainer = Trainer(model=model, args=training_args, train_dataset=batches,
                      data_collator=collator, callbacks=[StepEnds()])
    memory = TrainingMemory()
    started = time.perf_counter()
    trainer.train()
    finished = time.perf_counter()
    tokens, tokens_per_second, _ = clock.timed(started, finished, sizes.steps, 0.0)
    return RunFigures(tokens, tokens_per_second, None, memory.figures())


def run_variant(variant: str, model: Any, encoded: list[Any], pad: int, config: BenchConfig,
                output_dir: str) -> RunFigures:
    sizes = config.sizes
    if variant == HF:
        return run_hf_trainer(model, encoded, pad, sizes, output_dir)
    return run_ours(model, encoded, pad, sizes, log_to_mlflow=variant == OURS,
                    real_base=config.base != "tiny")


def _rotated(variants: tuple[str, ...], repeat: int) -> tuple[str, ...]:
    """The run order of a repeat: rotated so that no variant always runs first or last."""
    shift = repeat % len(variants)
    return variants[shift:] + variants[:shift]


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def _spread(kib: list[int]) -> str:
    return f"{_mib(statistics.median(kib))} ({_mib(min(kib))}-{_mib(max(kib))})"


Runs = dict[str, list[RunFigures]]


def _repeat_line(repeat: int, runs: Runs, config: BenchConfig, isolated: bool) -> str:
    return f"repeat {repeat + 1}/{config.sizes.repeats}: " + ", ".join(
        f"{VARIANTS[variant]} {figures[-1].tokens_per_second:.0f}" + (
            f" tokens/s ({figures[-1].tokens} tokens, peak {_mib(figures[-1].memory.peak_kib)})"
            if isolated else "")
        for variant, figures in runs.items())


def run_in_process(config: BenchConfig, variants: tuple[str, ...]) -> Runs:
    """Every run in this process, after one untimed warm-up run."""
    sizes = config.sizes
    model, tokenizer = _fresh_lora_model(config.base, config.cache_dir)
    encoded, pad = _training_data(tokenizer, sizes.max_length)
    runs: Runs = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as workdir:
        _use_tracking_store(f"sqlite:///{workdir}/bench.db")
        run_ours(model, encoded, pad, sizes, log_to_mlflow=True,  # warm-up, not counted
                 real_base=config.base != "tiny")
        for repeat in range(sizes.repeats):
            for variant in _rotated(variants, repeat):
                model, _ = _fresh_lora_model(config.base, config.cache_dir)
                runs[variant].append(run_variant(variant, model, encoded, pad, config,
                                                 f"{workdir}/hf{repeat}"))
            print(_repeat_line(repeat, runs, config, isolated=False), flush=True)
    return runs


def run_child(config: BenchConfig, variant: str, tracking_uri: str | None) -> RunFigures:
    """One run of ``variant`` in this (fresh) process, with its memory figures."""
    model, tokenizer = _fresh_lora_model(config.base, config.cache_dir)
    after_loading = _status_kib("VmRSS")
    encoded, pad = _training_data(tokenizer, config.sizes.max_length)
    with tempfile.TemporaryDirectory() as workdir:
        _use_tracking_store(tracking_uri or f"sqlite:///{workdir}/bench.db")
        figures = run_variant(variant, model, encoded, pad, config, f"{workdir}/hf")
    return replace(figures, memory=replace(figures.memory, after_loading_kib=after_loading))


def _spawn_child(config: BenchConfig, variant: str, tracking_uri: str) -> RunFigures:
    command = [sys.executable, str(Path(__file__).resolve()), *config.argv(),
               "--variant", variant, "--tracking-uri", tracking_uri, "--json"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=3600,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {VARIANTS[variant]} run failed (exit {done.returncode}):\n"
                         + "\n".join(done.stderr.splitlines()[-20:]))
    return RunFigures.from_json(done.stdout.strip().splitlines()[-1])  # after the Trainer's logs


def run_isolated(config: BenchConfig, variants: tuple[str, ...]) -> Runs:
    """Every run in a fresh process of its own, so that each peak RSS is its own."""
    from domain_mlflow.training.bases import resolve_base

    sizes = config.sizes
    resolve_base(config.base, config.cache_dir)  # converts a GGUF base once, outside the runs
    print(f"base {config.base}, LoRA rank {LORA_RANK}, batch {sizes.batch_size}, examples cut "
          f"to {sizes.max_length} tokens, {sizes.warmup_steps} warm-up + {sizes.steps} timed "
          f"steps per run, {sizes.repeats} runs per variant, each in a fresh process, "
          f"torch threads {sizes.threads or 'default'}", flush=True)
    runs: Runs = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as workdir:
        uri = f"sqlite:///{workdir}/bench.db"
        _use_tracking_store(uri)  # the store's schema is created here, not in a timed run
        for repeat in range(sizes.repeats):
            for variant in _rotated(variants, repeat):
                runs[variant].append(_spawn_child(config, variant, uri))
            print(_repeat_line(repeat, runs, config, isolated=True), flush=True)
    return runs


def report_throughput(sizes: Sizes, runs: Runs) -> None:
    speeds = {variant: [run.tokens_per_second for run in figures]
              for variant, figures in runs.items()}
    medians = {variant: statistics.median(values) for variant, values in speeds.items()}
    timed = (f"{sizes.steps} timed steps (after {sizes.warmup_steps} warm-up)"
             if sizes.warmup_steps else f"{sizes.steps} steps")
    print(f"\n{timed} x batch {sizes.batch_size}, {sizes.repeats} runs each, median tokens/s:")
    for variant, value in medians.items():
        print(f"  {VARIANTS[variant]:22s} {value:8.0f}")
    for variant, values in speeds.items():
        print(f"  {VARIANTS[variant]:22s} range {min(values):.0f}-{max(values):.0f}")
    ratio = medians[OURS] / medians[HF]
    per_repeat = [ours / hf for ours, hf in zip(speeds[OURS], speeds[HF], strict=True)]
    print(f"ratio ours/HF Trainer (both logging to MLflow): {ratio:.2f}x of medians, "
          f"{statistics.median(per_repeat):.2f}x median of per-repeat ratios")
    if BARE in speeds:
        overheads = [1 - logged / bare for logged, bare in zip(speeds[OURS], speeds[BARE],
                                                              strict=True)]
        print(f"MLflow logging overhead in our loop, median of per-repeat pairs: "
              f"{statistics.median(overheads) * 100:.1f}% (run-to-run noise is larger)")
    share = statistics.median(run.logging_share for run in runs[OURS])
    print(f"time the training thread spends in MLflow logging calls: {share * 100:.2f}%")


def report_memory(runs: Runs) -> None:
    print("\nRSS of each run's process, median over runs (range): peak (loading or training); "
          "growth = peak during the training call - RSS right before it; RSS after loading")
    for variant, figures in runs.items():
        memory = [run.memory for run in figures]
        print(f"  {VARIANTS[variant]:22s} peak {_spread([m.peak_kib for m in memory])}, "
              f"growth {_spread([m.growth_kib for m in memory])}, after loading "
              f"{_spread([m.after_loading_kib or 0 for m in memory])}")


def main(args: argparse.Namespace) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    config = BenchConfig.from_args(args)
    hf_logging.set_verbosity_error()
    if config.sizes.threads is not None:
        torch.set_num_threads(config.sizes.threads)
    if args.variant:
        figures = run_child(config, args.variant, args.tracking_uri)
        print(json.dumps(asdict(figures)) if args.json else figures, flush=True)
        return 0
    profile = PROFILES[config.base]
    runs = (run_isolated if profile.isolated else run_in_process)(config, profile.variants)
    report_throughput(config.sizes, runs)
    if profile.isolated:
        report_memory(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main(make_parser().parse_args()))
