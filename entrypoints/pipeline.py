"""MLproject ``pipeline`` entry point: ``mlflow run . -e pipeline -P project_id=ID -P tables=A``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def make_parser() -> argparse.ArgumentParser:
    from domain_mlflow.commands.pipeline import PIPELINE_DESCRIPTION, add_pipeline_arguments

    parser = argparse.ArgumentParser(prog="entrypoints.pipeline", description=PIPELINE_DESCRIPTION)
    return add_pipeline_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    from domain_mlflow.cli import run_command
    from domain_mlflow.commands.pipeline import run_pipeline

    return run_command(run_pipeline, make_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
