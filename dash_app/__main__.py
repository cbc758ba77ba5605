"""``python -m dash_app [--host H] [--port P]``: serve the dashboard.

Everything else (tracking URI, time window, thresholds) comes from the environment.
"""

from __future__ import annotations

import argparse
import sys

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.settings import Settings, load_settings


def make_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dash_app",
                                     description="Serve the domain metrics dashboard.")
    parser.add_argument("--host", default=settings.dashboard_host,
                        help="address to listen on (default: DASHBOARD_HOST or %(default)s)")
    parser.add_argument("--port", type=int, default=settings.dashboard_port,
                        help="port to listen on (default: DASHBOARD_PORT or %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parser = make_parser(settings)
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not valid: it must be between 1 and 65535")

    from dash_app.dashboard import DomainDashboard
    from domain_mlflow.metrics.collector import DomainMetricsCollector

    collector = DomainMetricsCollector(settings=settings)
    print(f"Dashboard on http://{args.host}:{args.port}/ (API: /api/metrics)", flush=True)
    DomainDashboard(collector, port=args.port, host=args.host).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
