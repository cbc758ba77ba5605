"""The webhook receiver's HTTP side: a Starlette app served by uvicorn.

uvicorn (h11) parses the request line and headers; a malformed request, a bad
``Content-Length`` or a head still incomplete past ``WEBHOOK_MAX_HEADER_BYTES`` gets a
JSON 400 from :class:`ReceiverProtocol` before the app runs; a complete head over that
size gets 431 from the app. The app reads the body as a stream and
stops at ``WEBHOOK_MAX_BODY_BYTES`` (413) or ``WEBHOOK_BODY_TIMEOUT_SECONDS`` (408),
whatever length the request claims, then hands it to :meth:`WebhookReceiver.handle` on
a thread (it talks to the config store). A connection idle or slow in sending its
request head is closed after ``WEBHOOK_HEADER_TIMEOUT_SECONDS``. No thread is held
per connection: waiting senders cost one asyncio protocol object each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.promotion.webhook import PATH, WebhookLimits, WebhookReceiver

_log = logging.getLogger(__name__)

_CLOSE = {"connection": "close"}
_BYTE_COUNT = 19  # digits: more is past any limit we could be set to


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def _declared_length(value: str | None, limit: int) -> None:
    """Refuse a ``Content-Length`` that is not a byte count or is over the limit up front;
    the streamed read enforces the limit whatever the header said."""
    if value is None:
        return
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= _BYTE_COUNT):
        raise _Refused(400, "Content-Length is not a byte count")
    if int(text) > limit:
        raise _Refused(413, f"body over {limit} bytes")


def _head_size(request: Request, limit: int) -> None:
    """h11 bounds a head only while it is incomplete; one that arrived whole in a single
    read is measured here (request line plus each ``name: value`` line)."""
    size = len(request.method) + len(request.scope.get("raw_path", b"")) + 12
    size += sum(len(name) + len(value) + 4 for name, value in request.scope["headers"])
    if size > limit:
        raise _Refused(431, f"request head over {limit} bytes")


async def _read_body(request: Request, limits: WebhookLimits) -> bytes:
    _head_size(request, limits.max_header_bytes)
    _declared_length(request.headers.get("content-length"), limits.max_body_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise _Refused(413, f"body over {limits.max_body_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise _Refused(408, f"body not received within {limits.body_timeout_seconds:g} s") \
            from None
    return b"".join(chunks)


def create_app(receiver: WebhookReceiver, lifespan: Any = None) -> Starlette:
    """The ASGI app: ``POST /webhooks/mlflow`` and ``GET /healthz``; every answer is JSON."""

    async def deliver(request: Request) -> Response:
        try:
            body = await _read_body(request, receiver.limits)
        except _Refused as refused:
            # The rest of the body is not read: close rather than keep the connection.
            return JSONResponse({"error": refused.error}, refused.status, headers=_CLOSE)
        except ClientDisconnect:
            return JSONResponse({"error": "client went away"}, 400, headers=_CLOSE)
        status, answer = await run_in_threadpool(receiver.handle, dict(request.headers), body)
        return JSONResponse(answer, status)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return JSONResponse({"error": error.detail}, error.status_code, headers=error.headers)

    return Starlette(routes=[Route(PATH, deliver, methods=["POST"]),
                             Route("/healthz", health, methods=["GET"])],
                     exception_handlers={HTTPException: http_error}, lifespan=lifespan)


def _raw_response(status: int, reason: str, error: str) -> bytes:
    body = json.dumps({"error": error}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class ReceiverConfig(uvicorn.Config):
    """uvicorn's config plus the deadline for a request head, which uvicorn lacks."""

    def __init__(self, app: Any, *, header_timeout_seconds: float, **options: Any) -> None:
        super().__init__(app, **options)
        self.header_timeout_seconds = header_timeout_seconds


class ReceiverProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request head and JSON for the 400
    it sends itself. uvicorn only times out idle keep-alive connections: without this a
    sender trickling its headers, or connecting and sending nothing, is kept forever."""

    def __init__(self, config: Any, server_state: Any, app_state: Any,
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timeout = getattr(config, "header_timeout_seconds", 10.0)
        self._head_deadline: asyncio.TimerHandle | None = None

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self._head_timeout, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            # No request has been parsed yet, so h11 cannot frame an answer: write it raw.
            self.transport.write(_raw_response(
                408, "Request Timeout",
                f"request head not received within {self._head_timeout:g} s"))
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if before is None or before.response_complete:
            self._arm_head_deadline()  # bytes of a new request head
        super().data_received(data)
        if self.cycle is not before:
            self._disarm_head_deadline()  # its head is complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": f"invalid HTTP request (request line, headers or "
                                    f"Content-Length): {msg}"}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        with contextlib.suppress(h11.LocalProtocolError):
            self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers,
                                                             reason=b"Bad Request")))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


def server_config(app: Any, limits: WebhookLimits, **options: Any) -> ReceiverConfig:
    """The uvicorn configuration of a receiver with ``limits``."""
    return ReceiverConfig(
        app, http=ReceiverProtocol, loop="asyncio", interface="asgi3",
        header_timeout_seconds=limits.header_timeout_seconds,
        backlog=limits.backlog, limit_concurrency=limits.limit_concurrency,
        timeout_keep_alive=limits.keepalive_seconds,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        timeout_graceful_shutdown=5, server_header=False,
        log_config=None, access_log=False, **options)


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket on ``host:port``; a clear error if that is not possible.

    Made as TCP explicitly: asyncio turns Nagle's algorithm off on an accepted connection
    only when its socket says ``IPPROTO_TCP`` (a plain ``socket.socket()`` says 0), and
    with it on every keep-alive answer after the first waits ~40 ms for the sender's
    delayed ACK (uvicorn issue #3149)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise ConfigError(f"the webhook receiver cannot listen on {host}:{port}: "
                          f"{error.strerror or error}") from None
    sock.set_inheritable(True)
    return sock


@dataclass
class ReceiverServer:
    """A running uvicorn server in a background thread."""

    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket
    server_address: tuple[str, int]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def start_server(receiver: WebhookReceiver, host: str, port: int,
                 startup_seconds: float = 10.0) -> ReceiverServer:
    """Serve ``receiver`` from a background thread; returns once it accepts requests."""
    limits = receiver.limits
    sock = listen(host, port, limits.backlog)
    server = uvicorn.Server(server_config(create_app(receiver), limits, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="webhook-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_seconds
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ConfigError("the webhook receiver's HTTP server did not start")
        time.sleep(0.01)
    address = sock.getsockname()
    return ReceiverServer(server, thread, sock, (address[0], address[1]))


# --- several worker processes (WEBHOOK_WORKERS > 1) --------------------------------


def app_from_environment() -> Starlette:
    """The app of one worker process, wired from the environment (uvicorn ``factory``)."""
    from domain_mlflow.promotion.engine import Promoter
    from domain_mlflow.services import Services
    from domain_mlflow.settings import load_settings

    settings = load_settings()
    receiver = WebhookReceiver(Promoter.from_services(Services(settings), "webhook"),
                               settings.webhook_secret or "",
                               WebhookLimits.from_settings(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        receiver.start_worker()
        yield
        await run_in_threadpool(receiver.stop_worker)

    return create_app(receiver, lifespan=lifespan)


def run_workers(host: str, port: int, limits: WebhookLimits) -> None:
    """Serve with ``limits.workers`` processes on one socket until SIGINT/SIGTERM; each
    process builds its own receiver from the environment. Blocks."""
    from uvicorn.supervisors import Multiprocess

    sock = listen(host, port, limits.backlog)
    config = server_config(f"{__name__}:app_from_environment", limits, factory=True,
                           lifespan="on", workers=limits.workers)
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
