"""Promotion subcommands: promote, approve, reject, pending, rollback, history, status,
poll, webhook, sync."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import threading
from typing import Any

from domain_mlflow.commands import (
    EXIT_FAILURE,
    MAX_SECONDS,
    MAX_VERSION,
    emit,
    number,
    services_of,
    whole_number,
)


def promoter_for(args: argparse.Namespace, role: str) -> Any:
    """The process's promoter, its recorded actor naming the command."""
    from domain_mlflow.promotion.engine import Promoter

    return Promoter.from_services(services_of(args), role)


def _print_outcome(result: dict[str, Any]) -> None:
    where = f"{result['domain_id']} v{result.get('registry_version')}"
    if result.get("model_version"):
        where += f" ({result['model_version']})"
    print(f"{where}: {result['reason']}")
    for target, state in (result.get("targets") or {}).items():
        print(f"  {target:13s} {state}")


def _outcome(result: dict[str, Any], as_json: bool) -> int:
    emit(result, as_json, _print_outcome)
    return 0 if result.get("deployed") else EXIT_FAILURE


def run_promote(args: argparse.Namespace) -> int:
    from domain_mlflow.promotion.manual import check_promote_arguments, promote

    check_promote_arguments(args.force, args.reason or "", args.semver)
    result = promote(promoter_for(args, "cli-promote"), args.domain_id, args.version,
                     force=args.force, reason=args.reason or "", semver=args.semver)
    return _outcome(result, args.json)


def run_approve(args: argparse.Namespace) -> int:
    from domain_mlflow.promotion.review import approve

    result = approve(promoter_for(args, "cli-approve"), args.domain_id, args.version,
                     by=args.by, reason=args.reason or "", semver=args.semver)
    return _outcome(result, args.json)


def run_reject(args: argparse.Namespace) -> int:
    from domain_mlflow.promotion.review import reject

    result = reject(promoter_for(args, "cli-reject"), args.domain_id, args.version,
                    by=args.by, reason=args.reason)
    emit(result, args.json, _print_outcome)
    return 0


