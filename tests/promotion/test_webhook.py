"""The webhook receiver over HTTP: signatures, freshness, replays, and the promotion it starts."""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from mlflow.tracking import MlflowClient

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.promotion.webhook import PATH, WebhookReceiver, sign
from tests.promotion_helpers import PASSING, make_promoter, register_domain_version

SECRET = "webhook-test-secret"
DOMAIN = "hook-domain"


def _served(promoter):
    receiver = WebhookReceiver(promoter, SECRET)
    server = receiver.serve("127.0.0.1", 0)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}{PATH}"
    return receiver


@pytest.fixture
def receiver(tmp_path):
    receiver = _served(make_promoter("webhook"))
    yield receiver
    receiver.stop()


@pytest.fixture
def served(services):
    """The receiver on the Postgres config store, Redis and the LocalAI double."""
    receiver = _served(make_promoter("webhook"))
    yield receiver
    receiver.stop()


def _event(version, name=f"domain.{DOMAIN}", entity="model_version", action="created",
           **data):
    return json.dumps({"entity": entity, "action": action,
                       "timestamp": "2026-11-28T00:00:00+00:00",
                       "data": {"name": name, "version": str(version), **data}}).encode()


def _headers(body, secret=SECRET, timestamp=None, delivery_id=None):
    delivery_id = delivery_id or str(uuid.uuid4())
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    return {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
            "X-MLflow-Timestamp": timestamp,
            "X-MLflow-Signature": sign(secret, delivery_id, timestamp, body)}


