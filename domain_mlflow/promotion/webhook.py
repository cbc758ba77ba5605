"""A receiver for MLflow's own registry webhooks (MLflow >= 3.3).

``POST /webhooks/mlflow`` checks ``X-MLflow-Signature`` = ``v1,`` + base64
HMAC-SHA256(secret, ``{delivery_id}.{timestamp}.{raw body}``) in constant time,
refuses timestamps more than 300 s away, answers a replayed delivery id without
acting on it, then records the promotion and hands the domain to a worker thread.
The poller stays the reconciler: an event lost here is found on its next cycle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

from domain_mlflow.exceptions import DomainMlflowError
from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.registry import PRODUCTION_ALIAS, domain_of
from domain_mlflow.sinks.rows import Kind

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


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The signature MLflow sends for this delivery."""
    content = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, now: float) -> str | None:
    """None when the delivery is authentic and fresh, else why it is refused."""
    delivery_id = headers.get(DELIVERY_HEADER.lower(), "")
    timestamp = headers.get(TIMESTAMP_HEADER.lower(), "")
    signature = headers.get(SIGNATURE_HEADER.lower(), "")
    if not (delivery_id and timestamp and signature):
        return "missing signature, timestamp or delivery id"
    if not timestamp.isdigit():
        return "timestamp is not a number"
    if abs(now - int(timestamp)) > MAX_AGE_SECONDS:
        return "timestamp is more than 300 seconds away"
    if not hmac.compare_digest(sign(secret, delivery_id, timestamp, body).encode(),
                               signature.encode()):
        return "bad signature"
    return None


class WebhookReceiver:
    """Turns verified MLflow events into promotions, processed by one worker thread."""

    def __init__(self, promoter: Promoter, secret: str) -> None:
        if not secret:
            from domain_mlflow.exceptions import ConfigError

            raise ConfigError("WEBHOOK_SECRET must be set to receive MLflow webhooks")
        self.promoter = promoter
        self.secret = secret
        self.work: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._server: ThreadingHTTPServer | None = None

    # --- the request, without HTTP (tested directly and by the server) ----------------

    def handle(self, headers: dict[str, str], body: bytes,
               now: float | None = None) -> tuple[int, dict[str, Any]]:
        headers = {key.lower(): value for key, value in headers.items()}
        problem = verify(self.secret, headers, body, time.time() if now is None else now)
        if problem:
            return 401, {"error": problem}
        delivery_id = headers[DELIVERY_HEADER.lower()]
        store = self.promoter.store
        if store.has_delivery(delivery_id):
            return 200, {"status": "duplicate", "delivery_id": delivery_id}
        try:
            event = json.loads(body)
            name = f"{event['entity']}.{event['action']}"
            data = event["data"]
        except (ValueError, KeyError, TypeError):
            return 400, {"error": "body is not an MLflow webhook payload"}
        try:
            outcome = self._dispatch(name, data)
        except (ValueError, KeyError, TypeError) as error:
            return 400, {"error": f"payload without a usable name/version: {error}"}
        except DomainMlflowError as error:
            return 503, {"error": str(error)}
        except Exception as error:  # the registry unreachable: MLflow retries a 5xx
            _log.exception("webhook %s could not be handled", name)
            return 503, {"error": f"{type(error).__name__}: {error}"}
        store.remember_delivery(delivery_id, name)
        return (202 if outcome.get("status") == "accepted" else 200), outcome

    def _dispatch(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        domain = domain_of(str(data.get("name", "")))
        if event not in EVENTS or domain is None:
            return {"status": "ignored", "event": event}
        version = int(data["version"])
        if event != "model_version_alias.created" and (
            data.get("key") in OUR_TAGS
            or (domain, version) in self.promoter.store.versions_with_promotions([domain])
        ):
            # Our own tag writes echo back here, and a decided version needs nothing more.
            return {"status": "ignored", "event": event, "reason": "already decided"}
        if event == "model_version_alias.created":
            if data.get("alias") != PRODUCTION_ALIAS:
                return {"status": "ignored", "event": event}
            config = self.promoter.store.get_config(domain)
            if config and config.registry_version == version:
                return {"status": "ignored", "event": event, "reason": "already production"}
            promotion = self.promoter.request(
                domain, version, kind=Kind.FORCE,
                request_key=f"alias:{domain}:{version}:{config.version_number if config else 0}",
                reason=f"production alias set to version {version} in the registry")
        elif event == "model_version.created" and isinstance(data.get("tags"), dict):
            # The signed payload carries the version's tags and run: no registry round trip.
            created = SimpleNamespace(name=data["name"], version=version,
                                      run_id=data.get("run_id"), tags=data.get("tags") or {})
            promotion = self.promoter.request_for(domain, created, reason=f"webhook {event}")
        else:
            promotion = self.promoter.request(domain, version, reason=f"webhook {event}")
        self.work.put(domain)
        return {"status": "accepted", "event": event, "promotion_id": promotion.id,
                "domain_id": domain, "registry_version": version}

    # --- threads ------------------------------------------------------------------------

    def _drain(self) -> None:
        while (domain := self.work.get()) is not None:
            try:
                self.promoter.process_domain(domain)
            except DomainMlflowError as error:
                _log.error("webhook promotion of %s failed: %s", domain, error)
            except Exception:  # keep the worker alive; the poller reconciles the rest
                _log.exception("webhook promotion of %s failed", domain)

    def serve(self, host: str = "127.0.0.1", port: int = 8090) -> ThreadingHTTPServer:
        """Start the worker and the HTTP server (in background threads); returns the server."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._reply(200, {"status": "ok"})
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path != PATH:
                    self._reply(404, {"error": "not found"})
                elif length > MAX_BODY_BYTES:
                    self._reply(413, {"error": "body too large"})
                else:
                    body = self.rfile.read(length)
                    self._reply(*receiver.handle(dict(self.headers.items()), body))

            def log_message(self, format: str, *args: Any) -> None:
                _log.debug("webhook %s", format % args)

        self._worker = threading.Thread(target=self._drain, name="webhook-worker", daemon=True)
        self._worker.start()
        self._server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=self._server.serve_forever, name="webhook-http",
                         daemon=True).start()
        return self._server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.work.put(None)
        if self._worker is not None:
            self._worker.join(timeout=30)


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
