"""Semantic versions of a domain's registered versions: MAJOR.MINOR.PATCH.

Derived at registration from the domain's newest earlier version that has one:

- MAJOR + 1 (MINOR and PATCH back to 0) when the base model changed (its name or
  path, or a GGUF file's digest: the version tags ``base_model``, ``base_model_digest``);
- MINOR + 1 (PATCH back to 0) when the training data changed (tag ``data_digest``);
- PATCH + 1 for a retrain on the same base and data.

The first version of a domain is 1.0.0. The tag ``semver`` holds it; ``promote`` and
``approve`` take ``--semver X.Y.Z`` to set another. The timestamp version
``{domain_id}-v{YYYYMMDD_HHMMSS}`` stays the version's id everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from domain_mlflow.exceptions import ConfigError

SEMVER_TAG = "semver"
FIRST = "1.0.0"
BASE_TAGS = ("base_model", "base_model_digest")
DATA_TAG = "data_digest"
_SEMVER = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")


def parse_semver(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` → ``(1, 2, 3)``; anything else (``v1.2``, ``1.02.0``) is a ConfigError."""
    match = _SEMVER.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"semver {text!r} is not MAJOR.MINOR.PATCH (e.g. 1.4.0)")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def next_semver(previous: Mapping[str, str] | None, tags: Mapping[str, str]) -> str:
    """The semver of a new version with ``tags``, after the version whose tags are
    ``previous`` (None: the domain's first)."""
    if not previous or SEMVER_TAG not in previous:
        return FIRST
    try:
        major, minor, patch = parse_semver(previous[SEMVER_TAG])
    except ConfigError:
        return FIRST  # an earlier tag typed by hand that is no semver: start again
    if any(previous.get(tag) != tags.get(tag) for tag in BASE_TAGS):
        return f"{major + 1}.0.0"
    if previous.get(DATA_TAG) != tags.get(DATA_TAG):
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"