def _print_pending(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("nothing awaits approval")
    for row in rows:
        figures = ", ".join(f"{name} {value:g}" for name, value in sorted(row["metrics"].items())
                            if isinstance(value, int | float))
        expiry = f", expires {row['expires_at']}" if row["expires_at"] else ""
        print(f"{row['domain_id']} v{row['registry_version']} {row['semver'] or ''} "
              f"({row['model_version']}), waiting since {row['awaiting_since']}{expiry}\n"
              f"  {figures}\n  {row['approve']}")


def run_pending(args: argparse.Namespace) -> int:
    from domain_mlflow.promotion.review import pending

    emit(pending(promoter_for(args, "cli")), args.json, _print_pending)
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from domain_mlflow.promotion.manual import rollback

    result = rollback(promoter_for(args, "cli-rollback"), args.domain_id, args.to,
                      args.reason or "")
    return _outcome(result, args.json)


def _print_history(entries: list[dict[str, Any]]) -> None:
    if not entries:
        print("no history")
    for entry in entries:
        semver = f" {entry['semver']}" if entry.get("semver") else ""
        print(f"{entry['created_at']}  {entry['action']:13s} v{entry['registry_version']}"
              f"{semver} ({entry['model_version']})  config #{entry['version_number'] or '-'}  "
              f"by {entry['actor']}: {entry['reason']}")


def run_history(args: argparse.Namespace) -> int:
    from domain_mlflow.promotion.manual import history

    emit(history(promoter_for(args, "cli"), args.domain_id, args.limit), args.json, _print_history)
    return 0


def _print_status(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no domain is registered yet")
    width = max((len(row["domain_id"]) for row in rows), default=0)
    states = max((len(row["state"]) for row in rows), default=0)
    for row in rows:
        print(f"{row['domain_id']:<{width}}  {row['state']:<{states}}  {row['reason']}")
        if row["registry_version"] is not None:
            localai = "n/a" if row["localai_serving"] is None else row["localai_serving"]
            print(f"{'':<{width}}  config #{row['version_number']}, registry production "
                  f"v{row['registry_production']}, redis "
                  f"{row['redis_model_version'] or 'not set'}, localai {localai}")
        moving, trial = row["in_flight"], row.get("rollout")
        if trial:
            command = "canary" if trial["kind"] == "canary" else "ab"
            print(f"{'':<{width}}  {command}: {trial['percent']:g}% to v{trial['registry_version']}"
                  f" ({trial['model_version']}), step {trial['step']} of {trial['steps']}, "
                  f"{trial['state']} (domain-mlflow {command} status {row['domain_id']})")
        elif moving and row["registry_version"] is not None:
            print(f"{'':<{width}}  in flight: {moving['kind']} to v{moving['registry_version']} "
                  f"({moving['model_version']}), at {moving['state']}"
                  + (f", error: {moving['error']}" if moving["error"] else ""))


def run_status(args: argparse.Namespace) -> int:
    from domain_mlflow.promotion.manual import status

    emit(status(promoter_for(args, "cli"), args.domain_id), args.json, _print_status)
    return 0


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def run_poll(args: argparse.Namespace) -> int:
    from domain_mlflow.promotion.poller import Poller

    poller = Poller(promoter_for(args, "poller"))
    if args.once:
        report = poller.poll_once().as_dict()
        emit(report, args.json, lambda r: print(", ".join(f"{k}={v}" for k, v in r.items())))
        return EXIT_FAILURE if report["errors"] else 0
    interval = args.interval or services_of(args).settings.poll_interval_seconds
    print(f"polling every {interval:g}s; Ctrl-C stops", flush=True)
    poller.run(interval, stop_on_signals())
    return 0


def run_webhook(args: argparse.Namespace) -> int:
    from domain_mlflow.promotion.webhook import (
        PATH,
        WebhookLimits,
        WebhookReceiver,
        register_webhook,
    )

    services = services_of(args)
    settings = services.settings
    if args.action == "register":
        from domain_mlflow.exceptions import ConfigError

        if not args.url:
            raise ConfigError("webhook register needs --url: where MLflow should send events")
        if not settings.webhook_secret:
            raise ConfigError("WEBHOOK_SECRET must be set: MLflow signs deliveries with it")
        webhook = register_webhook(services.client, args.url, settings.webhook_secret, args.name)
        emit({"webhook_id": webhook.webhook_id, "url": args.url}, args.json,
             lambda r: print(f"webhook {r['webhook_id']} sends registry events to {r['url']}"))
        return 0
    limits = WebhookLimits.from_settings(settings)
    if args.workers:
        limits = dataclasses.replace(limits, workers=args.workers)
    receiver = WebhookReceiver(promoter_for(args, "webhook"), settings.webhook_secret or "",
                               limits)
    if limits.workers > 1:
        from domain_mlflow.promotion.webhook_http import run_workers

        print(f"receiving MLflow webhooks on http://{args.host}:{args.port}{PATH} with "
              f"{limits.workers} worker processes; Ctrl-C stops", flush=True)
        run_workers(args.host, args.port, limits)
        return 0
    server = receiver.serve(args.host, args.port)
    host, port = server.server_address[:2]
    print(f"receiving MLflow webhooks on http://{host}:{port}{PATH}; Ctrl-C stops", flush=True)
    stop_on_signals().wait()
    receiver.stop()
    return 0


def run_sync(args: argparse.Namespace) -> int:
    from domain_mlflow.exceptions import ConfigError

    services = services_of(args)
    if services.redis is None:
        raise ConfigError("REDIS_URL is not set: there is no Redis to rebuild")
    configs = services.store.all_configs()
    services.targets.publish([(config, "rebuild") for config in configs])
    emit({"rebuilt": len(configs)}, args.json,
         lambda r: print(f"rewrote {r['rebuilt']} Redis keys from the config store"))
    return 0


def register(commands: Any) -> None:
    """Add the promotion subcommands to the top-level parser."""
    def add(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text + ".")
        parser.set_defaults(handler=handler)
        parser.add_argument("--json", action="store_true", help="print JSON")
        return parser

    promote = add("promote", run_promote, "move a domain's production to a registry version")
    promote.add_argument("domain_id", metavar="DOMAIN", help="the domain id")
    promote.add_argument("--version", type=whole_number(1, MAX_VERSION), required=True,
                         help="registry version number")
    promote.add_argument("--force", action="store_true", help="skip the gate (needs --reason)")
    promote.add_argument("--reason", help="why; recorded in the history")
    promote.add_argument("--semver", metavar="X.Y.Z",
                         help="give the version this semantic version first")

    approve = add("approve", run_approve,
                  "approve a version awaiting approval (manual mode) and deploy it")
    approve.add_argument("domain_id", metavar="DOMAIN", help="the domain id")
    approve.add_argument("--version", type=whole_number(1, MAX_VERSION), required=True,
                         help="registry version number")
    approve.add_argument("--by", required=True, help="who approves; recorded in the history")
    approve.add_argument("--reason", help="why; recorded in the history")
    approve.add_argument("--semver", metavar="X.Y.Z",
                         help="give the version this semantic version")

    reject = add("reject", run_reject, "reject a version awaiting approval (manual mode)")
    reject.add_argument("domain_id", metavar="DOMAIN", help="the domain id")
    reject.add_argument("--version", type=whole_number(1, MAX_VERSION), required=True,
                        help="registry version number")
    reject.add_argument("--by", required=True, help="who rejects; recorded in the history")
    reject.add_argument("--reason", required=True, help="why; recorded in the history")

    add("pending", run_pending, "versions awaiting approval, oldest first")

    rollback = add("rollback", run_rollback, "move a domain's production back")
    rollback.add_argument("domain_id", metavar="DOMAIN", help="the domain id")
    rollback.add_argument("--to", type=whole_number(1, MAX_VERSION),
                          help="registry version (default: the one replaced)")
    rollback.add_argument("--reason", help="why; recorded in the history")

    history = add("history", run_history, "every promotion, rollback and rejection of a domain")
    history.add_argument("domain_id", metavar="DOMAIN", help="the domain id")
    history.add_argument("--limit", type=whole_number(1, 100_000), default=100,
                         help="newest entries shown, 1 to 100000 (default %(default)s)")

    status = add("status", run_status, "what each domain serves, everywhere")
    status.add_argument("domain_id", metavar="DOMAIN", nargs="?",
                        help="one domain (default: every domain)")

    poll = add("poll", run_poll, "find new versions, promote them, repair drift")
    poll.add_argument("--once", action="store_true", help="one cycle, then exit")
    poll.add_argument("--interval", type=number(0.1, MAX_SECONDS),
                      help="seconds between cycles (default $POLL_INTERVAL_SECONDS or 30)")

    webhook = add("webhook", run_webhook, "receive MLflow registry webhooks, or register one")
    webhook.add_argument("action", nargs="?", choices=["serve", "register"], default="serve",
                         help="serve: receive events (default); register: create the MLflow "
                              "webhook that sends them")
    webhook.add_argument("--host", default="127.0.0.1",
                         help="address to listen on (default %(default)s)")
    webhook.add_argument("--port", type=whole_number(0, 65535), default=8090,
                         help="port to listen on, 0 for any free one (default %(default)s)")
    webhook.add_argument("--workers", type=whole_number(1, 64), metavar="1-64",
                         help="receiver processes (default $WEBHOOK_WORKERS or 1)")
    webhook.add_argument("--url", help="with register: where MLflow should send events")
    webhook.add_argument("--name", default="domain-mlflow", help="with register: webhook name")

    sync = add("sync", run_sync, "rewrite serving targets from the config store")
    sync.add_argument("--rebuild-redis", action="store_true", required=True,
                      help="rewrite every domain's Redis key and publish it")
