"""``DomainMetricsCollector``: per-domain figures from the MLflow tracking store.

A domain's runs are the runs tagged ``domain_id`` in any experiment. One snapshot
costs a few paginated queries whatever the number of domains and runs (experiments,
runs, model versions, registered models; in the config store: configs, last
actions, open promotions, serving telemetry) and is reused for ``cache_seconds``.

The collector only looks: it reads a config store that exists and never creates
or migrates one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain_mlflow.exceptions import DomainMlflowError
from domain_mlflow.metrics.trends import PERFORMANCE_METRICS, finite, rank, summarize, trend
from domain_mlflow.naming import REGISTERED_MODEL_PREFIX, utc_now
from domain_mlflow.redaction import redact
from domain_mlflow.registry import PRODUCTION_ALIAS, domain_of, version_metrics
from domain_mlflow.services import Services
from domain_mlflow.settings import Settings

if TYPE_CHECKING:
    from domain_mlflow.sinks.config_store import ConfigStore
    from domain_mlflow.sinks.rows import Promotion

_PAGE = 5000
RUN_METRICS = (*PERFORMANCE_METRICS, "latency_p95_ms", "tokens_per_second")


@dataclass
class _Snapshot:
    taken: float
    days: int
    runs: dict[str, list[Any]] = field(default_factory=dict)
    versions: dict[str, list[Any]] = field(default_factory=dict)
    production: dict[str, int] = field(default_factory=dict)
    model_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    configs: dict[str, Any] = field(default_factory=dict)
    last_actions: dict[str, Any] = field(default_factory=dict)
    in_flight: dict[str, Promotion] = field(default_factory=dict)
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    store_error: str | None = None  # the config store did not answer
    store_note: str | None = None  # there is none yet: nothing has been promoted


def _paged(search: Any, **kwargs: Any) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        page = search(page_token=token, **kwargs)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _from_millis(millis: int | None) -> str | None:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat() if millis else None


def _oldest_open(promotions: list[Promotion]) -> dict[str, Promotion]:
    """Each domain's oldest open promotion (``promotions`` come oldest first)."""
    oldest: dict[str, Promotion] = {}
    for promotion in promotions:
        if promotion.is_open:
            oldest.setdefault(promotion.domain_id, promotion)
    return oldest


