"""Progressive delivery: a canary or an A/B test of a version against production, on
live traffic, decided by the monitor's evaluator.

``start`` gates the version (a person's name approves it in manual mode), makes it
servable under its versioned name, then writes the split (config store, then
Redis) through :class:`~domain_mlflow.sinks.targets.ServingTargets`. Clients send
that share of requests to it and record which arm answered. :func:`evaluate_all`
(each monitor cycle) decides each running rollout's step under the domain's lock:

- canary: worse than production on the step's traffic → abort (the split goes back
  to production only); not worse after ``min_requests`` per arm and the bake time →
  the next step; past the last step (or at 100 %) → the promotion machine deploys it.
- A/B: a fixed split until the metric's difference is significant or
  ``max_requests`` is reached; with ``auto_promote`` a winning candidate is deployed.

Every decision is one transaction with its evidence (per-arm counts, rates, the
statistic, the threshold) in ``rollout_decisions`` and the domain's history; while a
rollout runs, the domain's other promotions wait (:meth:`Promoter.process_locked`).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from domain_mlflow.exceptions import ConfigError, PromotionError
from domain_mlflow.gate import decide
from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.promotion.manual import registered_model
from domain_mlflow.promotion.notify import announce
from domain_mlflow.promotion.rollout_stats import AB_METRICS, rollout_verdict
from domain_mlflow.sinks.database import utc_now
from domain_mlflow.sinks.rollouts import KIND_LABELS, KINDS, PAUSED, RUNNING, Rollout
from domain_mlflow.sinks.rows import DomainConfig, State
from domain_mlflow.sinks.sql import domain_lock_name

_log = logging.getLogger(__name__)

DEFAULT_STEPS = (10.0, 50.0, 100.0)
DEFAULT_MIN_REQUESTS = 100
DEFAULT_AB_MAX_REQUESTS = 10_000


def canary_plan(steps: list[float] | None = None, bake_minutes: float = 0.0,
                min_requests: int = DEFAULT_MIN_REQUESTS) -> dict[str, Any]:
    """A canary's plan, checked: steps rise within (0, 100]."""
    steps = [float(step) for step in (steps or DEFAULT_STEPS)]
    if not steps or any(not 0 < step <= 100 for step in steps) or \
            any(a >= b for a, b in zip(steps, steps[1:], strict=False)):
        raise ConfigError(f"--steps must rise within (0, 100], got {steps}")
    _check_common(bake_minutes, min_requests)
    return {"steps": steps, "bake_seconds": bake_minutes * 60.0, "min_requests": min_requests}


def ab_plan(percent: float = 50.0, metric: str = "quality", max_requests: int =
            DEFAULT_AB_MAX_REQUESTS, min_requests: int = DEFAULT_MIN_REQUESTS,
            auto_promote: bool = False) -> dict[str, Any]:
    """An A/B test's plan, checked: the candidate's share within (0, 100)."""
    if not 0 < percent < 100:
        raise ConfigError(f"--percent must be within (0, 100), got {percent:g}")
    if metric not in AB_METRICS:
        raise ConfigError(f"--metric must be one of {', '.join(AB_METRICS)}, got {metric!r}")
    _check_common(0.0, min_requests)
    if max_requests < 2 * min_requests:
        raise ConfigError(f"--max-requests ({max_requests}) must be at least twice "
                          f"--min-requests ({min_requests})")
    return {"steps": [float(percent)], "bake_seconds": 0.0, "min_requests": min_requests,
            "metric": metric, "max_requests": max_requests, "auto_promote": auto_promote}


def _check_common(bake_minutes: float, min_requests: int) -> None:
    if bake_minutes < 0:
        raise ConfigError(f"--bake-minutes must be at least 0, got {bake_minutes:g}")
    if min_requests < 1:
        raise ConfigError(f"--min-requests must be at least 1, got {min_requests}")


# --- start -----------------------------------------------------------------------------

