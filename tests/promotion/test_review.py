"""Manual review: in manual mode a passing version waits for a person, who approves or
rejects it through the CLI, the MLflow UI's ``approval`` tag, or Python; one record each."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from mlflow.tracking import MlflowClient

from domain_mlflow.promotion.review import pending
from domain_mlflow.promotion.trigger import AutoDeploymentTrigger
from domain_mlflow.sinks.redis_sink import RedisSink
from tests.helpers import assert_one_line_error, run_cli
from tests.promotion_helpers import (
    FAILING,
    PASSING,
    assert_everywhere,
    make_promoter,
    register_domain_version,
)

DOMAIN = "0x5678-SQLAgent"


@pytest.fixture
def manual(stack, monkeypatch):
    monkeypatch.setenv("PROMOTION_MODE", "manual")
    return stack


def _poll() -> dict:
    done = run_cli("poll", "--once", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _promotion(version):
    [promotion] = make_promoter().store.promotions_of_version(DOMAIN, int(version.version))
    return promotion


def _history(domain: str = DOMAIN) -> list[dict]:
    return json.loads(run_cli("history", domain, "--json").stdout)


def _approvals_channel():
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    channel = client.pubsub(ignore_subscribe_messages=True)
    channel.subscribe(f"{os.environ['REDIS_KEY_PREFIX']}:approvals")
    return client, channel


def _messages(channel, wait: float = 2.0) -> list[dict]:
    found, deadline = [], time.monotonic() + wait
    while time.monotonic() < deadline:
        message = channel.get_message(timeout=0.1)
        if message:
            found.append(json.loads(message["data"]))
    return found


def test_a_passing_version_waits_and_the_cli_approves_it_once(manual):
    client, channel = _approvals_channel()
    version = register_domain_version(DOMAIN, PASSING)

    report = _poll()

    assert report["awaiting_approval"] == 1
    assert _promotion(version).state == "awaiting_approval"
    assert MlflowClient().get_model_version(version.name, version.version).tags["approval"] == \
        "pending"
    promoter = make_promoter()
    assert promoter.store.get_config(DOMAIN) is None  # nothing synced before approval
    assert RedisSink(os.environ["REDIS_URL"], os.environ["REDIS_KEY_PREFIX"]).get(DOMAIN) is None
    assert manual.config(DOMAIN) is None
    assert "production" not in MlflowClient().get_registered_model(version.name).aliases
    [announced] = _messages(channel)
    assert (announced["event"], announced["domain_id"], announced["registry_version"]) == \
        ("awaiting_approval", DOMAIN, 1)
    [waiting] = json.loads(run_cli("pending", "--json").stdout)
    assert (waiting["domain_id"], waiting["registry_version"], waiting["semver"]) == \
        (DOMAIN, 1, "1.0.0")
    assert waiting["metrics"]["accuracy"] == PASSING["accuracy"]
    [row] = json.loads(run_cli("status", DOMAIN, "--json").stdout)
    assert row["in_flight"]["state"] == "awaiting_approval"

    approved = run_cli("approve", DOMAIN, "--version", "1", "--by", "alice", "--reason",
                       "reviewed the eval set", "--json")

    assert approved.returncode == 0, approved.stdout + approved.stderr
    result = json.loads(approved.stdout)
    assert (result["deployed"], result["changed"], result["approval"]["by"]) == \
        (True, True, "alice")
    assert_everywhere(manual, version, DOMAIN)
    tags = MlflowClient().get_model_version(version.name, version.version).tags
    assert (tags["approval"], tags["approved_by"]) == ("approved", "alice")
    approve_rows = [e for e in _history() if e["action"] == "approve"]
    assert [(e["actor"], e["reason"], e["metrics"]["accuracy"]) for e in approve_rows] == \
        [("alice", "reviewed the eval set", PASSING["accuracy"])]
    assert [m["event"] for m in _messages(channel)] == ["approved"]

    again = run_cli("approve", DOMAIN, "--version", "1", "--by", "bob", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["changed"] is False
    assert [e["action"] for e in _history()] == ["promote", "approve"]
    assert json.loads(run_cli("pending", "--json").stdout) == []
    channel.close()
    client.close()


def test_a_newer_passing_version_supersedes_the_waiting_one_and_a_rejection_sticks(manual):
    register_domain_version(DOMAIN, PASSING)
    _poll()
    newer = register_domain_version(DOMAIN, PASSING)
    _poll()

    stale = run_cli("approve", DOMAIN, "--version", "1", "--by", "alice")
    assert_one_line_error(stale, 1, "superseded: version 2 passed the gate after it")
    assert [p["registry_version"] for p in json.loads(run_cli("pending", "--json").stdout)] == [2]

    rejected = run_cli("reject", DOMAIN, "--version", "2", "--by", "bob", "--reason",
                       "latency regressed on the long prompts", "--json")
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    assert json.loads(rejected.stdout)["state"] == "rejected"
    assert _promotion(newer).state == "rejected"
    assert json.loads(run_cli("pending", "--json").stdout) == []
    rows = {e["registry_version"]: e for e in _history() if e["action"] == "reject"}
    assert rows[2]["actor"] == "bob"
    assert rows[2]["reason"] == "latency regressed on the long prompts"
    assert rows[1]["reason"].startswith("superseded: version 2")
    assert make_promoter().store.get_config(DOMAIN) is None

    assert_one_line_error(run_cli("approve", DOMAIN, "--version", "2", "--by", "alice"), 1,
                          "rejected by bob: latency regressed")
    twice = run_cli("reject", DOMAIN, "--version", "2", "--by", "bob", "--reason", "again",
                    "--json")
    assert json.loads(twice.stdout)["changed"] is False
    assert len([e for e in _history() if e["action"] == "reject"]) == 2
    assert_one_line_error(run_cli("reject", DOMAIN, "--version", "2", "--by", "bob"), 2,
                          "--reason")


def test_a_failing_version_is_rejected_by_the_gate_in_manual_mode_too(manual):
    version = register_domain_version(DOMAIN, FAILING)
    _poll()
    promotion = _promotion(version)
    assert promotion.state == "rejected"
    assert "accuracy 0.15 < minimum 0.85" in promotion.decision.summary()
    assert json.loads(run_cli("pending", "--json").stdout) == []
    assert_one_line_error(run_cli("approve", DOMAIN, "--version", "1", "--by", "alice"), 1,
                          "accuracy 0.15 < minimum 0.85")


def test_the_domain_tag_wins_over_the_environment(stack, monkeypatch):
    client = MlflowClient()
    monkeypatch.setenv("PROMOTION_MODE", "manual")
    automatic = register_domain_version("auto-domain", PASSING)
    client.set_registered_model_tag(automatic.name, "promotion.mode", "auto")
    register_domain_version(DOMAIN, PASSING)
    _poll()
    assert make_promoter().store.get_config("auto-domain").registry_version == 1
    assert make_promoter().store.get_config(DOMAIN) is None

    monkeypatch.setenv("PROMOTION_MODE", "auto")
    reviewed = register_domain_version("reviewed-domain", PASSING)
    client.set_registered_model_tag(reviewed.name, "promotion.mode", "Manual")
    _poll()
    [waiting] = make_promoter().store.awaiting_approval(["reviewed-domain"])
    assert waiting.registry_version == 1

    client.set_registered_model_tag(reviewed.name, "promotion.mode", "sometimes")
    register_domain_version("reviewed-domain", PASSING)
    done = run_cli("poll", "--once", "--json")
    assert done.returncode == 1
    [error] = json.loads(done.stdout)["errors"]
    assert "tag promotion.mode on registered model 'domain.reviewed-domain' must be one of " \
           "auto, manual, got 'sometimes'" in error


def test_an_approval_tag_set_in_the_mlflow_ui_is_carried_out_by_the_next_poll(manual):
    version = register_domain_version(DOMAIN, PASSING)
    _poll()
    client = MlflowClient()
    client.set_model_version_tag(version.name, version.version, "approval_reason",
                                 "checked in the UI")
    client.set_model_version_tag(version.name, version.version, "approval", "approved")

    _poll()

    assert_everywhere(manual, version, DOMAIN)
    [row] = [e for e in _history() if e["action"] == "approve"]
    assert (row["actor"], row["reason"]) == ("MLflow UI", "checked in the UI")


def test_a_rejection_tag_from_the_ui_rejects(manual):
    version = register_domain_version(DOMAIN, PASSING)
    _poll()
    MlflowClient().set_model_version_tag(version.name, version.version, "approval", "rejected")
    _poll()
    promotion = _promotion(version)
    assert (promotion.state, promotion.approved_by) == ("rejected", "MLflow UI")
    assert make_promoter().store.get_config(DOMAIN) is None


def test_a_wait_longer_than_the_ttl_expires(manual, monkeypatch):
    monkeypatch.setenv("APPROVAL_TTL_HOURS", "0.001")  # 3.6 s
    version = register_domain_version(DOMAIN, PASSING)
    _poll()
    [waiting] = pending(make_promoter())  # in this process: sooner than a command starts
    expires = datetime.fromisoformat(waiting["expires_at"])
    assert expires - datetime.fromisoformat(waiting["awaiting_since"]) == timedelta(seconds=3.6)
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)

    assert json.loads(run_cli("pending", "--json").stdout) == []
    assert _promotion(version).state == "rejected"
    [row] = [e for e in _history() if e["action"] == "reject"]
    assert row["reason"].startswith("expired: it waited more than APPROVAL_TTL_HOURS=0.001")
    assert_one_line_error(run_cli("approve", DOMAIN, "--version", "1", "--by", "alice"), 1,
                          "expired")
    assert MlflowClient().get_model_version(version.name, version.version).tags["approval"] == \
        "closed"


def test_python_approves_through_the_trigger(manual):
    version = register_domain_version(DOMAIN, PASSING)
    trigger = AutoDeploymentTrigger()
    first = trigger.deploy(DOMAIN, version)
    assert (first["deployed"], first["state"]) == (False, "awaiting_approval")
    assert "domain-mlflow approve 0x5678-SQLAgent --version 1 --by NAME" in first["reason"]
    assert [p["registry_version"] for p in trigger.pending()] == [1]

    result = trigger.approve(DOMAIN, version.version, by="carol", reason="ok")

    assert result["deployed"] is True
    assert_everywhere(manual, version, DOMAIN)
    assert [e["action"] for e in _history()] == ["promote", "approve"]
    assert _history()[1]["actor"] == "carol"


def test_approve_needs_a_reviewer_and_a_known_version(manual):
    register_domain_version(DOMAIN, PASSING)
    assert_one_line_error(run_cli("approve", DOMAIN, "--version", "1"), 2, "--by")
    assert_one_line_error(run_cli("approve", DOMAIN, "--version", "7", "--by", "a"), 1,
                          "has no version 7")
    assert_one_line_error(run_cli("approve", DOMAIN, "--version", "1", "--by", "a", "--semver",
                                  "v1"), 2, "not MAJOR.MINOR.PATCH")
