"""A fleet whose promotion records are known, for the fleet-rate tests.

``alpha``: four promotions by the real ``Promoter`` (auto mode; Redis and LocalAI
not configured, so recorded as skipped): v1 passes and goes live, v2 is refused by
the gate (accuracy and training_loss), v3 passes and goes live, then a rollback to v1.
``beta``: five records written through the config store's own methods, with known
times: b1 approved by a reviewer after 30 minutes and live 2 hours after its
registration; b2 rejected by a reviewer; b3 awaiting approval now; b4 forced,
its first attempt failed at serving; b5 passed but superseded on the way.
``gamma``: a run, nothing promoted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import mlflow

from domain_mlflow.gate import Thresholds, decide
from domain_mlflow.settings import load_settings
from domain_mlflow.sinks.config_store import ConfigStore
from domain_mlflow.sinks.database import utc_now
from domain_mlflow.sinks.rows import Kind, Promotion, Target, TargetStatus, initial_targets
from tests.promotion_helpers import FAILING, PASSING, make_promoter, register_domain_version

APPROVAL_WAIT = timedelta(minutes=30)
B1_TO_LIVE = timedelta(hours=2)
B3_WAITING = timedelta(minutes=5)

# The counts each rate rests on (the durations are checked apart: they are measured).
EXPECTED = {
    "alpha": {"promotions": 4, "decided": 3, "passed": 2, "hit_rate": 2 / 3,
              "failing_thresholds": {"accuracy": 1, "training_loss": 1},
              "started": 3, "reached_all_targets": 3, "in_progress": 0, "success_rate": 1.0,
              "retries": 0, "live": 3, "approved": 0, "awaiting_now": 0},
    "beta": {"promotions": 5, "decided": 4, "passed": 4, "hit_rate": 1.0,
             "failing_thresholds": {}, "started": 3, "reached_all_targets": 1,
             "in_progress": 1, "success_rate": 1 / 3, "retries": 1, "live": 1, "approved": 1,
             "awaiting_now": 1},
    "gamma": {"promotions": 0, "decided": 0, "passed": 0, "hit_rate": None,
              "failing_thresholds": {}, "started": 0, "reached_all_targets": 0,
              "in_progress": 0, "success_rate": None, "retries": 0, "live": 0, "approved": 0,
              "awaiting_now": 0},
    "fleet": {"promotions": 9, "decided": 7, "passed": 6, "hit_rate": 6 / 7,
              "failing_thresholds": {"accuracy": 1, "training_loss": 1}, "started": 6,
              "reached_all_targets": 4, "in_progress": 1, "success_rate": 4 / 6, "retries": 1,
              "live": 4, "approved": 1, "awaiting_now": 1},
}


def counts(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures of ``EXPECTED`` out of one group's rates."""
    gate, deployment, approval = figures["gate"], figures["deployment"], figures["approval"]
    return {
        "promotions": figures["promotions"], "decided": gate["decided"],
        "passed": gate["passed"], "hit_rate": gate["hit_rate"],
        "failing_thresholds": gate["failing_thresholds"], "started": deployment["started"],
        "reached_all_targets": deployment["reached_all_targets"],
        "in_progress": deployment["in_progress"], "success_rate": deployment["success_rate"],
        "retries": deployment["retries"], "live": deployment["time_to_live"]["count"],
        "approved": approval["approved"], "awaiting_now": approval["awaiting_now"],
    }


@dataclass
class Fleet:
    alpha: list[Any]  # registry versions v1..v3
    beta: list[Any]  # registry versions v1..v5
    waiting: Promotion  # beta v3, awaiting approval


def _record(store: ConfigStore, version: Any, kind: str = "promote",
            registered_ago: timedelta = timedelta(0)) -> Promotion:
    promotion, created = store.create_promotion(
        request_key=f"fleet-test:{version.name}:{version.version}",
        domain_id=version.tags["domain_id"], registry_version=int(version.version), kind=kind,
        actor="test", reason="fleet test", metrics=PASSING,
        model_version=version.tags["model_version"], model_uri=version.source,
        run_id=version.run_id, targets=initial_targets(), semver=version.tags.get("semver"),
        registered_at=utc_now() - registered_ago)
    assert created
    return promotion


def _awaiting(store: ConfigStore, version: Any, waiting: timedelta,
              registered_ago: timedelta = timedelta(0)) -> Promotion:
    return store.advance(_record(store, version, registered_ago=registered_ago),
                         "awaiting_approval", decision=decide(PASSING, Thresholds()),
                         awaiting_since=utc_now() - waiting)


def _seed_beta(store: ConfigStore, versions: list[Any]) -> Promotion:
    b1, b2, b3, b4, b5 = versions
    approved = store.record_review(_awaiting(store, b1, APPROVAL_WAIT, B1_TO_LIVE),
                                   approved=True, by="ana", reason="looks right")
    store.advance(approved, "done", targets=dict.fromkeys(Target, TargetStatus.DONE.value))
    store.record_review(_awaiting(store, b2, timedelta(minutes=10)), approved=False, by="bo",
                        reason="answers too long")
    waiting = _awaiting(store, b3, B3_WAITING)
    forced = store.advance(_record(store, b4, kind=Kind.FORCE), "approved",
                           decision=decide(FAILING, Thresholds()))
    store.record_failure(forced, "LocalAI answered 503", timedelta(minutes=5),
                         {**forced.targets, Target.SERVING: TargetStatus.FAILED.text("503")})
    superseded = TargetStatus.SKIPPED.text("superseded by a later promotion")
    store.advance(_record(store, b5, registered_ago=timedelta(hours=1)), "done",
                  decision=decide(PASSING, Thresholds()),
                  targets={Target.SERVING: "done", Target.CONFIG_STORE: "done",
                           Target.REDIS: superseded, Target.LOCALAI: superseded,
                           Target.REGISTRY: superseded})
    return waiting


def seed_fleet() -> Fleet:
    """The fleet described above, in the environment's MLflow store and config store."""
    alpha = [register_domain_version("alpha", metrics) for metrics in (PASSING, FAILING, PASSING)]
    promoter = make_promoter()
    for version in alpha:
        promoter.run(promoter.request("alpha", int(version.version)))
    promoter.run(promoter.request("alpha", 1, kind=Kind.ROLLBACK, request_key="fleet-rollback",
                                  reason="back to v1"))
    beta = [register_domain_version("beta") for _ in range(5)]
    store = ConfigStore.from_settings(load_settings())
    try:
        waiting = _seed_beta(store, beta)
    finally:
        store.close()
    with mlflow.start_run():
        mlflow.set_tag("domain_id", "gamma")
        mlflow.log_metric("accuracy", 0.5)
    return Fleet(alpha, beta, waiting)
