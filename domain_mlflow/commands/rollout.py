"""Rollout subcommands: ``canary`` and ``ab`` (start, status, pause, resume, abort,
promote)."""

from __future__ import annotations

import argparse
from typing import Any

from domain_mlflow.commands import MAX_VERSION, emit, number, whole_number
from domain_mlflow.exceptions import ConfigError

ACTIONS = ("start", "status", "pause", "resume", "abort", "promote")


def _percent_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of percentages: "
                                         f"{text!r}") from None


def _figure(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}"


def _print_rollout(result: dict[str, Any]) -> None:
    plan = result["plan"]
    print(f"{result['domain_id']}: {result['label']} of version {result['registry_version']} "
          f"({result['model_version']}) against version {result['baseline_registry_version']}"
          f" — {result['state']}, {result['percent']:g}% to the candidate "
          f"(step {result['step_index'] + 1} of {len(plan['steps'])})")
    if result.get("outcome"):
        print(f"  outcome: {result['outcome']}")
    now = result.get("now")
    if now:
        arms = now["evidence"]["arms"]
        for arm, figures in arms.items():
            print(f"  {arm:10s} requests {figures['requests']:>6d}  error rate "
                  f"{_figure(figures['error_rate']):>7s}  p95 {_figure(figures['latency_p95_ms'])}"
                  f" ms  quality {_figure(figures['quality'])} ({figures['rated']} rated)")
        print(f"  now: {now['decision']}: {now['why']}")
    for decision in result["decisions"]:
        print(f"  step {decision['step_index'] + 1} at {decision['percent']:g}%: "
              f"{decision['decision']} ({decision['evidence'].get('why', '')})")


def run_rollout(args: argparse.Namespace) -> int:
    from domain_mlflow.commands.promotion import promoter_for
    from domain_mlflow.naming import validate_domain_id
    from domain_mlflow.promotion import rollout

    kind, action = args.command, args.action
    domain_id = validate_domain_id(args.domain_id)
    if action in ("abort", "promote") and not args.by:
        raise ConfigError(f"{kind} {action} needs --by NAME: it is recorded with the decision")
    if action == "start":
        if args.version is None:
            raise ConfigError(f"{kind} start needs --version N")
        plan = (rollout.canary_plan(args.steps, args.bake_minutes, args.min_requests)
                if kind == "canary" else
                rollout.ab_plan(args.percent, args.metric, args.max_requests, args.min_requests,
                                args.auto_promote))
    promoter = promoter_for(args, f"cli-{kind}")
    if action == "start":
        result = rollout.start(promoter, domain_id, args.version, plan, kind=kind, by=args.by,
                               reason=args.reason or "")
    elif action == "status":
        result = rollout.status(promoter, domain_id, kind)
    elif action in ("pause", "resume"):
        result = getattr(rollout, action)(promoter, domain_id, kind)
    elif action == "abort":
        result = rollout.abort(promoter, domain_id, kind, by=args.by, reason=args.reason or "")
    else:
        result = rollout.promote_now(promoter, domain_id, kind, by=args.by,
                                     reason=args.reason or "")
    emit(result, args.json, _print_rollout)
    return 0


def register(commands: Any) -> None:
    """Add ``canary`` and ``ab`` to the top-level parser."""
    for kind, help_text in (
        ("canary", "shift live traffic to a version step by step; abort when it is worse"),
        ("ab", "split live traffic between production and a version until one is better"),
    ):
        parser = commands.add_parser(kind, help=help_text, description=help_text + ".")
        parser.set_defaults(handler=run_rollout)
        parser.add_argument("action", choices=ACTIONS,
                            help="start a rollout, show it, pause or resume its decisions, "
                                 "abort it (back to production only) or promote it now")
        parser.add_argument("domain_id", metavar="DOMAIN", help="the domain id")
        parser.add_argument("--version", type=whole_number(1, MAX_VERSION),
                            help="with start: the registry version to put on trial")
        parser.add_argument("--min-requests", type=whole_number(1, 10_000_000), default=100,
                            help="with start: requests each arm needs before a decision "
                                 "(default %(default)s)")
        parser.add_argument("--by", help="who starts (approves, in manual mode), aborts or "
                                         "promotes; recorded with the decision")
        parser.add_argument("--reason", help="why; recorded with the decision")
        parser.add_argument("--json", action="store_true", help="print JSON")
        if kind == "canary":
            parser.add_argument("--steps", type=_percent_list, default=None,
                                help="with start: the candidate's share at each step, rising, "
                                     "e.g. 10,50,100 (the default); 100 means promoted")
            parser.add_argument("--bake-minutes", type=number(0.0, 100_000.0), default=0.0,
                                help="with start: minutes each step runs before it may pass "
                                     "(default %(default)s)")
        else:
            parser.add_argument("--percent", type=number(0.0, 100.0, above=True),
                                default=50.0, help="with start: the candidate's share "
                                                   "(default %(default)s)")
            parser.add_argument("--metric", choices=("quality", "error_rate",
                                                     "latency_p95_ms"), default="quality",
                                help="with start: what decides the winner (default "
                                     "%(default)s; quality needs DomainClient.feedback)")
            parser.add_argument("--max-requests", type=whole_number(2, 100_000_000),
                                default=10_000, help="with start: end with no difference "
                                                     "after this many (default %(default)s)")
            parser.add_argument("--auto-promote", action="store_true",
                                help="with start: deploy the candidate when it wins")
