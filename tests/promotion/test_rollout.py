"""Canary and A/B rollouts on live traffic: real config store, Redis, registry, and the
LocalAI double answering differently per versioned name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import redis as redis_lib
from mlflow.tracking import MlflowClient

from domain_mlflow import DomainClient
from domain_mlflow.cli import main
from domain_mlflow.exceptions import ConfigError, PromotionError, SinkError
from domain_mlflow.promotion import rollout
from domain_mlflow.promotion.manual import promote
from domain_mlflow.promotion.monitor import Monitor
from domain_mlflow.sinks.redis_sink import RedisSink
from tests.promotion.conftest import CANARY_DOMAIN as DOMAIN
from tests.promotion_helpers import assert_everywhere, make_promoter, register_domain_version


def redis_value() -> dict:
    return RedisSink(os.environ["REDIS_URL"], os.environ["REDIS_KEY_PREFIX"]).get(DOMAIN)


def send(count: int, start: int = 0, score=None) -> dict[str, int]:
    """``count`` requests with routing keys ``user-<i>``; ``score(arm_answer, i)`` gives a
    feedback score. Returns the answers per version that answered (errors under "error")."""
    answered: dict[str, int] = {}
    with DomainClient(DOMAIN) as client:
        for i in range(start, start + count):
            try:
                text = client.complete(f"question {i}", routing_key=f"user-{i}")
            except SinkError:
                answered["error"] = answered.get("error", 0) + 1
                continue
            version = text[1:text.index("]")]
            answered[version] = answered.get(version, 0) + 1
            if score is not None:
                client.feedback(client.last_request_id, score(version, answered[version]))
    return answered


def alias() -> str:
    return str(MlflowClient().get_registered_model(f"domain.{DOMAIN}").aliases["production"])


def test_a_bad_canary_aborts_at_its_first_step_with_the_evidence_and_production_untouched(
        production):
    localai, first, second = production
    promoter = make_promoter()
    started = rollout.start(promoter, DOMAIN, int(second.version),
                            rollout.canary_plan([10, 50, 100], 0, 30), kind="canary")
    assert (started["state"], started["percent"]) == ("running", 10.0)
    assert redis_value()["split"]["percent"] == 10.0
    assert promoter.store.get_config(DOMAIN).split["model_version"] == \
        second.tags["model_version"]
    localai.behave(second.tags["model_version"], error_rate=0.5)

    answered = send(600)
    assert 40 <= answered["error"] * 2 <= 100  # about 10% to the canary, half of it failing

    [decided] = Monitor(make_promoter("monitor")).evaluate_rollouts()
    assert (decided["decision"], decided["state"]) == ("abort", "aborted")
    ended = promoter.store.get_rollout(started["id"])
    [step] = promoter.store.rollout_decisions(ended.id)
    assert (step["decision"], step["step_index"], step["percent"]) == ("abort", 0, 10.0)
    arms = step["evidence"]["arms"]
    assert arms["candidate"]["requests"] == answered[second.tags["model_version"]] + \
        answered["error"]
    assert arms["candidate"]["errors"] == answered["error"]
    assert arms["production"]["errors"] == 0
    assert arms["production"]["requests"] == answered[first.tags["model_version"]]
    [check] = [c for c in step["evidence"]["checks"] if c["metric"] == "error_rate"]
    assert check["worse"] and check["statistic"] > check["threshold"] > 1.6
    history = promoter.store.history(DOMAIN)
    assert [h.action for h in history[:2]] == ["canary_abort", "canary_start"]
    assert history[0].evidence["arms"] == arms
    assert "error_rate" in history[0].reason
    # production untouched everywhere; the split is gone
    config = promoter.store.get_config(DOMAIN)
    assert (config.registry_version, config.split) == (int(first.version), None)
    assert "split" not in redis_value()
    assert redis_value()["model_version"] == first.tags["model_version"]
    assert alias() == str(first.version)
    assert localai.config(DOMAIN)["alias"] == first.tags["model_version"]
    tags = MlflowClient().get_model_version(f"domain.{DOMAIN}", second.version).tags
    assert tags["promotion_status"] == "canary_aborted"
    assert promoter.store.get_promotion(ended.promotion_id).state == "rejected"
    assert send(50) == {first.tags["model_version"]: 50}


def test_a_good_canary_walks_every_step_and_ends_promoted_everywhere(production, monkeypatch):
    localai, first, second = production
    monkeypatch.setenv("PROMOTION_MODE", "manual")
    promoter = make_promoter()
    promoter.run(promoter.request(DOMAIN, int(second.version)))  # awaits approval
    plan = rollout.canary_plan([10, 50, 100], 0, 20)
    with pytest.raises(ConfigError, match="manual mode: --by NAME"):
        rollout.start(promoter, DOMAIN, int(second.version), plan, kind="canary")
    started = rollout.start(promoter, DOMAIN, int(second.version), plan, kind="canary",
                            by="alice")
    assert [(h.action, h.actor) for h in promoter.store.history(DOMAIN)[:2]] == [
        ("canary_start", "alice"), ("approve", "alice")]
    with pytest.raises(PromotionError, match="one at a time"):
        rollout.start(promoter, DOMAIN, int(second.version), plan, kind="canary", by="alice")

    # a new passing version meanwhile waits; so does a promotion by hand
    third = register_domain_version(DOMAIN)
    promoter.run(promoter.request(DOMAIN, int(third.version)))
    assert [p.state for p in promoter.store.promotions_of_version(DOMAIN, int(third.version))
            ] == ["pending"]
    with pytest.raises(PromotionError, match="end it first"):
        promote(promoter, DOMAIN, int(first.version))

    monitor = Monitor(make_promoter("monitor"))
    send(400)
    [decided] = monitor.evaluate_rollouts()
    assert (decided["decision"], decided["percent"]) == ("next", 50.0)
    assert redis_value()["split"]["percent"] == 50.0
    assert redis_value()["model_version"] == first.tags["model_version"]
    answered = send(100, start=400)
    assert 30 <= answered[second.tags["model_version"]] <= 70

    [decided] = monitor.evaluate_rollouts()
    assert (decided["decision"], decided["state"]) == ("next", "promoted")
    assert_everywhere(localai, second, DOMAIN)
    assert "split" not in redis_value()
    steps = promoter.store.rollout_decisions(started["id"])
    assert [(s["decision"], s["percent"]) for s in steps] == [("next_step", 10.0),
                                                              ("promote", 50.0)]
    actions = [h.action for h in promoter.store.history(DOMAIN)]
    assert actions[:3] == ["promote", "canary_promote", "canary_start"]
    assert promoter.store.history(DOMAIN)[1].evidence["arms"]["candidate"]["requests"] >= 20
    # the version that waited is gated now (manual mode: it awaits approval)
    promoter.run(promoter.request(DOMAIN, int(third.version)))
    assert promoter.store.promotions_of_version(DOMAIN, int(third.version))[-1].state == \
        "awaiting_approval"


def canary_with_traffic(second) -> tuple:
    """A canary of ``second`` at 10 %, with enough traffic for its first decision."""
    promoter = make_promoter()
    started = rollout.start(promoter, DOMAIN, int(second.version),
                            rollout.canary_plan([10, 50, 100], 0, 20), kind="canary")
    send(400)
    return promoter, started


def test_a_monitor_killed_after_a_step_resumes_that_step_and_redis_follows(production):
    _, first, second = production
    promoter, started = canary_with_traffic(second)
    env = {**os.environ, "DOMAIN_MLFLOW_FAILPOINT": "rollout-stepped"}
    command = [sys.executable, "-m", "domain_mlflow.cli", "monitor", "--once", "--json"]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert killed.returncode == 99, killed.stderr
    # the step is recorded, the publish never happened
    assert promoter.store.get_rollout(started["id"]).percent == 50.0
    assert redis_value()["split"]["percent"] == 10.0

    env.pop("DOMAIN_MLFLOW_FAILPOINT")
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                           check=False)
    assert again.returncode == 0, again.stderr
    [decided] = json.loads(again.stdout)["rollouts"]
    assert (decided["decision"], decided["step"], decided["percent"]) == ("wait", 1, 50.0)
    assert redis_value()["split"]["percent"] == 50.0
    assert len(promoter.store.rollout_decisions(started["id"])) == 1


def test_two_monitors_decide_a_step_once(production):
    _, _, second = production
    promoter, started = canary_with_traffic(second)
    barrier, results = threading.Barrier(2), []

    def decide() -> None:
        monitor = Monitor(make_promoter("monitor"))
        barrier.wait()
        results.append(monitor.evaluate_rollouts())

    threads = [threading.Thread(target=decide) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    decisions = [d["decision"] for found in results for d in found]
    assert decisions.count("next") == 1
    assert len(promoter.store.rollout_decisions(started["id"])) == 1
    assert promoter.store.get_rollout(started["id"]).step_index == 1


def test_after_a_redis_restart_clients_route_by_the_config_store_and_the_monitor_rebuilds(
        production):
    _, first, second = production
    promoter = make_promoter()
    rollout.start(promoter, DOMAIN, int(second.version),
                  rollout.canary_plan([50, 100], 0, 1000), kind="canary")
    keys = redis_lib.Redis.from_url(os.environ["REDIS_URL"])
    keys.delete(f"{os.environ['REDIS_KEY_PREFIX']}:serving:{DOMAIN}")  # as a restart loses it
    answered = send(100)
    assert 25 <= answered[second.tags["model_version"]] <= 75
    Monitor(make_promoter("monitor")).evaluate_rollouts()
    assert redis_value()["split"]["model_version"] == second.tags["model_version"]


def alternating(version: str, nth: int) -> float:
    return float(nth % 2)  # each arm: 0, 1, 0, 1, ...: a mean of 0.5


def test_an_ab_test_with_a_quality_difference_names_the_winner_and_promotes_it(production):
    localai, first, second = production
    promoter = make_promoter()
    rollout.start(promoter, DOMAIN, int(second.version),
                  rollout.ab_plan(50, "quality", 2000, 30, auto_promote=True), kind="ab")

    def score(version: str, nth: int) -> float:
        if version == second.tags["model_version"]:
            return 0.0 if nth % 10 == 0 else 1.0  # 0.9
        return alternating(version, nth)

    send(200, score=score)
    [decided] = Monitor(make_promoter("monitor")).evaluate_rollouts()
    assert (decided["decision"], decided["state"]) == ("winner", "promoted")
    assert "candidate is better on quality" in decided["why"]
    assert_everywhere(localai, second, DOMAIN)
    [ab] = promoter.store.rollouts(DOMAIN)
    low, high = ab.evidence["interval"]
    assert 0 < low < ab.evidence["difference"] < high
    assert ab.evidence["arms"]["candidate"]["quality"] > 0.85


def test_an_ab_test_without_a_difference_says_so_at_max_requests(production, capsys):
    _, first, second = production
    promoter = make_promoter()
    rollout.start(promoter, DOMAIN, int(second.version),
                  rollout.ab_plan(50, "quality", 200, 30, auto_promote=True), kind="ab")
    send(150, score=alternating)
    [decided] = Monitor(make_promoter("monitor")).evaluate_rollouts()
    assert decided["decision"] == "continue"
    send(50, start=150, score=alternating)
    [decided] = Monitor(make_promoter("monitor")).evaluate_rollouts()
    assert (decided["decision"], decided["state"]) == ("no_difference", "concluded")
    assert main(["ab", "status", DOMAIN]) == 0
    out = capsys.readouterr().out
    assert "concluded" in out and "no difference in quality after 200 requests" in out
    assert alias() == str(first.version)
    assert "split" not in redis_value()


def test_the_canary_commands(production, capsys):
    _, first, second = production
    assert main(["canary", "start", DOMAIN, "--version", str(second.version),
                 "--steps", "5,25", "--min-requests", "10", "--json"]) == 0
    started = json.loads(capsys.readouterr().out)
    assert (started["state"], started["percent"], started["plan"]["steps"]) == (
        "running", 5.0, [5.0, 25.0])
    assert main(["canary", "pause", DOMAIN, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "paused"
    send(300)
    assert Monitor(make_promoter("monitor")).evaluate_rollouts() == []  # paused: no decision
    assert main(["canary", "resume", DOMAIN]) == 0
    assert "running, 5% to the candidate (step 1 of 2)" in capsys.readouterr().out
    assert main(["canary", "status", DOMAIN]) == 0
    out = capsys.readouterr().out
    assert "candidate  requests" in out and "now: next" in out
    assert main(["status", DOMAIN]) == 0
    assert f"canary: 5% to v{second.version} ({second.tags['model_version']}), step 1 of 2, " \
        "running" in capsys.readouterr().out
    assert main(["canary", "abort", DOMAIN]) == 2
    assert "needs --by NAME" in capsys.readouterr().err
    assert main(["canary", "abort", DOMAIN, "--by", "bob", "--reason", "not today",
                 "--json"]) == 0
    ended = json.loads(capsys.readouterr().out)
    assert ended["state"] == "aborted" and ended["outcome"].endswith("bob: not today")
    assert main(["canary", "start", DOMAIN, "--version", str(second.version),
                 "--steps", "50,10"]) == 2
    assert "--steps must rise" in capsys.readouterr().err
    assert make_promoter().store.get_config(DOMAIN).registry_version == int(first.version)


def test_an_abort_killed_before_its_publish_is_not_lost(production):
    localai, first, second = production
    promoter = make_promoter()
    started = rollout.start(promoter, DOMAIN, int(second.version),
                            rollout.canary_plan([20, 100], 0, 20), kind="canary")
    localai.behave(second.tags["model_version"], error_rate=1.0)
    send(300)
    env = {**os.environ, "DOMAIN_MLFLOW_FAILPOINT": "rollout-ended"}
    command = [sys.executable, "-m", "domain_mlflow.cli", "monitor", "--once", "--json"]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert killed.returncode == 99, killed.stderr
    assert promoter.store.get_rollout(started["id"]).state == "aborted"
    assert redis_value()["split"]["percent"] == 20.0  # the publish never happened

    env.pop("DOMAIN_MLFLOW_FAILPOINT")
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                           check=False)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rollouts"] == []
    assert "split" not in redis_value()
    assert send(30) == {first.tags["model_version"]: 30}
