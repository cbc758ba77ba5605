"""MLflow's own webhooks, sent by a real ``mlflow server``, promote without the poller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient

from domain_mlflow.promotion.webhook import PATH, WebhookReceiver
from tests.mlflow_server import mlflow_server
from tests.promotion_helpers import PASSING, make_promoter, register_domain_version

SECRET = "server-webhook-secret"
DOMAIN = "served-domain"

pytestmark = pytest.mark.mlflow_server


@pytest.fixture
def server_url(tmp_path, monkeypatch):
    with mlflow_server(tmp_path) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        yield url


def _register_webhook(receiver_url: str) -> subprocess.CompletedProcess[str]:
    """``domain-mlflow webhook register`` against the server, as a deploy runs it."""
    return subprocess.run(
        [sys.executable, "-m", "domain_mlflow.cli", "webhook", "register", "--url",
         receiver_url, "--json"], env=dict(os.environ), capture_output=True, text=True,
        timeout=120, check=False)


def test_a_version_created_on_the_server_is_promoted_by_its_webhook(server_url, monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    receiver = WebhookReceiver(make_promoter("webhook"), SECRET)
    server = receiver.serve("127.0.0.1", 0)
    receiver_url = f"http://127.0.0.1:{server.server_address[1]}{PATH}"
    try:
        registered = _register_webhook(receiver_url)
        assert registered.returncode == 0, registered.stderr
        webhook_id = json.loads(registered.stdout)["webhook_id"]
        # Registering again (each deploy does) updates that webhook; none is added.
        again = _register_webhook(receiver_url)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["webhook_id"] == webhook_id
        assert [w.webhook_id for w in MlflowClient().list_webhooks()] == [webhook_id]

        tested = MlflowClient().test_webhook(webhook_id)
        assert tested.success, tested
        assert tested.response_status == 200

        version = register_domain_version(DOMAIN, PASSING)
        deadline = time.monotonic() + 30
        production = None
        while time.monotonic() < deadline and str(production) != str(version.version):
            production = MlflowClient().get_registered_model(
                f"domain.{DOMAIN}").aliases.get("production")
            time.sleep(0.1)
        assert str(production) == str(version.version)
        config = make_promoter().store.get_config(DOMAIN)
        assert config.model_version == version.tags["model_version"]

        forged = requests.post(receiver_url, data=b"{}", timeout=10, headers={
            "X-MLflow-Delivery-Id": "x", "X-MLflow-Timestamp": str(int(time.time())),
            "X-MLflow-Signature": "v1,Zm9yZ2Vk"})
        assert forged.status_code == 401
    finally:
        receiver.stop()


def test_an_approval_tag_set_on_the_server_is_carried_out_by_its_webhook(server_url,
                                                                         monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("PROMOTION_MODE", "manual")
    receiver = WebhookReceiver(make_promoter("webhook"), SECRET)
    server = receiver.serve("127.0.0.1", 0)
    receiver_url = f"http://127.0.0.1:{server.server_address[1]}{PATH}"
    client = MlflowClient()
    try:
        registered = _register_webhook(receiver_url)
        assert registered.returncode == 0, registered.stderr
        version = register_domain_version(DOMAIN, PASSING)
        store = make_promoter().store
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not store.awaiting_approval([DOMAIN]):
            time.sleep(0.1)
        [waiting] = store.awaiting_approval([DOMAIN])
        assert waiting.registry_version == int(version.version)
        assert "production" not in client.get_registered_model(version.name).aliases

        client.set_model_version_tag(version.name, version.version, "approval", "approved")

        production = None
        while time.monotonic() < deadline and str(production) != str(version.version):
            production = client.get_registered_model(version.name).aliases.get("production")
            time.sleep(0.1)
        assert str(production) == str(version.version)
        [approval] = [e for e in store.history(DOMAIN) if e.action == "approve"]
        assert (approval.actor, approval.reason) == ("MLflow UI", "approved in the MLflow UI")
        assert store.get_config(DOMAIN).model_version == version.tags["model_version"]
    finally:
        receiver.stop()
