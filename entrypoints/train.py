"""MLproject ``train`` entry point: ``mlflow run . -e train -P domain_id=... -P data=...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def make_parser() -> argparse.ArgumentParser:
    from domain_mlflow.cli import add_train_arguments

    parser = argparse.ArgumentParser(
        prog="entrypoints.train", description="Train, evaluate, gate and register a domain model."
    )
    return add_train_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    from domain_mlflow.cli import run_command, run_train
    from domain_mlflow.training.stopping import recording_failures

    return run_command(recording_failures(run_train), make_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
