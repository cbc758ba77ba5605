"""``DomainClient``: calls a domain's production model in LocalAI and records every request."""

from __future__ import annotations

import time
from typing import Any

from domain_mlflow.exceptions import PromotionError, SinkError
from domain_mlflow.naming import validate_domain_id
from domain_mlflow.settings import Settings, load_settings
from domain_mlflow.sinks.database import utc_now
from domain_mlflow.sinks.telemetry_store import ServingRequest, TelemetryStore, query_pattern


class DomainClient:
    """Completion requests to one domain's serving name, each recorded in the config store.

    The serving name and version come from Redis when it is configured, else from
    the config store. A request that fails is recorded as an error and re-raised.
    """

    def __init__(self, domain_id: str, *, settings: Settings | None = None,
                 localai_url: str | None = None, api_key: str | None = None,
                 timeout: float | None = None) -> None:
        self.domain_id = validate_domain_id(domain_id)
        self.settings = settings or load_settings()
        self.localai_url = localai_url or self.settings.localai_url
        self.api_key = api_key or self.settings.localai_api_key
        self.timeout = timeout or self.settings.localai_timeout_seconds
        self._store: Any = None
        self._client: Any = None

    def _config_store(self) -> Any:
        if self._store is None:
            from domain_mlflow.sinks.config_store import ConfigStore

            self._store = ConfigStore.from_settings(self.settings)
        return self._store

    def resolve(self) -> tuple[str, str | None]:
        """(serving name, model version) of the domain's production model."""
        if self.settings.redis_url:
            from domain_mlflow.sinks.redis_sink import RedisSink

            try:
                value = RedisSink(self.settings.redis_url, self.settings.redis_key_prefix
                                  ).get(self.domain_id)
            except SinkError:
                value = None  # Redis is a cache here: fall back to the store of record
            if value:
                return value["serving_name"], value.get("model_version")
        config = self._config_store().get_config(self.domain_id)
        if config is None:
            raise PromotionError(f"domain {self.domain_id!r} has no model in production")
        return config.serving_name, config.model_version

    def complete(self, prompt: str, max_tokens: int = 64) -> str:
        """The production model's completion of ``prompt``."""
        from domain_mlflow.sinks.localai import LocalAIClient

        if not self.localai_url:
            from domain_mlflow.exceptions import ConfigError

            raise ConfigError("LOCALAI_URL is not set: there is no model server to call")
        if self._client is None:
            # One attempt: a failure is part of the record, retrying is the caller's choice.
            self._client = LocalAIClient(self.localai_url, self.api_key, timeout=self.timeout,
                                         retries=1)
        serving_name, model_version = self.resolve()
        started, clock = utc_now(), time.perf_counter()
        try:
            body = self._client.complete(serving_name, prompt, max_tokens=max_tokens)
        except SinkError as error:
            self._record(serving_name, model_version, started, clock, prompt, error=error)
            raise
        usage = body.get("usage") or {}
        self._record(serving_name, model_version, started, clock, prompt,
                     prompt_tokens=usage.get("prompt_tokens"),
                     completion_tokens=usage.get("completion_tokens"))
        return str(body["choices"][0].get("text", ""))

    def _record(self, serving_name: str, model_version: str | None, started: Any,
                clock: float, prompt: str, error: SinkError | None = None,
                **tokens: Any) -> None:
        status_code = None
        if error is not None and "HTTP " in str(error):
            status_code = int(str(error).split("HTTP ", 1)[1][:3])
        TelemetryStore(self._config_store().database).record(ServingRequest(
            domain_id=self.domain_id,
            serving_name=serving_name,
            model_version=model_version,
            started_at=started,
            latency_ms=(time.perf_counter() - clock) * 1000.0,
            status="error" if error else "ok",
            query_pattern=query_pattern(prompt),
            http_status=status_code if error else 200,
            error=str(error)[:500] if error else None,
            **tokens,
        ))
