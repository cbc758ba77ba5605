"""Manual review: approving or rejecting a version that passed the gate in manual mode.

Three ways in, one record: ``domain-mlflow approve|reject``, the version tag
``approval`` set to ``approved``/``rejected`` in the MLflow UI (carried out by the
webhook event ``model_version_tag.set`` or the next poll; the actor is recorded as
``MLflow UI``), and ``AutoDeploymentTrigger.approve|reject``. Each writes one history
row (``approve``/``reject``: who, when, why, the version's recorded figures) together
with the promotion's state; an approved version then goes through the same state
machine as any other. Deciding twice the same way changes nothing. A version that is
no longer the newest one waiting, or that production has moved past, or whose wait
outlived ``APPROVAL_TTL_HOURS``, can no longer be approved: it is closed with that
reason and the request is refused with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from domain_mlflow.exceptions import ConfigError, PromotionError
from domain_mlflow.naming import approve_command, validate_domain_id
from domain_mlflow.outcomes import outcome_reason
from domain_mlflow.promotion.awaiting import close_reviews, review_event
from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.promotion.manual import registered_model, set_semver
from domain_mlflow.promotion.notify import announce
from domain_mlflow.promotion.trigger import promotion_result
from domain_mlflow.semver import parse_semver
from domain_mlflow.sinks.database import utc_now
from domain_mlflow.sinks.rows import Kind, Promotion, State, Target, TargetStatus

APPROVAL_TAG = "approval"  # pending | approved | rejected | closed
APPROVAL_REASON_TAG = "approval_reason"
UI_REVIEWER = "MLflow UI"
_DECISIONS = {"approved": True, "rejected": False}


def approve(promoter: Promoter, domain_id: str, version: int, *, by: str, reason: str = "",
            semver: str | None = None) -> dict[str, Any]:
    """Approve ``version`` of ``domain_id`` and carry its promotion out."""
    return _review(promoter, domain_id, version, approved=True, by=by,
                   reason=reason or "approved", semver=semver)


def reject(promoter: Promoter, domain_id: str, version: int, *, by: str,
           reason: str) -> dict[str, Any]:
    """Reject ``version`` of ``domain_id``: it is never deployed (unless forced)."""
    if not reason.strip():
        raise ConfigError("reject needs --reason: say why the version is refused")
    return _review(promoter, domain_id, version, approved=False, by=by, reason=reason)


def pending(promoter: Promoter) -> list[dict[str, Any]]:
    """What waits for approval, oldest first (versions past APPROVAL_TTL_HOURS are closed
    first, so they are not listed)."""
    expire(promoter)
    ttl = _ttl(promoter)
    return [{
        "domain_id": p.domain_id, "registry_version": p.registry_version,
        "model_version": p.model_version, "semver": p.semver, "metrics": p.metrics,
        "awaiting_since": p.awaiting_since.isoformat() if p.awaiting_since else None,
        "expires_at": (p.awaiting_since + ttl).isoformat() if ttl and p.awaiting_since else None,
        "promotion_id": p.id,
        "approve": approve_command(p.domain_id, p.registry_version),
    } for p in promoter.store.awaiting_approval()]


def expire(promoter: Promoter, domain_ids: list[str] | None = None) -> list[Promotion]:
    """Close every version (of these domains; default all) whose wait outlived
    APPROVAL_TTL_HOURS (none when unset)."""
    ttl = _ttl(promoter)
    if ttl is None:
        return []
    closed = []
    for promotion in promoter.store.awaiting_approval(domain_ids):
        if _expired(promotion, ttl):
            with promoter.domain_locked(promotion.domain_id):
                current = promoter.store.get_promotion(promotion.id)
                if current.state is State.AWAITING_APPROVAL:
                    closed += close_reviews(promoter, [(current, _expiry_reason(current, ttl))])
    return closed


def apply_registry_reviews(promoter: Promoter, domain_ids: list[str] | None = None,
                           version_tags: Mapping[tuple[str, int], Mapping[str, str]] | None = None
                           ) -> list[dict[str, Any]]:
    """Carry out ``approval`` tags set in the MLflow UI on versions awaiting approval.

    ``version_tags``: (domain, version) → tags already read this cycle (the poller's
    search); otherwise each waiting version is read from the registry."""
    expire(promoter, domain_ids)
    done = []
    for promotion in promoter.store.awaiting_approval(domain_ids):
        key = (promotion.domain_id, promotion.registry_version)
        tags = (version_tags or {}).get(key)
        if tags is None:
            tags = promoter.registry.version(*key).tags
        decision = _DECISIONS.get(str(tags.get(APPROVAL_TAG, "")).strip().lower())
        if decision is None:
            continue
        reason = tags.get(APPROVAL_REASON_TAG) or f"{tags[APPROVAL_TAG]} in the MLflow UI"
        try:
            done.append(_review(promoter, promotion.domain_id, promotion.registry_version,
                                approved=decision, by=UI_REVIEWER, reason=reason))
        except PromotionError as refused:  # recorded: closed with its reason
            done.append({"domain_id": promotion.domain_id, "changed": False,
                         "registry_version": str(promotion.registry_version),
                         "deployed": False, "reason": str(refused)})
    return done


# --- one decision ------------------------------------------------------------------


def _review(promoter: Promoter, domain_id: str, version: int, *, approved: bool, by: str,
            reason: str, semver: str | None = None) -> dict[str, Any]:
    validate_domain_id(domain_id)
    if not by or not by.strip():
        raise ConfigError("--by is required: say who decides")
    if semver is not None:
        parse_semver(semver)
    registered_model(promoter, domain_id)
    with promoter.domain_locked(domain_id):
        promoter.process_locked([domain_id])  # gates whatever the domain has not gated yet
        promotion = _gated_promotion(promoter, domain_id, version)
        if promotion.state is not State.AWAITING_APPROVAL:
            return _already_decided(promotion, approved)
        refusal = _why_not_approvable(promoter, promotion)
        if refusal:
            close_reviews(promoter, [(promotion, refusal)])
            raise PromotionError(f"{domain_id} version {version} can no longer be reviewed: "
                                 f"{refusal}")
        if semver:
            set_semver(promoter, domain_id, version, semver)
            promotion = promoter.store.get_promotion(promotion.id)
        skipped = None if approved else {
            **promotion.targets,
            **{target: TargetStatus.SKIPPED.text(f"rejected by {by}") for target in Target}}
        reviewed = promoter.store.record_review(promotion, approved=approved, by=by.strip(),
                                                reason=reason, targets=skipped)
        tags = {APPROVAL_TAG: "approved" if approved else "rejected", "approved_by": by,
                APPROVAL_REASON_TAG: reason}
        promoter.targets.tag_review(domain_id, version, tags)
        announce(promoter.targets.redis, promoter.settings.alert_webhook_url, "approvals",
                 review_event("approved" if approved else "rejected", reviewed, by=by,
                              reason=reason), promoter.targets.redact)
        if approved:
            promoter.process_locked([domain_id])
        return {**promotion_result(promoter.store.get_promotion(promotion.id)), "changed": True}


def _gated_promotion(promoter: Promoter, domain_id: str, version: int) -> Promotion:
    """The version's newest gated promotion; one is requested (and gated) if it has none."""
    promotions = [p for p in promoter.store.promotions_of_version(domain_id, version)
                  if p.kind is Kind.PROMOTE]
    if not promotions:
        promoter.request(domain_id, version, reason="requested by a review")
        promoter.process_locked([domain_id])
        promotions = [p for p in promoter.store.promotions_of_version(domain_id, version)
                      if p.kind is Kind.PROMOTE]
    return promotions[-1]


