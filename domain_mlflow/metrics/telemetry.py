"""``DomainClient``: calls a domain's production model in LocalAI and records every request."""

from __future__ import annotations

import time
from typing import Any

from domain_mlflow.exceptions import PromotionError, SinkError
from domain_mlflow.naming import validate_domain_id
from domain_mlflow.services import Services
from domain_mlflow.settings import Settings
from domain_mlflow.sinks.database import utc_now
from domain_mlflow.sinks.telemetry_store import ServingRequest, TelemetryStore, query_pattern


class DomainClient:
    """Completion requests to one domain's production version, each recorded in the config store.

    The serving name and version come from Redis when it is configured, else from
    the config store. LocalAI is asked for the version's own config (its name is the
    model version), the serving name only when no version is known; the record keeps
    the serving name and the version that answered. A request that fails is recorded
    as an error, with LocalAI's HTTP status (None when there was no answer), and re-raised.
    """

    def __init__(self, domain_id: str, *, settings: Settings | None = None,
                 localai_url: str | None = None, api_key: str | None = None,
                 timeout: float | None = None, services: Services | None = None) -> None:
        self.domain_id = validate_domain_id(domain_id)
        self.services = services or Services.from_settings(settings)
        self.settings = self.services.settings
        self.localai_url = localai_url or self.settings.localai_url
        self.api_key = api_key or self.settings.localai_api_key
        self.timeout = timeout or self.settings.localai_timeout_seconds
        self._client: Any = None

    def _config_store(self) -> Any:
        return self.services.store

    def resolve(self) -> tuple[str, str | None]:
        """(serving name, model version) of the domain's production model."""
        redis = self.services.redis
        if redis is not None:
            try:
                value = redis.get(self.domain_id)
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
            # The version's own config, not the alias: a promotion or rollback that moves the
            # alias meanwhile must not make the record name a version that did not answer.
            body = self._client.complete(model_version or serving_name, prompt,
                                         max_tokens=max_tokens)
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
        TelemetryStore(self._config_store().database).record(ServingRequest(
            domain_id=self.domain_id,
            serving_name=serving_name,
            model_version=model_version,
            started_at=started,
            latency_ms=(time.perf_counter() - clock) * 1000.0,
            status="error" if error else "ok",
            query_pattern=query_pattern(prompt),
            http_status=error.status if error else 200,
            error=str(error)[:500] if error else None,
            **tokens,
        ))
