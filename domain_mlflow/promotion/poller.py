"""The poller: the reconciler that finds new versions and repairs drift.

One cycle reads what changed, not the history: the ``domain.*`` versions registered
after the newest one the config store has a record of, or up to
``POLL_LOOKBACK_SECONDS`` before the newest recorded read (a registration that
committed late), found through the registered models updated since then
(:func:`~domain_mlflow.registry.changed_versions`); when no full sweep is recorded
within ``POLL_FULL_SWEEP_SECONDS`` it reads them all. Then the due
promotions in batches of domains (each step one transaction per batch, their
registry calls side by side), the ``approval`` tags of the versions awaiting
approval, and drift repair under the domains' locks: one Redis ``MGET``, one LocalAI
``GET /v1/models``, and on a full sweep one search of the registered models (their
``production`` aliases).

Several pollers run side by side and share their reads: one at a time reads the
registry (the others wait for its requests instead of reading the same versions
again), each read and each full sweep is recorded in the config store with its
requests, so a full sweep by one counts for all; and they split the work through the
domains' locks: a domain another poller, a webhook or a command holds is left to it
(what it leaves due, the next cycle takes).
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from domain_mlflow.exceptions import DomainMlflowError
from domain_mlflow.naming import REGISTERED_MODEL_PREFIX
from domain_mlflow.promotion.drift import reconcile_alias
from domain_mlflow.promotion.engine import LOCK_TIMEOUT_SECONDS, Promoter
from domain_mlflow.promotion.review import apply_registry_reviews
from domain_mlflow.registry import (
    PRODUCTION_ALIAS,
    changed_versions,
    domain_of,
    paged,
    policy_tags,
    versions_since,
)
from domain_mlflow.sinks.config_store import domain_lock_name
from domain_mlflow.sinks.rows import State

_log = logging.getLogger(__name__)
_PAGE = 1000
# Domains processed together: each step one transaction for the whole batch.
_BATCH = 100
# Held while a poller reads the registry's changed versions and records their requests.
REGISTRY_READ_LOCK = "poller:registry-read"
# Due domains above which the policy tags come from one search per tag key.
_PRIME_ABOVE = 20


@dataclass
class PollReport:
    locked_out: bool = False  # kept for callers: pollers no longer shut each other out
    full_sweep: bool = False  # this cycle read every version, not only the new ones
    read_by_another: bool = False  # another poller was reading the registry: this one did not
    versions_seen: int = 0
    requested: int = 0
    processed: int = 0
    promoted: int = 0
    rejected: int = 0
    pending: int = 0
    awaiting_approval: int = 0  # passed the gate in manual mode, waiting for a person
    repaired: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _failure(what: str, error: BaseException) -> str:
    if isinstance(error, DomainMlflowError):
        return f"{what}: {error}"
    _log.error("processing %s failed", what, exc_info=error)
    return f"{what}: {type(error).__name__}: {error}"


class Poller:
    def __init__(self, promoter: Promoter, workers: int | None = None) -> None:
        """``workers``: batches processed side by side; by default one against a SQLite
        registry, else 4. A SQLite store's writes queue on one file lock, and its alias
        writes are mostly Python holding the GIL: a second batch's steps beside them
        cost more CPU in GIL hand-offs than they overlap (docs/benchmarks.md)."""
        self.promoter = promoter
        if workers is None:
            workers = 1 if promoter.registry.local_file else 4
        self.workers = max(1, min(workers, promoter.store.lock_holders))

    def poll_once(self) -> PollReport:
        report = PollReport()
        pattern = f"name LIKE '{REGISTERED_MODEL_PREFIX}%'"
        self._read_registry(pattern, report)
        self._process_due(pattern, report)
        self._apply_reviews(report)
        self._repair(pattern, report)
        report.errors = [self.promoter.targets.redact(error) for error in report.errors]
        return report

    def _read_registry(self, pattern: str, report: PollReport) -> None:
        """The registry's changed versions into requests, one poller at a time. A poller
        that finds another reading waits for it and reads nothing itself: once that read
        is done its requests are recorded with when it began (and whether it was a full
        sweep), and every poller's next read starts from the newest recorded one."""
        store = self.promoter.store
        with store.lock(REGISTRY_READ_LOCK, blocking=False) as reading:
            if reading:
                versions, started = self._changed_versions(pattern, report)
                report.versions_seen = len(versions)
                self._request_new(versions, report, datetime.fromtimestamp(started, UTC))
                return
        with store.lock(REGISTRY_READ_LOCK, timeout=LOCK_TIMEOUT_SECONDS):
            report.read_by_another = True

    def _changed_versions(self, pattern: str, report: PollReport) -> tuple[list[Any], float]:
        """The versions no poller may have seen yet, or all of them on a full sweep, and
        when the read began (``time.time()``).

        Unseen are those registered after the newest version the config store knows,
        and those whose registration committed late: a version becomes visible within
        ``POLL_LOOKBACK_SECONDS`` of its registration time, so one not visible when the
        newest recorded read began was registered at most that long before it. A full
        sweep is due when no poller's is recorded within ``POLL_FULL_SWEEP_SECONDS``."""
        settings, store = self.promoter.settings, self.promoter.store
        started = time.time()
        reads = store.registry_reads()
        if reads.latest is None or reads.full_sweep is None or \
                started - reads.full_sweep.timestamp() >= settings.poll_full_sweep_seconds:
            report.full_sweep = True
            return versions_since(self.promoter.client, pattern, None), started
        since = reads.latest.timestamp() - settings.poll_lookback_seconds
        newest = store.newest_registration()
        if newest is not None:
            since = min(newest.timestamp(), since)
        return changed_versions(self.promoter.client, pattern, int(since * 1000)), started

    def _request_new(self, versions: list[Any], report: PollReport, read_at: datetime) -> None:
        ours = {(domain_of(v.name), int(v.version)): v for v in versions if domain_of(v.name)}
        # Any record counts as decided: a version promoted by hand needs no automatic decision.
        known = self.promoter.store.known_versions(list(ours))
        # Oldest first, in one total order: pollers inserting the same keys side by side
        # take their row locks in the same order (else Postgres may find a deadlock).
        new = sorted(set(ours) - known, key=lambda pair: (pair[1], pair[0]))
        report.requested += self.promoter.store.add_requests([
            self.promoter.request_fields(domain, ours[(domain, number)],
                                         reason="found by the poller")
            for domain, number in new], read_at=read_at, full_sweep=report.full_sweep)

    def _process_due(self, pattern: str, report: PollReport) -> None:
        """Due promotions in batches of domains, batches side by side (each domain's own
        promotions stay in order). A domain whose lock is held elsewhere is left to its
        holder. Many due: the thresholds come from one search per policy tag key."""
        domains = sorted({p.domain_id for p in self.promoter.store.open_promotions(due_only=True)})
        if not domains:
            return
        # Many due: the policy tags of all domains in a few searches; a few: each its own.
        registry = self.promoter.registry
        tags = policy_tags(self.promoter.client, pattern, registry.each) \
            if len(domains) > _PRIME_ABOVE else None
        batches = [domains[start : start + _BATCH] for start in range(0, len(domains), _BATCH)]
        # Pollers started together begin at different batches instead of queueing on one.
        offset = random.randrange(len(batches))
        batches = batches[offset:] + batches[:offset]

        def process(batch: list[str]) -> tuple[list[Any], list[str]]:
            try:
                for domain in batch:  # just before the gate, so the cache is fresh
                    if tags is not None:  # a bad tag stops its batch here, reported
                        registry.prime_thresholds(domain, tags.get(domain, {}))
                    else:
                        registry.policy(domain)
                processed, _busy = self.promoter.process_domains(batch)
            except Exception as error:  # e.g. the config store down: next cycle retries
                return [], [_failure(f"{len(batch)} domains from {batch[0]}", error)]
            return processed, []

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            outcomes = pool.map(process, batches) if self.workers > 1 else map(process, batches)
            for processed, errors in outcomes:
                report.errors += errors
                for promotion in processed:
                    report.processed += 1
                    report.promoted += promotion.state is State.DONE
                    report.rejected += promotion.state is State.REJECTED
                    report.pending += promotion.state.is_due

    def _apply_reviews(self, report: PollReport) -> None:
        """Approvals set in the MLflow UI (the ``approval`` tag) on the versions awaiting
        approval, read in one search per 50 domains; expiry; what still waits is counted."""
        try:
            awaiting = self.promoter.store.awaiting_approval()
            tags = self._awaiting_tags(awaiting) if awaiting else {}
            for result in apply_registry_reviews(self.promoter, version_tags=tags):
                report.processed += 1
                report.promoted += bool(result.get("deployed"))
            report.awaiting_approval = len(self.promoter.store.awaiting_approval())
        except Exception as error:  # the next cycle tries again
            report.errors.append(_failure("approvals", error))

    def _awaiting_tags(self, awaiting: list[Any]) -> dict[tuple[str, int], Any]:
        from domain_mlflow.naming import registered_model_name

        oldest: dict[str, int] = {}
        for promotion in awaiting:
            oldest[promotion.domain_id] = min(promotion.registry_version,
                                              oldest.get(promotion.domain_id, 1 << 62))
        domains = sorted(oldest)
        filters = []
        for start in range(0, len(domains), 50):
            chunk = domains[start : start + 50]
            names = ", ".join(f"'{registered_model_name(domain)}'" for domain in chunk)
            filters.append(f"name IN ({names}) AND version_number >= "
                           f"{min(oldest[domain] for domain in chunk)}")
        found = self.promoter.registry.each(
            lambda where: paged(self.promoter.client.search_model_versions,
                                filter_string=where, max_results=_PAGE), filters)
        return {(domain_of(v.name), int(v.version)): v.tags for page in found for v in page}

    def _repair(self, pattern: str, report: PollReport) -> None:
        store = self.promoter.store
        names = [domain_lock_name(config.domain_id) for config in store.all_configs()]
        # Under the domains' locks no promotion moves a config or an alias while they
        # are compared; a domain another promoter holds is checked next cycle. One
        # awaiting a person changes nothing that serves: its domain is checked too.
        with store.lock_many(names) as held:
            busy = {p.domain_id for p in store.open_promotions() if p.state.is_due}
            configs = [c for c in store.all_configs()
                       if domain_lock_name(c.domain_id) in held and c.domain_id not in busy]
            self._repair_domains(pattern, configs, report)

    def _repair_domains(self, pattern: str, configs: list[Any], report: PollReport) -> None:
        if report.full_sweep:  # each alias event reaches the receivers at once (drift.py)
            self._repair_aliases(pattern, configs, report)
        try:
            self._repair_redis(configs, report)
            self._repair_localai(configs, report)
        except DomainMlflowError as error:
            report.errors.append(f"drift repair: {error}")

    def _repair_aliases(self, pattern: str, configs: list[Any], report: PollReport) -> None:
        """The production aliases, read in one search of the registered models (the
        dearest read of a cycle, so only on a full sweep)."""
        models = paged(self.promoter.client.search_registered_models, filter_string=pattern,
                       max_results=_PAGE)
        aliases = {domain_of(m.name): m.aliases.get(PRODUCTION_ALIAS) for m in models}
        for config in configs:
            alias = aliases.get(config.domain_id)
            done = reconcile_alias(self.promoter, config,
                                   int(alias) if alias is not None else None)
            if done:
                report.repaired.append(done)

    def _repair_redis(self, configs: list[Any], report: PollReport) -> None:
        drifted = self.promoter.targets.repair_redis(configs)
        report.repaired += [f"{config.domain_id}: redis key" for config in drifted]

    def _repair_localai(self, configs: list[Any], report: PollReport) -> None:
        targets = self.promoter.targets
        if targets.localai is None or not configs:
            return
        listed = targets.localai.serving_names()
        for config in configs:
            if config.serving_name in listed and config.model_version in listed:
                continue
            run_id = self.promoter.registry.version(config.domain_id,
                                                    config.registry_version).run_id
            targets.serve(config.serving_name, config.domain_id, config.model_version,
                          run_id, None, config.semver)
            report.repaired.append(f"{config.domain_id}: localai serving name")

    def run(self, interval: float, stop: threading.Event | None = None) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set; after the first cycle
        the process's heap is frozen out of the garbage collector (:func:`settle_heap`)."""
        stop = stop or threading.Event()
        settled = False
        while not stop.is_set():
            try:
                report = self.poll_once()
                if report.requested or report.processed or report.repaired or report.errors:
                    _log.info("poll: %s", report.as_dict())
            except DomainMlflowError as error:
                _log.error("poll cycle failed: %s", self.promoter.targets.redact(str(error)))
            except Exception:  # the registry or a service down: a daemon keeps polling
                _log.exception("poll cycle failed")
            if not settled:
                settle_heap()
                settled = True
            stop.wait(interval)


# Young-generation collections per full one once the heap is frozen (Python's default: 10).
FULL_COLLECTION_EVERY = 100


def settle_heap() -> None:
    """Collect, then freeze what is left (``gc.freeze``): the modules, clients and caches
    a daemon keeps for its life. Python's full collections then skip those ~500,000
    objects, which cost a poller 0.3-0.6 s of CPU in a cycle of 1,000 promotions
    (docs/benchmarks.md). Done once, after the first cycle: a frozen object that later
    ends up in a garbage cycle is never freed, so what is frozen must be what lives as
    long as the process.

    A full collection waits for the survivors to reach a quarter of the objects not
    frozen, so after the freeze it would come every 10 young collections (2 to 4 in a
    burst of 1,000 promotions, each walking everything the burst holds): it is allowed
    one in FULL_COLLECTION_EVERY instead."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
