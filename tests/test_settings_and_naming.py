"""Settings from the environment, and the names derived from a domain id."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain_mlflow.exceptions import ConfigError, InvalidDomainIdError
from domain_mlflow.naming import (
    model_version,
    registered_model_name,
    training_run_id,
    validate_domain_id,
)
from domain_mlflow.settings import load_settings, redact_url


def test_defaults_without_any_variable():
    settings = load_settings({})
    assert settings.dashboard_port == 8085
    assert settings.dashboard_host == "127.0.0.1"
    assert settings.metrics_time_window_days == 30
    assert settings.mlflow_tracking_uri == "sqlite:///mlflow.db"
    assert settings.postgres_dsn is None
    assert settings.enable_domain_training is False


@pytest.mark.parametrize(
    ("name", "value"),
    [("DASHBOARD_PORT", "80a"), ("DASHBOARD_PORT", "70000"), ("METRICS_TIME_WINDOW_DAYS", "0"),
     ("ENABLE_DOMAIN_TRAINING", "maybe"), ("AUTO_ROLLBACK", "2"),
     ("POLL_INTERVAL_SECONDS", "soon"), ("POSTGRES_DSN", "mysql://x"),
     ("REDIS_URL", "localhost:6379"), ("LOCALAI_URL", "ftp://host"),
     ("ALERT_WEBHOOK_URL", "not a url")],
)
def test_a_bad_value_is_an_error_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=f"^{name}="):
        load_settings({name: value})


def test_a_bad_dsn_error_does_not_show_its_password():
    with pytest.raises(ConfigError) as caught:
        load_settings({"POSTGRES_DSN": "mysql://user:s3cret@db/x"})
    assert "s3cret" not in str(caught.value)
    assert "***" in str(caught.value)


def test_secrets_stay_out_of_repr():
    settings = load_settings({
        "POSTGRES_DSN": "postgresql://u:pw-123@localhost/db",
        "LOCALAI_API_KEY": "key-456",
        "WEBHOOK_SECRET": "hook-789",
        "REDIS_URL": "redis://:redispw@localhost:6379/0",
    })
    text = repr(settings)
    for secret in ("pw-123", "key-456", "hook-789", "redispw"):
        assert secret not in text


def test_redact_url_hides_only_the_password():
    assert redact_url("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact_url("redis://localhost:6379") == "redis://localhost:6379"


@pytest.mark.parametrize("good", ["0x5678-SQLAgent", "a", "vector.agent_2", "A" * 100])
def test_safe_domain_ids_are_accepted(good):
    assert validate_domain_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "../etc", "a/../b", "a/b", "it's", 'say"hi', "x" * 300, "-lead", "a..b",
            " padded", "tab\there", "é"],
)
def test_unsafe_domain_ids_are_refused(bad):
    with pytest.raises(InvalidDomainIdError):
        validate_domain_id(bad)


def test_a_300_character_id_error_is_short():
    with pytest.raises(InvalidDomainIdError) as caught:
        validate_domain_id("x" * 300)
    assert len(str(caught.value)) < 150
    assert "300 characters" in str(caught.value)


def test_names_follow_the_seed_formats():
    at = datetime(2024, 11, 4, 12, 0, 0, tzinfo=UTC)
    assert training_run_id("0x5678-SQLAgent", at) == "0x5678-SQLAgent_20241104_120000"
    assert model_version("0x5678-SQLAgent", at) == "0x5678-SQLAgent-v20241104_120000"
    assert registered_model_name("0x5678-SQLAgent") == "domain.0x5678-SQLAgent"
