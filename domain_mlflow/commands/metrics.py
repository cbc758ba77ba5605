"""Metrics subcommands: metrics, export, dashboard, monitor."""

from __future__ import annotations

import argparse
from typing import Any

from domain_mlflow.commands import (
    MAX_SECONDS,
    emit,
    http_url,
    number,
    services_of,
    whole_number,
)


def _number(value: Any, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _print_metrics(metrics: dict[str, Any]) -> None:
    production = metrics["production"] or {}
    runs, days = len(metrics["runs"]), metrics["time_window_days"]
    print(f"{metrics['domain_id']}: {runs} run{'' if runs == 1 else 's'} in {days} "
          f"day{'' if days == 1 else 's'}; production {production.get('model_version') or 'none'}")
    for name, figures in metrics["performance"].items():
        direction = metrics["trends"].get(name, {}).get("direction", "")
        print(f"  {name:16s} newest {_number(figures['newest']):>8s}  mean "
              f"{_number(figures['mean']):>8s}  best {_number(figures['best']):>8s}  {direction}")
    usage, quality = metrics["usage"], metrics["quality"]
    dropped = (f", {usage['dropped_records']} records dropped"
               if usage.get("dropped_records") else "")
    print(f"  requests {usage['requests']} ({usage['requests_per_day']}/day), error rate "
          f"{_number(quality['error_rate'], 3)}{dropped}")
    _print_rates(f"promotions of {metrics['domain_id']}", metrics["deployments"])
    fleet = metrics["fleet"]
    _print_rates(f"fleet ({len(fleet['domains'])} domains)", fleet)


def _print_rates(title: str, figures: dict[str, Any]) -> None:
    from domain_mlflow.metrics.deployments import describe

    print(f"{title}: {figures['promotions']} in the window")
    for line in describe(figures):
        print(f"  {line}")


def run_metrics(args: argparse.Namespace) -> int:
    from domain_mlflow.metrics.collector import DomainMetricsCollector
    from domain_mlflow.naming import validate_domain_id

    collector = DomainMetricsCollector(services=services_of(args))
    metrics = collector.collect_domain_metrics(validate_domain_id(args.domain_id), args.days)
    fleet = collector.fleet_deployments(args.days)
    # The fleet's rates pool every domain's promotions; "domains" says which.
    emit({**metrics, "fleet": {"domains": sorted(fleet["domains"]), **fleet["fleet"]}},
         args.json, _print_metrics)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from domain_mlflow.metrics.collector import DomainMetricsCollector
    from domain_mlflow.naming import validate_domain_id

    ids = [validate_domain_id(d) for d in args.domain_id] if args.domain_id else None
    data = DomainMetricsCollector(services=services_of(args)).export_metrics_dashboard(
        args.path, ids)
    emit({"path": args.path, "domains": sorted(data["domains"])}, args.json,
         lambda r: print(f"wrote {len(r['domains'])} domains to {r['path']}"))
    return 0


def run_dashboard(args: argparse.Namespace) -> int:
    from dash_app.dashboard import DomainDashboard
    from domain_mlflow.metrics.collector import DomainMetricsCollector

    collector = DomainMetricsCollector(services=services_of(args),
                                       mlflow_ui_url=args.mlflow_ui_url)
    DomainDashboard(collector, port=args.port, host=args.host).serve()
    return 0


def run_monitor(args: argparse.Namespace) -> int:
    from domain_mlflow.commands.promotion import promoter_for, stop_on_signals
    from domain_mlflow.promotion.monitor import Monitor

    monitor = Monitor(promoter_for(args, "monitor"))
    if args.once:
        alerts = monitor.check_once()
        decisions = monitor.evaluate_rollouts()
        emit({"alerts": alerts, "rollouts": decisions} if args.json else alerts, args.json,
             lambda found: print(
                 "\n".join([f"{a['domain_id']}: {a['kind']} {a['value']:.4g} > "
                            f"{a['threshold']:.4g} ({a['action']})" for a in found]
                           + [f"{d['domain_id']}: {d['kind']} at {d['percent']:g}%: "
                              f"{d['decision']} ({d['why']})" for d in decisions])
                 or "no alert, no rollout running"))
        return 0
    print(f"watching production every {args.interval:g}s; Ctrl-C stops", flush=True)
    monitor.run(args.interval, stop_on_signals())
    return 0


def register(commands: Any) -> None:
    metrics = commands.add_parser("metrics", help="a domain's performance, usage and trends",
                                  description="A domain's performance, usage and trends.")
    metrics.add_argument("domain_id", metavar="DOMAIN", help="the domain id")
    metrics.add_argument("--days", type=whole_number(1, 3650), help="time window (default "
                                                  "$METRICS_TIME_WINDOW_DAYS or 30)")
    metrics.add_argument("--json", action="store_true", help="print JSON")
    metrics.set_defaults(handler=run_metrics)

    export = commands.add_parser("export", help="write the dashboard's data to a JSON file",
                                 description="Write the dashboard's data to a JSON file.")
    export.add_argument("path", metavar="PATH", help="the JSON file to write")
    export.add_argument("--domain-id", action="append", help="only these (repeatable)")
    export.add_argument("--json", action="store_true", help="print JSON")
    export.set_defaults(handler=run_export)

    dashboard = commands.add_parser("dashboard", help="serve the Dash dashboard and its REST API",
                                    description="Serve the Dash dashboard and its REST API.")
    dashboard.add_argument("--host", help="default $DASHBOARD_HOST or 127.0.0.1")
    dashboard.add_argument("--port", type=whole_number(1, 65535),
                           help="default $DASHBOARD_PORT or 8085")
    dashboard.add_argument("--mlflow-ui-url", type=http_url, metavar="URL",
                           help="where your MLflow UI is, for the dashboard's links (default "
                                "$MLFLOW_UI_URL, else the tracking server, else "
                                "http://127.0.0.1:5000)")
    dashboard.set_defaults(handler=run_dashboard)

    monitor = commands.add_parser("monitor", help="alert on production's live errors and "
                                                  "latency; roll back with AUTO_ROLLBACK=true",
                                  description="Alert on production's live error rate and "
                                              "latency.")
    monitor.add_argument("--once", action="store_true", help="one check, then exit")
    monitor.add_argument("--interval", type=number(0.1, MAX_SECONDS), default=60.0,
                         help="seconds between checks")
    monitor.add_argument("--json", action="store_true", help="print JSON")
    monitor.set_defaults(handler=run_monitor)
