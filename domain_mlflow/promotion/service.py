"""Building a promoter from settings: the config store, the registry client, the sinks."""

from __future__ import annotations

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.promotion.engine import Promoter, default_actor, env_failpoint
from domain_mlflow.settings import Settings, load_settings
from domain_mlflow.sinks.config_store import ConfigStore
from domain_mlflow.sinks.localai import LocalAIClient, LocalAISink
from domain_mlflow.sinks.redis_sink import RedisSink


def build_promoter(
    settings: Settings | None = None,
    *,
    role: str = "promoter",
    postgres_dsn: str | None = None,
    redis_url: str | None = None,
    localai_url: str | None = None,
) -> Promoter:
    """A :class:`Promoter` wired to what is configured; unset Redis/LocalAI are skipped."""
    from mlflow.tracking import MlflowClient

    settings = settings or load_settings()
    redis_url = redis_url or settings.redis_url
    localai_url = localai_url or settings.localai_url
    localai = None
    if localai_url:
        if not settings.localai_models_dir:
            raise ConfigError(
                "LOCALAI_URL is set but LOCALAI_MODELS_DIR is not: set it to the folder "
                "LocalAI reads models from"
            )
        client = LocalAIClient(localai_url, settings.localai_api_key,
                               timeout=settings.localai_timeout_seconds)
        localai = LocalAISink(client, settings.localai_models_dir)
    return Promoter(
        store=ConfigStore.from_settings(settings, postgres_dsn),
        client=MlflowClient(),
        settings=settings,
        redis=RedisSink(redis_url, settings.redis_key_prefix) if redis_url else None,
        localai=localai,
        actor=default_actor(role),
        failpoint=env_failpoint(),
    )
