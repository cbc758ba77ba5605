"""500 concurrent signed deliveries to ``domain-mlflow webhook``: all answered 2xx, each
version decided once, and the receiver's memory back where it was."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import requests

from domain_mlflow.promotion.webhook import PATH, sign
from tests.mlflow_server import free_port
from tests.promotion_helpers import PASSING, make_promoter, register_domain_version

SECRET = "burst-secret"
DELIVERIES = 500
DOMAINS = [f"burst-{n}" for n in range(4)]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def signed_delivery(version, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """A fresh ``model_version.created`` delivery of ``version``, as MLflow signs it."""
    body = json.dumps({"entity": "model_version", "action": "created",
                       "timestamp": "2026-12-01T00:00:00+00:00",
                       "data": {"name": version.name, "version": str(version.version),
                                "run_id": version.run_id, "tags": dict(version.tags),
                                "source": version.source}}).encode()
    delivery_id, timestamp = str(uuid.uuid4()), str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
                  "X-MLflow-Timestamp": timestamp,
                  "X-MLflow-Signature": sign(secret, delivery_id, timestamp, body)}


def start_receiver(port: int, log, *options: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "domain_mlflow.cli", "webhook", "--port", str(port), *options],
        env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "the receiver exited at start"
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                return process
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the receiver did not start in 60 s"
        time.sleep(0.1)


def send_all(url: str, deliveries, concurrency: int) -> list[tuple[int | str, float]]:
    """POST every delivery, ``concurrency`` at a time; (status or error, seconds) each."""
    def send(delivery):
        body, headers = delivery
        started = time.perf_counter()
        try:
            status = requests.post(url, data=body, headers=headers, timeout=60).status_code
        except requests.RequestException as error:
            status = type(error).__name__
        return status, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(send, deliveries))


def test_a_burst_of_500_signed_deliveries_is_absorbed(services, tmp_path, monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    versions = [register_domain_version(domain, PASSING) for domain in DOMAINS]
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    with (tmp_path / "receiver.log").open("w") as log:
        receiver = start_receiver(port, log)
        try:
            warm_up = signed_delivery(SimpleNamespace(name="someone-else", version=1, run_id="r",
                                                      tags={}, source="models:/m"))
            assert requests.post(url, data=warm_up[0], headers=warm_up[1], timeout=10).ok
            rss_before = rss_bytes(receiver.pid)
            # Distinct delivery ids, a few versions: each is still to be decided once.
            deliveries = [signed_delivery(versions[n % len(versions)])
                          for n in range(DELIVERIES)]
            started = time.monotonic()
            answers = send_all(url, deliveries, concurrency=DELIVERIES)
            elapsed = time.monotonic() - started
            statuses = collections.Counter(status for status, _ in answers)
            assert all(isinstance(s, int) and 200 <= s < 300 for s in statuses), statuses
            assert elapsed < 60, f"{DELIVERIES} deliveries took {elapsed:.1f}s"

            store = make_promoter().store
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                promotions = [p for d in DOMAINS for p in store.latest_promotions(d, 50)]
                if len(promotions) == len(DOMAINS) and not any(p.is_open for p in promotions):
                    break
                time.sleep(0.2)
            per_version = collections.Counter((p.domain_id, p.registry_version)
                                              for p in promotions)
            assert per_version == {(d, 1): 1 for d in DOMAINS}
            assert all(p.state == "done" for p in promotions)
            time.sleep(1)  # connections closed, buffers freed
            grown = rss_bytes(receiver.pid) - rss_before
            assert grown < 50 * 1024 * 1024, f"receiver RSS grew {grown / 2**20:.0f} MB"
        finally:
            receiver.terminate()
            receiver.wait(timeout=30)
    assert receiver.returncode in (0, -15), (tmp_path / "receiver.log").read_text()[-3000:]


def test_several_worker_processes_accept_a_delivery_once(services, tmp_path, monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    version = register_domain_version(DOMAINS[0], PASSING)
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    body, headers = signed_delivery(version)
    with (tmp_path / "receiver.log").open("w") as log:
        receiver = start_receiver(port, log, "--workers", "2")
        try:
            answers = send_all(url, [(body, headers)] * 10, concurrency=10)
            statuses = collections.Counter(status for status, _ in answers)
            assert statuses == {202: 1, 200: 9}, statuses
            store = make_promoter().store
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and store.get_config(DOMAINS[0]) is None:
                time.sleep(0.2)
            assert store.get_config(DOMAINS[0]).registry_version == 1
        finally:
            receiver.terminate()
            receiver.wait(timeout=30)
    assert receiver.returncode in (0, -15), (tmp_path / "receiver.log").read_text()[-3000:]
