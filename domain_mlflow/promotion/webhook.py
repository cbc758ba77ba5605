"""A receiver for MLflow's own registry webhooks (MLflow >= 3.3).

``POST /webhooks/mlflow`` checks ``X-MLflow-Signature`` = ``v1,`` + base64
HMAC-SHA256(secret, ``{delivery_id}.{timestamp}.{raw body}``) in constant time,
refuses timestamps more than 300 s away, accepts each delivery id once (one atomic
insert in the config store), then records the promotion and hands the domain to a
worker thread. The poller stays the reconciler: an event lost here is found on its
next cycle. :meth:`WebhookReceiver.handle` is the whole decision without HTTP; the
ASGI app and the uvicorn server around it live in :mod:`.webhook_http`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from domain_mlflow.exceptions import ConfigError, DomainMlflowError
from domain_mlflow.promotion.drift import reconcile_alias
from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.promotion.review import APPROVAL_TAG, apply_registry_reviews
from domain_mlflow.registry import PRODUCTION_ALIAS, domain_of, production_version

if TYPE_CHECKING:
    from domain_mlflow.promotion.webhook_http import ReceiverServer

_log = logging.getLogger(__name__)

PATH = "/webhooks/mlflow"
SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
MAX_AGE_SECONDS = 300
MAX_BODY_BYTES = 1 << 20
EVENTS = ("model_version.created", "model_version_tag.set", "model_version_alias.created")
# Version tags the promoter itself writes: their events are echoes, not news.
OUR_TAGS = {"stage", "promotion_status", "promotion_reason", "promotion_error"}

# ASCII digits only: str.isdigit() also takes "²", which int() then refuses. Twelve
# digits reach the year 33658; anything longer cannot be within 300 s of now.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# MLflow sends a UUID; this admits any id a sender could sensibly use as a key.
_DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_VERSION = re.compile(r"[1-9][0-9]{0,9}")


@dataclass(frozen=True)
class WebhookLimits:
    """What one receiver process accepts; see ``WEBHOOK_*`` in docs/promotion.md."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_header_bytes: int = 16 * 1024
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 10.0
    keepalive_seconds: int = 5
    backlog: int = 2048
    limit_concurrency: int = 1024
    workers: int = 1

    @classmethod
    def from_settings(cls, settings: Any) -> WebhookLimits:
        return cls(max_body_bytes=settings.webhook_max_body_bytes,
                   max_header_bytes=settings.webhook_max_header_bytes,
                   header_timeout_seconds=settings.webhook_header_timeout_seconds,
                   body_timeout_seconds=settings.webhook_body_timeout_seconds,
                   keepalive_seconds=settings.webhook_keepalive_seconds,
                   backlog=settings.webhook_backlog,
                   limit_concurrency=settings.webhook_limit_concurrency,
                   workers=settings.webhook_workers)


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The signature MLflow sends for this delivery."""
    # surrogatepass: a header value is any text; signing must not be what raises on it.
    content = f"{delivery_id}.{timestamp}.".encode("utf-8", "surrogatepass") + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, now: float) -> str | None:
    """None when the delivery is authentic and fresh, else why it is refused.

    Total: any header text gives a reason, never an exception."""
    delivery_id = headers.get(DELIVERY_HEADER.lower(), "")
    timestamp = headers.get(TIMESTAMP_HEADER.lower(), "")
    signature = headers.get(SIGNATURE_HEADER.lower(), "")
    if not (delivery_id and timestamp and signature):
        return "missing signature, timestamp or delivery id"
    if not _TIMESTAMP.fullmatch(timestamp):
        return f"{TIMESTAMP_HEADER} is not a Unix time in whole seconds"
    if abs(now - int(timestamp)) > MAX_AGE_SECONDS:
        return f"timestamp is more than {MAX_AGE_SECONDS} seconds away"
    if not _DELIVERY_ID.fullmatch(delivery_id):
        return f"{DELIVERY_HEADER} must be 1-128 letters, digits or . _ : -"
    expected = sign(secret, delivery_id, timestamp, body).encode()
    if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass")):
        return "bad signature"
    return None


def parse_event(body: bytes) -> tuple[str, dict[str, Any]] | None:
    """``(entity.action, data)`` of an MLflow webhook payload, or None if it is not one."""
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
        return None
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        return None
    entity, action = event.get("entity"), event.get("action")
    if not (isinstance(entity, str) and isinstance(action, str)):
        return None
    return f"{entity}.{action}", event["data"]


def _version_of(data: dict[str, Any]) -> int:
    text = data.get("version")
    if isinstance(text, bool) or not isinstance(text, str | int) \
            or not _VERSION.fullmatch(str(text)):
        raise ValueError(f"version {str(text)[:40]!r} is not a registry version number")
    return int(text)


def _is_json(content_type: str | None) -> bool:
    return content_type is None or \
        content_type.split(";", 1)[0].strip().lower() == "application/json"


class WebhookReceiver:
    """Turns verified MLflow events into promotions, processed by one worker thread."""

    def __init__(self, promoter: Promoter, secret: str,
                 limits: WebhookLimits | None = None) -> None:
        if not secret:
            raise ConfigError("WEBHOOK_SECRET must be set to receive MLflow webhooks")
        self.promoter = promoter
        self.secret = secret
        self.limits = limits or WebhookLimits()
        self.work: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()  # queued domains: a burst queues each domain once
        self._alias_checks: set[str] = set()  # ... and those a production alias event named
        self._pending_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._http: ReceiverServer | None = None

    # --- the request, without HTTP (tested directly and by the server) ----------------

    def handle(self, headers: dict[str, str], body: bytes,
               now: float | None = None) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer for one delivery; never raises for any input."""
        headers = {str(key).lower(): value for key, value in headers.items()}
        problem = verify(self.secret, headers, body, time.time() if now is None else now)
        if problem:
            return 401, {"error": problem}
        if not _is_json(headers.get("content-type")):
            return 400, {"error": "Content-Type must be application/json"}
        event = parse_event(body)
        if event is None:
            return 400, {"error": "body is not an MLflow webhook payload"}
        name, data = event
        delivery_id = headers[DELIVERY_HEADER.lower()]
        store = self.promoter.store
        try:
            # One insert-or-nothing: of concurrent copies exactly one gets True.
            first = store.remember_delivery(delivery_id, name)
        except Exception as error:  # the config store unreachable: MLflow retries a 5xx
            _log.error("webhook %s: cannot record delivery %s: %s", name, delivery_id, error)
            return 503, {"error": f"config store unavailable: {type(error).__name__}"}
        if not first:
            return 200, {"status": "duplicate", "delivery_id": delivery_id}
        try:
            outcome = self._dispatch(name, data)
        except (ValueError, KeyError, TypeError) as error:
            self._forget(delivery_id)
            return 400, {"error": f"payload without a usable name/version: {error}"}
        except DomainMlflowError as error:
            self._forget(delivery_id)
            return 503, {"error": str(error)}
        except Exception as error:  # the registry unreachable: MLflow retries a 5xx
            _log.exception("webhook %s could not be handled", name)
            self._forget(delivery_id)
            # The detail (a driver's message may quote a DSN) stays in the receiver's log.
            return 503, {"error": f"{type(error).__name__}; see the receiver's log"}
        return (202 if outcome.get("status") == "accepted" else 200), outcome

    def _forget(self, delivery_id: str) -> None:
        """Un-record a delivery that was not handled, so MLflow's retry of it is."""
        try:
            self.promoter.store.forget_delivery(delivery_id)
        except Exception as error:  # the poller still reconciles what the retry would do
            _log.error("webhook delivery %s stays recorded though not handled: %s",
                       delivery_id, error)

    def _dispatch(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        domain = domain_of(str(data.get("name", "")))
        if event not in EVENTS or domain is None:
            return {"status": "ignored", "event": event}
        version = _version_of(data)
        if event == "model_version_tag.set" and data.get("key") == APPROVAL_TAG:
            if str(data.get("value", "")).strip().lower() not in ("approved", "rejected"):
                return {"status": "ignored", "event": event, "reason": "not a decision"}
            # Carried out by the worker: it reads the tag back from the registry first.
            self._queue(domain)
            return {"status": "accepted", "event": event, "domain_id": domain,
                    "registry_version": version, "review": data.get("value")}
        if event != "model_version_alias.created" and (
            data.get("key") in OUR_TAGS
            or bool(self.promoter.store.known_versions([(domain, version)]))
        ):
            # Our own tag writes echo back here, and a decided version needs nothing more.
            return {"status": "ignored", "event": event, "reason": "already decided"}
        if event == "model_version_alias.created":
            if data.get("alias") != PRODUCTION_ALIAS:
                return {"status": "ignored", "event": event}
            # The event may be late, or our own alias move: the worker compares the alias
            # as it stands with the config store, under the domain's lock.
            self._queue(domain, alias=True)
            return {"status": "accepted", "event": event, "domain_id": domain,
                    "registry_version": version, "check": "production alias"}
        if event == "model_version.created" and isinstance(data.get("tags"), dict):
            # The signed payload carries the version's tags and run: no registry round trip.
            created = SimpleNamespace(name=data["name"], version=version,
                                      run_id=data.get("run_id"), tags=data.get("tags") or {})
            promotion = self.promoter.request_for(domain, created, reason=f"webhook {event}")
        else:
            promotion = self.promoter.request(domain, version, reason=f"webhook {event}")
        self._queue(domain)
        return {"status": "accepted", "event": event, "promotion_id": promotion.id,
                "domain_id": domain, "registry_version": version}

    # --- threads ------------------------------------------------------------------------

    def _queue(self, domain: str, alias: bool = False) -> None:
        with self._pending_lock:
            if alias:
                self._alias_checks.add(domain)
            if domain in self._pending:
                return
            self._pending.add(domain)
        self.work.put(domain)

    def _check_alias(self, domain: str) -> None:
        """Carry out a production alias moved in the registry (see :mod:`drift`)."""
        with self.promoter.domain_locked(domain):
            config = self.promoter.store.get_config(domain)
            if config is None or self.promoter.store.open_promotions(domain, due_only=True):
                return  # nothing serves yet, or a promotion is under way: the poller checks
            reconcile_alias(self.promoter, config, production_version(self.promoter.client,
                                                                      domain))

    def _drain(self) -> None:
        while (domain := self.work.get()) is not None:
            with self._pending_lock:
                # Before processing: a promotion recorded meanwhile queues the domain again.
                self._pending.discard(domain)
                alias = domain in self._alias_checks
                self._alias_checks.discard(domain)
            try:
                if alias:
                    self._check_alias(domain)
                apply_registry_reviews(self.promoter, [domain])
                self.promoter.process_domain(domain)
            except DomainMlflowError as error:
                _log.error("webhook promotion of %s failed: %s", domain, error)
            except Exception:  # keep the worker alive; the poller reconciles the rest
                _log.exception("webhook promotion of %s failed", domain)
            finally:
                self.work.task_done()  # ``work.join()`` waits for everything accepted so far

    def start_worker(self) -> None:
        """Start the thread that carries out accepted promotions (once)."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._drain, name="webhook-worker",
                                            daemon=True)
            self._worker.start()

    def stop_worker(self) -> None:
        if self._worker is not None:
            self.work.put(None)
            self._worker.join(timeout=30)
            self._worker = None

    def serve(self, host: str = "127.0.0.1", port: int = 8090) -> ReceiverServer:
        """Start the worker and uvicorn (in background threads) on ``host:port`` (0: any
        free port); the answer's ``server_address`` is the bound ``(host, port)``."""
        from domain_mlflow.promotion.webhook_http import start_server

        self.start_worker()
        self._http = start_server(self, host, port)
        return self._http

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None
        self.stop_worker()


def register_webhook(client: Any, url: str, secret: str, name: str = "domain-mlflow") -> Any:
    """Create the MLflow webhook that sends our events to ``url``; an existing webhook of
    that name is updated instead, so registering again (every deploy) adds none."""
    description = "domain-mlflow promotion receiver"
    page_token = None
    while True:
        page = client.list_webhooks(page_token=page_token)
        for webhook in page:
            if webhook.name == name:
                return client.update_webhook(webhook.webhook_id, url=url, events=list(EVENTS),
                                             secret=secret, description=description,
                                             status="ACTIVE")
        page_token = page.token
        if not page_token:
            break
    return client.create_webhook(name=name, url=url, events=list(EVENTS), secret=secret,
                                 description=description)
