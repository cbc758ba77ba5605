"""The ``domain-mlflow`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from domain_mlflow.commands import EXIT_FAILURE, EXIT_USAGE
from domain_mlflow.commands import metrics as metrics_commands
from domain_mlflow.commands import pipeline as pipeline_commands
from domain_mlflow.commands import promotion as promotion_commands
from domain_mlflow.commands import rollout as rollout_commands
from domain_mlflow.commands.train import add_train_arguments, run_train
from domain_mlflow.exceptions import (
    ConfigError,
    DataError,
    DomainMlflowError,
    TrainingInterrupted,
)
from domain_mlflow.redaction import Redactor

__all__ = ["COMMANDS", "add_train_arguments", "build_parser", "main", "run_command", "run_train"]


COMMANDS = ("train", "pipeline", "demo", "poll", "webhook", "promote", "approve", "reject",
            "pending", "rollback", "history", "status", "sync", "canary", "ab", "metrics",
            "export", "dashboard", "monitor")


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line on stderr (exit code 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{_suggestion(message)} "
                              f"(see {self.prog} --help)\n")


def _suggestion(message: str) -> str:
    """``; did you mean 'status'?`` for an unknown command close to one (difflib)."""
    import difflib
    import re

    typed = re.search(r"invalid choice: '([^']*)'", message)
    if typed is None or "choose from" not in message:
        return ""
    choices = re.findall(r"'([^']*)'", message.split("choose from", 1)[1])
    close = difflib.get_close_matches(typed.group(1), choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="domain-mlflow",
        description="Train, gate and register one model per domain with MLflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = commands.add_parser(
        "train", help="train a domain model, evaluate it, gate it and register a version",
        description="Train a domain model, evaluate it, gate it and register a version.",
    )
    add_train_arguments(train).set_defaults(handler=run_train)
    pipeline_commands.register(commands)
    promotion_commands.register(commands)
    rollout_commands.register(commands)
    metrics_commands.register(commands)
    return parser


def run_command(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; our errors become one line on stderr and a non-zero exit code.

    Exit codes: 2 for a mistake in what was given, 1 for a later failure, 128 plus
    the signal's number when SIGINT (130) or SIGTERM (143) stopped the command.
    """
    redact = Redactor.from_environment()
    _configure_logging(getattr(args, "verbose", False), redact)

    def fail(text: str, code: int) -> int:
        redact_now = getattr(getattr(args, "services", None), "redact", redact)
        print(redact_now(text), file=sys.stderr)
        return code

    try:
        return handler(args)
    except (ConfigError, DataError) as error:
        return fail(f"domain-mlflow: error: {error}", EXIT_USAGE)
    except TrainingInterrupted as error:
        return fail(f"domain-mlflow: error: {error}", error.exit_code)
    except DomainMlflowError as error:
        return fail(f"domain-mlflow: error: {error}", EXIT_FAILURE)
    except KeyboardInterrupt:
        print("domain-mlflow: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as for TrainingInterrupted
    except Exception as error:
        message = _mlflow_error_message(error)
        if message is None:
            raise
        return fail(f"domain-mlflow: MLflow error: {message}", EXIT_FAILURE)
    finally:
        # What the command opened (config store pools, Redis, LocalAI's session) is
        # closed here, not left to the process's exit.
        services = getattr(args, "services", None)
        if services is not None:
            services.close()


def _mlflow_error_message(error: Exception) -> str | None:
    """The first line of an MLflow error, None for any other error.

    Asked without importing MLflow: a command that never loaded it (a mistake found
    before any heavy import) cannot have raised one."""
    exceptions = sys.modules.get("mlflow.exceptions")
    if exceptions is None or not isinstance(error, exceptions.MlflowException):
        return None
    return error.message.splitlines()[0]


def _configure_logging(verbose: bool, redact: Callable[[str], str]) -> None:
    from domain_mlflow.redaction import RedactingFilter

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(redact))
    logging.getLogger("domain_mlflow").setLevel(logging.INFO)
    # Library deprecation notices and download bars mean nothing to a CLI user.
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Nothing leaves the machine unless asked for: MLflow's usage telemetry is off by
    # default here (MLFLOW_DISABLE_TELEMETRY=false turns it back on).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
