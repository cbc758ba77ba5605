"""Semantic versions: derived at registration (base → MAJOR, data → MINOR, retrain →
PATCH), overridable by ``--semver``, and shown wherever the timestamp version is."""

from __future__ import annotations

import json
import os

import pytest
from mlflow.tracking import MlflowClient

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.registry import register_version
from domain_mlflow.semver import next_semver, parse_semver
from domain_mlflow.sinks.redis_sink import RedisSink
from tests.helpers import assert_one_line_error, run_cli
from tests.promotion_helpers import PASSING, register_domain_version

DOMAIN = "semver-domain"


def test_base_change_is_major_data_change_minor_retrain_patch():
    source = register_domain_version("source-domain", PASSING)  # a run with a merged model

    def register(base: str = "tiny", data: str = "d1", digest: str = "none") -> str:
        tags = {"base_model": base, "base_model_digest": digest, "data_digest": data}
        version = register_version(MlflowClient(), DOMAIN, source.source, source.run_id, tags)
        return version.tags["semver"]

    assert [
        register(),  # the domain's first
        register(),  # same base, same data
        register(data="d2"),  # new data
        register(data="d2"),
        register(base="smollm2-135m", digest="b179c95", data="d2"),  # new base
        register(base="smollm2-135m", digest="0ddba11", data="d2"),  # same name, new file
        register(base="smollm2-135m", digest="0ddba11", data="d3"),
        register(base="smollm2-135m", digest="0ddba11", data="d3"),
    ] == ["1.0.0", "1.0.1", "1.1.0", "1.1.1", "2.0.0", "3.0.0", "3.1.0", "3.1.1"]


def test_the_rule_on_its_own():
    base = {"base_model": "tiny", "base_model_digest": "none", "data_digest": "a"}
    assert next_semver(None, base) == "1.0.0"
    assert next_semver({**base, "semver": "4.2.7"}, base) == "4.2.8"
    assert next_semver({**base, "semver": "4.2.7"}, {**base, "data_digest": "b"}) == "4.3.0"
    assert next_semver({**base, "semver": "4.2.7"}, {**base, "base_model": "x"}) == "5.0.0"
    assert next_semver({**base, "semver": "typed by hand"}, base) == "1.0.0"
    assert parse_semver(" 10.0.3 ") == (10, 0, 3)
    for bad in ("1.2", "v1.2.3", "01.2.3", "1.2.3-rc1", ""):
        with pytest.raises(ConfigError, match="not MAJOR.MINOR.PATCH"):
            parse_semver(bad)


def test_semver_shows_in_status_history_redis_localai_and_can_be_overridden(stack):
    first = register_domain_version(DOMAIN, PASSING)
    assert first.tags["semver"] == "1.0.0"
    done = run_cli("promote", DOMAIN, "--version", "1", "--json")
    assert done.returncode == 0, done.stderr
    second = register_domain_version(DOMAIN, PASSING)
    assert second.tags["semver"] == "1.0.1"

    assert_one_line_error(run_cli("promote", DOMAIN, "--version", "2", "--semver", "1.0.0"), 1,
                          "semver 1.0.0 is already version 1")
    done = run_cli("promote", DOMAIN, "--version", "2", "--semver", "2.0.0", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["semver"] == "2.0.0"

    assert MlflowClient().get_model_version(f"domain.{DOMAIN}", "2").tags["semver"] == "2.0.0"
    [row] = json.loads(run_cli("status", DOMAIN, "--json").stdout)
    assert (row["registry_version"], row["semver"]) == (2, "2.0.0")
    printed = run_cli("status", DOMAIN).stdout
    assert f"in production  version 2 2.0.0 ({second.tags['model_version']})" in printed
    history = json.loads(run_cli("history", DOMAIN, "--json").stdout)
    assert [(e["registry_version"], e["semver"]) for e in history] == [(2, "2.0.0"), (1, "1.0.0")]
    redis_value = RedisSink(os.environ["REDIS_URL"], os.environ["REDIS_KEY_PREFIX"]).get(DOMAIN)
    assert (redis_value["model_version"], redis_value["semver"]) == \
        (second.tags["model_version"], "2.0.0")
    served = stack.config(second.tags["model_version"])
    assert served["description"] == f"{DOMAIN} 2.0.0 ({second.tags['model_version']})"
