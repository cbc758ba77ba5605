"""What a promotion or a domain stands at, in words: shared by the CLI, the trigger's
results and the dashboard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain_mlflow.naming import approve_command
from domain_mlflow.sinks.rows import Promotion, State

STATES = ("in production", "awaiting approval", "in flight", "rejected", "not decided yet")


def outcome_reason(promotion: Promotion) -> str:
    """Why a promotion stands where it does, in one line."""
    if promotion.state is State.DONE:
        return f"version {promotion.registry_version} is in production"
    if promotion.state is State.REJECTED:
        if promotion.decision is not None and not promotion.decision.passed:
            return promotion.decision.summary()
        if promotion.approved_by:
            return f"rejected by {promotion.approved_by}: {promotion.approval_reason}"
        return promotion.approval_reason or "rejected"
    if promotion.state is State.AWAITING_APPROVAL:
        return ("passed the gate; awaiting approval: "
                + approve_command(promotion.domain_id, promotion.registry_version))
    return f"pending at {promotion.state}: {promotion.last_error or 'in progress'}"


def domain_state(config: Any, moving: Any, newest: Any,
                 redact: Callable[[str], str] = str) -> tuple[str, str]:
    """A domain's state in words (one of STATES), and why: from its config (what
    serves), its open promotion (``moving``) and its newest promotion."""
    if config is not None:
        semver = f" {config.semver}" if config.semver else ""
        reason = f"version {config.registry_version}{semver} ({config.model_version})"
        if newest is not None and newest.state is State.REJECTED and \
                newest.registry_version > config.registry_version:
            reason += f"; version {newest.registry_version} rejected: {outcome_reason(newest)}"
        return "in production", redact(reason)
    if moving is not None and moving.state is State.AWAITING_APPROVAL:
        return "awaiting approval", outcome_reason(moving)
    if moving is not None:
        error = f", error: {moving.last_error}" if moving.last_error else ""
        return "in flight", redact(f"{moving.kind} to version {moving.registry_version} at "
                                   f"{moving.state}{error}")
    if newest is not None and newest.state is State.REJECTED:
        return "rejected", redact(f"version {newest.registry_version}: "
                                  f"{outcome_reason(newest)}")
    return "not decided yet", ("no version through the gate yet "
                               "(domain-mlflow poll --once gates one)")
