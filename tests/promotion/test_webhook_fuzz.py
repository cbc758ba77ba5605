"""Arbitrary header values and bodies, signed or not, sent to the receiver's ASGI app in
process: every answer is a 2xx or 4xx with a JSON object, and nothing raises."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain_mlflow.naming import REGISTERED_MODEL_PREFIX
from domain_mlflow.promotion.webhook import PATH, WebhookReceiver, sign
from domain_mlflow.promotion.webhook_http import create_app
from tests.promotion_helpers import make_promoter

SECRET = "fuzz-secret"
NAMES = [b"x-mlflow-signature", b"x-mlflow-timestamp", b"x-mlflow-delivery-id",
         b"content-type", b"content-length", b"transfer-encoding", b"x-other"]
HOSTILE = [b"9" * 5000, "\u00b2".encode("latin-1"), "\u00b2".encode(), b"-1", b"1e3", b"",
           b" ", b"abc", b"v1,", b"v1," + b"A" * 44, b"application/json",
           b"application/json; charset=utf-8", b"text/plain", b"chunked", b"0", b"1048577",
           b"99999999999999999999999999", "\udcff".encode("utf-8", "surrogateescape")]

header_values = st.one_of(st.sampled_from(HOSTILE), st.binary(max_size=80),
                          st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")))
headers = st.lists(st.tuples(st.sampled_from(NAMES), header_values), max_size=10)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
# Names of other people's models only: ours would send the receiver to the registry.
model_names = st.text(max_size=30).filter(lambda n: not n.startswith(REGISTERED_MODEL_PREFIX))
events = st.fixed_dictionaries({
    "entity": st.one_of(st.sampled_from(["model_version", "model_version_tag",
                                         "model_version_alias", "registered_model"]),
                        json_values),
    "action": st.one_of(st.sampled_from(["created", "set", "deleted"]), json_values),
    "timestamp": json_values,
    "data": st.one_of(st.fixed_dictionaries({"name": model_names, "version": json_values},
                                            optional={"tags": json_values, "key": json_values,
                                                      "alias": json_values}),
                      json_values),
}).map(lambda event: json.dumps(event).encode())
bodies = st.one_of(st.binary(max_size=300), events, st.just(b"[" * 5000 + b"]" * 5000))
delivery_ids = st.one_of(st.uuids().map(str), st.text(max_size=20), st.just("x" * 129))


@pytest.fixture
def app():
    receiver = WebhookReceiver(make_promoter("webhook"), SECRET)
    loop = asyncio.new_event_loop()
    yield create_app(receiver), loop
    loop.close()


def _call(app, loop, header_list, chunks):
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": "POST", "scheme": "http", "path": PATH,
             "raw_path": PATH.encode(), "query_string": b"", "root_path": "",
             "headers": header_list, "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 8090)}
    messages = [{"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
                for index, chunk in enumerate(chunks)]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    loop.run_until_complete(app(scope, receive, send))
    assert sent and sent[0]["type"] == "http.response.start"
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(header_list=headers, body=bodies, signed=st.booleans(), delivery_id=delivery_ids,
       skew=st.one_of(st.just(0), st.integers(-1000, 1000)), splits=st.integers(1, 4),
       data=st.data())
def test_any_headers_and_body_get_a_2xx_or_4xx_with_a_json_reason(
        app, header_list, body, signed, delivery_id, skew, splits, data):
    asgi_app, loop = app
    header_list = [(name.lower(), value) for name, value in header_list]
    if signed:
        # Authentic signature headers (the rest as generated): the payload is then judged.
        timestamp = str(int(time.time()) + skew)
        header_list = [(n, v) for n, v in header_list if not n.startswith(b"x-mlflow-")]
        header_list += [
            (b"x-mlflow-delivery-id", delivery_id.encode("utf-8", "surrogatepass")),
            (b"x-mlflow-timestamp", timestamp.encode()),
            (b"x-mlflow-signature", sign(SECRET, delivery_id.encode(
                "utf-8", "surrogatepass").decode("latin-1"), timestamp, body).encode())]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=splits - 1)))
    chunks = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)],
                                                    strict=True)]
    status, answer = _call(asgi_app, loop, header_list, chunks)
    assert 200 <= status < 500, (status, answer)
    assert isinstance(answer, dict)
    assert ("error" in answer) if status >= 400 else ("status" in answer)