def _already_decided(promotion: Promotion, approved: bool) -> dict[str, Any]:
    """Deciding again: the same decision changes nothing, the other one is refused."""
    version = f"{promotion.domain_id} version {promotion.registry_version}"
    was_approved = promotion.approved_by is not None and promotion.state is not State.REJECTED
    if promotion.state is State.REJECTED:
        if not approved and promotion.approved_by:
            return {**promotion_result(promotion), "changed": False}
        raise PromotionError(f"{version} cannot be approved: {outcome_reason(promotion)}")
    if approved and (was_approved or promotion.state is State.DONE):
        return {**promotion_result(promotion), "changed": False}
    if approved:  # auto mode: it passed the gate and deploys without review
        return {**promotion_result(promotion), "changed": False,
                "reason": f"{version} needs no approval: it was promoted in auto mode "
                          f"({outcome_reason(promotion)})"}
    who = f"approved by {promotion.approved_by}" if was_approved else "promoted in auto mode"
    raise PromotionError(f"{version} was already {who}; to take it out of production, "
                         f"roll back: domain-mlflow rollback {promotion.domain_id}")


def _why_not_approvable(promoter: Promoter, promotion: Promotion) -> str | None:
    ttl = _ttl(promoter)
    if ttl is not None and _expired(promotion, ttl):
        return _expiry_reason(promotion, ttl)
    current = promoter.store.get_config(promotion.domain_id)
    if current is not None and current.registry_version > promotion.registry_version:
        return f"superseded: production is already version {current.registry_version}"
    if current is not None and current.registry_version == promotion.registry_version:
        return "it is already in production"
    return None


def _ttl(promoter: Promoter) -> timedelta | None:
    hours = promoter.settings.approval_ttl_hours
    return timedelta(hours=hours) if hours else None


def _expired(promotion: Promotion, ttl: timedelta) -> bool:
    return promotion.awaiting_since is not None and utc_now() > promotion.awaiting_since + ttl


def _expiry_reason(promotion: Promotion, ttl: timedelta) -> str:
    hours = ttl.total_seconds() / 3600
    return (f"expired: it waited more than APPROVAL_TTL_HOURS={hours:g} for approval "
            f"(since {promotion.awaiting_since.isoformat() if promotion.awaiting_since else '?'})")
