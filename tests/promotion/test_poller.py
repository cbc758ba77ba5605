"""The poller's cycle reads what changed: versions registered since the watermark (with
a lookback), all of them on a full sweep, and the approvals of the versions waiting."""

from __future__ import annotations

import dataclasses
import gc
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from mlflow.tracking import MlflowClient

from domain_mlflow.promotion.poller import REGISTRY_READ_LOCK, Poller
from tests.promotion_helpers import (
    PASSING,
    assert_everywhere,
    make_promoter,
    register_domain_version,
)

DOMAIN = "0x5678-SQLAgent"


def _poller(**settings: float) -> Poller:
    promoter = make_promoter("poller")
    promoter.settings = dataclasses.replace(promoter.settings, **settings)
    return Poller(promoter)


def _registered_late(version, seconds: float, isolated_mlflow: str) -> None:
    """As if ``version``'s registration had committed ``seconds`` after its timestamp
    (MLflow stamps its registered model's update time with it in the same transaction)."""
    connection = sqlite3.connect(isolated_mlflow[len("sqlite:///"):])
    with connection:
        connection.execute("UPDATE model_versions SET creation_time = creation_time - ? "
                           "WHERE name = ? AND version = ?",
                           (int(seconds * 1000), version.name, int(version.version)))
        connection.execute("UPDATE registered_models SET last_updated_time = ? WHERE name = ?",
                           (int(version.creation_timestamp) - int(seconds * 1000),
                            version.name))
    connection.close()


def test_after_the_first_sweep_a_cycle_reads_only_the_new_versions(stack):
    poller = _poller(poll_lookback_seconds=0.0)
    for _ in range(6):
        register_domain_version(DOMAIN, PASSING)
    first = poller.poll_once()
    assert (first.full_sweep, first.versions_seen, first.requested) == (True, 6, 6)

    quiet = poller.poll_once()
    # The newest known version is at the watermark itself; the five older ones are not read.
    assert (quiet.full_sweep, quiet.versions_seen, quiet.requested, quiet.processed) == (
        False, 1, 0, 0), quiet

    newest = register_domain_version(DOMAIN, PASSING)
    report = poller.poll_once()
    assert (report.full_sweep, report.requested, report.promoted) == (False, 1, 1), report
    assert report.versions_seen <= 2, report
    assert_everywhere(stack, newest, domain=DOMAIN)


def test_a_version_committed_late_within_the_lookback_is_found(stack, isolated_mlflow):
    poller = _poller(poll_lookback_seconds=30.0)
    register_domain_version(DOMAIN, PASSING)
    poller.poll_once()
    late = register_domain_version(DOMAIN, PASSING)
    _registered_late(late, 10.0, isolated_mlflow)  # older than the newest version known
    report = poller.poll_once()
    assert (report.full_sweep, report.requested, report.promoted) == (False, 1, 1), report
    assert_everywhere(stack, late, domain=DOMAIN)


def test_one_later_than_the_lookback_waits_for_the_next_full_sweep(stack, isolated_mlflow):
    poller = _poller(poll_lookback_seconds=1.0, poll_full_sweep_seconds=3600.0)
    register_domain_version(DOMAIN, PASSING)
    poller.poll_once()
    missed = register_domain_version(DOMAIN, PASSING)
    _registered_late(missed, 120.0, isolated_mlflow)
    assert poller.poll_once().requested == 0  # incremental: beyond its lookback

    time.sleep(1.0)  # the recorded sweep is now older than the next poller's period
    sweeping = _poller(poll_lookback_seconds=1.0, poll_full_sweep_seconds=1.0)
    report = sweeping.poll_once()
    assert (report.full_sweep, report.requested, report.promoted) == (True, 1, 1), report
    assert_everywhere(stack, missed, domain=DOMAIN)


def test_one_pollers_full_sweep_counts_for_all_and_anothers_first_cycle_reads_what_is_new(
        stack):
    for _ in range(4):
        register_domain_version(DOMAIN, PASSING)
    sweeping, started = _poller(poll_lookback_seconds=0.0), datetime.now(UTC)
    assert (sweeping.poll_once().full_sweep, sweeping.poll_once().full_sweep) == (True, False)
    reads = sweeping.promoter.store.registry_reads()
    assert started <= reads.full_sweep <= reads.latest <= datetime.now(UTC)

    newest = register_domain_version(DOMAIN, PASSING)
    report = _poller(poll_lookback_seconds=0.0).poll_once()  # a new poller, its first cycle
    # From the newest recorded read: the version at the watermark and the new one only.
    assert (report.full_sweep, report.versions_seen, report.requested, report.promoted) == (
        False, 2, 1, 1), report
    assert sweeping.promoter.store.registry_reads().full_sweep == reads.full_sweep
    assert_everywhere(stack, newest, domain=DOMAIN)


def test_after_a_burst_the_lookback_stops_at_the_previous_cycle(stack):
    poller = _poller(poll_lookback_seconds=0.0)
    for index in range(5):
        register_domain_version(f"0x{index:04x}-Burst", PASSING)
    assert poller.poll_once().requested == 5
    assert poller.poll_once().versions_seen <= 5  # the burst, read again once at most
    # From now on only the newest known version is at the watermark.
    assert poller.poll_once().versions_seen == 1


