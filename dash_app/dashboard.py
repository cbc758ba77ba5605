"""``DomainDashboard``: the seed's API around :func:`dash_app.app.create_app`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain_mlflow.metrics.collector import DomainMetricsCollector

if TYPE_CHECKING:
    import dash


class DomainDashboard:
    """The dashboard on ``host``:``port`` (defaults: ``DASHBOARD_HOST``/``DASHBOARD_PORT``)."""

    def __init__(self, metrics_collector: DomainMetricsCollector | None = None,
                 port: int | None = None, host: str | None = None) -> None:
        self.metrics_collector = metrics_collector or DomainMetricsCollector()
        settings = self.metrics_collector.settings
        self.port = settings.dashboard_port if port is None else port
        self.host = host or settings.dashboard_host
        self._app: dash.Dash | None = None

    @property
    def app(self) -> dash.Dash:
        """The Dash app, built on first use."""
        if self._app is None:
            from dash_app.app import create_app

            self._app = create_app(self.metrics_collector)
        return self._app

    def serve(self) -> None:
        """Serve until interrupted (blocks)."""
        self.app.run(host=self.host, port=self.port, debug=False)
