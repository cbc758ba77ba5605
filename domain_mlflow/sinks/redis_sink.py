"""Redis: one string key per domain with its serving config (JSON), and a channel of changes.

Key ``{prefix}:serving:{domain_id}``; channel ``{prefix}:promotions``. Every write
is a SET followed by a PUBLISH of the same JSON.
"""

from __future__ import annotations

import json
from typing import Any

from domain_mlflow.exceptions import SinkError
from domain_mlflow.redaction import Redactor

DEFAULT_PREFIX = "domain_mlflow"


class RedisSink:
    """Writes serving configs to Redis; connects on first use, every call with a timeout."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, timeout: float = 2.0) -> None:
        # The client library loads with the sink, not in its first write: a daemon's first
        # promotions would otherwise wait ~0.2 s for its modules (docs/benchmarks.md).
        import redis  # noqa: F401

        self.url = url
        self.redact = Redactor.for_urls(url)
        self.prefix = prefix
        self.timeout = timeout
        self._client: Any = None

    @property
    def channel(self) -> str:
        return f"{self.prefix}:promotions"

    def key(self, domain_id: str) -> str:
        return f"{self.prefix}:serving:{domain_id}"

    def _redis(self) -> Any:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                decode_responses=True,
            )
        return self._client

    def _call(self, what: str, operation: Any) -> Any:
        import redis

        try:
            return operation(self._redis())
        except redis.RedisError as error:
            raise SinkError(self.redact(f"Redis {self.url} {what} failed: {error}")) from None

    def publish_configs(self, changes: list[tuple[str, dict[str, Any], str]]) -> None:
        """For each (domain_id, payload, event): SET the domain's key to the payload and
        PUBLISH ``{"event": ..., **payload}`` on the channel; one round trip, applied
        all together (MULTI/EXEC). Only :class:`ServingTargets` calls it."""
        def write(client: Any) -> None:
            pipe = client.pipeline(transaction=True)
            for domain_id, payload, event in changes:
                pipe.set(self.key(domain_id), json.dumps(payload, sort_keys=True))
                pipe.publish(self.channel, json.dumps({"event": event, **payload},
                                                      sort_keys=True))
            pipe.execute()

        what = (f"write of {self.key(changes[0][0])}" if len(changes) == 1
                else f"write of {len(changes)} serving keys")
        self._call(what, write)

    def publish_event(self, channel: str, event: dict[str, Any]) -> None:
        """PUBLISH ``event`` as JSON on ``{prefix}:{channel}`` (``alerts``, ``approvals``)."""
        message = json.dumps(event, sort_keys=True, default=str)
        self._call(f"{channel} publish",
                   lambda c: c.publish(f"{self.prefix}:{channel}", message))

    def publish_alert(self, alert: dict[str, Any]) -> None:
        """PUBLISH an alert on ``{prefix}:alerts``."""
        self.publish_event("alerts", alert)

    def subscribe(self, handler: Any) -> Any:
        """Call ``handler(message: dict)`` for every publish on the serving channel, from a
        daemon thread (redis-py's ``run_in_thread``); returns the thread (``.stop()``)."""
        def deliver(message: dict[str, Any]) -> None:
            try:
                handler(json.loads(message["data"]))
            except (TypeError, ValueError):
                return  # not ours

        pubsub = self._call("subscribe", lambda c: c.pubsub(ignore_subscribe_messages=True))
        self._call(f"subscribe to {self.channel}",
                   lambda _: pubsub.subscribe(**{self.channel: deliver}))
        def give_up(_error: BaseException, _pubsub: Any, thread: Any) -> None:
            thread.stop()  # Redis went away: readers fall back to their cache's TTL

        return pubsub.run_in_thread(sleep_time=0.5, daemon=True, exception_handler=give_up)

    def get(self, domain_id: str) -> dict[str, Any] | None:
        raw = self._call(f"read of {self.key(domain_id)}", lambda c: c.get(self.key(domain_id)))
        return json.loads(raw) if raw else None

    def get_many(self, domain_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """One round trip (MGET) for many domains."""
        if not domain_ids:
            return {}
        keys = [self.key(d) for d in domain_ids]
        values = self._call("MGET", lambda c: c.mget(keys))
        return {d: json.loads(v) if v else None for d, v in zip(domain_ids, values, strict=True)}

    def delete(self, domain_id: str) -> None:
        self._call(f"delete of {self.key(domain_id)}", lambda c: c.delete(self.key(domain_id)))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
