"""Pointers flip only onto live models, and the registry's recorded figures decide."""

from __future__ import annotations

import json
import math
import os

import pytest
from mlflow.tracking import MlflowClient

from domain_mlflow import AutoDeploymentTrigger, DomainClient
from domain_mlflow.promotion import manual
from domain_mlflow.promotion.poller import Poller
from domain_mlflow.sinks.redis_sink import RedisSink
from tests.promotion_helpers import (
    FAILING,
    PASSING,
    assert_everywhere,
    make_promoter,
    register_domain_version,
)

DOMAIN = "0x5678-SQLAgent"


def _models_called(localai, since: int = 0) -> list[str]:
    """The ``model`` of each completion LocalAI was asked for, oldest first, from the
    ``since``-th on."""
    calls = localai.calls("/v1/completions")[since:]
    return [json.loads(call["body"])["model"] for call in calls]


def _production_alias() -> str:
    return str(MlflowClient().get_registered_model(f"domain.{DOMAIN}").aliases["production"])


def _recorded_versions() -> list[str]:
    """The model_version of every recorded serving request of the domain, oldest first."""
    with make_promoter().store.database.transaction() as tx:
        rows = tx.execute("SELECT model_version FROM serving_requests WHERE domain_id = %s "
                          "ORDER BY id", (DOMAIN,))
    return [row["model_version"] for row in rows]


def _ask(prompt: str) -> str:
    """One request through ``DomainClient``, its record written before it returns."""
    with DomainClient(DOMAIN) as client:
        return client.complete(prompt)


def test_with_localai_failing_on_import_no_pointer_moves_and_requests_stay_on_the_old(stack):
    localai = stack
    first = register_domain_version(DOMAIN, PASSING)
    Poller(make_promoter("poller")).poll_once()
    assert_everywhere(localai, first)
    old = first.tags["model_version"]

    second = register_domain_version(DOMAIN, PASSING)
    new_version = second.tags["model_version"]
    localai.fail_next("/models/import", 500, count=100)
    report = Poller(make_promoter("poller")).poll_once()
    assert report.pending == 1, report

    store = make_promoter().store
    assert store.get_config(DOMAIN).model_version == old
    redis = RedisSink(os.environ["REDIS_URL"], os.environ["REDIS_KEY_PREFIX"])
    assert redis.get(DOMAIN)["model_version"] == old
    assert _production_alias() == str(first.version)
    assert localai.config(DOMAIN)["alias"] == old
    assert new_version not in localai.model_names()

    before = len(localai.calls("/v1/completions"))
    answer = _ask("How many orders?")
    assert answer.startswith(f"[{old}]")
    assert _recorded_versions() == [old]
    # The versioned name, not the stable one: what answered is what is recorded.
    assert _models_called(localai, before) == [old]

    [row] = manual.status(make_promoter("cli"), DOMAIN)
    assert (row["model_version"], row["registry_version"]) == (old, int(first.version))
    moving = row["in_flight"]
    assert (moving["registry_version"], moving["state"]) == (int(second.version), "approved")
    assert "LocalAI POST /models/import failed" in moving["error"]

    localai.clear_faults()
    Poller(make_promoter("poller")).poll_once()
    assert_everywhere(localai, second)
    before = len(localai.calls("/v1/completions"))
    assert _ask("How many orders?").startswith(f"[{new_version}]")
    assert _recorded_versions() == [old, new_version]
    assert _models_called(localai, before) == [new_version]
    assert manual.status(make_promoter("cli"), DOMAIN)[0]["in_flight"] is None


def test_with_redis_down_the_config_store_names_only_a_version_localai_already_serves(
        stack, monkeypatch):
    localai = stack
    first = register_domain_version(DOMAIN, PASSING)
    Poller(make_promoter("poller")).poll_once()
    second = register_domain_version(DOMAIN, PASSING)
    good_redis = os.environ["REDIS_URL"]
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there

    assert Poller(make_promoter("poller")).poll_once().pending == 1
    [pending] = make_promoter().store.open_promotions(DOMAIN)
    assert pending.state == "config_written"
    config = make_promoter().store.get_config(DOMAIN)
    assert config.model_version == second.tags["model_version"]
    assert config.model_version in localai.model_names()  # servable before it was named
    assert localai.config(DOMAIN)["alias"] == first.tags["model_version"]
    assert _production_alias() == str(first.version)

    monkeypatch.setenv("REDIS_URL", good_redis)
    assert RedisSink(good_redis, os.environ["REDIS_KEY_PREFIX"]).get(DOMAIN)["model_version"] \
        == first.tags["model_version"]
    Poller(make_promoter("poller")).poll_once()
    assert_everywhere(localai, second)


def test_check_and_deploy_gates_on_the_versions_recorded_figures_not_the_callers(stack):
    failed = register_domain_version(DOMAIN, FAILING)
    result = AutoDeploymentTrigger().check_and_deploy(
        DOMAIN, failed.tags["training_run_id"], PASSING, "unused")
    assert result["deployed"] is False
    assert "accuracy 0.15 < minimum 0.85" in result["reason"]
    assert "training_loss 1.1 > maximum 0.3" in result["reason"]
    assert make_promoter().store.get_config(DOMAIN) is None
    assert "production" not in MlflowClient().get_registered_model(f"domain.{DOMAIN}").aliases


def test_a_nan_from_the_caller_refuses_the_call_only_and_the_version_stays_promotable(stack):
    localai = stack
    version = register_domain_version(DOMAIN, PASSING)
    trigger = AutoDeploymentTrigger()
    result = trigger.check_and_deploy(DOMAIN, version.tags["training_run_id"],
                                      {**PASSING, "accuracy": math.nan, "latency_ms": None})
    assert result["deployed"] is False
    assert "caller's metrics: accuracy is nan, not a number" in result["reason"]
    assert "caller's metrics: latency_ms is missing" in result["reason"]
    assert make_promoter().store.open_promotions(DOMAIN) == []  # nothing recorded

    again = trigger.check_and_deploy(DOMAIN, version.tags["training_run_id"], None)
    assert again["deployed"] is True, again
    assert_everywhere(localai, version)


@pytest.mark.parametrize("metrics", [{}, {"accuracy": 0.99}])
def test_check_and_deploy_without_caller_figures_or_with_extra_ones_uses_the_recorded(
        services, metrics):
    version = register_domain_version(DOMAIN, PASSING)
    result = AutoDeploymentTrigger().check_and_deploy(
        DOMAIN, version.tags["training_run_id"], metrics)
    assert result["deployed"] is True, result
    assert result["gate"]["passed"] is True
    assert {c["metric"]: c["value"] for c in result["gate"]["checks"]}["accuracy"] == 0.93


def test_a_stricter_caller_figure_refuses_and_lists_every_reason(services):
    version = register_domain_version(DOMAIN, FAILING)
    result = AutoDeploymentTrigger().check_and_deploy(
        DOMAIN, version.tags["training_run_id"], {"latency_ms": 900.0})
    assert result["deployed"] is False
    assert result["reason"].endswith(
        "accuracy 0.15 < minimum 0.85; training_loss 1.1 > maximum 0.3; "
        "caller's metrics: latency_ms 900 > maximum 500")
