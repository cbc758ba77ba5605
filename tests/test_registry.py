"""Reading the registry: the versions that changed since a moment, found through the
registered models that changed, on a real MLflow store."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from domain_mlflow.naming import REGISTERED_MODEL_PREFIX
from domain_mlflow.registry import changed_versions

PATTERN = f"name LIKE '{REGISTERED_MODEL_PREFIX}%'"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client whose version searches are listed in ``client.version_searches``, and
    the number of versions each returned in ``client.versions_read``."""
    client = MlflowClient()
    client.version_searches, client.versions_read = [], []
    search = client.search_model_versions

    def listed(filter_string: str | None = None, *args: Any, **kwargs: Any) -> Any:
        client.version_searches.append(filter_string)
        found = search(filter_string, *args, **kwargs)
        client.versions_read.append(len(found))
        return found

    monkeypatch.setattr(client, "search_model_versions", listed)
    return client


@pytest.fixture
def run() -> Any:
    with mlflow.start_run() as run:
        return run


def _version(client: Any, run: Any, name: str) -> tuple[str, int]:
    with contextlib.suppress(MlflowException):  # it exists: a further version
        client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    return name, int(version.version)


def _now_millis() -> int:
    """A moment after everything registered so far and before anything registered next."""
    since = int(time.time() * 1000) + 1
    time.sleep(0.01)
    return since


def _read(client: Any, since: int) -> list[tuple[str, int]]:
    return sorted((v.name, int(v.version)) for v in changed_versions(client, PATTERN, since))


def test_the_new_versions_of_the_models_updated_since_and_no_search_of_the_others(
        client, run):
    for name in ("domain.a", "domain.b", "domain.c", "domain.d"):
        for _ in range(3):
            _version(client, run, name)
    since = _now_millis()
    new = [_version(client, run, "domain.a"), _version(client, run, "domain.b"),
           _version(client, run, "domain.b")]
    client.update_registered_model("domain.c", description="changed, no new version")

    assert _read(client, since) == sorted(new) == [
        ("domain.a", 4), ("domain.b", 4), ("domain.b", 5)]
    assert client.version_searches
    assert PATTERN not in client.version_searches  # not every domain's versions
    # Nor the changed models' history: a page of two versions per changed model (12 exist).
    assert sum(client.versions_read) <= 6, client.versions_read


def test_with_nothing_new_no_version_is_searched(client, run):
    for name in ("domain.a", "domain.b"):
        for _ in range(3):
            _version(client, run, name)
    since = _now_millis()
    assert _read(client, since) == []
    assert client.version_searches == []


def test_more_changed_models_than_a_page_are_read_in_one_search_of_every_version(client, run):
    names = [f"domain.d{index:02d}" for index in range(25)]
    for name in names:
        _version(client, run, name)
    since = _now_millis()
    new = [_version(client, run, name) for name in names]

    assert _read(client, since) == sorted(new)
    assert client.version_searches[0] == PATTERN


def test_a_model_named_like_ours_with_a_quote_is_left_out(client, run):
    _version(client, run, "domain.a")
    since = _now_millis()
    ours = _version(client, run, "domain.a")
    _version(client, run, "domain.it's")

    assert _read(client, since) == [ours]


def test_with_a_concurrency_of_one_threads_take_turns_a_whole_list_at_a_time():
    from concurrent.futures import ThreadPoolExecutor

    from domain_mlflow.gate import Thresholds
    from domain_mlflow.registry import DomainRegistry

    registry = DomainRegistry(MlflowClient(), Thresholds(), concurrency=1)
    calls: list[str] = []

    def call(item: str) -> str:
        calls.append(item)
        time.sleep(0.005)  # the other thread runs meanwhile, if it may
        return item.upper()

    lists = [[f"{name}{index}" for index in range(10)] for name in "ab"]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda items: registry.each(call, items), lists))

    assert results == [[item.upper() for item in items] for items in lists]
    # One list's calls, then the other's: never interleaved.
    assert calls in (lists[0] + lists[1], lists[1] + lists[0]), calls
