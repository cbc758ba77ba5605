"""Secrets in every form a setting takes never leave the process: not into MLflow, the
config store, Redis, LocalAI's folder, the logs or the CLI's output."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from mlflow.tracking import MlflowClient
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from domain_mlflow import AutoDeploymentTrigger
from domain_mlflow.exceptions import ConfigStoreError
from domain_mlflow.promotion.poller import Poller
from tests.helpers import run_cli
from tests.promotion_helpers import PASSING, make_promoter, register_domain_version

DOMAIN = "0x5678-SQLAgent"
PG_PASSWORD = "pg-S3cret:/@+&= pw"
REDIS_PASSWORD = "rd-S3cret/#&%pw"
LOCALAI_KEY = "localai-S3cret-key-1"
WEBHOOK_SECRET = "hook-S3cret-value-1"
SECRETS = (PG_PASSWORD, REDIS_PASSWORD, LOCALAI_KEY, WEBHOOK_SECRET)
FORMS = sorted({form for secret in SECRETS
                for form in (secret, quote(secret, safe=""), quote_plus(secret), quote(secret))})


def postgres_dsn_with_password(dsn: str, form: str, port: int | None = None) -> str:
    """The test DSN with ``PG_PASSWORD`` in the URL's userinfo, its query, or as a libpq
    key=value DSN (trust authentication ignores the password psycopg sends)."""
    if port is not None:
        dsn = dsn.replace(":5432/", f":{port}/")
    encoded = quote(PG_PASSWORD, safe="")
    if form == "userinfo":
        return dsn.replace("postgres@", f"postgres:{encoded}@", 1)
    if form == "query":
        return f"{dsn}&password={encoded}"
    return make_conninfo("", **{**conninfo_to_dict(dsn), "password": PG_PASSWORD})


def redis_url_with_password(form: str, reachable: bool) -> str:
    port = 6379 if reachable else 1  # the test Redis has no password: AUTH is refused
    encoded = quote(REDIS_PASSWORD, safe="")
    if form == "userinfo":
        return f"redis://:{encoded}@127.0.0.1:{port}/0"
    return f"redis://127.0.0.1:{port}/0?password={encoded}"


def leaks(texts: list[str]) -> list[tuple[str, str]]:
    return [(form, text[:300]) for text in texts for form in FORMS if form in text]


def mlflow_texts(tmp_path: Path) -> list[str]:
    """Params, tags and artifacts of every run; tags of every model and version."""
    client = MlflowClient()
    texts = []
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(experiment_ids=experiments):
        texts += [*run.data.params.values(), *run.data.tags.values(),
                  *run.data.params, *run.data.tags]
        target = tmp_path / "artifacts" / run.info.run_id
        target.mkdir(parents=True)
        folder = Path(client.download_artifacts(run.info.run_id, "", str(target)))
        texts += [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]
    for model in client.search_registered_models():
        texts += [*model.tags.values()]
    for version in client.search_model_versions():
        texts += [*version.tags.values(), version.source or "", version.description or ""]
    return texts


def config_store_texts(schema: str) -> list[str]:
    """Every row of every table of the test's config-store schema, as text."""
    import psycopg

    from tests.conftest import TEST_POSTGRES_DSN

    with psycopg.connect(TEST_POSTGRES_DSN, autocommit=True) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,))]
        assert "promotions" in tables
        return [repr(row) for table in tables
                for row in conn.execute(f'SELECT * FROM "{schema}"."{table}"')]


def redis_texts() -> list[str]:
    import redis

    from tests.conftest import TEST_REDIS_URL

    client = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    try:
        keys = list(client.scan_iter(f"{os.environ['REDIS_KEY_PREFIX']}:*"))
        return [f"{key} {client.get(key) if client.type(key) == 'string' else ''}"
                for key in keys]
    finally:
        client.close()


def folder_texts(folder: Path) -> list[str]:
    return [str(p) + p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]


@contextlib.contextmanager
def localai_target(models: Path, reachable: bool) -> Iterator[str]:
    from tests.localai_double import LocalAIDouble

    if not reachable:
        yield "http://127.0.0.1:1"
        return
    with LocalAIDouble(models, api_keys=[LOCALAI_KEY]) as double:
        yield double.url


