"""Versions that passed the gate in manual mode and wait for a person: how waiting
starts (tag, publish, POST) and how a wait is closed when it can no longer end in an
approval (superseded, expired). The decisions themselves are in :mod:`.review`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from domain_mlflow.naming import approve_command
from domain_mlflow.promotion.notify import announce
from domain_mlflow.sinks.rows import Promotion, Target, TargetStatus

if TYPE_CHECKING:
    from domain_mlflow.promotion.engine import Promoter

_log = logging.getLogger(__name__)


def review_event(event: str, promotion: Promotion, **extra: Any) -> dict[str, Any]:
    """What ``{prefix}:approvals`` and the alert webhook receive about a review."""
    return {"event": event, "domain_id": promotion.domain_id,
            "registry_version": promotion.registry_version,
            "model_version": promotion.model_version, "semver": promotion.semver,
            "metrics": promotion.metrics, "promotion_id": promotion.id,
            "approve": approve_command(promotion.domain_id, promotion.registry_version),
            **extra}


def review_requested(promoter: Promoter, waiting: list[Promotion]) -> list[Promotion]:
    """Versions that just entered ``awaiting_approval``: per domain the newest waits (tag
    ``approval=pending``, a publish on ``{prefix}:approvals``, a POST to
    ``ALERT_WEBHOOK_URL``); any older one still waiting is closed as superseded."""
    waiting_now = promoter.store.awaiting_approval(sorted({p.domain_id for p in waiting}))
    newest: dict[str, Promotion] = {}
    for promotion in waiting_now:
        held = newest.get(promotion.domain_id)
        if held is None or promotion.registry_version > held.registry_version:
            newest[promotion.domain_id] = promotion
    closed = close_reviews(promoter, [
        (p, f"superseded: version {newest[p.domain_id].registry_version} passed the gate "
            "after it") for p in waiting_now if p.id != newest[p.domain_id].id])
    targets = promoter.targets
    for promotion in waiting:
        if promotion.id == newest[promotion.domain_id].id:
            targets.tag_review(promotion.domain_id, promotion.registry_version,
                               {"approval": "pending"})
            announce(targets.redis, promoter.settings.alert_webhook_url, "approvals",
                     review_event("awaiting_approval", promotion), targets.redact)
            _log.info("%s v%s passed the gate and awaits approval", promotion.domain_id,
                      promotion.registry_version)
    closed_ids = {p.id for p in closed}
    return [p for p in waiting if p.id not in closed_ids] + closed


def close_reviews(promoter: Promoter, closures: list[tuple[Promotion, str]]
                  ) -> list[Promotion]:
    """Close versions awaiting approval that can no longer be approved (superseded,
    expired): rejected with the reason, in history, on the version's tags."""
    skipped = {target: TargetStatus.SKIPPED.text("not approved") for target in Target}
    closed = []
    for promotion, reason in closures:
        closed.append(promoter.store.record_review(promotion, approved=False, by=None,
                                                   reason=reason,
                                                   targets={**promotion.targets, **skipped}))
        promoter.targets.tag_review(promotion.domain_id, promotion.registry_version,
                                    {"approval": "closed", "approval_reason": reason})
    return closed
