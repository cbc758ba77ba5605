"""Serving telemetry and alerting against the LocalAI double and real Redis."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis as redis_lib
from mlflow.tracking import MlflowClient

from domain_mlflow import DomainClient, DomainMetricsCollector
from domain_mlflow.exceptions import ConfigError, PromotionError, SinkError
from domain_mlflow.metrics.recorder import TelemetryRecorder
from domain_mlflow.promotion.monitor import Monitor
from domain_mlflow.settings import load_settings
from domain_mlflow.sinks.config_store import ConfigStore
from domain_mlflow.sinks.telemetry_store import ServingRequest, TelemetryStore, query_pattern
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
    with DomainClient(DOMAIN) as client:
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
    with DomainClient(DOMAIN) as client:
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
    with DomainClient(DOMAIN) as client:
        assert client.complete("How many orders?") == f"[{production}] How many orders?"
    assert completion_models(localai, before) == [production]
    assert production != DOMAIN  # the versioned config, not the alias
    assert stored_requests() == [{"serving_name": DOMAIN, "model_version": production,
                                  "status": "ok", "http_status": 200}]


def test_without_a_known_version_localai_is_asked_for_the_serving_name(serving):
    localai, versions = serving
    client = DomainClient(DOMAIN)
    # a Redis value written without a version
    client.route = lambda routing_key=None: (DOMAIN, None, None, None)
    before = len(localai.calls("/v1/completions"))
    assert client.complete("Any orders?") == f"[{versions[1].tags['model_version']}] Any orders?"
    client.close()
    assert completion_models(localai, before) == [DOMAIN]
    assert stored_requests() == [{"serving_name": DOMAIN, "model_version": None,
                                  "status": "ok", "http_status": 200}]


def test_an_http_error_records_its_status_and_a_refused_connection_records_none(serving):
    localai, versions = serving
    production = versions[1].tags["model_version"]
    localai.fail_next("/v1/completions", 500)
    with pytest.raises(SinkError, match="HTTP 500") as answered, DomainClient(DOMAIN) as client:
        client.complete("broken")
    assert answered.value.status == 500
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(SinkError, match="ConnectionError") as refused, \
            DomainClient(DOMAIN, localai_url=closed) as client:
        client.complete("nobody home")
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
    client.close()

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


def test_feedback_lands_on_its_request_and_in_the_quality_figures(serving):
    _, versions = serving
    with DomainClient(DOMAIN) as client:
        client.complete("How many orders?")
        first = client.last_request_id
        client.complete("List all customers.", request_id="my-request-2")
        assert client.last_request_id == "my-request-2"
        client.feedback(first, 1.0)
        client.feedback("my-request-2", 0.0)
        with pytest.raises(ConfigError, match="finite number"):
            client.feedback(first, float("nan"))
    store = ConfigStore.from_settings(load_settings())
    with store.database.transaction() as tx:
        rows = tx.execute("SELECT request_id, quality, model_version FROM serving_requests "
                          "WHERE domain_id = %s ORDER BY id", (DOMAIN,))
    store.close()
    production = versions[1].tags["model_version"]
    assert rows == [{"request_id": first, "quality": 1.0, "model_version": production},
                    {"request_id": "my-request-2", "quality": 0.0, "model_version": production}]
    quality = DomainMetricsCollector(cache_seconds=0).collect_domain_metrics(DOMAIN)["quality"]
    assert (quality["response_quality"], quality["rated_requests"]) == (0.5, 2)


def test_the_pointer_is_cached_and_a_promotion_publish_refreshes_it(serving):
    localai, versions = serving
    old, new = (v.tags["model_version"] for v in versions)
    with DomainClient(DOMAIN, pointer_ttl_seconds=3600) as client:
        assert client.complete("q").startswith(f"[{new}]")
        gets_before = len(localai.calls("/v1/completions"))
        make_promoter().run(make_promoter().request(
            DOMAIN, int(versions[0].version), kind="rollback",
            request_key="rollback-under-a-cached-pointer"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and client.resolve()[1] != old:
            time.sleep(0.05)  # the publish reaches the client's subscription thread
        assert client.resolve() == (DOMAIN, old)
        assert client.complete("q").startswith(f"[{old}]")
        assert completion_models(localai, gets_before) == [old]


def test_records_queued_at_interpreter_exit_are_written(serving, tmp_path):
    script = ("from domain_mlflow import DomainClient\n"
              f"client = DomainClient({DOMAIN!r})\n"
              "for i in range(50):\n"
              "    client.complete(f'question {i}')\n")
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert len(stored_requests()) == 50


def test_a_full_queue_drops_without_blocking_and_every_drop_is_counted(postgres_dsn):
    import psycopg

    store = ConfigStore.open(postgres_dsn, "unused.db")
    recorder = TelemetryRecorder(TelemetryStore(store.database), queue_size=5, batch_size=1,
                                 flush_seconds=0.01)
    sent = 200
    with psycopg.connect(postgres_dsn) as blocker:
        blocker.execute("LOCK TABLE serving_requests IN ACCESS EXCLUSIVE MODE")
        # Were a hand-over to wait for room, this would never return: the table is locked.
        accepted = sum(recorder.record(_request(i), "full-queue") for i in range(sent))
        assert accepted <= 6  # five queued, at most one taken by the blocked writer
        blocker.rollback()  # the lock goes: the writer catches up
    recorder.close()
    with store.database.transaction() as tx:
        written = tx.execute("SELECT COUNT(*) AS n FROM serving_requests "
                             "WHERE domain_id = 'full-queue'")[0]["n"]
    dropped = TelemetryStore(store.database).dropped_since(datetime(2000, 1, 1, tzinfo=UTC))
    store.close()
    assert recorder.dropped_total == sent - accepted
    assert (written, dropped["full-queue"]) == (accepted, sent - accepted)


def _request(number: int) -> ServingRequest:
    return ServingRequest(domain_id="full-queue", serving_name="full-queue",
                          model_version="v", started_at=datetime.now(UTC), latency_ms=1.0,
                          status="ok", query_pattern="q", http_status=200,
                          request_id=f"r{number}")


def test_dropped_records_are_shown(serving, monkeypatch):
    store = ConfigStore.from_settings(load_settings())
    TelemetryStore(store.database).record_batch([], [], {DOMAIN: 7}, datetime.now(UTC))
    store.close()
    done = subprocess.run([sys.executable, "-m", "domain_mlflow.cli", "metrics", DOMAIN,
                           "--json"], env=dict(os.environ), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["usage"]["dropped_records"] == 7
    printed = subprocess.run([sys.executable, "-m", "domain_mlflow.cli", "metrics", DOMAIN],
                             env=dict(os.environ), capture_output=True, text=True,
                             timeout=120, check=False).stdout
    assert "7 records dropped" in printed
