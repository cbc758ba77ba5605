"""The subcommands of ``domain-mlflow``: one module per group, shared output helpers."""

from __future__ import annotations

import argparse
import json
import math
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


# Bounds of the numeric options: the parser refuses anything outside (one line, exit 2).
MAX_STEPS = 10_000_000
MAX_VERSION = 2**31 - 1  # registry versions are stored as INTEGER
MAX_SECONDS = 86_400.0
_MAX_DIGITS = 40  # int() of thousands of digits is slow before it is refused


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` to ``high``."""
    def parse(text: str) -> int:
        if len(text) > _MAX_DIGITS:
            raise argparse.ArgumentTypeError(f"{text[:20]!r}… ({len(text)} characters) is "
                                             f"not between {low} and {high}")
        try:
            value = int(text)
        except ValueError:
            raise ValueError(text) from None  # argparse: "invalid int value: 'x'"
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not between {low} and {high}")
        return value

    parse.__name__ = "int"
    return parse


def http_url(text: str) -> str:
    """An argparse ``type``: an ``http://`` or ``https://`` URL with a host."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        valid = parts.scheme in ("http", "https") and bool(parts.netloc)
    except ValueError:
        valid = False
    if not valid:
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not an http:// or https:// URL")
    return text


def optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, with an empty value meaning "not given" (None): an MLproject parameter
    left at its default of "" passes the option with nothing after it."""
    def parse_optional(text: str) -> Any:
        return None if not text.strip() else parse(text)

    parse_optional.__name__ = getattr(parse, "__name__", "value")
    return parse_optional


def number(low: float, high: float, *, above: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number from ``low`` (or ``above`` it) to ``high``."""
    def parse(text: str) -> float:
        if len(text) > _MAX_DIGITS:
            raise argparse.ArgumentTypeError(f"{text[:20]!r}… ({len(text)} characters) is "
                                             "not a number")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(text) from None  # argparse: "invalid float value: 'x'"
        in_range = (low < value if above else low <= value) and value <= high
        if not (math.isfinite(value) and in_range):
            bounds = (f"above {low:g} and at most {high:g}" if above
                      else f"from {low:g} to {high:g}")
            raise argparse.ArgumentTypeError(f"{text!r} is not a number {bounds}")
        return value

    parse.__name__ = "float"
    return parse


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
