"""``Services``: the composition root, built once per process from ``Settings``.

It holds the settings, one MlflowClient, the registry wrapper with its threshold
cache, the config store (opened and migrated once, on first use), the Redis and
LocalAI sinks and the :class:`ServingTargets` that writes them. The CLI, the
poller, the webhook receiver, the monitor, the dashboard and the seed's classes
are handed one (a promoter is ``Promoter.from_services(services, role)``); nothing
opens a connection until a part is first used; ``close()`` (or leaving a ``with``
block) closes what was opened.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.settings import Settings, load_settings

if TYPE_CHECKING:
    from domain_mlflow.redaction import Redactor
    from domain_mlflow.registry import DomainRegistry
    from domain_mlflow.sinks.config_store import ConfigStore
    from domain_mlflow.sinks.localai import LocalAISink
    from domain_mlflow.sinks.redis_sink import RedisSink
    from domain_mlflow.sinks.targets import ServingTargets


class Services:
    """What one process works with; ``postgres_dsn``, ``redis_url`` and ``localai_url``
    override the settings (the seed's constructors take them as arguments)."""

    def __init__(self, settings: Settings, *, postgres_dsn: str | None = None,
                 redis_url: str | None = None, localai_url: str | None = None,
                 client: Any = None) -> None:
        self.settings = settings
        self.postgres_dsn = postgres_dsn or settings.postgres_dsn
        self.redis_url = redis_url or settings.redis_url
        self.localai_url = localai_url or settings.localai_url
        if client is not None:
            self.__dict__["client"] = client

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> Services:
        return cls(settings or load_settings(), **overrides)

    @cached_property
    def redact(self) -> Redactor:
        """Masks every secret of the settings (and overrides) in text that leaves the
        process: messages, tags, recorded errors, output."""
        from domain_mlflow.redaction import Redactor

        return Redactor.from_settings(self.settings, self.postgres_dsn, self.redis_url,
                                      self.localai_url)

    @cached_property
    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient()

    @cached_property
    def registry(self) -> DomainRegistry:
        import os

        from domain_mlflow.registry import DomainRegistry, default_concurrency, registry_uri

        concurrency = self.settings.registry_concurrency or default_concurrency(
            registry_uri(self.client))
        # MLflow's one HTTP session keeps MLFLOW_HTTP_POOL_MAXSIZE connections (10); more
        # calls side by side than that would open and drop connections.
        if concurrency > 10:
            os.environ.setdefault("MLFLOW_HTTP_POOL_MAXSIZE", str(concurrency))
        return DomainRegistry(self.client, self.settings.thresholds,
                              self.settings.promotion_mode, concurrency)

    @cached_property
    def store(self) -> ConfigStore:
        """The config store, created and migrated if needed: for the edges that write."""
        from domain_mlflow.sinks.config_store import ConfigStore

        return ConfigStore.open(self.postgres_dsn, ConfigStore.embedded_path(self.settings))

    @cached_property
    def redis(self) -> RedisSink | None:
        from domain_mlflow.sinks.redis_sink import RedisSink

        if not self.redis_url:
            return None
        return RedisSink(self.redis_url, self.settings.redis_key_prefix)

    @cached_property
    def localai(self) -> LocalAISink | None:
        from domain_mlflow.sinks.localai import LocalAIClient, LocalAISink

        if not self.localai_url:
            return None
        if not self.settings.localai_models_dir:
            raise ConfigError(
                "LOCALAI_URL is set but LOCALAI_MODELS_DIR is not: set it to the folder "
                "LocalAI reads models from"
            )
        client = LocalAIClient(self.localai_url, self.settings.localai_api_key,
                               timeout=self.settings.localai_timeout_seconds)
        return LocalAISink(client, self.settings.localai_models_dir)

    @cached_property
    def targets(self) -> ServingTargets:
        from domain_mlflow.sinks.targets import ServingTargets

        localai = self.localai  # a settings mistake is reported before any connection
        return ServingTargets(self.registry, self.store, self.redis, localai,
                              redact=self.redact)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close what was opened (parts never used were never opened)."""
        if "store" in self.__dict__:
            self.store.close()
        if self.__dict__.get("redis") is not None:
            self.redis.close()
        if self.__dict__.get("localai") is not None:
            self.localai.client.session.close()