def test_an_approval_tag_set_in_the_registry_is_carried_out_without_a_sweep(stack, monkeypatch):
    monkeypatch.setenv("PROMOTION_MODE", "manual")
    poller = _poller(poll_lookback_seconds=0.0)
    for _ in range(3):
        register_domain_version("0x1111-Older", PASSING)
    waiting = register_domain_version(DOMAIN, PASSING)
    assert poller.poll_once().awaiting_approval == 2  # one per domain
    MlflowClient().set_model_version_tag(waiting.name, waiting.version, "approval", "approved")

    report = poller.poll_once()
    assert (report.full_sweep, report.promoted, report.awaiting_approval) == (False, 1, 1), \
        report
    assert_everywhere(stack, waiting, domain=DOMAIN)


def test_two_pollers_split_a_burst_and_each_version_is_promoted_once(stack):
    domains = [f"0x{index:04x}-Burst" for index in range(12)]
    versions = {domain: register_domain_version(domain, PASSING) for domain in domains}
    first, second = _poller(), _poller()
    with ThreadPoolExecutor(2) as pool:  # side by side, each over its own connections
        reports = list(pool.map(Poller.poll_once, [first, second]))
    assert sum(report.promoted for report in reports) == len(domains), reports
    assert [report.errors for report in reports] == [[], []]
    store = first.promoter.store
    for domain, version in versions.items():
        assert [(h.action, h.registry_version) for h in store.history(domain)] == [
            ("promote", int(version.version))]
    assert_everywhere(stack, versions[domains[0]], domain=domains[0])


def test_a_poller_finding_another_reading_waits_for_its_requests_and_reads_nothing(stack):
    domains = [f"0x{index:04x}-Shared" for index in range(3)]
    versions = [register_domain_version(domain, PASSING) for domain in domains]
    reader = make_promoter("reader")
    waiting = _poller()
    holding, done = threading.Event(), []

    def read_elsewhere() -> None:  # another poller's read: the lock, then its requests
        with reader.store.lock(REGISTRY_READ_LOCK) as got:
            assert got
            holding.set()
            time.sleep(1.0)  # meanwhile the poller below is waiting
            done.append(reader.store.add_requests(
                [reader.request_fields(domain, version, reason="read elsewhere")
                 for domain, version in zip(domains, versions, strict=True)],
                read_at=datetime.now(UTC)))

    other = threading.Thread(target=read_elsewhere)
    other.start()
    assert holding.wait(10)
    report = waiting.poll_once()
    other.join()
    assert done == [3]
    assert (report.read_by_another, report.versions_seen, report.requested) == (True, 0, 0)
    assert report.promoted == 3, report  # the other poller's requests, carried out here
    assert_everywhere(stack, versions[0], domain=domains[0])


def test_the_next_read_reaches_back_from_another_pollers_newer_read(stack):
    behind, ahead = _poller(poll_lookback_seconds=0.0), _poller(poll_lookback_seconds=0.0)
    register_domain_version(DOMAIN, PASSING)
    behind.poll_once()  # its first read, then it reads nothing for a while
    ahead.poll_once()
    for _ in range(2):
        register_domain_version(DOMAIN, PASSING)
        before = datetime.now(UTC)
        assert ahead.poll_once().requested == 1
    assert before <= ahead.promoter.store.registry_reads().latest <= datetime.now(UTC)

    report = behind.poll_once()
    # From the newest recorded read: only the version at the watermark, not both that
    # were registered after its own previous read.
    assert (report.full_sweep, report.read_by_another, report.versions_seen) == (
        False, False, 1), report
    assert report.requested == 0


def test_a_running_poller_freezes_its_heap_once_after_its_first_cycle(stack, monkeypatch):
    frozen, thresholds = [], []  # the test process's own heap stays as it is
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(time.monotonic()))
    monkeypatch.setattr(gc, "set_threshold", lambda *limits: thresholds.append(limits))
    version = register_domain_version(DOMAIN, PASSING)
    poller = _poller()
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(0.05, stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not frozen and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1)  # about 20 more cycles
    stop.set()
    thread.join(timeout=60)
    assert len(frozen) == 1
    # Full collections one in 100 young ones from then on, the young ones as they were.
    assert thresholds == [(*gc.get_threshold()[:2], 100)]
    assert_everywhere(stack, version)  # and the cycles did their work


_FIRST_BURST = """
import json, sys
import mlflow
from mlflow.tracking import MlflowClient
from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.promotion.poller import Poller
from domain_mlflow.registry import register_version
from domain_mlflow.services import Services
from domain_mlflow.settings import load_settings
from tests.promotion_helpers import training_tags

poller = Poller(Promoter.from_services(Services(load_settings()), "poller"))
poller.poll_once()
with mlflow.start_run() as run:
    mlflow.log_text("{}", "merged_model/config.json")
for domain in ("first-a", "first-b", "first-c"):
    register_version(MlflowClient(), domain, run.info.artifact_uri + "/merged_model",
                     run.info.run_id, training_tags(domain))
loaded = set(sys.modules)
report = poller.poll_once()
print(json.dumps({"promoted": report.promoted, "errors": report.errors,
                  "imported": sorted(set(sys.modules) - loaded)}))
"""


def test_a_new_pollers_first_burst_waits_for_no_module_to_load(
        postgres_dsn, redis_url, isolated_mlflow, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "POSTGRES_DSN": postgres_dsn, "REDIS_URL": redis_url,
           "MLFLOW_TRACKING_URI": isolated_mlflow,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", _FIRST_BURST], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=True)
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert (outcome["promoted"], outcome["errors"]) == (3, [])
    assert outcome["imported"] == []