def _wait_for_production(domain, version, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        aliases = MlflowClient().get_registered_model(f"domain.{domain}").aliases
        if str(aliases.get("production")) == str(version):
            return True
        time.sleep(0.05)
    return False


def test_a_signed_creation_event_promotes_the_version(receiver):
    version = register_domain_version(DOMAIN, PASSING)
    # As MLflow sends it: the version's tags and run ride along.
    body = _event(version.version, tags=dict(version.tags), run_id=version.run_id,
                  source=version.source)
    answer = requests.post(receiver.url, data=body, headers=_headers(body), timeout=10)
    assert answer.status_code == 202, answer.text
    assert answer.json()["registry_version"] == int(version.version)
    assert _wait_for_production(DOMAIN, version.version)
    config = make_promoter().store.get_config(DOMAIN)
    assert config.model_version == version.tags["model_version"]


@pytest.mark.parametrize("tamper", ["forged", "wrong-secret", "unsigned", "stale", "future",
                                    "body-changed"])
def test_bad_deliveries_get_401_and_change_nothing(receiver, tamper):
    version = register_domain_version(DOMAIN, PASSING)
    body = _event(version.version)
    headers = _headers(body)
    if tamper == "forged":
        headers["X-MLflow-Signature"] = "v1,AAAA" + headers["X-MLflow-Signature"][7:]
    elif tamper == "wrong-secret":
        headers = _headers(body, secret="not-the-secret")
    elif tamper == "unsigned":
        headers.pop("X-MLflow-Signature")
    elif tamper == "stale":
        headers = _headers(body, timestamp=int(time.time()) - 301)
    elif tamper == "future":
        headers = _headers(body, timestamp=int(time.time()) + 301)
    else:
        body = _event(version.version, extra="x")
    answer = requests.post(receiver.url, data=body, headers=headers, timeout=10)
    assert answer.status_code == 401
    assert "error" in answer.json()
    assert make_promoter().store.open_promotions() == []
    assert make_promoter().store.known_request_keys([f"auto:{DOMAIN}:1"]) == set()


def test_a_replayed_delivery_is_answered_but_not_acted_on(receiver):
    version = register_domain_version(DOMAIN, PASSING)
    body = _event(version.version)  # no tags in the payload: the receiver reads the registry
    headers = _headers(body)
    first = requests.post(receiver.url, data=body, headers=headers, timeout=10)
    assert first.status_code == 202
    assert _wait_for_production(DOMAIN, version.version)
    replay = requests.post(receiver.url, data=body, headers=headers, timeout=10)
    assert replay.status_code == 200
    assert replay.json()["status"] == "duplicate"
    assert [h.action for h in make_promoter().store.history(DOMAIN)] == ["promote"]


def test_events_of_other_models_are_ignored(receiver):
    body = _event(3, name="somebody-elses-model")
    answer = requests.post(receiver.url, data=body, headers=_headers(body), timeout=10)
    assert answer.status_code == 200
    assert answer.json()["status"] == "ignored"


def test_setting_production_by_hand_in_the_registry_is_carried_out(receiver):
    first = register_domain_version(DOMAIN, PASSING)
    second = register_domain_version(DOMAIN, PASSING)
    promoter = make_promoter()
    promoter.run(promoter.request(DOMAIN, int(second.version)))
    MlflowClient().set_registered_model_alias(f"domain.{DOMAIN}", "production", first.version)
    body = _event(first.version, entity="model_version_alias", action="created",
                  alias="production")
    answer = requests.post(receiver.url, data=body, headers=_headers(body), timeout=10)
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        config = promoter.store.get_config(DOMAIN)
        if config.registry_version == int(first.version):
            break
        time.sleep(0.05)
    assert config.registry_version == int(first.version)
    assert promoter.store.history(DOMAIN)[0].action == "force_promote"


def test_a_late_event_of_an_alias_move_of_our_own_changes_nothing(receiver):
    first = register_domain_version(DOMAIN, PASSING)
    second = register_domain_version(DOMAIN, PASSING)
    promoter = make_promoter()
    promoter.run(promoter.request(DOMAIN, int(first.version)))
    promoter.run(promoter.request(DOMAIN, int(second.version)))
    # MLflow delivers the event of the move to the first version after the second's.
    body = _event(first.version, entity="model_version_alias", action="created",
                  alias="production")
    answer = requests.post(receiver.url, data=body, headers=_headers(body), timeout=10)
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 20
    while receiver.work.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.work.unfinished_tasks == 0  # the worker has handled the event
    assert [h.action for h in promoter.store.history(DOMAIN)] == ["promote", "promote"]
    assert promoter.store.get_config(DOMAIN).registry_version == int(second.version)
    assert str(MlflowClient().get_registered_model(f"domain.{DOMAIN}").aliases[
        "production"]) == str(second.version)


def test_a_body_that_is_not_an_event_is_a_400(receiver):
    body = b"not json"
    answer = requests.post(receiver.url, data=body, headers=_headers(body), timeout=10)
    assert answer.status_code == 400


def test_the_receiver_refuses_to_start_without_a_secret():
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        WebhookReceiver(make_promoter(), "")


def _raw_header(text):
    """The bytes a sender puts on the wire: latin-1 where it can (so "²" arrives as "²"
    after decoding), else UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


@pytest.mark.parametrize("timestamp", ["9" * 5000, "\u00b2", "-1", "1e3", "12.5", "0x10",
                                       "\u0661\u0662", "+1"])
def test_a_timestamp_that_is_not_unix_seconds_is_a_401_with_a_reason(receiver, timestamp):
    body = _event(1)
    headers = _headers(body)
    headers["X-MLflow-Timestamp"] = _raw_header(timestamp)
    answer = requests.post(receiver.url, data=body, headers=headers, timeout=10)
    assert answer.status_code == 401
    assert "error" in answer.json()


@pytest.mark.parametrize(("header", "value"), [
    ("X-MLflow-Delivery-Id", "\u00e9t\u00e9 \u2603"),
    ("X-MLflow-Delivery-Id", "x" * 5000),
    ("X-MLflow-Signature", "v1,\u00b2\u00b3"),
    ("X-MLflow-Signature", "\xff" * 300),
])
def test_any_delivery_id_or_signature_text_is_a_401_with_a_reason(receiver, header, value):
    body = _event(1)
    headers = _headers(body)
    headers[header] = _raw_header(value)
    answer = requests.post(receiver.url, data=body, headers=headers, timeout=10)
    assert answer.status_code == 401
    assert "error" in answer.json()


def test_a_signed_delivery_that_is_not_json_by_its_content_type_is_a_400(receiver):
    body = _event(1)
    headers = {**_headers(body), "Content-Type": "text/plain"}
    answer = requests.post(receiver.url, data=body, headers=headers, timeout=10)
    assert answer.status_code == 400
    assert "Content-Type" in answer.json()["error"]


def test_concurrent_copies_of_one_delivery_are_accepted_exactly_once(served):
    version = register_domain_version(DOMAIN, PASSING)
    body = _event(version.version, tags=dict(version.tags), run_id=version.run_id)
    headers = _headers(body)
    copies = 12
    start = threading.Barrier(copies)

    def send(_):
        start.wait(timeout=30)
        return requests.post(served.url, data=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(copies) as pool:
        answers = list(pool.map(send, range(copies)))
    assert collections.Counter(a.status_code for a in answers) == {202: 1, 200: copies - 1}
    assert {a.json()["status"] for a in answers if a.status_code == 200} == {"duplicate"}
    assert _wait_for_production(DOMAIN, version.version)
    assert [h.action for h in make_promoter().store.history(DOMAIN)] == ["promote"]


def test_a_delivery_that_could_not_be_handled_is_handled_when_mlflow_retries_it(served):
    # The version is not in the registry yet: 503, and the delivery must not be recorded.
    body = _event(1, entity="model_version_tag", action="set", key="note", value="x")
    headers = _headers(body)
    first = requests.post(served.url, data=body, headers=headers, timeout=10)
    assert first.status_code == 503, first.text
    assert not make_promoter().store.has_delivery(headers["X-MLflow-Delivery-Id"])
    version = register_domain_version(DOMAIN, PASSING)
    assert int(version.version) == 1
    retry = requests.post(served.url, data=body, headers=headers, timeout=10)
    assert retry.status_code == 202, retry.text
    assert _wait_for_production(DOMAIN, version.version)
