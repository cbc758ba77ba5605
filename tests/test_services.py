"""Services: the composition root opens parts on first use and closes what it opened."""

from __future__ import annotations

import dataclasses
import os

import redis

from domain_mlflow.services import Services
from domain_mlflow.settings import load_settings
from tests.conftest import TEST_POSTGRES_DSN, TEST_REDIS_URL
from tests.helpers import connections_named, with_application_name, with_query_parameter


def _redis_clients_named(name: str) -> int:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_timeout=2, decode_responses=True)
    try:
        return sum(1 for entry in client.client_list() if entry.get("name") == name)
    finally:
        client.close()


def test_leaving_a_with_block_closes_the_config_store_and_redis_connections(
        postgres_dsn, redis_url):
    name = f"services-{os.getpid()}"
    settings = dataclasses.replace(
        load_settings(), postgres_dsn=with_application_name(postgres_dsn, name),
        redis_url=with_query_parameter(redis_url, "client_name", name))
    with Services(settings) as services:
        assert services.store.get_config("nothing-here") is None
        assert services.redis.get("nothing-here") is None
        assert connections_named(TEST_POSTGRES_DSN, name, settle_seconds=0) > 0
        assert _redis_clients_named(name) == 1
    assert connections_named(TEST_POSTGRES_DSN, name) == 0
    assert _redis_clients_named(name) == 0


def test_parts_never_used_are_never_opened(postgres_dsn):
    name = f"services-unused-{os.getpid()}"
    settings = dataclasses.replace(
        load_settings(), postgres_dsn=with_application_name(postgres_dsn, name))
    with Services(settings) as services:
        assert services.settings is settings
        assert connections_named(TEST_POSTGRES_DSN, name, settle_seconds=0) == 0
    assert connections_named(TEST_POSTGRES_DSN, name, settle_seconds=0) == 0