def start(promoter: Promoter, domain_id: str, version: int, plan: dict[str, Any], *,
          kind: str, by: str | None = None, reason: str = "") -> dict[str, Any]:
    """Put ``version`` on trial: it must pass the gate (in manual mode ``by`` approves
    it), be servable, and the domain must have production and no other rollout."""
    if kind not in KINDS:
        raise ConfigError(f"unknown rollout kind {kind!r}")
    registered_model(promoter, domain_id)
    actor = by or promoter.actor
    with promoter.domain_locked(domain_id):
        running = promoter.store.active_rollout(domain_id)
        if running is not None:
            raise PromotionError(
                f"{domain_id} already has a {KIND_LABELS[running.kind]} of version "
                f"{running.registry_version} {running.state}: one at a time")
        promotion = _candidate(promoter, domain_id, version)
        config = promoter.store.get_config(domain_id)
        champion = config.metrics if config and promoter.settings.champion_challenger else None
        decision = decide(promotion.metrics, promoter.registry.thresholds(domain_id),
                          champion=champion)
        if not decision.passed:
            raise PromotionError(f"version {version} of {domain_id} did not pass the gate: "
                                 f"{decision.summary()}")
        changes: dict[str, Any] = {"decision": decision}
        if promoter.registry.promotion_mode(domain_id) == "manual":
            if not by:
                raise ConfigError(f"{domain_id} is in manual mode: --by NAME approves "
                                  f"version {version} for the {KIND_LABELS[kind]}")
            changes.update(approved_by=by, approved_at=utc_now(),
                           approval_reason=reason or f"approved for a {KIND_LABELS[kind]}")
        if not promotion.model_version:
            raise PromotionError(f"version {version} of {domain_id} has no model_version tag")
        # Servable before any pointer names it, as in a promotion.
        promoter.targets.make_servable(domain_id, promotion.model_version, promotion.run_id,
                                       promotion.semver)
        rollout, config = promoter.targets.start_rollout(
            promotion, kind=kind, plan=plan, percent=plan["steps"][0], actor=actor,
            reason=reason or f"{KIND_LABELS[kind]} of version {version} started by {actor}",
            approval=changes)
        _publish(promoter, config, f"{kind}_start")
    promoter.targets.tag_review(domain_id, version, {"promotion_status": f"in_{kind}"})
    _announce(promoter, rollout, "started", {"plan": plan})
    return describe(promoter, rollout)


def _candidate(promoter: Promoter, domain_id: str, version: int) -> Any:
    """The version's promotion record to put on trial: its open one when that has not
    started deploying, else a new record."""
    promotions = promoter.store.promotions_of_version(domain_id, version)
    open_ones = [p for p in promotions if p.is_open]
    if open_ones:
        promotion = open_ones[-1]
        if promotion.state in (State.PENDING, State.AWAITING_APPROVAL):
            return promotion
        raise PromotionError(f"version {version} of {domain_id} is already being promoted "
                             f"(at {promotion.state}); nothing to put on trial")
    model_version = promoter.registry.version(domain_id, version)
    key = None if not promotions else f"rollout:{domain_id}:{version}:{uuid.uuid4().hex}"
    return promoter.request_for(domain_id, model_version, request_key=key,
                                reason=f"rollout of version {version}")


# --- the evaluator -----------------------------------------------------------------------

def evaluate_all(promoter: Promoter) -> list[dict[str, Any]]:
    """Decide the current step of every running rollout whose domain lock is free (a
    second monitor skips the domains the first holds): each step is decided once."""
    results = []
    for rollout in promoter.store.active_rollouts():
        if rollout.state != RUNNING:
            continue
        with promoter.store.lock(domain_lock_name(rollout.domain_id), blocking=False) as got:
            if not got:
                continue
            try:
                results.append(evaluate(promoter, promoter.store.get_rollout(rollout.id)))
            except PromotionError as error:  # e.g. a person paused or ended it meanwhile
                _log.info("rollout %s of %s: %s", rollout.id, rollout.domain_id, error)
    return results


def verdict(promoter: Promoter, rollout: Rollout) -> dict[str, Any]:
    """What the evaluator would decide now on the step's traffic."""
    rows = promoter.store.rollout_requests(rollout.id, rollout.step_started_at)
    return rollout_verdict(rows, rollout, promoter.settings, utc_now())


