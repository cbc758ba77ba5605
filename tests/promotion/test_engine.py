"""Promotion end to end on real Postgres, Redis and MLflow, with the LocalAI double."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from domain_mlflow import AutoDeploymentTrigger, DomainMetricsCollector
from domain_mlflow.promotion import manual
from domain_mlflow.promotion.poller import Poller
from domain_mlflow.sinks.targets import NO_LOCALAI
from tests.helpers import lock_held_elsewhere
from tests.promotion_helpers import (
    FAILING,
    PASSING,
    assert_everywhere,
    make_promoter,
    register_domain_version,
)

DOMAIN = "0x5678-SQLAgent"


def test_versions_promote_in_turn_a_failing_one_changes_nothing_and_rollback_restores(services):
    localai = services
    poller = Poller(make_promoter("poller"))
    first = register_domain_version(DOMAIN, PASSING)
    assert poller.poll_once().promoted == 1
    assert_everywhere(localai, first)

    second = register_domain_version(DOMAIN, PASSING)
    assert poller.poll_once().promoted == 1
    assert_everywhere(localai, second)
    assert localai.loaded_folder(first.tags["model_version"]) is None  # old weights unloaded

    failing = register_domain_version(DOMAIN, FAILING)
    report = poller.poll_once()
    assert (report.promoted, report.rejected) == (0, 1), report
    assert_everywhere(localai, second)
    tags = MlflowClient().get_model_version(f"domain.{DOMAIN}", failing.version).tags
    assert tags["promotion_status"] == "rejected"
    assert "accuracy 0.15 < minimum 0.85" in tags["promotion_reason"]

    result = manual.rollback(make_promoter("cli"), DOMAIN)
    assert result["deployed"] and result["registry_version"] == str(first.version)
    assert_everywhere(localai, first)
    client = MlflowClient()
    assert str(client.get_registered_model(f"domain.{DOMAIN}").aliases["previous"]) == \
        str(second.version)
    # The aliases alone say where each version stands: no stage tags are written.
    assert ["stage" in client.get_model_version(f"domain.{DOMAIN}", v).tags
            for v in (first.version, second.version, failing.version)] == [False] * 3
    stages = {v["version"]: v["stage"] for v in DomainMetricsCollector(
        cache_seconds=0).collect_domain_metrics(DOMAIN)["versions"]}
    assert stages == {int(first.version): "production", int(second.version): "previous",
                      int(failing.version): "rejected"}

    history = [(h["action"], h["registry_version"], h["version_number"])
               for h in manual.history(make_promoter(), DOMAIN)]
    assert history == [("rollback", 1, 3), ("reject", 3, None), ("promote", 2, 2),
                       ("promote", 1, 1)]
    assert poller.poll_once().processed == 0  # nothing left to do, nothing redone


def test_training_deploys_through_the_trigger(services, small_sql_data, monkeypatch):
    from domain_mlflow import DomainTrainer

    for name, value in (("DEPLOY_ACCURACY_THRESHOLD", "0"), ("DEPLOY_LATENCY_THRESHOLD", "1e6"),
                        ("DEPLOY_LOSS_THRESHOLD", "100"), ("DEPLOY_VAL_LOSS_THRESHOLD", "100")):
        monkeypatch.setenv(name, value)
    results = DomainTrainer().train_domain_model(DOMAIN, small_sql_data, max_steps=2)
    deployment = results["deployment"]
    assert deployment["deployed"] is True, deployment
    assert deployment["targets"] == {"serving": "done", "config_store": "done", "redis": "done",
                                     "localai": "done", "registry": "done"}
    version = MlflowClient().get_model_version(f"domain.{DOMAIN}", results["registry_version"])
    assert_everywhere(services, version)
    exported = services.models_dir / DOMAIN / results["model_version"] / "config.json"
    assert exported.is_file()  # the real merged model, as LocalAI's transformers backend loads it


def test_check_and_deploy_below_the_thresholds_refuses_with_reasons(services):
    result = AutoDeploymentTrigger().check_and_deploy(
        domain_id=DOMAIN, training_run_id="test-run",
        metrics={"accuracy": 0.9, "latency_ms": 100}, model_path="./test_model.pt")
    assert result["deployed"] is False
    assert result["reason"] == (
        "no version of domain.0x5678-SQLAgent carries training_run_id=test-run; train it "
        "with DomainTrainer first")


def test_check_and_deploy_promotes_the_version_of_the_training_run(services):
    version = register_domain_version(DOMAIN, PASSING)
    result = AutoDeploymentTrigger().check_and_deploy(
        DOMAIN, version.tags["training_run_id"], PASSING, "unused")
    assert result["deployed"] is True
    assert result["model_version"] == version.tags["model_version"]
    assert_everywhere(services, version)


def test_one_cycle_promotes_rejects_and_holds_back_domains_of_one_batch_each_on_its_own(
        services):
    passing = {f"batch-{n}": register_domain_version(f"batch-{n}", PASSING) for n in range(3)}
    failing = register_domain_version("batch-failing", FAILING)
    untagged = register_domain_version("batch-untagged", PASSING)
    MlflowClient().delete_model_version_tag("domain.batch-untagged", untagged.version,
                                            "model_version")

    report = Poller(make_promoter("poller")).poll_once()
    assert (report.promoted, report.rejected, report.pending) == (3, 1, 1), report
    for domain, version in passing.items():
        assert_everywhere(services, version, domain=domain)
    assert make_promoter().store.get_config("batch-failing") is None
    tags = MlflowClient().get_model_version("domain.batch-failing", failing.version).tags
    assert tags["promotion_status"] == "rejected"
    [held_back] = make_promoter().store.open_promotions("batch-untagged")
    assert held_back.state == "approved"
    assert "has no model_version tag" in held_back.last_error
    assert "production" not in MlflowClient().get_registered_model(
        "domain.batch-untagged").aliases


def test_a_domain_another_promoter_holds_is_left_to_it_and_taken_once_let_go(services):
    versions = {domain: register_domain_version(domain, PASSING) for domain in ("held", "free")}
    poller = Poller(make_promoter("poller"))
    with lock_held_elsewhere(make_promoter("webhook").store.database, "domain:held"):
        report = poller.poll_once()  # does not wait for the holder
        assert (report.requested, report.promoted, report.errors) == (2, 1, []), report
        assert [(p.domain_id, p.state) for p in poller.promoter.store.open_promotions()] == [
            ("held", "pending")]
    report = poller.poll_once()
    assert (report.promoted, report.errors) == (1, []), report
    for domain, version in versions.items():
        assert_everywhere(services, version, domain=domain)


@pytest.mark.parametrize("state", ["approved", "servable", "config_written", "redis_synced",
                                   "localai_synced"])
def test_a_crash_after_any_step_resumes_and_converges(services, state):
    version = register_domain_version(DOMAIN, PASSING)
    promotion = _crashed_after(state, version)
    assert make_promoter().store.get_promotion(promotion.id).state == state
    assert "production" not in MlflowClient().get_registered_model(f"domain.{DOMAIN}").aliases

    Poller(make_promoter("poller")).poll_once()
    assert_everywhere(services, version)
    assert [h.action for h in make_promoter().store.history(DOMAIN)] == ["promote"]
    Poller(make_promoter("poller")).poll_once()
    assert make_promoter().store.get_config(DOMAIN).version_number == 1


@pytest.mark.parametrize("state", ["approved", "redis_synced", "localai_synced",
                                   # between a side effect and its record:
                                   "localai-imported", "redis-written", "localai-pointed",
                                   "alias-moved"])
def test_a_killed_promote_process_is_finished_by_the_next_run(services, state, tmp_path):
    version = register_domain_version(DOMAIN, PASSING)
    env = {**os.environ, "DOMAIN_MLFLOW_FAILPOINT": state}
    command = [sys.executable, "-m", "domain_mlflow.cli", "promote", DOMAIN,
               "--version", str(version.version)]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert killed.returncode == 99, killed.stderr
    env.pop("DOMAIN_MLFLOW_FAILPOINT")
    again = subprocess.run([sys.executable, "-m", "domain_mlflow.cli", "poll", "--once",
                            "--json"], env=env, capture_output=True, text=True, timeout=120,
                           check=False)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["promoted"] == 1
    assert_everywhere(services, version)
    assert [h.action for h in make_promoter().store.history(DOMAIN)] == ["promote"]


def test_redis_down_leaves_the_promotion_pending_and_production_unmoved(services, monkeypatch):
    first = register_domain_version(DOMAIN, PASSING)
    Poller(make_promoter("poller")).poll_once()
    second = register_domain_version(DOMAIN, PASSING)
    good_redis = os.environ["REDIS_URL"]
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there

    report = Poller(make_promoter("poller")).poll_once()
    assert report.pending == 1
    [pending] = make_promoter().store.open_promotions(DOMAIN)
    assert pending.state == "config_written"
    assert pending.attempts == 1
    assert "Redis" in pending.last_error
    assert str(MlflowClient().get_registered_model(f"domain.{DOMAIN}").aliases["production"]) \
        == str(first.version)
    tags = MlflowClient().get_model_version(f"domain.{DOMAIN}", second.version).tags
    assert tags["promotion_status"] == "pending"

    monkeypatch.setenv("REDIS_URL", good_redis)
    Poller(make_promoter("poller")).poll_once()
    assert_everywhere(services, second)


@pytest.mark.parametrize("fault", ["error", "hang"])
def test_localai_failing_or_hanging_is_retried_until_it_recovers(services, fault, monkeypatch):
    localai = services
    version = register_domain_version(DOMAIN, PASSING)
    monkeypatch.setenv("LOCALAI_TIMEOUT_SECONDS", "0.3")
    if fault == "error":
        localai.fail_next("/models/import", 500, count=100)
    else:
        localai.hang("/models/import", 2.0)
    report = Poller(make_promoter("poller")).poll_once()
    assert report.pending == 1
    [pending] = make_promoter().store.open_promotions(DOMAIN)
    assert pending.state == "approved"  # not servable yet: no pointer has moved
    assert make_promoter().store.get_config(DOMAIN) is None
    assert "LocalAI POST /models/import failed" in pending.last_error
    assert "production" not in MlflowClient().get_registered_model(f"domain.{DOMAIN}").aliases

    localai.clear_faults()
    Poller(make_promoter("poller")).poll_once()
    assert_everywhere(localai, version)


def test_postgres_down_is_pending_in_the_registry_and_converges_later(services, monkeypatch):
    version = register_domain_version(DOMAIN, PASSING)
    good_dsn = os.environ["POSTGRES_DSN"]
    monkeypatch.setenv("POSTGRES_DSN", "postgresql://postgres:pg-s3cret@127.0.0.1:1/test")
    from domain_mlflow.exceptions import ConfigStoreError

    with pytest.raises(ConfigStoreError) as caught:
        AutoDeploymentTrigger().deploy_version(DOMAIN, version.version)
    assert "pg-s3cret" not in str(caught.value)
    tags = MlflowClient().get_model_version(f"domain.{DOMAIN}", version.version).tags
    assert tags["promotion_status"] == "pending"
    assert "unreachable" in tags["promotion_error"]
    assert "pg-s3cret" not in tags["promotion_error"]

    monkeypatch.setenv("POSTGRES_DSN", good_dsn)
    Poller(make_promoter("poller")).poll_once()
    assert_everywhere(services, version)


def test_without_localai_its_steps_are_recorded_with_the_next_ones(services, monkeypatch):
    monkeypatch.delenv("LOCALAI_URL")
    version = register_domain_version(DOMAIN, PASSING)
    promoter = make_promoter()
    reached = []
    promoter.failpoint = reached.append
    done = promoter.run(promoter.request(DOMAIN, int(version.version)))
    assert reached == ["approved", "config_written", "redis-written", "localai_synced",
                       "alias-moved", "done"]
    assert done.targets == {"serving": NO_LOCALAI, "config_store": "done", "redis": "done",
                            "localai": NO_LOCALAI, "registry": "done"}
    assert str(MlflowClient().get_registered_model(f"domain.{DOMAIN}").aliases["production"]) \
        == str(version.version)
    assert promoter.store.get_config(DOMAIN).registry_version == int(version.version)
    assert [h.action for h in promoter.store.history(DOMAIN)] == ["promote"]


@pytest.mark.parametrize("state", ["servable", "redis_synced"])
def test_one_left_at_a_localai_step_finishes_once_localai_is_unset(services, monkeypatch,
                                                                    state):
    version = register_domain_version(DOMAIN, PASSING)
    promotion = _crashed_after(state, version)
    monkeypatch.delenv("LOCALAI_URL")

    done = make_promoter().run(promotion)
    assert (done.state, done.targets["localai"]) == ("done", NO_LOCALAI)
    assert str(MlflowClient().get_registered_model(f"domain.{DOMAIN}").aliases["production"]) \
        == str(version.version)
    assert [h.action for h in make_promoter().store.history(DOMAIN)] == ["promote"]


def _crashed_after(state: str, version) -> Any:
    """A promotion of ``version`` whose promoter stopped right after recording ``state``."""
    crashing = make_promoter("crashing")

    def crash(reached):
        if reached == state:
            raise KeyboardInterrupt(f"crash after {reached}")

    crashing.failpoint = crash
    promotion = crashing.request(DOMAIN, int(version.version))
    with pytest.raises(KeyboardInterrupt):
        crashing.process_domain(DOMAIN)
    return promotion
