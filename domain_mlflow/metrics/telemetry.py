"""``DomainClient``: calls a domain's production model in LocalAI and records every request."""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
import uuid
from typing import Any

from domain_mlflow.exceptions import ConfigError, PromotionError, SinkError
from domain_mlflow.metrics.recorder import Feedback, TelemetryRecorder
from domain_mlflow.naming import validate_domain_id
from domain_mlflow.services import Services
from domain_mlflow.settings import Settings
from domain_mlflow.sinks.database import utc_now
from domain_mlflow.sinks.rollouts import CANDIDATE_ARM, PRODUCTION_ARM
from domain_mlflow.sinks.telemetry_store import ServingRequest, TelemetryStore, query_pattern

# How long a resolved serving pointer is used without asking again; a publish on the
# Redis serving channel for the domain (every promotion and rollback) drops it at once.
POINTER_TTL_SECONDS = 5.0


class DomainClient:
    """Completion requests to one domain's production version (or, while a canary or
    A/B test runs, to the candidate for its share: :meth:`route`), each one recorded.

    The serving name and version come from Redis when it is configured, else from
    the config store, and are kept for ``pointer_ttl_seconds`` (or until a promotion
    of the domain is published on Redis). LocalAI is asked for the version's own
    config (its name is the model version), the serving name only when no version is
    known; the record keeps the serving name and the version that answered (with the
    arm and rollout id during a rollout), a request
    id (``last_request_id``), latency, status, LocalAI's HTTP status (None when there
    was no answer), tokens and the query pattern. Records are written off the request
    path by a :class:`TelemetryRecorder` (batched; ``close()`` or leaving a ``with``
    block writes what is queued). A request that fails is recorded as an error and
    re-raised.
    """

    def __init__(self, domain_id: str, *, settings: Settings | None = None,
                 localai_url: str | None = None, api_key: str | None = None,
                 timeout: float | None = None, services: Services | None = None,
                 recorder: TelemetryRecorder | None = None,
                 pointer_ttl_seconds: float = POINTER_TTL_SECONDS) -> None:
        self.domain_id = validate_domain_id(domain_id)
        self.services = services or Services.from_settings(settings)
        self.settings = self.services.settings
        self.localai_url = localai_url or self.settings.localai_url
        self.api_key = api_key or self.settings.localai_api_key
        self.timeout = timeout or self.settings.localai_timeout_seconds
        self.pointer_ttl_seconds = pointer_ttl_seconds
        self.last_request_id: str | None = None
        self._client: Any = None
        self._recorder = recorder
        self._owns_recorder = recorder is None
        self._pointer: tuple[float, tuple[str, str | None, dict[str, Any] | None]] | None = None
        self._pointer_lock = threading.Lock()
        self._subscription: Any = None

    # --- where requests go ------------------------------------------------------------

    def resolve(self) -> tuple[str, str | None]:
        """(serving name, model version) of the domain's production model."""
        serving_name, model_version, _split = self._pointer_now()
        return serving_name, model_version

    def route(self, routing_key: str | None = None) -> tuple[str, str | None, str | None,
                                                              int | None]:
        """(serving name, version to call, arm, rollout id) of one request. While a
        canary or A/B test splits the domain's traffic, its share of requests goes to
        the candidate version: by ``routing_key`` (the same key, the same arm) or at
        random; otherwise the arm and rollout id are None."""
        serving_name, model_version, split = self._pointer_now()
        if not split:
            return serving_name, model_version, None, None
        rollout_id = int(split["rollout_id"])
        if routing_key is None:
            bucket = random.random() * 100.0
        else:
            digest = hashlib.sha256(f"{rollout_id}:{routing_key}".encode()).digest()
            bucket = int.from_bytes(digest[:8], "big") / 2 ** 64 * 100.0
        if bucket < float(split["percent"]):
            return serving_name, str(split["model_version"]), CANDIDATE_ARM, rollout_id
        return serving_name, model_version, PRODUCTION_ARM, rollout_id

    def _pointer_now(self) -> tuple[str, str | None, dict[str, Any] | None]:
        with self._pointer_lock:
            if self._pointer and self._pointer[0] > time.monotonic():
                return self._pointer[1]
        pointer = self._read_pointer()
        with self._pointer_lock:
            self._pointer = (time.monotonic() + self.pointer_ttl_seconds, pointer)
        return pointer

    def _read_pointer(self) -> tuple[str, str | None, dict[str, Any] | None]:
        redis = self.services.redis
        if redis is not None:
            self._watch(redis)
            try:
                value = redis.get(self.domain_id)
            except SinkError:
                value = None  # Redis is a cache here: fall back to the store of record
            if value:
                return value["serving_name"], value.get("model_version"), value.get("split")
        config = self.services.store.get_config(self.domain_id)
        if config is None:
            raise PromotionError(f"domain {self.domain_id!r} has no model in production")
        return config.serving_name, config.model_version, config.split

    def _watch(self, redis: Any) -> None:
        """Subscribe once to the serving channel: a publish for this domain drops the
        cached pointer. Without it (Redis down), the TTL alone bounds staleness."""
        if self._subscription is not None:
            return
        try:
            self._subscription = redis.subscribe(self._on_publish)
        except SinkError:
            self._subscription = False  # not again for this client

    def _on_publish(self, message: dict[str, Any]) -> None:
        if message.get("domain_id") == self.domain_id:
            with self._pointer_lock:
                self._pointer = None

    # --- requests ---------------------------------------------------------------------

    def complete(self, prompt: str, max_tokens: int = 64, *, request_id: str | None = None,
                 routing_key: str | None = None) -> str:
        """The domain's completion of ``prompt``; its record's id is ``request_id``
        (default: a new UUID), kept in ``last_request_id``. ``routing_key`` (e.g. a user
        id) keeps a caller on one arm while a rollout splits the traffic."""
        from domain_mlflow.sinks.localai import LocalAIClient

        if not self.localai_url:
            raise ConfigError("LOCALAI_URL is not set: there is no model server to call")
        if self._client is None:
            # One attempt: a failure is part of the record, retrying is the caller's choice.
            self._client = LocalAIClient(self.localai_url, self.api_key, timeout=self.timeout,
                                         retries=1)
        serving_name, model_version, arm, rollout_id = self.route(routing_key)
        self.last_request_id = request_id = request_id or uuid.uuid4().hex
        started, clock = utc_now(), time.perf_counter()
        where = {"request_id": request_id, "serving_name": serving_name,
                 "model_version": model_version, "arm": arm, "rollout_id": rollout_id}
        try:
            # The version's own config, not the alias: a promotion or rollback that moves the
            # alias meanwhile must not make the record name a version that did not answer.
            body = self._client.complete(model_version or serving_name, prompt,
                                         max_tokens=max_tokens)
        except SinkError as error:
            self._record(where, started, clock, prompt, error=error)
            raise
        usage = body.get("usage") or {}
        self._record(where, started, clock, prompt,
                     prompt_tokens=usage.get("prompt_tokens"),
                     completion_tokens=usage.get("completion_tokens"))
        return str(body["choices"][0].get("text", ""))

    def feedback(self, request_id: str, score: float) -> None:
        """A live quality signal for one answered request (a user's thumbs up = 1.0,
        down = 0.0, or an exact-match check the caller made): its record's ``quality``."""
        if not isinstance(request_id, str) or not request_id:
            raise ConfigError("feedback needs the request id complete() returned in "
                              "last_request_id")
        if isinstance(score, bool) or not isinstance(score, int | float) or \
                not math.isfinite(score):
            raise ConfigError(f"feedback score must be a finite number, got {score!r}")
        self.recorder.record(Feedback(request_id, float(score)), self.domain_id)

    @property
    def recorder(self) -> TelemetryRecorder:
        if self._recorder is None:
            self._recorder = TelemetryRecorder(TelemetryStore(self.services.store.database),
                                               on_error=self.services.redact)
        return self._recorder

    @property
    def dropped(self) -> int:
        """Records this client could not queue or write (also recorded in the store)."""
        return self._recorder.dropped_total if self._recorder else 0

    def _record(self, where: dict[str, Any], started: Any, clock: float, prompt: str,
                error: SinkError | None = None, **tokens: Any) -> None:
        self.recorder.record(ServingRequest(
            domain_id=self.domain_id,
            started_at=started,
            latency_ms=(time.perf_counter() - clock) * 1000.0,
            status="error" if error else "ok",
            query_pattern=query_pattern(prompt),
            http_status=error.status if error else 200,
            error=str(error)[:500] if error else None,
            **where,
            **tokens,
        ), self.domain_id)

    # --- shutdown ---------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until every record queued so far is written."""
        if self._recorder is not None:
            self._recorder.flush()

    def close(self) -> None:
        """Write what is queued (a recorder handed in is only flushed: its owner closes
        it) and stop watching Redis."""
        if self._subscription:
            self._subscription.stop()
        self._subscription = None
        if self._recorder is not None:
            if self._owns_recorder:
                self._recorder.close()
            else:
                self._recorder.flush()

    def __enter__(self) -> DomainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
