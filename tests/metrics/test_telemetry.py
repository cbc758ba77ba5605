"""Serving telemetry and alerting against the LocalAI double and real Redis."""

from __future__ import annotations

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis as redis_lib
from mlflow.tracking import MlflowClient

from domain_mlflow import DomainClient, DomainMetricsCollector
from domain_mlflow.exceptions import PromotionError, SinkError
from domain_mlflow.promotion.monitor import Monitor
from domain_mlflow.settings import load_settings
from domain_mlflow.sinks.config_store import ConfigStore
from domain_mlflow.sinks.telemetry_store import query_pattern
from tests.localai_double import LocalAIDouble
from tests.promotion_helpers import PASSING, make_promoter, register_domain_version

DOMAIN = "served"


@pytest.fixture
def serving(tmp_path, redis_url, monkeypatch):
    """Two promoted versions of DOMAIN (the second in production) behind the double."""
    models = tmp_path / "localai-models"
    models.mkdir()
    with LocalAIDouble(models, api_keys=["k"]) as localai:
        for name, value in (("REDIS_URL", redis_url), ("LOCALAI_URL", localai.url),
                            ("LOCALAI_API_KEY", "k"), ("LOCALAI_MODELS_DIR", str(models)),
                            ("ALERT_MIN_REQUESTS", "5"), ("ALERT_ERROR_RATE_THRESHOLD", "0.3")):
            monkeypatch.setenv(name, value)
        promoter = make_promoter()
        versions = [register_domain_version(DOMAIN, PASSING) for _ in range(2)]
        for version in versions:
            promoter.run(promoter.request(DOMAIN, int(version.version)))
        yield localai, versions


def test_requests_are_served_by_production_and_recorded(serving):
    localai, versions = serving
    client = DomainClient(DOMAIN)
    assert client.resolve() == (DOMAIN, versions[1].tags["model_version"])
    answer = client.complete("How many orders in 2024?")
    assert answer == f"[{versions[1].tags['model_version']}] How many orders in 2024?"
    client.complete("How many orders in 2025?")
    client.complete("List all customers.")
    metrics = DomainMetricsCollector(cache_seconds=0).collect_domain_metrics(DOMAIN)
    assert metrics["usage"]["requests"] == 3
    assert metrics["usage"]["top_query_patterns"][0] == {
        "pattern": "how many orders in <num>?", "requests": 2}
    assert metrics["quality"]["error_rate"] == 0.0


def test_failures_are_recorded_as_errors(serving):
    localai, _ = serving
    client = DomainClient(DOMAIN)
    client.complete("fine")
    localai.fail_next("/v1/completions", 500, count=3)
    for _ in range(3):
        with pytest.raises(SinkError, match="HTTP 500"):
            client.complete("broken")
    quality = DomainMetricsCollector(cache_seconds=0).collect_domain_metrics(DOMAIN)["quality"]
    assert quality["errors"] == 3
    assert quality["error_rate"] == pytest.approx(0.75)


def stored_requests() -> list[dict]:
    """DOMAIN's telemetry rows as the config store holds them, oldest first."""
    store = ConfigStore.from_settings(load_settings())
    try:
        with store.database.transaction() as tx:
            return tx.execute(
                "SELECT serving_name, model_version, status, http_status FROM serving_requests "
                "WHERE domain_id = %s ORDER BY id", (DOMAIN,))
    finally:
        store.close()


def completion_models(localai: LocalAIDouble, since: int) -> list[str]:
    """The ``model`` of each completion request the double received after the first ``since``."""
    return [json.loads(call["body"])["model"]
            for call in localai.calls("/v1/completions")[since:]]


def test_localai_is_asked_for_the_resolved_version_and_the_record_names_it(serving):
    localai, versions = serving
    production = versions[1].tags["model_version"]
    before = len(localai.calls("/v1/completions"))
    assert DomainClient(DOMAIN).complete("How many orders?") == f"[{production}] How many orders?"
    assert completion_models(localai, before) == [production]
    assert production != DOMAIN  # the versioned config, not the alias
    assert stored_requests() == [{"serving_name": DOMAIN, "model_version": production,
                                  "status": "ok", "http_status": 200}]


def test_without_a_known_version_localai_is_asked_for_the_serving_name(serving):
    localai, versions = serving
    client = DomainClient(DOMAIN)
    client.resolve = lambda: (DOMAIN, None)  # a Redis value written without a version
    before = len(localai.calls("/v1/completions"))
    assert client.complete("Any orders?") == f"[{versions[1].tags['model_version']}] Any orders?"
    assert completion_models(localai, before) == [DOMAIN]
    assert stored_requests() == [{"serving_name": DOMAIN, "model_version": None,
                                  "status": "ok", "http_status": 200}]


def test_an_http_error_records_its_status_and_a_refused_connection_records_none(serving):
    localai, versions = serving
    production = versions[1].tags["model_version"]
    localai.fail_next("/v1/completions", 500)
    with pytest.raises(SinkError, match="HTTP 500") as answered:
        DomainClient(DOMAIN).complete("broken")
    assert answered.value.status == 500
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(SinkError, match="ConnectionError") as refused:
        DomainClient(DOMAIN, localai_url=closed).complete("nobody home")
    assert refused.value.status is None
    assert stored_requests() == [
        {"serving_name": DOMAIN, "model_version": production, "status": "error",
         "http_status": 500},
        {"serving_name": DOMAIN, "model_version": production, "status": "error",
         "http_status": None}]


def test_without_redis_the_config_store_names_the_serving_model(serving, monkeypatch):
    _, versions = serving
    monkeypatch.delenv("REDIS_URL")
    assert DomainClient(DOMAIN).resolve() == (DOMAIN, versions[1].tags["model_version"])
    with pytest.raises(PromotionError, match="no model in production"):
        DomainClient("never-promoted").resolve()


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Receiver.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def test_a_failing_window_alerts_everywhere_and_rolls_back(serving, monkeypatch):
    localai, versions = serving
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setenv("AUTO_ROLLBACK", "true")
    _Receiver.received = []
    subscriber = redis_lib.Redis.from_url(os.environ["REDIS_URL"]).pubsub()
    subscriber.subscribe(f"{os.environ['REDIS_KEY_PREFIX']}:alerts")
    subscriber.get_message(timeout=1)  # the subscription confirmation

    client = DomainClient(DOMAIN)
    for _ in range(2):
        client.complete("fine")
    localai.fail_next("/v1/completions", 500, count=4)
    for _ in range(4):
        with pytest.raises(SinkError):
            client.complete("broken")

    [alert] = Monitor(make_promoter("monitor")).check_once()
    assert (alert["kind"], alert["requests"]) == ("error_rate", 6)
    assert alert["value"] == pytest.approx(4 / 6)
    assert alert["action"] == f"rolled back to version {versions[0].version}"
    published = subscriber.get_message(timeout=5)
    assert json.loads(published["data"])["kind"] == "error_rate"
    assert _Receiver.received[0]["domain_id"] == DOMAIN
    aliases = MlflowClient().get_registered_model(f"domain.{DOMAIN}").aliases
    assert str(aliases["production"]) == str(versions[0].version)
    assert DomainClient(DOMAIN).resolve()[1] == versions[0].tags["model_version"]
    assert Monitor(make_promoter("monitor")).check_once() == []  # the new version is clean
    server.shutdown()


def test_query_patterns_hide_values():
    assert query_pattern("Show ORDERS where status is 'shipped' and amount > 250") == \
        "show orders where status is <str> and amount > <num>"