def evaluate(promoter: Promoter, rollout: Rollout) -> dict[str, Any]:
    """Decide one running rollout's step (the caller holds the domain's lock)."""
    if rollout.state != RUNNING:
        raise PromotionError(f"rollout {rollout.id} is {rollout.state}, not running")
    found = verdict(promoter, rollout)
    decision, evidence = found["decision"], {**found["evidence"], "why": found["why"],
                                             "step": rollout.step_index,
                                             "percent": rollout.percent}
    if decision == "abort":
        rollout = _end(promoter, rollout, "aborted", "abort", evidence, promoter.actor,
                       f"canary aborted at {rollout.percent:g}%: {found['why']}")
    elif decision == "next":
        rollout = _next_step(promoter, rollout, evidence)
    elif decision == "winner" and found["winner"] == "candidate" and \
            rollout.plan.get("auto_promote"):
        rollout = _end(promoter, rollout, "promoted", "promote", evidence, promoter.actor,
                       f"A/B test won by version {rollout.registry_version}: {found['why']}",
                       promote=True)
    elif decision in ("winner", "no_difference"):
        outcome = ("winner_candidate" if found.get("winner") == "candidate" else
                   "winner_production" if found.get("winner") else "no_difference")
        rollout = _end(promoter, rollout, "concluded", outcome, evidence, promoter.actor,
                       f"A/B test ended: {found['why']}")
    return {"domain_id": rollout.domain_id, "rollout_id": rollout.id, "kind": rollout.kind,
            "decision": decision, "why": found["why"], "state": rollout.state,
            "step": rollout.step_index, "percent": rollout.percent}


def _next_step(promoter: Promoter, rollout: Rollout, evidence: dict[str, Any]) -> Rollout:
    steps = rollout.plan["steps"]
    following = steps[rollout.step_index + 1] if rollout.step_index + 1 < len(steps) else 100.0
    if following >= 100.0:
        return _end(promoter, rollout, "promoted", "promote", evidence, promoter.actor,
                    f"canary passed every step up to {rollout.percent:g}%: "
                    f"{evidence['why']}", promote=True)
    moved, config = promoter.targets.step_rollout(rollout, percent=following,
                                                  evidence=evidence, actor=promoter.actor)
    promoter.reached("rollout-stepped")
    _publish(promoter, config, "canary_step")
    _announce(promoter, moved, "next_step", evidence)
    return moved


def _end(promoter: Promoter, rollout: Rollout, state: str, decision: str,
         evidence: dict[str, Any], actor: str, reason: str, promote: bool = False) -> Rollout:
    """The rollout's last decision; a promotion then runs through the promotion machine
    (this caller holds the domain's lock), an abort is published at once."""
    ended, promotion, config = promoter.targets.end_rollout(
        rollout, state=state, decision=decision, evidence=evidence, actor=actor,
        reason=reason, promote=promote)
    promoter.reached("rollout-ended")
    _log.warning("%s %s of %s v%s: %s", KIND_LABELS[rollout.kind], decision, rollout.domain_id,
                 rollout.registry_version, reason)
    if promote:
        promoter.process_locked([rollout.domain_id])
        promoter.targets.tag_review(rollout.domain_id, rollout.registry_version,
                                    {"promotion_status": f"{rollout.kind}_promoted"})
    else:
        if config is not None:
            _publish(promoter, config, f"{rollout.kind}_{decision}")
        promoter.targets.tag_decision(rollout.domain_id, rollout.registry_version,
                                      f"{rollout.kind}_{state}", reason)
        promoter.process_locked([rollout.domain_id])  # the versions that waited go on
    _announce(promoter, ended, decision, evidence)
    return ended


def _publish(promoter: Promoter, config: DomainConfig, event: str) -> None:
    """The Redis key follows the config store; if Redis is down the next cycle's
    repair (:func:`repair_redis`, the poller's) writes it."""
    try:
        promoter.targets.publish([(config, event)])
    except Exception as error:  # the split is recorded; Redis only mirrors it
        _log.warning("could not publish the split of %s: %s", config.domain_id,
                     promoter.targets.redact(str(error)))


