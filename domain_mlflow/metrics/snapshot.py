"""One read of the MLflow tracking store and the config store, shared by every figure
the collector gives for a time window.

A fixed number of paginated queries whatever the number of domains and runs:
experiments, runs, model versions, registered models; in the config store (only if
one exists: it is opened read-only, never created) configs, last actions, open
promotions, the window's promotions and serving telemetry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from domain_mlflow.exceptions import DomainMlflowError
from domain_mlflow.metrics.deployments import by_domain
from domain_mlflow.naming import REGISTERED_MODEL_PREFIX, utc_now
from domain_mlflow.registry import PRODUCTION_ALIAS, domain_of, paged
from domain_mlflow.sinks.rows import State

if TYPE_CHECKING:
    from domain_mlflow.services import Services
    from domain_mlflow.sinks.config_store import ConfigStore
    from domain_mlflow.sinks.rows import Promotion

_PAGE = 5000


@dataclass
class Snapshot:
    taken: float
    days: int
    runs: dict[str, list[Any]] = field(default_factory=dict)
    versions: dict[str, list[Any]] = field(default_factory=dict)
    production: dict[str, int] = field(default_factory=dict)
    model_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    configs: dict[str, Any] = field(default_factory=dict)
    last_actions: dict[str, Any] = field(default_factory=dict)
    in_flight: dict[str, Promotion] = field(default_factory=dict)
    # By domain, oldest first: awaiting approval now; created in the window.
    awaiting: dict[str, list[Promotion]] = field(default_factory=dict)
    promotions: dict[str, list[Promotion]] = field(default_factory=dict)
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # telemetry records lost
    # Read on demand (two queries per run), kept as long as the snapshot.
    curves: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    store_error: str | None = None  # the config store did not answer
    store_note: str | None = None  # there is none yet: nothing has been promoted


def _oldest_under_way(promotions: list[Promotion]) -> dict[str, Promotion]:
    """Each domain's oldest open promotion that is not waiting for a person
    (``promotions`` come oldest first)."""
    oldest: dict[str, Promotion] = {}
    for promotion in promotions:
        if promotion.state.is_due:
            oldest.setdefault(promotion.domain_id, promotion)
    return oldest


def existing_store(services: Services) -> tuple[ConfigStore | None, str]:
    """The config store opened read-only (None when there is none yet), and where it is
    or would be."""
    from domain_mlflow.sinks.config_store import ConfigStore

    path = ConfigStore.embedded_path(services.settings)
    dsn = services.postgres_dsn
    location = services.redact(dsn) if dsn else str(path)
    return ConfigStore.open_existing(dsn, path), location


def take_snapshot(services: Services, days: int) -> Snapshot:
    """Everything the collector shows for the last ``days`` days."""
    client = services.client
    snapshot = Snapshot(taken=time.monotonic(), days=days)
    since = utc_now() - timedelta(days=days)
    experiments = [e.experiment_id for e in paged(client.search_experiments, max_results=1000)]
    if experiments:
        runs = paged(client.search_runs, experiment_ids=experiments, max_results=_PAGE,
                      filter_string="tags.domain_id != '' AND attributes.start_time >= "
                                    f"{int(since.timestamp() * 1000)}",
                      order_by=["attributes.start_time ASC"])
        for run in runs:
            snapshot.runs.setdefault(run.data.tags["domain_id"], []).append(run)
    pattern = f"name LIKE '{REGISTERED_MODEL_PREFIX}%'"
    for version in paged(client.search_model_versions, filter_string=pattern,
                          max_results=10000):
        if domain := domain_of(version.name):
            snapshot.versions.setdefault(domain, []).append(version)
    for model in paged(client.search_registered_models, filter_string=pattern,
                        max_results=1000):
        domain = domain_of(model.name)
        if domain:
            snapshot.model_tags[domain] = dict(model.tags)
        if domain and PRODUCTION_ALIAS in model.aliases:
            snapshot.production[domain] = int(model.aliases[PRODUCTION_ALIAS])
    _read_store(services, snapshot, since)
    return snapshot


def _read_store(services: Services, snapshot: Snapshot, since: datetime) -> None:
    """Production configs, last actions, open promotions, the window's promotions and
    serving telemetry, if a config store exists and answers."""
    from domain_mlflow.sinks.telemetry_store import TelemetryStore

    try:
        store, location = existing_store(services)
        if store is None:
            snapshot.store_note = f"no config store yet at {location}: nothing has been promoted"
            return
        try:
            snapshot.configs = {c.domain_id: c for c in store.all_configs()}
            snapshot.last_actions = store.last_actions()
            open_promotions = store.open_promotions()
            snapshot.in_flight = _oldest_under_way(open_promotions)
            snapshot.awaiting = by_domain(p for p in open_promotions
                                          if p.state is State.AWAITING_APPROVAL)
            snapshot.promotions = by_domain(store.promotions_since(since))
            telemetry = TelemetryStore(store.database)
            snapshot.usage = telemetry.usage(since)
            snapshot.dropped = telemetry.dropped_since(since)
        finally:
            store.close()
    except DomainMlflowError as error:
        snapshot.store_error = services.redact(str(error))
