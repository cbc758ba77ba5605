"""``DomainMetricsCollector``: per-domain figures from the MLflow tracking store.

A domain's runs are the runs tagged ``domain_id`` in any experiment. One snapshot
(:mod:`domain_mlflow.metrics.snapshot`: a few paginated queries whatever the number
of domains and runs) serves every figure and is reused for ``cache_seconds``; loss
curves cost two queries per training run shown.

The collector only looks: it reads a config store that exists and never creates
or migrates one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain_mlflow.exceptions import DomainMlflowError
from domain_mlflow.metrics.curves import CURVE_RUNS, loss_curves
from domain_mlflow.metrics.deployments import fleet_figures, rates
from domain_mlflow.metrics.rollout_figures import domain_rollout, rollout_marks
from domain_mlflow.metrics.snapshot import Snapshot, existing_store, take_snapshot
from domain_mlflow.metrics.trends import PERFORMANCE_METRICS, finite, rank, summarize, trend
from domain_mlflow.naming import approve_command, registered_model_name, utc_now
from domain_mlflow.outcomes import domain_state
from domain_mlflow.redaction import redact
from domain_mlflow.registry import version_metrics
from domain_mlflow.semver import SEMVER_TAG
from domain_mlflow.services import Services
from domain_mlflow.settings import Settings

if TYPE_CHECKING:
    from domain_mlflow.sinks.config_store import ConfigStore
    from domain_mlflow.sinks.rows import Promotion

RUN_METRICS = (*PERFORMANCE_METRICS, "latency_p95_ms", "tokens_per_second")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _from_millis(millis: int | None) -> str | None:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat() if millis else None


class DomainMetricsCollector:
    """Collects, compares and exports domain metrics; every argument is optional."""

    def __init__(self, localai_url: str | None = None, postgres_dsn: str | None = None, *,
                 settings: Settings | None = None, cache_seconds: float = 30.0,
                 services: Services | None = None, mlflow_ui_url: str | None = None) -> None:
        self.services = services or Services.from_settings(
            settings, postgres_dsn=postgres_dsn, localai_url=localai_url)
        self.settings = self.services.settings
        self.localai_url = self.services.localai_url
        self.postgres_dsn = self.services.postgres_dsn
        self.cache_seconds = cache_seconds
        self.mlflow_ui_url = mlflow_ui_url
        self._snapshots: dict[int, Snapshot] = {}
        # Config-store reads kept as long as the snapshot they were read with.
        self._reads: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    # --- reading ----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        return self.services.client

    def ui_url(self) -> str:
        """Where the MLflow UI is, for links: ``mlflow_ui_url`` (the dashboard's
        ``--mlflow-ui-url``), else ``MLFLOW_UI_URL``, else the tracking server, else
        ``http://127.0.0.1:5000`` (where a plain ``mlflow ui`` listens)."""
        chosen = self.mlflow_ui_url or self.settings.mlflow_ui_url
        if chosen:
            return chosen.rstrip("/")
        uri = self.client.tracking_uri
        return uri.rstrip("/") if uri.startswith(("http://", "https://")) else \
            "http://127.0.0.1:5000"

    def snapshot(self, days: int | None = None) -> Snapshot:
        days = days or self.settings.metrics_time_window_days
        with self._lock:
            cached = self._snapshots.get(days)
            if cached and time.monotonic() - cached.taken < self.cache_seconds:
                return cached
            snapshot = take_snapshot(self.services, days)
            self._snapshots[days] = snapshot
            return snapshot

    def refresh(self) -> None:
        with self._lock:
            self._snapshots.clear()
            self._reads.clear()

    def _existing_store(self) -> tuple[ConfigStore | None, str]:
        return existing_store(self.services)

    def _read_store(self, read: Callable[[ConfigStore], Any], empty: Any) -> Any:
        """``read(store)`` on the existing config store; ``empty`` without one, or when
        it does not answer (the snapshot's ``store_error`` says why)."""
        try:
            store, _ = self._existing_store()
            if store is None:
                return empty
            try:
                return read(store)
            finally:
                store.close()
        except DomainMlflowError:
            return empty

    def _with_snapshot(self, snap: Snapshot, key: tuple[Any, ...],
                       read: Callable[[ConfigStore], Any], empty: Any) -> Any:
        """:meth:`_read_store`, kept while ``snap`` is the window's snapshot."""
        key = (snap.days, *key)
        cached = self._reads.get(key)
        if cached is not None and cached[0] == snap.taken:
            return cached[1]
        value = self._read_store(read, empty)
        self._reads[key] = (snap.taken, value)
        return value

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
            "deployments": rates(snap.promotions.get(domain_id, []),
                                   snap.awaiting.get(domain_id, [])),
            "runs": [self._run(run) for run in runs],
            "rollout": self._rollout(snap, domain_id),
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
        trends = {m: trend(m, series[m]) for m in PERFORMANCE_METRICS}
        return {
            "domain_id": domain_id,
            "runs": len(runs),
            "newest": {m: summarize(m, series[m])["newest"] for m in PERFORMANCE_METRICS},
            "trends": {m: trends[m]["direction"] for m in PERFORMANCE_METRICS},
            "trend_details": trends,
            "production": self._production(snap, domain_id),
            "in_flight": self._in_flight(snap, domain_id),
            **self._state(snap, domain_id),
            "requests": usage["requests"],
            "error_rate": quality["error_rate"],
            "rollout": self.rollout_marks(time_window_days).get(domain_id),
        }

    def rollout_marks(self, time_window_days: int | None = None) -> dict[str, dict[str, Any]]:
        """Per domain with a canary or A/B test running or paused: its kind, state, share,
        candidate and step (one config-store query for all domains)."""
        snap = self.snapshot(time_window_days)
        return self._with_snapshot(snap, ("rollout-marks",), rollout_marks, {})

    def _rollout(self, snap: Snapshot, domain_id: str) -> dict[str, Any] | None:
        """The domain's running rollout (else its newest that ended in the window) with
        its figures (:mod:`domain_mlflow.metrics.rollout_figures`); None without one."""
        since = utc_now() - timedelta(days=snap.days)
        return self._with_snapshot(
            snap, ("rollout", domain_id),
            lambda store: domain_rollout(store, domain_id, self.settings, since), None)

    def fleet_deployments(self, time_window_days: int | None = None,
                          domain_ids: list[str] | None = None) -> dict[str, Any]:
        """Gate hit rate, deployment success, time to live and approval lead time:
        ``fleet`` (these domains' promotions pooled; default every domain), ``domains``
        (each one's), and the ``awaiting_approval`` queue, oldest first."""
        snap = self.snapshot(time_window_days)
        ids = self.domain_ids(time_window_days) if domain_ids is None else domain_ids
        queue = sorted((p for d in ids for p in snap.awaiting.get(d, [])), key=lambda p: p.id)
        return {
            "time_window_days": snap.days,
            **fleet_figures(snap.promotions, snap.awaiting, ids),
            "awaiting_approval": [self._awaiting(p) for p in queue],
        }

    def loss_curves(self, domain_id: str, time_window_days: int | None = None,
                    limit: int = CURVE_RUNS) -> list[dict[str, Any]]:
        """The ``training_loss`` and ``validation_loss`` steps of the domain's newest
        ``limit`` training runs in the window (see :mod:`domain_mlflow.metrics.curves`)."""
        snap = self.snapshot(time_window_days)
        key = (domain_id, limit)
        if key not in snap.curves:
            snap.curves[key] = [
                {**curve, "start_time": _from_millis(curve["start_time"])}
                for curve in loss_curves(self.client, snap.runs.get(domain_id, []), limit)]
        return snap.curves[key]

    def version_url(self, domain_id: str, version: int) -> str:
        """The version's page in the MLflow UI."""
        return f"{self.ui_url()}/#/models/{registered_model_name(domain_id)}/versions/{version}"

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
        return self._read_store(
            lambda store: [entry.as_dict() for entry in store.history(domain_id, limit)], [])

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
            "deployments": self.fleet_deployments(domain_ids=ids),
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
            "end_time": _from_millis(info.end_time),
            "status": info.status,
            "training_run_id": run.data.tags.get("training_run_id"),
            "registry_version": run.data.tags.get("registry_version"),
            **{m: finite(run.data.metrics.get(m)) for m in RUN_METRICS},
            "url": f"{self.ui_url()}/#/experiments/{info.experiment_id}/runs/{info.run_id}",
        }

    @staticmethod
    def _usage(snap: Snapshot, domain_id: str) -> dict[str, Any]:
        usage = snap.usage.get(domain_id)
        dropped = snap.dropped.get(domain_id, 0)  # not in ``requests``: never written
        if not usage:
            return {"requests": 0, "requests_per_day": 0.0, "completion_tokens": 0,
                    "top_query_patterns": [], "last_request_at": None,
                    "dropped_records": dropped}
        return {
            "requests": usage["requests"],
            "requests_per_day": round(usage["requests"] / snap.days, 3),
            "completion_tokens": usage["completion_tokens"],
            "top_query_patterns": usage["top_query_patterns"],
            "last_request_at": _iso(usage["last_at"]),
            "dropped_records": dropped,
        }

    @staticmethod
    def _quality(snap: Snapshot, domain_id: str) -> dict[str, Any]:
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
    def _versions(snap: Snapshot, domain_id: str) -> list[dict[str, Any]]:
        production = snap.production.get(domain_id)
        config = snap.configs.get(domain_id)
        previous = getattr(config, "previous_registry_version", None)
        rows = []
        for version in sorted(snap.versions.get(domain_id, []), key=lambda v: int(v.version)):
            rows.append({
                "version": int(version.version),
                "model_version": version.tags.get("model_version"),
                "semver": version.tags.get(SEMVER_TAG),
                "training_run_id": version.tags.get("training_run_id"),
                "stage": version_stage(int(version.version), production, previous,
                                       version.tags.get("promotion_status")),
                "validation_status": version.tags.get("validation_status"),
                "is_production": int(version.version) == production,
                "created_at": _from_millis(version.creation_timestamp),
                "run_id": version.run_id,
                **version_metrics(version),
            })
        return rows

    @staticmethod
    def _production(snap: Snapshot, domain_id: str) -> dict[str, Any] | None:
        config = snap.configs.get(domain_id)
        last = snap.last_actions.get(domain_id)
        if config is None:
            version = snap.production.get(domain_id)
            return None if version is None else {"registry_version": version,
                                                 "model_version": None, "semver": None,
                                                 "since": None, "last_action": None}
        return {
            "registry_version": config.registry_version,
            "model_version": config.model_version,
            "semver": config.semver,
            "since": config.updated_at.isoformat(),
            "metrics": config.metrics,
            "last_action": last.as_dict() if last else None,
        }

    def _awaiting(self, promotion: Promotion) -> dict[str, Any]:
        """A version awaiting approval: what the gate saw, and how to approve it."""
        decision = promotion.decision
        return {
            "domain_id": promotion.domain_id,
            "registry_version": promotion.registry_version,
            "model_version": promotion.model_version,
            "semver": promotion.semver,
            "awaiting_since": _iso(promotion.awaiting_since or promotion.updated_at),
            "gate": decision.to_dict() if decision else None,
            "approve_command": approve_command(promotion.domain_id,
                                               promotion.registry_version),
            "url": self.version_url(promotion.domain_id, promotion.registry_version),
        }

    @staticmethod
    def _state(snap: Snapshot, domain_id: str) -> dict[str, Any]:
        """``state`` in words and ``state_reason``, as ``domain-mlflow status`` gives them
        (a decision older than the window is not seen: then "not decided yet")."""
        waiting = snap.awaiting.get(domain_id) or []
        moving = snap.in_flight.get(domain_id) or (waiting[-1] if waiting else None)
        newest = max(snap.promotions.get(domain_id, []), key=lambda p: p.id, default=None)
        state, reason = domain_state(snap.configs.get(domain_id), moving, newest, redact)
        return {"state": state, "state_reason": reason}

    @staticmethod
    def _in_flight(snap: Snapshot, domain_id: str) -> dict[str, Any] | None:
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


def version_stage(number: int, production: int | None, previous: int | None,
                  promotion_status: str | None) -> str:
    """A version's stage, from the pointers (production, and the version it replaced)
    and the gate's recorded refusal: the registry keeps no ``stage`` tag."""
    if number == production:
        return "production"
    if number == previous:
        return "previous"
    return "rejected" if promotion_status == "rejected" else "staging"
