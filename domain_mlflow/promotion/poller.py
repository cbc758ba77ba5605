"""The poller: the reconciler that finds new versions and repairs drift.

One cycle: one paginated registry search for every ``domain.*`` version, one
config-store query for which versions are already decided, the due promotions,
then one search of the registered models (their aliases) and drift repair (the
production alias, Redis keys, LocalAI serving names). A named lock (Postgres advisory lock, or a
file lock beside SQLite) lets one poller run a cycle at a time; others skip it.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from domain_mlflow.exceptions import DomainMlflowError
from domain_mlflow.naming import REGISTERED_MODEL_PREFIX
from domain_mlflow.promotion.engine import Promoter, sync_localai
from domain_mlflow.registry import PRODUCTION_ALIAS, domain_of, move_production_alias

_log = logging.getLogger(__name__)
_PAGE = 1000


@dataclass
class PollReport:
    locked_out: bool = False
    versions_seen: int = 0
    requested: int = 0
    processed: int = 0
    promoted: int = 0
    rejected: int = 0
    pending: int = 0
    repaired: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _paged(search: Any, **kwargs: Any) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        page = search(max_results=_PAGE, page_token=token, **kwargs)
        items.extend(page)
        token = page.token
        if not token:
            return items


class Poller:
    def __init__(self, promoter: Promoter, workers: int = 4) -> None:
        self.promoter = promoter
        self.workers = max(1, min(workers, promoter.store.database.lock_holders))

    def poll_once(self) -> PollReport:
        report = PollReport()
        with self.promoter.store.database.lock("poller", blocking=False) as acquired:
            if not acquired:
                report.locked_out = True
                return report
            client = self.promoter.client
            pattern = f"name LIKE '{REGISTERED_MODEL_PREFIX}%'"
            versions = _paged(client.search_model_versions, filter_string=pattern)
            report.versions_seen = len(versions)
            for model in _paged(client.search_registered_models, filter_string=pattern):
                self.promoter.prime_thresholds(domain_of(model.name), dict(model.tags))
            self._request_new(versions, report)
            self._process_due(report)
            # Aliases are read after this cycle's promotions moved them, never before.
            models = _paged(client.search_registered_models, filter_string=pattern)
            self._repair(models, versions, report)
        return report

    def _request_new(self, versions: list[Any], report: PollReport) -> None:
        ours = {(domain_of(v.name), int(v.version)): v for v in versions if domain_of(v.name)}
        # Any record counts as decided: a version promoted by hand needs no automatic decision.
        known = self.promoter.store.versions_with_promotions(sorted({d for d, _ in ours}))
        for domain, number in sorted(set(ours) - known, key=lambda pair: pair[1]):
            self.promoter.request_for(domain, ours[(domain, number)], reason="found by the poller")
            report.requested += 1

    def _process_due(self, report: PollReport) -> None:
        """Due promotions, domains side by side (each domain's own stay in order)."""
        domains = sorted({p.domain_id for p in self.promoter.store.open_promotions(due_only=True)})

        def process(domain: str) -> list[Any] | str:
            try:
                return self.promoter.process_domain(domain)
            except DomainMlflowError as error:
                return f"{domain}: {error}"
            except Exception as error:  # e.g. the registry unreachable: next cycle retries
                _log.exception("processing %s failed", domain)
                return f"{domain}: {type(error).__name__}: {error}"

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            outcomes = pool.map(process, domains) if self.workers > 1 else map(process, domains)
            for outcome in outcomes:
                if isinstance(outcome, str):
                    report.errors.append(outcome)
                    continue
                for promotion in outcome:
                    report.processed += 1
                    report.promoted += promotion.state == "done"
                    report.rejected += promotion.state == "rejected"
                    report.pending += promotion.is_open

    def _repair(self, models: list[Any], versions: list[Any], report: PollReport) -> None:
        store, promoter = self.promoter.store, self.promoter
        busy = {p.domain_id for p in store.open_promotions()}
        configs = [c for c in store.all_configs() if c.domain_id not in busy]
        aliases = {domain_of(m.name): m.aliases.get(PRODUCTION_ALIAS) for m in models}
        run_ids = {(domain_of(v.name), int(v.version)): v.run_id for v in versions}
        for config in configs:
            alias = aliases.get(config.domain_id)
            if alias is None:
                move_production_alias(promoter.client, config.domain_id,
                                      config.registry_version, None)
                report.repaired.append(f"{config.domain_id}: registry alias was missing")
            elif int(alias) != config.registry_version:
                # Someone moved production in the registry: carry it out everywhere.
                promoter.request(config.domain_id, int(alias), kind="force",
                                 request_key=f"alias:{config.domain_id}:{alias}:"
                                             f"{config.version_number}",
                                 reason=f"production alias set to version {alias} in the "
                                        "registry")
                report.repaired.append(f"{config.domain_id}: registry alias → v{alias}")
        try:
            self._repair_redis(configs, report)
            self._repair_localai(configs, run_ids, report)
        except DomainMlflowError as error:
            report.errors.append(f"drift repair: {error}")

    def _repair_redis(self, configs: list[Any], report: PollReport) -> None:
        redis = self.promoter.redis
        if redis is None or not configs:
            return
        stored = redis.get_many([c.domain_id for c in configs])
        for config in configs:
            value = stored.get(config.domain_id)
            if value != config.serving_payload():
                redis.publish_config(config.domain_id, config.serving_payload(), "repair")
                report.repaired.append(f"{config.domain_id}: redis key")

    def _repair_localai(self, configs: list[Any], run_ids: dict[Any, Any],
                        report: PollReport) -> None:
        localai = self.promoter.localai
        if localai is None or not configs:
            return
        listed = localai.serving_names()
        for config in configs:
            if config.serving_name in listed and config.model_version in listed:
                continue
            sync_localai(localai, self.promoter.client, config,
                         run_ids.get((config.domain_id, config.registry_version)), None)
            report.repaired.append(f"{config.domain_id}: localai serving name")

    def run(self, interval: float, stop: threading.Event | None = None) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                report = self.poll_once()
                if report.requested or report.processed or report.repaired or report.errors:
                    _log.info("poll: %s", report.as_dict())
            except DomainMlflowError as error:
                _log.error("poll cycle failed: %s", error)
            except Exception:  # the registry or a service down: a daemon keeps polling
                _log.exception("poll cycle failed")
            stop.wait(interval)