class DomainMetricsCollector:
    """Collects, compares and exports domain metrics; every argument is optional."""

    def __init__(self, localai_url: str | None = None, postgres_dsn: str | None = None, *,
                 settings: Settings | None = None, cache_seconds: float = 30.0,
                 services: Services | None = None) -> None:
        self.services = services or Services.from_settings(
            settings, postgres_dsn=postgres_dsn, localai_url=localai_url)
        self.settings = self.services.settings
        self.localai_url = self.services.localai_url
        self.postgres_dsn = self.services.postgres_dsn
        self.cache_seconds = cache_seconds
        self._snapshots: dict[int, _Snapshot] = {}
        self._lock = threading.Lock()

    # --- reading ----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        return self.services.client

    def ui_url(self) -> str:
        """Where the MLflow UI is, for links: ``MLFLOW_UI_URL``, or the tracking server."""
        if self.settings.mlflow_ui_url:
            return self.settings.mlflow_ui_url.rstrip("/")
        uri = self.client.tracking_uri
        return uri.rstrip("/") if uri.startswith(("http://", "https://")) else \
            "http://127.0.0.1:5000"

    def snapshot(self, days: int | None = None) -> _Snapshot:
        days = days or self.settings.metrics_time_window_days
        with self._lock:
            cached = self._snapshots.get(days)
            if cached and time.monotonic() - cached.taken < self.cache_seconds:
                return cached
            snapshot = self._take(days)
            self._snapshots[days] = snapshot
            return snapshot

    def refresh(self) -> None:
        with self._lock:
            self._snapshots.clear()

    def _take(self, days: int) -> _Snapshot:
        snapshot = _Snapshot(taken=time.monotonic(), days=days)
        since = utc_now() - timedelta(days=days)
        experiments = [e.experiment_id for e in
                       _paged(self.client.search_experiments, max_results=1000)]
        if experiments:
            runs = _paged(self.client.search_runs, experiment_ids=experiments, max_results=_PAGE,
                          filter_string="tags.domain_id != '' AND attributes.start_time >= "
                                        f"{int(since.timestamp() * 1000)}",
                          order_by=["attributes.start_time ASC"])
            for run in runs:
                snapshot.runs.setdefault(run.data.tags["domain_id"], []).append(run)
        pattern = f"name LIKE '{REGISTERED_MODEL_PREFIX}%'"
        for version in _paged(self.client.search_model_versions, filter_string=pattern,
                              max_results=10000):
            if domain := domain_of(version.name):
                snapshot.versions.setdefault(domain, []).append(version)
        for model in _paged(self.client.search_registered_models, filter_string=pattern,
                            max_results=1000):
            domain = domain_of(model.name)
            if domain:
                snapshot.model_tags[domain] = dict(model.tags)
            if domain and PRODUCTION_ALIAS in model.aliases:
                snapshot.production[domain] = int(model.aliases[PRODUCTION_ALIAS])
        self._read_store(snapshot, since)
        return snapshot

    def _read_store(self, snapshot: _Snapshot, since: datetime) -> None:
        """Production configs, last actions, open promotions and serving telemetry, if a
        config store exists and answers."""
        from domain_mlflow.sinks.telemetry_store import TelemetryStore

        try:
            store, location = self._existing_store()
            if store is None:
                snapshot.store_note = (f"no config store yet at {location}: nothing has "
                                       "been promoted")
                return
            try:
                snapshot.configs = {c.domain_id: c for c in store.all_configs()}
                snapshot.last_actions = store.last_actions()
                snapshot.in_flight = _oldest_open(store.open_promotions())
                snapshot.usage = TelemetryStore(store.database).usage(since)
            finally:
                store.close()
        except DomainMlflowError as error:
            snapshot.store_error = self.services.redact(str(error))

    def _existing_store(self) -> tuple[ConfigStore | None, str]:
        """The config store opened read-only (None when there is none yet), and where it
        is or would be."""
        from domain_mlflow.sinks.config_store import ConfigStore

        path = ConfigStore.embedded_path(self.settings)
        location = self.services.redact(self.postgres_dsn) if self.postgres_dsn else str(path)
        return ConfigStore.open_existing(self.postgres_dsn, path), location

    def store_status(self, time_window_days: int | None = None) -> dict[str, str | None]:
        """``store_error`` (the config store did not answer) and ``store_note`` (there is
        none yet); both None when it was read."""
        snap = self.snapshot(time_window_days)
        return {"store_error": snap.store_error, "store_note": snap.store_note}

    # --- the seed's API ----------------------------------------------------------------

    def domain_ids(self, time_window_days: int | None = None) -> list[str]:
        """Every domain with a run in the window, a registered model or a config."""
        snap = self.snapshot(time_window_days)
        return sorted(set(snap.runs) | set(snap.versions) | set(snap.configs))

    def collect_domain_metrics(self, domain_id: str,
                               time_window_days: int | None = None) -> dict[str, Any]:
        """``performance``, ``usage``, ``quality``, ``trends`` and ``versions`` of a domain."""
        snap = self.snapshot(time_window_days)
        runs = snap.runs.get(domain_id, [])
        series = {m: [run.data.metrics.get(m) for run in runs] for m in RUN_METRICS}
        return {
            "domain_id": domain_id,
            "time_window_days": snap.days,
            "generated_at": utc_now().isoformat(),
            "has_runs": bool(runs),
            "performance": {m: summarize(m, series[m]) for m in RUN_METRICS},
            "usage": self._usage(snap, domain_id),
            "quality": self._quality(snap, domain_id),
            "trends": {m: trend(m, series[m]) for m in PERFORMANCE_METRICS},
            "versions": self._versions(snap, domain_id),
            "production": self._production(snap, domain_id),
            "in_flight": self._in_flight(snap, domain_id),
            "runs": [self._run(run) for run in runs],
            "store_error": snap.store_error,
            "store_note": snap.store_note,
        }

    def domain_summary(self, domain_id: str, time_window_days: int | None = None
                       ) -> dict[str, Any]:
        """The overview's figures of a domain (no per-run list): cheap for many domains."""
        snap = self.snapshot(time_window_days)
        runs = snap.runs.get(domain_id, [])
        series = {m: [run.data.metrics.get(m) for run in runs] for m in PERFORMANCE_METRICS}
        usage, quality = self._usage(snap, domain_id), self._quality(snap, domain_id)
        return {
            "domain_id": domain_id,
            "runs": len(runs),
            "newest": {m: summarize(m, series[m])["newest"] for m in PERFORMANCE_METRICS},
            "trends": {m: trend(m, series[m])["direction"] for m in PERFORMANCE_METRICS},
            "production": self._production(snap, domain_id),
            "in_flight": self._in_flight(snap, domain_id),
            "requests": usage["requests"],
            "error_rate": quality["error_rate"],
        }

    def thresholds(self, domain_id: str) -> dict[str, float]:
        """The gate's thresholds for the domain (environment + registered-model tags)."""
        from domain_mlflow.registry import threshold_overrides

        tags = self.snapshot().model_tags.get(domain_id, {})
        try:
            overrides = threshold_overrides(tags, f"domain {domain_id}")
        except DomainMlflowError:
            overrides = {}  # a bad tag is the gate's error to report, not the dashboard's
        return self.settings.thresholds.with_overrides(overrides).as_dict()

    def domain_history(self, domain_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Promotions, rollbacks and rejections of the domain, newest first ([] if none,
        or without a config store; the snapshot's ``store_error`` says why)."""
        try:
            store, _ = self._existing_store()
            if store is None:
                return []
            try:
                return [entry.as_dict() for entry in store.history(domain_id, limit)]
            finally:
                store.close()
        except DomainMlflowError:
            return []

    def get_domain_comparison(self, domain_ids: list[str],
                              time_window_days: int | None = None) -> dict[str, Any]:
        """Per-domain newest figures and, per metric, the domains ranked best first."""
        figures = {}
        for domain in domain_ids:
            metrics = self.collect_domain_metrics(domain, time_window_days)
            figures[domain] = {
                **{m: metrics["performance"][m]["newest"] for m in PERFORMANCE_METRICS},
                "requests": metrics["usage"]["requests"],
                "error_rate": metrics["quality"]["error_rate"],
            }
        rankings = {metric: rank(metric, ((d, f[metric]) for d, f in figures.items()))
                    for metric in (*PERFORMANCE_METRICS, "requests", "error_rate")}
        return {"domains": figures, "rankings": rankings,
                "time_window_days": time_window_days or self.settings.metrics_time_window_days}

    def export_metrics_dashboard(self, output_path: str | os.PathLike[str],
                                 domain_ids: list[str] | None = None) -> dict[str, Any]:
        """Write every domain's metrics and the comparison to one JSON file (see docs)."""
        ids = domain_ids if domain_ids is not None else self.domain_ids()
        data = {
            "generated_at": utc_now().isoformat(),
            "time_window_days": self.settings.metrics_time_window_days,
            "domains": {domain: self.collect_domain_metrics(domain) for domain in ids},
            "comparison": self.get_domain_comparison(ids),
        }
        path = Path(output_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=str))
        return data

    # --- pieces --------------------------------------------------------------------------

    def _run(self, run: Any) -> dict[str, Any]:
        info = run.info
        return {
            "run_id": info.run_id,
            "experiment_id": info.experiment_id,
            "start_time": _from_millis(info.start_time),
            "status": info.status,
            "training_run_id": run.data.tags.get("training_run_id"),
            "registry_version": run.data.tags.get("registry_version"),
            **{m: finite(run.data.metrics.get(m)) for m in RUN_METRICS},
            "url": f"{self.ui_url()}/#/experiments/{info.experiment_id}/runs/{info.run_id}",
        }

    @staticmethod
    def _usage(snap: _Snapshot, domain_id: str) -> dict[str, Any]:
        usage = snap.usage.get(domain_id)
        if not usage:
            return {"requests": 0, "requests_per_day": 0.0, "completion_tokens": 0,
                    "top_query_patterns": [], "last_request_at": None}
        return {
            "requests": usage["requests"],
            "requests_per_day": round(usage["requests"] / snap.days, 3),
            "completion_tokens": usage["completion_tokens"],
            "top_query_patterns": usage["top_query_patterns"],
            "last_request_at": _iso(usage["last_at"]),
        }

    @staticmethod
    def _quality(snap: _Snapshot, domain_id: str) -> dict[str, Any]:
        usage = snap.usage.get(domain_id)
        if not usage:
            return {"error_rate": None, "errors": 0, "response_quality": None,
                    "rated_requests": 0, "mean_latency_ms": None}
        return {
            "error_rate": usage["errors"] / usage["requests"],
            "errors": usage["errors"],
            "response_quality": usage["quality"],
            "rated_requests": usage["rated"],
            "mean_latency_ms": usage["mean_latency_ms"],
        }

    @staticmethod
    def _versions(snap: _Snapshot, domain_id: str) -> list[dict[str, Any]]:
        production = snap.production.get(domain_id)
        rows = []
        for version in sorted(snap.versions.get(domain_id, []), key=lambda v: int(v.version)):
            rows.append({
                "version": int(version.version),
                "model_version": version.tags.get("model_version"),
                "training_run_id": version.tags.get("training_run_id"),
                "stage": version.tags.get("stage"),
                "validation_status": version.tags.get("validation_status"),
                "is_production": int(version.version) == production,
                "created_at": _from_millis(version.creation_timestamp),
                "run_id": version.run_id,
                **version_metrics(version),
            })
        return rows

    @staticmethod
    def _production(snap: _Snapshot, domain_id: str) -> dict[str, Any] | None:
        config = snap.configs.get(domain_id)
        last = snap.last_actions.get(domain_id)
        if config is None:
            version = snap.production.get(domain_id)
            return None if version is None else {"registry_version": version,
                                                 "model_version": None, "since": None,
                                                 "last_action": None}
        return {
            "registry_version": config.registry_version,
            "model_version": config.model_version,
            "since": config.updated_at.isoformat(),
            "metrics": config.metrics,
            "last_action": last.as_dict() if last else None,
        }

    @staticmethod
    def _in_flight(snap: _Snapshot, domain_id: str) -> dict[str, Any] | None:
        """The domain's oldest open promotion: the version it moves to and the step it is
        at. Apart from ``production``, which is what the config row names."""
        promotion = snap.in_flight.get(domain_id)
        if promotion is None:
            return None
        return {
            "registry_version": promotion.registry_version,
            "model_version": promotion.model_version,
            "kind": str(promotion.kind),
            "state": str(promotion.state),
            "error": redact(promotion.last_error) if promotion.last_error else None,
            "attempts": promotion.attempts,
            "since": promotion.created_at.isoformat(),
        }
