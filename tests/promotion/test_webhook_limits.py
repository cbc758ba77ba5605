"""The receiver's server limits, over raw sockets: whatever a request claims about its
length, however slowly it is sent, the answer is a JSON 4xx and nothing is held."""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import pytest
import requests

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.promotion.webhook import PATH, WebhookLimits, WebhookReceiver
from domain_mlflow.settings import load_settings
from tests.promotion_helpers import make_promoter

SECRET = "limits-secret"
LIMITS = WebhookLimits(max_body_bytes=64 * 1024, header_timeout_seconds=1.0,
                       body_timeout_seconds=1.0)


@pytest.fixture
def running():
    receiver = WebhookReceiver(make_promoter("webhook"), SECRET, LIMITS)
    server = receiver.serve("127.0.0.1", 0)
    yield server
    receiver.stop()


@pytest.fixture
def address(running):
    return running.server_address


def test_keep_alive_connections_are_accepted_with_nagles_algorithm_off(running):
    session = requests.Session()
    host, port = running.server_address
    for _ in range(2):  # the second answer on the connection is the one Nagle would hold
        assert session.get(f"http://{host}:{port}/healthz", timeout=10).status_code == 200
    connections = list(running.server.server_state.connections)
    assert len(connections) == 1
    sock = connections[0].transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    session.close()


def _connect(address) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(length_header: str | None = None, extra: str = "") -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if length_header is not None:
        lines.append(length_header)
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode("latin-1")


def _answer(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of the one response on ``sock`` (read until it closes)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")]
        if length and len(body) >= length[0]:
            break
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head.split()[1]), json.loads(body)


def _send_until_answered(sock: socket.socket, chunks) -> None:
    """Send ``chunks`` until the server answers (or stops reading): a client that
    would go on sending forever."""
    for chunk in chunks:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "0x10", "\u00b2", "1, 2", ""])
def test_a_content_length_that_is_not_a_byte_count_is_a_json_400(address, length):
    with _connect(address) as sock:
        sock.sendall(_head(f"Content-Length: {length}") + b"x" * 100)
        status, answer = _answer(sock)
    assert status == 400
    assert "error" in answer


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(address):
    with _connect(address) as sock:
        sock.sendall(_head(f"Content-Length: {50 * 1024 * 1024}"))
        started = time.monotonic()
        status, answer = _answer(sock)
    assert status == 413
    assert "error" in answer
    assert time.monotonic() - started < 1.0  # no wait for 50 MiB that never come


def test_a_chunked_body_over_the_limit_is_cut_off_at_the_limit(address):
    chunk = b"x" * 8192
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with _connect(address) as sock:
        sock.sendall(_head("Transfer-Encoding: chunked"))
        _send_until_answered(sock, [framed] * 2048)  # up to 16 MiB
        status, answer = _answer(sock)
    assert status == 413
    assert "64" in answer["error"] or str(LIMITS.max_body_bytes) in answer["error"]


def test_a_body_longer_than_its_content_length_is_not_read_past_it(address):
    # h11 frames the request by Content-Length: the rest is a new (bad) request.
    with _connect(address) as sock:
        sock.sendall(_head("Content-Length: 2") + b"{}" + b"garbage" * 1000)
        status, answer = _answer(sock)
    assert status == 401  # the 2-byte body was read and judged unsigned
    assert "error" in answer


def test_a_sender_slower_than_the_body_timeout_gets_a_408(address):
    with _connect(address) as sock:
        sock.sendall(_head("Content-Length: 100") + b"x" * 10)
        started = time.monotonic()
        status, answer = _answer(sock)
        waited = time.monotonic() - started
    assert status == 408
    assert "error" in answer
    assert LIMITS.body_timeout_seconds - 0.2 < waited < LIMITS.body_timeout_seconds + 3


@pytest.mark.parametrize("sent", [b"", b"POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\n"])
def test_a_connection_that_never_completes_its_request_head_is_closed(address, sent):
    with _connect(address) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        status, answer = _answer(sock)
        waited = time.monotonic() - started
        assert sock.recv(1) == b""  # closed
    assert status == 408
    assert "error" in answer
    assert waited < LIMITS.header_timeout_seconds + 3


def test_a_request_head_growing_past_the_header_limit_is_a_json_400(address):
    with _connect(address) as sock:
        # Not yet complete (no blank line) and past WEBHOOK_MAX_HEADER_BYTES.
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Padding: {'p' * 40000}".encode())
        status, answer = _answer(sock)
    assert status == 400
    assert "error" in answer


def test_a_whole_request_head_over_the_header_limit_in_one_write_is_a_json_431(address):
    padding = "p" * (LIMITS.max_header_bytes + 100)
    with _connect(address) as sock:
        sock.sendall(_head("Content-Length: 2", extra=f"X-Padding: {padding}\r\n") + b"{}")
        status, answer = _answer(sock)
    assert status == 431
    assert answer == {"error": f"request head over {LIMITS.max_header_bytes} bytes"}


def test_stalled_senders_hold_no_thread_and_do_not_block_others(tmp_path):
    limits = WebhookLimits(body_timeout_seconds=5.0, header_timeout_seconds=5.0)
    receiver = WebhookReceiver(make_promoter("webhook"), SECRET, limits)
    server = receiver.serve("127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}{PATH}"
    threads_before = threading.active_count()
    stalled = []
    try:
        for _ in range(200):
            sock = _connect(server.server_address)
            sock.sendall(_head("Content-Length: 1000") + b"x" * 10)
            stalled.append(sock)
        time.sleep(0.5)
        assert threading.active_count() <= threads_before + 1
        started = time.monotonic()
        answer = requests.post(url, data=b"{}", timeout=5)
        assert answer.status_code == 401  # answered, not queued behind the stalled ones
        assert time.monotonic() - started < 2.0
    finally:
        for sock in stalled:
            sock.close()
        receiver.stop()


@pytest.mark.parametrize(("variable", "value"), [
    ("WEBHOOK_MAX_BODY_BYTES", "-1"), ("WEBHOOK_MAX_BODY_BYTES", "1MiB"),
    ("WEBHOOK_MAX_HEADER_BYTES", "\u00b2"), ("WEBHOOK_HEADER_TIMEOUT_SECONDS", "0"),
    ("WEBHOOK_BODY_TIMEOUT_SECONDS", "nan"), ("WEBHOOK_KEEPALIVE_SECONDS", "1.5"),
    ("WEBHOOK_BACKLOG", "0"), ("WEBHOOK_LIMIT_CONCURRENCY", "lots"),
    ("WEBHOOK_WORKERS", "65"),
])
def test_a_bad_webhook_setting_is_an_error_naming_the_variable(variable, value):
    with pytest.raises(ConfigError, match=variable):
        load_settings({variable: value})


def test_the_webhook_settings_become_the_receivers_limits():
    assert WebhookLimits.from_settings(load_settings({})) == WebhookLimits()
    limits = WebhookLimits.from_settings(load_settings({
        "WEBHOOK_MAX_BODY_BYTES": "2048", "WEBHOOK_BODY_TIMEOUT_SECONDS": "2.5",
        "WEBHOOK_BACKLOG": "4096", "WEBHOOK_WORKERS": "3"}))
    assert (limits.max_body_bytes, limits.body_timeout_seconds, limits.backlog,
            limits.workers) == (2048, 2.5, 4096, 3)
