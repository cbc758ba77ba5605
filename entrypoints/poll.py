"""MLproject ``poll`` entry point: ``mlflow run . -e poll [-P once=true] [-P interval=S]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def make_parser() -> argparse.ArgumentParser:
    from domain_mlflow.commands import MAX_SECONDS, bool_value, number

    parser = argparse.ArgumentParser(
        prog="entrypoints.poll", description="Promote new versions and repair drift."
    )
    parser.add_argument("--interval", type=number(0.1, MAX_SECONDS), default=30.0,
                        help="seconds between cycles")
    parser.add_argument("--once", type=bool_value, default=False, metavar="{true,false}",
                        help="run one cycle and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from domain_mlflow.cli import main as cli_main

    args = make_parser().parse_args(argv)
    return cli_main(["poll", "--once"] if args.once else ["poll", "--interval",
                                                            str(args.interval)])


if __name__ == "__main__":
    sys.exit(main())
