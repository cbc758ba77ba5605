"""Domain ids and the names derived from them: run ids, version strings, registry names."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from domain_mlflow.exceptions import InvalidDomainIdError

MAX_DOMAIN_ID_LENGTH = 100
_DOMAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TIMESTAMP = "%Y%m%d_%H%M%S"

# Registered model of a domain: "domain." + domain id, e.g. "domain.0x5678-SQLAgent".
REGISTERED_MODEL_PREFIX = "domain."


def validate_domain_id(domain_id: object) -> str:
    """Return ``domain_id`` if it is safe as a folder name, tag value and registry name.

    Allowed: letters, digits, ``_``, ``.``, ``-``; starting with a letter or digit;
    no ``..``; at most 100 characters.
    """
    if not isinstance(domain_id, str) or not domain_id:
        raise InvalidDomainIdError("domain id must be a non-empty string")
    shown = domain_id if len(domain_id) <= 40 else domain_id[:40] + "..."
    if len(domain_id) > MAX_DOMAIN_ID_LENGTH:
        raise InvalidDomainIdError(
            f"domain id {shown!r} has {len(domain_id)} characters; at most "
            f"{MAX_DOMAIN_ID_LENGTH} are allowed"
        )
    if not _DOMAIN_ID.fullmatch(domain_id) or ".." in domain_id:
        raise InvalidDomainIdError(
            f"domain id {shown!r} is not allowed: use letters, digits, '_', '.' and '-', "
            "start with a letter or digit, and no '..'"
        )
    return domain_id


def utc_now() -> datetime:
    return datetime.now(UTC)


def training_run_id(domain_id: str, at: datetime) -> str:
    """``{domain_id}_{YYYYMMDD_HHMMSS}`` (UTC), the seed's training run id."""
    return f"{domain_id}_{at.strftime(_TIMESTAMP)}"


def model_version(domain_id: str, at: datetime) -> str:
    """``{domain_id}-v{YYYYMMDD_HHMMSS}`` (UTC), the seed's model version string."""
    return f"{domain_id}-v{at.strftime(_TIMESTAMP)}"


def registered_model_name(domain_id: str) -> str:
    return REGISTERED_MODEL_PREFIX + validate_domain_id(domain_id)


def serving_name(domain_id: str) -> str:
    """The stable name clients use for a domain's production model in LocalAI.

    Each version is also served under its own ``model_version`` string, which
    ``DomainClient`` calls so that what it records is what answered."""
    return domain_id


def approve_command(domain_id: str, registry_version: int) -> str:
    """The command that approves a version awaiting approval (NAME: the reviewer)."""
    return f"domain-mlflow approve {domain_id} --version {registry_version} --by NAME"
