"""Dash's own callback route: a malformed request is a 4xx with a JSON reason, never a 500."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dash_app.app import create_app
from domain_mlflow.metrics.collector import DomainMetricsCollector

ROUTE = "/_dash-update-component"
# The shell's refresh callback: its state is the interval's tick count.
REFRESH = {
    "output": "refresh-interval.n_intervals",
    "outputs": {"id": "refresh-interval", "property": "n_intervals"},
    "inputs": [{"id": "refresh-button", "property": "n_clicks", "value": 1}],
    "changedPropIds": ["refresh-button.n_clicks"],
    "state": [{"id": "refresh-interval", "property": "n_intervals", "value": 3}],
}


@pytest.fixture
def client():
    return create_app(DomainMetricsCollector(cache_seconds=0)).server.test_client()


def _post(client, body, content_type="application/json"):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(ROUTE, data=data, content_type=content_type)


def test_a_well_formed_callback_request_is_answered(client):
    response = _post(client, REFRESH)
    assert response.status_code == 200, response.data
    assert response.get_json()["response"]["refresh-interval"]["n_intervals"] == 4


@pytest.mark.parametrize(("body", "content_type"), [
    ("not json", "application/json"),
    ("not json", "text/plain"),
    ("", "application/json"),
    ([], "application/json"),
    ("null", "application/json"),
    ({}, "application/json"),
    ({"output": 5}, "application/json"),
    ({"output": ""}, "application/json"),
    ({"output": "no-such.children"}, "application/json"),
    ({**REFRESH, "inputs": "x"}, "application/json"),
    ({**REFRESH, "inputs": [1, 2]}, "application/json"),
    ({**REFRESH, "state": None}, "application/json"),
    ({**REFRESH, "outputs": 7}, "application/json"),
    ({**REFRESH, "changedPropIds": [None]}, "application/json"),
    ({**REFRESH, "inputs": [{"id": "refresh-button"}]}, "application/json"),
    ({**REFRESH, "inputs": []}, "application/json"),
    ({**REFRESH, "state": [{"id": "refresh-interval", "property": "n_intervals",
                            "value": "abc"}]}, "application/json"),
])
def test_a_malformed_callback_request_is_a_4xx_with_a_reason(client, body, content_type):
    response = _post(client, body, content_type)
    assert 400 <= response.status_code < 500, (response.status_code, response.data[:300])
    assert response.is_json and response.get_json()["error"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8)
_bodies = st.one_of(
    _json,
    st.fixed_dictionaries({}, optional={
        "output": st.sampled_from([REFRESH["output"], "url.pathname", "x"]) | _json,
        "outputs": _json, "inputs": _json, "state": _json, "changedPropIds": _json}),
    st.builds(lambda key, value: {**REFRESH, key: value},
              st.sampled_from(sorted(REFRESH)), _json),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(body=_bodies)
def test_no_json_body_gets_a_5xx(client, body):
    response = _post(client, body)
    assert response.status_code < 500, (body, response.data[:300])


def test_other_routes_keep_their_own_answers(client):
    assert client.get("/no-such-page-route/x").status_code in (200, 404)
    for path in ("/_dash-component-suites/nothing/here.js",
                 "/_dash-component-suites/dash/no/such/file.js",
                 "/_dash-component-suites/dash/..%2F..%2Fsetup.py"):
        assert client.get(path).status_code == 404, path
    assert client.get("/_dash-layout").status_code == 200
    assert client.get("/_dash-dependencies").status_code == 200
    assert client.get(ROUTE).status_code < 500  # the pages' catch-all serves GETs
