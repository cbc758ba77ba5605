"""Wiring shared by the promotion tests: real Postgres (or SQLite), Redis, the LocalAI double."""

from __future__ import annotations

import pytest


def _wire(monkeypatch: pytest.MonkeyPatch, redis_url: str, postgres_dsn: str | None) -> None:
    if postgres_dsn:
        monkeypatch.setenv("POSTGRES_DSN", postgres_dsn)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("PROMOTION_RETRY_BASE_SECONDS", "0.01")


@pytest.fixture
def services(postgres_dsn, redis_url, localai, monkeypatch):
    """Postgres config store, Redis and the LocalAI double, configured in the environment."""
    _wire(monkeypatch, redis_url, postgres_dsn)
    return localai


@pytest.fixture(params=["postgres", "sqlite"])
def stack(request, redis_url, localai, monkeypatch):
    """:func:`services` on each config-store dialect (SQLite: the embedded file)."""
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    _wire(monkeypatch, redis_url, dsn)
    return localai


CANARY_DOMAIN = "0x9abc-CanaryAgent"


@pytest.fixture
def production(stack):
    """Version 1 of CANARY_DOMAIN in production, version 2 registered (passing,
    undecided): what a canary or A/B test starts from."""
    from tests.promotion_helpers import make_promoter, register_domain_version

    promoter = make_promoter()
    first = register_domain_version(CANARY_DOMAIN)
    promoter.run(promoter.request(CANARY_DOMAIN, int(first.version)))
    return stack, first, register_domain_version(CANARY_DOMAIN)
