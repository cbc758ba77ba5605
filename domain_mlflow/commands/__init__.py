"""The subcommands of ``domain-mlflow``: one module per group, shared output helpers."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.settings import parse_bool

# Exit codes: 2 for a mistake in what the user gave us, 1 for anything that failed later.
EXIT_USAGE = 2
EXIT_FAILURE = 1


def bool_value(text: str) -> bool:
    try:
        return parse_bool("value", text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false") from None


def emit(data: Any, as_json: bool, text: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON (``--json``) or through ``text`` for people."""
    if as_json:
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        text(data)


def quiet_transformers() -> None:
    """Weight-loading bars and notices mean nothing to a CLI user."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def services_of(args: argparse.Namespace) -> Any:
    """The process's :class:`~domain_mlflow.services.Services`, built on first use."""
    services = getattr(args, "services", None)
    if services is None:
        from domain_mlflow.services import Services

        services = args.services = Services.from_settings()
    return services
