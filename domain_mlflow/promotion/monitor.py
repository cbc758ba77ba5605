"""Alerting on production's live traffic, and the optional automatic rollback.

For each domain in production, the requests served by its current version in the
last ``MONITOR_WINDOW_SECONDS``: with at least ``ALERT_MIN_REQUESTS`` of them, an
error rate above ``ALERT_ERROR_RATE_THRESHOLD`` or a p95 latency above
``ALERT_LATENCY_THRESHOLD_MS`` raises an alert: logged, recorded in the config store,
published on Redis (``{prefix}:alerts``), POSTed to ``ALERT_WEBHOOK_URL`` when set,
and, with ``AUTO_ROLLBACK=true``, production is rolled back. Each cycle also decides
the running canaries and A/B tests (:meth:`Monitor.evaluate_rollouts`).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from domain_mlflow.exceptions import DomainMlflowError
from domain_mlflow.promotion.engine import Promoter
from domain_mlflow.promotion.notify import announce
from domain_mlflow.promotion.rollout_stats import p95
from domain_mlflow.sinks.database import utc_now
from domain_mlflow.sinks.telemetry_store import TelemetryStore

_log = logging.getLogger(__name__)


class Monitor:
    def __init__(self, promoter: Promoter) -> None:
        self.promoter = promoter
        self.settings = promoter.settings
        self.redact = promoter.targets.redact
        self.telemetry = TelemetryStore(promoter.store.database)

    def check_once(self) -> list[dict[str, Any]]:
        """Every alert raised in this check, with what was done about it."""
        alerts = []
        for config in self.promoter.store.all_configs():
            for alert in self._check(config):
                alerts.append(self._raise(alert))
        return alerts

    def _check(self, config: Any) -> list[dict[str, Any]]:
        window = self.settings.monitor_window_seconds
        rows = self.telemetry.window(config.domain_id, config.model_version,
                                     utc_now() - timedelta(seconds=window))
        if len(rows) < self.settings.alert_min_requests:
            return []
        error_rate = sum(row["status"] == "error" for row in rows) / len(rows)
        latency = p95([float(row["latency_ms"]) for row in rows])
        found = []
        for kind, value, threshold in (
            ("error_rate", error_rate, self.settings.alert_error_rate),
            ("latency_p95_ms", latency, self.settings.alert_latency_p95_ms),
        ):
            if value > threshold and not self.telemetry.alerted_since(
                    config.domain_id, config.model_version, kind,
                    utc_now() - timedelta(seconds=window)):
                found.append({"domain_id": config.domain_id, "model_version": config.model_version,
                              "registry_version": config.registry_version, "kind": kind,
                              "value": value, "threshold": threshold, "window_seconds": window,
                              "requests": len(rows)})
        return found

    def _raise(self, alert: dict[str, Any]) -> dict[str, Any]:
        _log.warning("alert: %s of %s (%s) is %.4g over %.0fs, threshold %.4g",
                     alert["kind"], alert["domain_id"], alert["model_version"], alert["value"],
                     alert["window_seconds"], alert["threshold"])
        action = "alerted"
        if self.settings.auto_rollback:
            action = self._rollback(alert)
        alert = {**alert, "action": action, "raised_at": utc_now().isoformat()}
        self.telemetry.record_alert(
            domain_id=alert["domain_id"], model_version=alert["model_version"],
            kind=alert["kind"], value=alert["value"], threshold=alert["threshold"],
            window_seconds=alert["window_seconds"], requests=alert["requests"], action=action)
        self._publish(alert)
        return alert

    def _rollback(self, alert: dict[str, Any]) -> str:
        from domain_mlflow.promotion.manual import rollback

        reason = (f"auto-rollback: {alert['kind']} {alert['value']:.4g} > "
                  f"{alert['threshold']:.4g} over {alert['window_seconds']:.0f}s")
        try:
            result = rollback(self.promoter, alert["domain_id"], reason=reason)
        except DomainMlflowError as error:
            return self.redact(f"rollback failed: {error}")
        return f"rolled back to version {result['registry_version']}"

    def _publish(self, alert: dict[str, Any]) -> None:
        announce(self.promoter.targets.redis, self.settings.alert_webhook_url, "alerts", alert,
                 self.redact)

    def evaluate_rollouts(self) -> list[dict[str, Any]]:
        """Decide each running canary's or A/B test's step (``promotion.rollout``), after
        rewriting any of their Redis keys that drifted from the config store."""
        from domain_mlflow.promotion.rollout import evaluate_all, repair_redis

        try:
            repair_redis(self.promoter)
        except DomainMlflowError as error:  # Redis down: clients read the config store
            _log.warning("could not repair the rollouts' Redis keys: %s",
                         self.redact(str(error)))
        return evaluate_all(self.promoter)

    def run(self, interval: float, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            for check in (self.check_once, self.evaluate_rollouts):
                try:
                    check()
                except Exception:  # a daemon keeps watching
                    _log.exception("monitor %s failed", check.__name__)
            stop.wait(interval)
