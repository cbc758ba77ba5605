"""Secrets out of text: every URL and DSN form parsed, known values masked anywhere."""

from __future__ import annotations

import logging
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.redaction import MASK, RedactingFilter, Redactor, redact, secrets_in
from domain_mlflow.settings import load_settings

# Passwords start with "Q": never a substring of a host, a db name, a key or "%XX".
_SPECIAL = ":/@?#&=+%;,'\" \\$!*()[]{}~`^|<>"
_passwords = st.builds(lambda tail: "Q" + tail, st.text(
    alphabet=st.sampled_from("abcxyzABC0123456789-_." + _SPECIAL) | st.characters(
        codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=3, max_size=24))
_names = st.text(alphabet="abcdefghijklmnop", min_size=3, max_size=10)
_ports = st.integers(min_value=1, max_value=65535)
_query_keys = st.sampled_from(["password", "PassWord", "pass", "passwd", "pwd", "sslpassword",
                               "api_key", "APIKEY", "token", "secret", "access_token"])


def _kv_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@st.composite
def _carriers(draw: st.DrawFn) -> tuple[str, str, str, str]:
    """(text, password, host, database) in one of the forms a setting takes."""
    password, host, db = draw(_passwords), draw(_names), draw(_names)
    port, user, key = draw(_ports), draw(_names), draw(_query_keys)
    encoded = quote(password, safe="")
    forms = [
        f"postgresql://{user}:{encoded}@{host}:{port}/{db}",
        f"postgres://:{encoded}@{host}/{db}?sslmode=require",
        f"postgresql://{user}@{host}:{port}/{db}?application_name=x&{key}={encoded}",
        f"host={host} port={port} dbname={db} user={user} password={_kv_quoted(password)}",
        f"password = {_kv_quoted(password)} host={host} dbname={db}",
        f"redis://:{encoded}@{host}:{port}/{db}",
        f"rediss://{user}:{encoded}@{host}:{port}/{db}",
        f"redis://{host}:{port}/{db}?{key}={encoded}",
        f"unix:///run/{host}/redis.sock?db=0&{key}={encoded}&name={db}",
        f"https://{host}:{port}/{db}?{key}={quote_plus(password)}",
    ]
    return draw(st.sampled_from(forms)), password, host, db


def _assert_hidden(text: str, password: str) -> None:
    for form in {password, quote(password, safe=""), quote_plus(password), quote(password)}:
        assert form not in text, (form, text)


@settings(max_examples=400, deadline=None)
@given(carrier=_carriers())
def test_no_form_of_a_password_survives_and_host_and_database_stay_readable(carrier):
    text, password, host, db = carrier
    redacted = redact(text)
    _assert_hidden(redacted, password)
    assert host in redacted and db in redacted and MASK in redacted


@settings(max_examples=200, deadline=None)
@given(carrier=_carriers(), before=st.sampled_from(["connect to ", "Redis ", "", "failed ("]),
       after=st.sampled_from([" failed: refused", "", ") timed out", ": Error 111"]))
def test_a_url_or_dsn_inside_a_message_loses_its_password_too(carrier, before, after):
    text, password, host, _ = carrier
    redacted = Redactor.for_urls(text)(f"{before}{text}{after}")
    _assert_hidden(redacted, password)
    assert host in redacted


_unpadded = _passwords.filter(lambda value: value == value.strip())  # settings strip values


@settings(max_examples=200, deadline=None)
@given(password=_unpadded, api_key=_unpadded, secret=_unpadded)
def test_the_settings_secrets_are_masked_wherever_a_message_quotes_them(password, api_key,
                                                                          secret):
    settings_ = load_settings({
        "POSTGRES_DSN": f"host=db dbname=app user=app password={_kv_quoted(password)}",
        "LOCALAI_API_KEY": api_key, "WEBHOOK_SECRET": secret,
    })
    redact_ = Redactor.from_settings(settings_)
    for value in (password, api_key, secret):
        for written in (value, quote(value, safe=""), repr(value)[1:-1]):
            message = f'driver said: missing "=" after "{written}" in connection info string'
            assert value not in redact_(message)
            assert quote(value, safe="") not in redact_(message)


def test_the_pure_forms_keep_everything_but_the_secret():
    assert redact("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact("postgresql://:pw@h/d") == "postgresql://:***@h/d"
    assert redact("postgresql://u@h/d?sslmode=require&PASSWORD=x") == \
        "postgresql://u@h/d?sslmode=require&PASSWORD=***"
    assert redact("redis://h:6399/1?password=p&db=2") == "redis://h:6399/1?password=***&db=2"
    assert redact("unix:///tmp/r.sock?password=p") == "unix:///tmp/r.sock?password=***"
    assert redact("rediss://default:pw@h:6380") == "rediss://default:***@h:6380"
    assert redact("redis://localhost:6379") == "redis://localhost:6379"
    assert redact("redis://user@localhost:6379") == "redis://user@localhost:6379"
    assert redact("host=h port=1 dbname=d user=u password=secret") == \
        "host=h port=1 dbname=d user=u password=***"
    assert redact("Authorization: Bearer sk-123") == "Authorization: Bearer ***"
    assert redact('{"api_key": "k-1", "n": 2}') == '{"api_key": "***", "n": 2}'
    assert redact("no secret here: a=b, passphrase=ok") == "no secret here: a=b, passphrase=ok"


def test_secrets_in_finds_what_libpq_and_redis_read():
    assert set(secrets_in("postgresql://u:p%40w@h/d?password=q")) >= {"p%40w", "q"}
    assert secrets_in("host=h password='a b'") == ["a b"]
    assert secrets_in("redis://:pw@h/0") == ["pw"]
    assert secrets_in("unix:///s.sock?password=zz") == ["zz"]
    assert secrets_in("redis://h:6379/0") == []
    assert secrets_in(None) == []


def test_short_values_are_masked_where_parsed_not_everywhere():
    redact_ = Redactor(["pw"])
    assert redact_("password=pw and pwd is a command") == "password=*** and pwd is a command"


def test_a_logging_filter_redacts_message_arguments_and_tracebacks():
    record_text = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            record_text.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter(Redactor(["hook-s3cret"])))
    log = logging.getLogger("tests.redaction")
    log.addHandler(handler)
    try:
        try:
            raise RuntimeError("signature hook-s3cret refused")
        except RuntimeError:
            log.exception("connect %s failed", "redis://:pw-1234@h:1/0")
    finally:
        log.removeHandler(handler)
    (text,) = record_text
    assert "pw-1234" not in text and "hook-s3cret" not in text
    assert "redis://:***@h:1/0" in text and "RuntimeError" in text


# --- settings ---------------------------------------------------------------------

def test_a_libpq_key_value_dsn_is_accepted_for_postgres_dsn():
    dsn = "host=127.0.0.1 port=5432 dbname=test user=postgres password='s3 cret'"
    assert load_settings({"POSTGRES_DSN": dsn}).postgres_dsn == dsn


@pytest.mark.parametrize("value", [
    "host=db password='unterminated s3cret",
    "host=db s3cret-word password=x",
    "host=db nosuchoption=s3cret",
    "postgresql://u:s3cret@db/x?nosuchoption=1",
    "postgresql://u:s3cret%zz@db/x",
])
def test_a_bad_postgres_dsn_names_the_variable_and_shows_no_secret(value):
    with pytest.raises(ConfigError) as caught:
        load_settings({"POSTGRES_DSN": value})
    assert str(caught.value).startswith("POSTGRES_DSN")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(("name", "value"), [
    ("REDIS_URL", ":s3cret@localhost:6379"),
    ("REDIS_URL", "http://localhost/?password=s3cret"),
    ("POSTGRES_DSN", "mysql://u@db/x?password=s3cret"),
    ("ALERT_WEBHOOK_URL", "ftp://u:s3cret@host/hook"),
])
def test_a_bad_url_setting_names_the_variable_and_shows_no_secret(name, value):
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert str(caught.value).startswith(f"{name}=")
    assert "s3cret" not in str(caught.value)


def test_a_key_value_dsn_opens_the_config_store(postgres_dsn):
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from domain_mlflow.sinks.config_store import ConfigStore

    # trust authentication ignores the password psycopg sends
    params = {**conninfo_to_dict(postgres_dsn), "password": "kv-s3cret-pw"}
    dsn = make_conninfo("", **params)
    assert "://" not in dsn
    store = ConfigStore.from_settings(load_settings({"POSTGRES_DSN": dsn}))
    try:
        assert store.all_configs() == []
        assert "kv-s3cret-pw" not in store.database.description
        assert "dbname=test" in store.database.description
    finally:
        store.close()
