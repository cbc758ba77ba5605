"""``domain-mlflow pipeline`` and ``domain-mlflow demo``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from domain_mlflow.commands import (
    EXIT_FAILURE,
    MAX_STEPS,
    bool_value,
    emit,
    quiet_transformers,
    whole_number,
)


def _train_value(text: str) -> bool | None:
    return None if text.strip().lower() == "auto" else bool_value(text)


def _print_pipeline(results: dict[str, Any]) -> None:
    print(f"pipeline {results['project_id']}: {results['status']} "
          f"(MLflow run {results['mlflow_run_id']})")
    for name, step in results["steps"].items():
        detail = step.get("reason") or step.get("error") or ""
        print(f"  {name:17s} {step['status']:8s} {detail}".rstrip())
    for domain_id, outcome in results["steps"]["domain_training"].get("domains", {}).items():
        if outcome["status"] != "success":
            print(f"    {domain_id}: {outcome['status']}: "
                  f"{outcome.get('reason') or outcome.get('error')}")
            continue
        deployment = outcome.get("deployment") or {}
        print(f"    {domain_id}: accuracy {outcome['evaluation']['accuracy']:.3f}, gate "
              f"{outcome['gate']['status']}, {deployment.get('reason', 'not deployed')}")


def run_pipeline(args: argparse.Namespace) -> int:
    quiet_transformers()
    from domain_mlflow.pipeline import TrainingPipeline
    from domain_mlflow.settings import load_settings

    settings = load_settings()
    if args.train is not None:
        settings = dataclasses.replace(settings, enable_domain_training=args.train)
    options = {} if args.max_steps is None else {"max_steps": args.max_steps}
    pipeline = TrainingPipeline(
        enable_domain_filtering=args.domain_filtering, privacy_level=args.privacy_level,
        data_dir=args.data_dir, min_records=args.min_records, training_options=options,
        experiment_name=args.experiment_name, settings=settings,
    )
    # Commas separate tables too: an MLproject parameter is one string.
    tables = [path for arg in args.tables for path in arg.split(",") if path.strip()]
    results = pipeline.run_full_pipeline(args.project_id, tables, args.domain_id)
    emit(results, args.json, _print_pipeline)
    return 0 if results["status"] == "success" else EXIT_FAILURE


def _print_demo(report: dict[str, Any]) -> None:
    for domain_id, outcome in report["domains"].items():
        print(f"{domain_id}: accuracy {outcome['accuracy']:.3f}, latency "
              f"{outcome['latency_ms']:.0f} ms, training loss {outcome['training_loss']:.3f}, "
              f"validation loss {outcome['validation_loss']:.3f}")
        if outcome["production"]:
            print(f"  in production: version {outcome['registry_version']} "
                  f"({outcome['model_version']})")
        elif outcome["gate"] == "failed":
            print("  rejected by the gate: " + "; ".join(outcome["reasons"]))
        else:
            print(f"  passed the gate, not in production: {outcome['promotion_reason']}")
    print()
    print(f"MLflow store   {report['tracking_uri']}")
    print(f"config store   {report['config_store']}")
    print(f"Redis          {report['redis']}")
    print(f"LocalAI        {report['localai']}")
    print()
    print("Where to look:")
    print(f"  mlflow ui --backend-store-uri {report['tracking_uri']}   # runs, curves, registry")
    print("  domain-mlflow dashboard        # http://127.0.0.1:8085: cards, rankings, charts")
    print("  domain-mlflow status           # every domain's state and why, and what serves where")
    print("  domain-mlflow history 0x5678-SQLAgent")


def run_demo_command(args: argparse.Namespace) -> int:
    quiet_transformers()
    from domain_mlflow.demo import run_demo

    report = run_demo(args.data_dir, max_steps=args.max_steps, base_model=args.base_model)
    emit(report, args.json, _print_demo)
    outcomes = list(report["domains"].values())
    # The demo shows one domain promoted and one rejected; anything else is worth a
    # non-zero exit so that scripts notice.
    return 0 if outcomes[0]["production"] and not outcomes[1]["production"] else EXIT_FAILURE


PIPELINE_DESCRIPTION = (
    "Group JSON tables by domain_id, redact personal data, write per-domain files and, with "
    "ENABLE_DOMAIN_TRAINING=true (or --train true), train and promote each domain.")


def add_pipeline_arguments(pipeline: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``domain-mlflow pipeline`` and of the MLproject ``pipeline`` entry point."""
    pipeline.add_argument("tables", nargs="+", metavar="TABLE",
                          help="JSON array or JSON Lines files of records with a domain_id "
                               "(several per argument when separated by commas)")
    pipeline.add_argument("--project-id", "--project_id", dest="project_id", required=True,
                          help="the project the records belong to; names its runs and files")
    pipeline.add_argument("--privacy-level", "--privacy_level", dest="privacy_level",
                          choices=("low", "medium", "high"), default="medium",
                          help="how much personal data is masked or dropped before training "
                               "(default %(default)s)")
    pipeline.add_argument("--domain-filtering", "--domain_filtering", dest="domain_filtering",
                          type=bool_value, default=True, metavar="{true,false}",
                          help="false: every record trains one domain named after the project")
    pipeline.add_argument("--domain-id", action="append",
                          help="only these domains (repeatable)")
    pipeline.add_argument("--train", type=_train_value, default=None,
                          metavar="{true,false,auto}",
                          help="train the domains; auto (default): $ENABLE_DOMAIN_TRAINING, "
                               "itself false unless set")
    pipeline.add_argument("--max-steps", "--max_steps", dest="max_steps",
                          type=whole_number(1, MAX_STEPS),
                          help="optimiser steps per domain (default $TRAINING_MAX_STEPS or 400)")
    pipeline.add_argument("--min-records", "--min_records", dest="min_records",
                          type=whole_number(2, 1_000_000_000),
                          default=10, help="domains with fewer records are not trained")
    pipeline.add_argument("--data-dir", "--data_dir", dest="data_dir",
                          help="where per-domain files go (default $PIPELINE_DATA_DIR or "
                               "./training_data)")
    pipeline.add_argument("--experiment-name", "--experiment_name", dest="experiment_name",
                          help="MLflow experiment (default: MLflow's own choice)")
    pipeline.add_argument("--json", action="store_true", help="print the results as JSON")
    return pipeline


def register(commands: Any) -> None:
    pipeline = commands.add_parser(
        "pipeline", help="JSON tables → domains → privacy → per-domain data → train → deploy",
        description=PIPELINE_DESCRIPTION)
    add_pipeline_arguments(pipeline).set_defaults(handler=run_pipeline)

    demo = commands.add_parser(
        "demo", help="train the two example domains: one promoted, one rejected",
        description="Train the SQL and vector example domains with the configured stores; "
                    "the SQL agent passes the gate and is promoted, the vector agent is "
                    "rejected with its reasons.")
    demo.add_argument("--data-dir", help="folder with sql_agent.jsonl and vector_agent.jsonl "
                                         "(default: examples/data of this checkout)")
    demo.add_argument("--max-steps", type=whole_number(1, MAX_STEPS),
                      help="optimiser steps per domain (default $TRAINING_MAX_STEPS or 400)")
    demo.add_argument("--base-model", default="tiny",
                      help="the base both domains fine-tune (default: the built-in tiny base; "
                           "see `domain-mlflow train --help`)")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.set_defaults(handler=run_demo_command)
