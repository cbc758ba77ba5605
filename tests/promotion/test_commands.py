"""The promotion commands as a user runs them, bad input, drift repair and secrets."""

from __future__ import annotations

import json
import os

import pytest
from mlflow.tracking import MlflowClient

from domain_mlflow.sinks.redis_sink import RedisSink
from tests.helpers import assert_one_line_error, run_cli
from tests.promotion_helpers import FAILING, PASSING, make_promoter, register_domain_version

DOMAIN = "cli-domain"


@pytest.fixture
def redis_env(redis_url, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    return redis_url


def test_promote_status_and_history_as_json(redis_env):
    first = register_domain_version(DOMAIN, PASSING)
    done = run_cli("promote", DOMAIN, "--version", str(first.version), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deployed"] is True

    again = run_cli("promote", DOMAIN, "--version", str(first.version), "--json")
    assert json.loads(again.stdout)["changed"] is False

    [row] = json.loads(run_cli("status", DOMAIN, "--json").stdout)
    assert (row["registry_version"], row["registry_production"]) == (1, 1)
    assert row["redis_model_version"] == first.tags["model_version"]
    [entry] = json.loads(run_cli("history", DOMAIN, "--json").stdout)
    assert (entry["action"], entry["registry_version"]) == ("promote", 1)


def test_a_manual_promotion_the_gate_refuses_exits_1_and_force_needs_a_reason(redis_env):
    bad = register_domain_version(DOMAIN, FAILING)
    refused = run_cli("promote", DOMAIN, "--version", str(bad.version))
    assert refused.returncode == 1
    assert "accuracy 0.15 < minimum 0.85" in refused.stdout
    assert_one_line_error(run_cli("promote", DOMAIN, "--version", str(bad.version), "--force"), 2,
                    "--force needs --reason")
    forced = run_cli("promote", DOMAIN, "--version", str(bad.version), "--force", "--reason",
                  "hotfix approved by on-call", "--json")
    assert forced.returncode == 0, forced.stderr
    entry = json.loads(run_cli("history", DOMAIN, "--json").stdout)[0]
    assert (entry["action"], entry["reason"]) == ("force_promote", "hotfix approved by on-call")


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["promote", "no-such-domain", "--version", "1"], 1, "unknown domain 'no-such-domain'"),
        (["promote", DOMAIN, "--version", "99"], 1, f"'domain.{DOMAIN}' has no version 99"),
        (["promote", "../etc", "--version", "1"], 2, "domain id '../etc' is not allowed"),
        (["promote", "it's", "--version", "1"], 2, "is not allowed"),
        (["promote", "x" * 300, "--version", "1"], 2, "300 characters"),
        (["rollback", DOMAIN], 1, "has nothing in production to roll back"),
        (["history", "a/../b"], 2, "is not allowed"),
    ],
)
def test_bad_requests_are_one_line_and_change_nothing(redis_env, args, code, text):
    register_domain_version(DOMAIN, PASSING)
    assert_one_line_error(run_cli(*args), code, text)
    assert make_promoter().store.get_config(DOMAIN) is None
    assert "production" not in MlflowClient().get_registered_model(f"domain.{DOMAIN}").aliases


def test_a_bad_environment_value_is_named_at_start_up():
    env = {**os.environ, "POLL_INTERVAL_SECONDS": "often"}
    assert_one_line_error(run_cli("poll", "--once", env=env), 2, "POLL_INTERVAL_SECONDS='often'")


def test_the_poller_repairs_a_missing_redis_key_and_sync_rebuilds_them(redis_env):
    version = register_domain_version(DOMAIN, PASSING)
    assert run_cli("poll", "--once").returncode == 0
    sink = RedisSink(redis_env, os.environ["REDIS_KEY_PREFIX"])
    sink.delete(DOMAIN)
    report = json.loads(run_cli("poll", "--once", "--json").stdout)
    assert report["repaired"] == [f"{DOMAIN}: redis key"]
    assert sink.get(DOMAIN)["model_version"] == version.tags["model_version"]
    sink.delete(DOMAIN)
    rebuilt = run_cli("sync", "--rebuild-redis", "--json")
    assert json.loads(rebuilt.stdout) == {"rebuilt": 1}
    assert sink.get(DOMAIN)["model_version"] == version.tags["model_version"]


def test_secrets_stay_out_of_logs_and_mlflow(redis_env, postgres_dsn, tmp_path):
    from tests.localai_double import LocalAIDouble

    secret_dsn = postgres_dsn.replace("postgres@", "postgres:pg-s3cret-pw@")
    models = tmp_path / "localai-models"
    models.mkdir()
    with LocalAIDouble(models, api_keys=["api-key-s3cret"]) as localai:
        env = {**os.environ, "POSTGRES_DSN": secret_dsn, "LOCALAI_URL": localai.url,
               "LOCALAI_API_KEY": "api-key-s3cret", "LOCALAI_MODELS_DIR": str(models),
               "WEBHOOK_SECRET": "hook-s3cret"}
        version = register_domain_version(DOMAIN, PASSING)
        done = run_cli("-v", "promote", DOMAIN, "--version", str(version.version), "--json",
                    env=env)
        assert done.returncode == 0, done.stderr
        assert localai.config(DOMAIN)["alias"] == version.tags["model_version"]
        assert localai.calls("/models/import")[0]["headers"]["Authorization"] == \
            "Bearer api-key-s3cret"
    client = MlflowClient()
    recorded = [done.stdout, done.stderr]
    for run in client.search_runs(experiment_ids=["0"]):
        recorded += [*run.data.params.values(), *run.data.tags.values()]
    recorded += [*client.get_model_version(f"domain.{DOMAIN}", version.version).tags.values()]
    for secret in ("pg-s3cret-pw", "api-key-s3cret", "hook-s3cret"):
        assert not any(secret in text for text in recorded), secret


def test_status_tells_every_domains_state_aligned(redis_env, monkeypatch):
    register_domain_version("alpha-in-production", PASSING)
    register_domain_version("beta-rejected", FAILING)
    run_cli("poll", "--once")
    monkeypatch.setenv("PROMOTION_MODE", "manual")
    register_domain_version("gamma-waiting", PASSING)
    run_cli("poll", "--once")
    register_domain_version("delta-new", PASSING)  # no poll since: not through the gate

    rows = {row["domain_id"]: row for row in json.loads(run_cli("status", "--json").stdout)}
    assert {domain: row["state"] for domain, row in rows.items()} == {
        "alpha-in-production": "in production", "beta-rejected": "rejected",
        "gamma-waiting": "awaiting approval", "delta-new": "not decided yet"}
    assert rows["beta-rejected"]["reason"].startswith("version 1: accuracy 0.15 < minimum 0.85")
    assert rows["alpha-in-production"]["reason"].startswith("version 1 1.0.0 (")
    assert "domain-mlflow approve gamma-waiting --version 1 --by NAME" in \
        rows["gamma-waiting"]["reason"]

    printed = run_cli("status").stdout.splitlines()
    heads = [line for line in printed if not line.startswith(" ")]
    assert [line.split("  ")[0] for line in heads] == sorted(rows)
    reasons_at = {line.index(rows[line.split()[0]]["reason"][:20]) for line in heads}
    assert len(reasons_at) == 1  # one column, whatever the name and state lengths
    one = run_cli("status", "beta-rejected")
    assert one.returncode == 0
    assert one.stdout.startswith("beta-rejected  rejected  version 1: accuracy 0.15")