def _environment(monkeypatch: pytest.MonkeyPatch, models: Path, localai_url: str,
                 postgres_dsn: str, redis_url: str) -> None:
    monkeypatch.setenv("POSTGRES_DSN", postgres_dsn)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LOCALAI_URL", localai_url)
    monkeypatch.setenv("LOCALAI_API_KEY", LOCALAI_KEY)
    monkeypatch.setenv("LOCALAI_MODELS_DIR", str(models))
    monkeypatch.setenv("WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("PROMOTION_RETRY_BASE_SECONDS", "0.01")


@pytest.mark.parametrize(("pg_form", "redis_form", "redis_reachable", "localai_reachable"), [
    ("userinfo", "userinfo", False, True),   # fails at Redis: the error is recorded
    ("query", "query", True, False),         # fails at LocalAI; Redis refuses the AUTH
    ("kv", "query", False, True),
])
def test_secrets_reach_no_store_log_or_output_with_postgres_up(
        postgres_dsn, redis_url, tmp_path, monkeypatch, caplog, pg_form, redis_form,
        redis_reachable, localai_reachable):
    caplog.set_level(logging.INFO)
    models = tmp_path / "localai-models"
    models.mkdir()
    schema = conninfo_to_dict(postgres_dsn)["options"].rpartition("=")[2]
    with localai_target(models, localai_reachable) as localai_url:
        _environment(monkeypatch, models, localai_url,
                     postgres_dsn_with_password(postgres_dsn, pg_form),
                     redis_url_with_password(redis_form, redis_reachable))
        version = register_domain_version(DOMAIN, PASSING)
        report = Poller(make_promoter("poller")).poll_once()
        assert report.pending == 1, report  # a target is down: the promotion waits
        promoter = make_promoter()
        [promotion] = promoter.store.open_promotions(DOMAIN)
        assert promotion.last_error and ("Redis" in promotion.last_error
                                         or "LocalAI" in promotion.last_error)
        tags = MlflowClient().get_model_version(f"domain.{DOMAIN}", version.version).tags
        assert tags["promotion_status"] == "pending" and tags["promotion_error"]
        done = [run_cli("-v", "poll", "--once", "--json"), run_cli("status"),
                run_cli("status", "--json"), run_cli("history", DOMAIN, "--json")]
        # poll exits 1 when drift repair met the Redis that is down
        assert [d.returncode for d in done][1:] == [0, 0, 0], [d.stderr for d in done]
        assert done[0].returncode in (0, 1) and "Traceback" not in done[0].stderr
        assert "in flight" in done[1].stdout and "error" in done[1].stdout
    texts = [*mlflow_texts(tmp_path), *config_store_texts(schema), *redis_texts(),
             *folder_texts(models), caplog.text, json.dumps(report.as_dict()),
             *[d.stdout + d.stderr for d in done]]
    assert leaks(texts) == []


@pytest.mark.parametrize("pg_form", ["userinfo", "query", "kv"])
def test_secrets_stay_out_of_errors_tags_and_output_with_postgres_down(
        postgres_dsn, redis_url, tmp_path, monkeypatch, caplog, pg_form):
    caplog.set_level(logging.INFO)
    models = tmp_path / "localai-models"
    models.mkdir()
    _environment(monkeypatch, models, "http://127.0.0.1:1",
                 postgres_dsn_with_password(postgres_dsn, pg_form, port=1),
                 redis_url_with_password("userinfo", reachable=False))
    version = register_domain_version(DOMAIN, PASSING)
    with pytest.raises(ConfigStoreError) as caught:
        AutoDeploymentTrigger().deploy_version(DOMAIN, version.version)
    assert "unreachable" in str(caught.value)
    tags = MlflowClient().get_model_version(f"domain.{DOMAIN}", version.version).tags
    assert tags["promotion_status"] == "pending" and "unreachable" in tags["promotion_error"]
    done = run_cli("poll", "--once", "--json")
    assert done.returncode == 1 and "unreachable" in done.stderr, done.stderr
    texts = [*mlflow_texts(tmp_path), *redis_texts(), caplog.text, str(caught.value),
             done.stdout + done.stderr]
    assert leaks(texts) == []


def test_train_then_poll_with_secrets_in_every_setting_leaks_nothing(
        postgres_dsn, redis_url, tiny_base, small_sql_data, tmp_path, monkeypatch, caplog):
    """The whole path: `domain-mlflow train` registers and promotes a passing version while
    LocalAI answers with its own key inside the error text; the poller then gets past
    LocalAI and meets a Redis that is down, with its password in the URL's query."""
    from tests.localai_double import LocalAIDouble

    caplog.set_level(logging.INFO)
    models = tmp_path / "localai-models"
    models.mkdir()
    schema = conninfo_to_dict(postgres_dsn)["options"].rpartition("=")[2]
    for name in ("ACCURACY", "LATENCY", "LOSS", "VAL_LOSS"):
        monkeypatch.setenv(f"DEPLOY_{name}_THRESHOLD", "0" if name == "ACCURACY" else "100000")
    with LocalAIDouble(models, api_keys=[LOCALAI_KEY]) as double:
        _environment(monkeypatch, models, double.url,
                     postgres_dsn_with_password(postgres_dsn, "kv"),
                     redis_url_with_password("query", reachable=False))
        double.fail_next("/models/import", 500, count=10,
                         message=f"backend refused the request of key {LOCALAI_KEY}")
        trained = run_cli("-v", "train", "--domain-id", DOMAIN, "--data", str(small_sql_data),
                          "--max-steps", "6", "--eval-every", "3", "--checkpoint-every", "3",
                          "--batch-size", "8", "--json")
        assert trained.returncode == 0, trained.stderr
        results = json.loads(trained.stdout)
        assert results["should_deploy"] is True
        assert results["deployment"]["deployed"] is False
        store = make_promoter().store
        [promotion] = store.open_promotions(DOMAIN)
        assert "HTTP 500" in promotion.last_error  # LocalAI's own text, recorded redacted
        double.clear_faults()
        report = Poller(make_promoter("poller")).poll_once()
        [promotion] = store.open_promotions(DOMAIN)
        assert promotion.state == "config_written" and "Redis" in promotion.last_error, report
        assert double.model_names()  # the version is served under its own name
        done = [run_cli("status"), run_cli("status", "--json"),
                run_cli("history", DOMAIN, "--json"), run_cli("poll", "--once", "--json")]
        assert [d.returncode for d in done][:3] == [0, 0, 0], [d.stderr for d in done]
        assert "in flight" in done[0].stdout
    texts = [*mlflow_texts(tmp_path), *config_store_texts(schema), *redis_texts(),
             *folder_texts(models), *folder_texts(tmp_path / "models"), caplog.text,
             trained.stdout + trained.stderr, json.dumps(report.as_dict()),
             *[d.stdout + d.stderr for d in done]]
    assert leaks(texts) == []