def repair_redis(promoter: Promoter) -> list[str]:
    """Rewrite the Redis keys that differ from the config store (Redis restarted or a
    publish failed) of domains with a rollout running, or one that changed within the
    monitor's window (an abort whose publish failed)."""
    if promoter.targets.redis is None:
        return []
    domains = promoter.store.rollout_domains_since(
        utc_now() - timedelta(seconds=promoter.settings.monitor_window_seconds))
    configs = promoter.store.get_configs(domains)
    return [config.domain_id for config in promoter.targets.repair_redis(list(configs.values()))]


def _announce(promoter: Promoter, rollout: Rollout, decision: str,
              evidence: dict[str, Any]) -> None:
    announce(promoter.targets.redis, promoter.settings.alert_webhook_url, "rollouts",
             {"domain_id": rollout.domain_id, "rollout_id": rollout.id, "kind": rollout.kind,
              "registry_version": rollout.registry_version, "decision": decision,
              "state": rollout.state, "percent": rollout.percent, "evidence": evidence},
             promoter.targets.redact)


# --- by hand -------------------------------------------------------------------------------

def _active(promoter: Promoter, domain_id: str, kind: str) -> Rollout:
    registered_model(promoter, domain_id)
    rollout = promoter.store.active_rollout(domain_id)
    if rollout is None or rollout.kind != kind:
        raise PromotionError(f"{domain_id} has no {KIND_LABELS[kind]} running")
    return rollout


def pause(promoter: Promoter, domain_id: str, kind: str) -> dict[str, Any]:
    """Stop deciding (the split stays as it is)."""
    return _switch(promoter, domain_id, kind, RUNNING, PAUSED)


def resume(promoter: Promoter, domain_id: str, kind: str) -> dict[str, Any]:
    return _switch(promoter, domain_id, kind, PAUSED, RUNNING)


def _switch(promoter: Promoter, domain_id: str, kind: str, from_state: str,
            to_state: str) -> dict[str, Any]:
    with promoter.domain_locked(domain_id):
        rollout = _active(promoter, domain_id, kind)
        if rollout.state == from_state:
            rollout = promoter.store.set_rollout_state(rollout, to_state)
    return describe(promoter, rollout)


def abort(promoter: Promoter, domain_id: str, kind: str, *, by: str,
          reason: str = "") -> dict[str, Any]:
    """End it now, back to production only, with the figures so far as the evidence."""
    return _end_by_hand(promoter, domain_id, kind, by, reason, promote=False)


def promote_now(promoter: Promoter, domain_id: str, kind: str, *, by: str,
                reason: str = "") -> dict[str, Any]:
    """Skip the remaining steps: the promotion machine deploys the version now."""
    return _end_by_hand(promoter, domain_id, kind, by, reason, promote=True)


def _end_by_hand(promoter: Promoter, domain_id: str, kind: str, by: str, reason: str,
                 promote: bool) -> dict[str, Any]:
    state, decision = ("promoted", "promote") if promote else ("aborted", "abort")
    with promoter.domain_locked(domain_id):
        rollout = _active(promoter, domain_id, kind)
        found = verdict(promoter, rollout)
        rollout = _end(promoter, rollout, state, decision,
                       {**found["evidence"], "why": found["why"]}, by,
                       f"{KIND_LABELS[kind]} {state} by {by}: {reason or 'no reason given'}",
                       promote=promote)
    return describe(promoter, rollout)


def status(promoter: Promoter, domain_id: str, kind: str | None = None) -> dict[str, Any]:
    """The domain's running rollout (else its newest), with the evaluator's view now."""
    registered_model(promoter, domain_id)
    rollout = promoter.store.active_rollout(domain_id)
    if rollout is None:
        ended = [r for r in promoter.store.rollouts(domain_id) if kind in (None, r.kind)]
        if not ended:
            raise PromotionError(f"{domain_id} has had no {KIND_LABELS.get(kind or '', 'rollout')}")
        rollout = ended[0]
    return describe(promoter, rollout)


def describe(promoter: Promoter, rollout: Rollout) -> dict[str, Any]:
    """A rollout as the CLI and the dashboard show it."""
    rollout = promoter.store.get_rollout(rollout.id)
    current = verdict(promoter, rollout) if rollout.is_active else None
    return {**rollout.as_dict(), "label": KIND_LABELS[rollout.kind],
            "now": current, "decisions": promoter.store.rollout_decisions(rollout.id)}
