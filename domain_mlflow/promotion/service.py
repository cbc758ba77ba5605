"""A promoter wired from settings, for callers that hold no :class:`Services` yet."""

from __future__ import annotations

from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.services import Services
from domain_mlflow.settings import Settings


def build_promoter(
    settings: Settings | None = None,
    *,
    role: str = "promoter",
    postgres_dsn: str | None = None,
    redis_url: str | None = None,
    localai_url: str | None = None,
) -> Promoter:
    """A :class:`Promoter` of a new :class:`Services`; unset Redis/LocalAI are skipped."""
    services = Services.from_settings(settings, postgres_dsn=postgres_dsn, redis_url=redis_url,
                                      localai_url=localai_url)
    return Promoter.from_services(services, role)
