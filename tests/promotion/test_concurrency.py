"""R2: four pollers and the webhook receiver at once, each version decided and promoted once."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.localai_double import LocalAIDouble
from tests.mlflow_server import free_port, mlflow_server
from tests.promotion_helpers import FAILING, PASSING, make_promoter, register_domain_version

pytestmark = pytest.mark.mlflow_server

DOMAINS = [f"domain-{n:02d}" for n in range(10)]
VERSIONS_PER_DOMAIN = 5
SECRET = "concurrency-secret"


def _metrics(version: int) -> dict[str, float]:
    return FAILING if version % 3 == 0 else PASSING  # versions 3 fail, the rest pass


def _spawn(arguments: list[str], env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "domain_mlflow.cli", *arguments], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def test_pollers_and_the_webhook_receiver_decide_each_version_once(
    tmp_path, postgres_dsn, redis_url, monkeypatch
):
    models = tmp_path / "localai-models"
    models.mkdir()
    with mlflow_server(tmp_path) as url, LocalAIDouble(models, api_keys=["k"]) as localai:
        settings = {
            "MLFLOW_TRACKING_URI": url, "POSTGRES_DSN": postgres_dsn, "REDIS_URL": redis_url,
            "LOCALAI_URL": localai.url, "LOCALAI_API_KEY": "k",
            "LOCALAI_MODELS_DIR": str(models), "WEBHOOK_SECRET": SECRET,
            "PROMOTION_RETRY_BASE_SECONDS": "0.05",
        }
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        env = dict(os.environ)
        port = free_port()
        log = (tmp_path / "workers.log").open("w")
        workers = [_spawn(["webhook", "--port", str(port)], env, log)]
        workers += [_spawn(["poll", "--interval", "0.2"], env, log) for _ in range(4)]
        try:
            registered = subprocess.run(
                [sys.executable, "-m", "domain_mlflow.cli", "webhook", "register", "--url",
                 f"http://127.0.0.1:{port}/webhooks/mlflow"], env=env, capture_output=True,
                text=True, timeout=120, check=False)
            assert registered.returncode == 0, registered.stderr
            for version in range(1, VERSIONS_PER_DOMAIN + 1):
                for domain in DOMAINS:
                    register_domain_version(domain, _metrics(version))
            store = make_promoter().store
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                decided = [p for d in DOMAINS for p in store.latest_promotions(d, 50)
                           if not p.is_open]
                if len(decided) >= len(DOMAINS) * VERSIONS_PER_DOMAIN:
                    break
                time.sleep(0.5)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=30)
            log.close()

        assert all(worker.returncode in (0, -15) for worker in workers), \
            (tmp_path / "workers.log").read_text()[-3000:]
        promotions = [p for d in DOMAINS for p in store.latest_promotions(d, 50)]
        per_version = collections.Counter((p.domain_id, p.registry_version) for p in promotions)
        assert len(per_version) == len(DOMAINS) * VERSIONS_PER_DOMAIN
        assert set(per_version.values()) == {1}, "a version was decided more than once"
        assert all(p.state in ("done", "rejected") for p in promotions)
        client = MlflowClient()
        for domain in DOMAINS:
            history = store.history(domain)
            rows = collections.Counter((h.action, h.registry_version) for h in history)
            assert set(rows.values()) == {1}, f"{domain}: a history row was written twice"
            assert rows[("reject", 3)] == 1
            production = client.get_registered_model(f"domain.{domain}").aliases["production"]
            assert int(production) == VERSIONS_PER_DOMAIN
            config = store.get_config(domain)
            assert config.registry_version == VERSIONS_PER_DOMAIN
            assert localai.config(domain)["alias"] == config.model_version
