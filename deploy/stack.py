"""The domain-mlflow stack as processes on one host, without Docker.

``up`` starts the MLflow tracking server (PostgreSQL store, artifacts proxied by the
server, registry webhooks allowed to loopback), the pollers, the webhook receivers
(each registered as an MLflow webhook of its own) and the dashboard, each in its own
working folder under ``--dir`` with its own log, and writes ``DIR/stack.json``;
``down`` stops them; ``status`` says what runs. Every service runs the command, with
the environment variables, of its service in ``deploy/docker-compose.yml``
(``tests/test_operations.py`` checks that they agree). See docs/operations.md.

    python deploy/stack.py up --dir /srv/stack --postgres-dsn postgresql://u:pw@db/configs
    python deploy/stack.py status --dir /srv/stack
    python deploy/stack.py down --dir /srv/stack
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import requests

from domain_mlflow.commands import MAX_SECONDS, number, whole_number

STATE_FILE = "stack.json"
SECONDS = number(0.1, MAX_SECONDS)  # the waits and the poll interval, as the CLI bounds them
SECRETS_FILE = "secrets.json"
WEBHOOK_PATH = "/webhooks/mlflow"  # domain_mlflow.promotion.webhook.PATH (a test checks)
WEBHOOK_NAME = "domain-mlflow"  # receiver i is registered as domain-mlflow-{i}
# How each program of the compose file is started here: with this interpreter.
PROGRAMS = {"mlflow": ("-m", "mlflow"), "domain-mlflow": ("-m", "domain_mlflow.cli")}
# gunicorn's worker timeout: a request may take this long (a model's artifacts
# uploaded through the server's proxy) before its worker is restarted.
MLFLOW_GUNICORN_OPTS = "--timeout 600"
# Taken from the caller's environment only where the stack does not set them itself.
RUN_CONTEXT = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID",
               "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "POSTGRES_DSN", "REDIS_URL",
               "LOCALAI_URL", "LOCALAI_API_KEY", "LOCALAI_MODELS_DIR", "WEBHOOK_SECRET",
               "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", "MLFLOW_UI_URL",
               "POLL_INTERVAL_SECONDS")


class StackError(Exception):
    """Something the stack cannot do; its message says what and what to do."""


@dataclass
class Service:
    """One process of the stack, as its service in the compose file describes it."""

    name: str  # poller-1, webhook-2, ...
    role: str  # its service in deploy/docker-compose.yml
    command: list[str]  # as the compose file writes it: mlflow ... / domain-mlflow ...
    env: dict[str, str]  # the variables the stack sets (the compose file's names)
    url: str | None = None  # where it listens
    health: str | None = None  # answers 200 once it serves
    ready_line: str | None = None  # or: what its log says once it runs
    once: bool = False  # runs to completion (the webhook registrations)


@dataclass
class Ports:
    mlflow: int
    dashboard: int
    webhooks: list[int] = field(default_factory=list)


@dataclass
class StackSecrets:
    """Never printed nor written to stack.json; kept in DIR/secrets.json (mode 600)
    unless they come from the environment."""

    webhook_secret: str
    encryption_key: str  # Fernet key MLflow encrypts webhook secrets with


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploy/stack.py", description="The domain-mlflow stack as processes on one "
        "host: MLflow server, pollers, webhook receivers, dashboard.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up = commands.add_parser("up", help="start the stack and write DIR/stack.json")
    down = commands.add_parser("down", help="stop every process of the stack")
    status = commands.add_parser("status", help="what runs, where, and its log")
    for sub in (up, down, status):
        sub.add_argument("--dir", required=True, type=Path,
                         help="the stack's folder: working folders, logs, artifacts, state")
    up.add_argument("--postgres-dsn", default=os.environ.get("POSTGRES_DSN"),
                    help="the config store's PostgreSQL (URL or libpq key=value; default "
                         "$POSTGRES_DSN); MLflow's store is another database on its server")
    up.add_argument("--mlflow-database", default="mlflow",
                    help="database for MLflow's store on the same server, created if missing "
                         "(default %(default)s)")
    up.add_argument("--redis-url", default=None, help="Redis for the serving keys (optional)")
    up.add_argument("--localai-url", default=None, help="LocalAI's API (optional)")
    up.add_argument("--localai-models-dir", type=Path, default=None,
                    help="the folder LocalAI reads models from (needed with --localai-url)")
    up.add_argument("--localai-api-key", default=os.environ.get("LOCALAI_API_KEY"),
                    help="LocalAI's key (default $LOCALAI_API_KEY)")
    up.add_argument("--pollers", type=whole_number(0, 16), default=2,
                    help="poller processes (default %(default)s)")
    up.add_argument("--receivers", type=whole_number(0, 16), default=2,
                    help="webhook receiver processes, one MLflow webhook each "
                         "(default %(default)s)")
    up.add_argument("--mlflow-workers", type=whole_number(1, 64), default=2,
                    help="mlflow server worker processes (default %(default)s)")
    up.add_argument("--poll-interval", type=SECONDS, default=30.0,
                    help="seconds between poll cycles (default %(default)s)")
    up.add_argument("--webhook-cache-ttl", type=whole_number(1, 3600), default=10,
                    help="seconds MLflow caches its list of webhooks (default %(default)s)")
    up.add_argument("--host", default="127.0.0.1",
                    help="address every service listens on (default %(default)s)")
    up.add_argument("--mlflow-port", type=whole_number(0, 65535), default=0,
                    help="MLflow server port, 0 for a free one (default)")
    up.add_argument("--dashboard-port", type=whole_number(0, 65535), default=0,
                    help="dashboard port, 0 for a free one (default)")
    up.add_argument("--startup-timeout", type=SECONDS, default=180.0,
                    help="seconds each service may take to become ready (default %(default)s)")
    down.add_argument("--timeout", type=SECONDS, default=20.0,
                      help="seconds between SIGTERM and SIGKILL (default %(default)s)")
    status.add_argument("--json", action="store_true", help="print JSON")
    return parser


# --- the plan: which processes, with which commands and variables -------------------

def plan(args: argparse.Namespace, ports: Ports, keys: StackSecrets,
         mlflow_store_uri: str) -> list[Service]:
    """Every process of the stack, in start order (no I/O)."""
    host, folder = args.host, args.dir.absolute()
    mlflow_url = f"http://{_url_host(host)}:{ports.mlflow}"
    services = [Service(
        "mlflow", "mlflow",
        mlflow_server_command(mlflow_store_uri, str(folder / "artifacts"), args.mlflow_workers,
                              host, ports.mlflow),
        mlflow_server_env(keys.encryption_key, args.webhook_cache_ttl),
        url=mlflow_url, health=f"{mlflow_url}/health")]
    env = domain_env(args, mlflow_url, keys)
    interval = f"{args.poll_interval:g}"
    services += [Service(f"poller-{i}", "poller", ["domain-mlflow", "poll", "--interval", interval],
                         env, ready_line="polling every") for i in range(1, args.pollers + 1)]
    receivers = []
    for i, port in enumerate(ports.webhooks, start=1):
        url = f"http://{_url_host(host)}:{port}"
        receivers.append(Service(f"webhook-{i}", "webhook",
                                 ["domain-mlflow", "webhook", "--host", host, "--port", str(port)],
                                 env, url=f"{url}{WEBHOOK_PATH}", health=f"{url}/healthz"))
    services += receivers
    dashboard = f"http://{_url_host(host)}:{ports.dashboard}"
    services.append(Service("dashboard", "dashboard",
                            ["domain-mlflow", "dashboard", "--host", host, "--port",
                             str(ports.dashboard)], env, url=dashboard,
                            health=f"{dashboard}/healthz"))
    services += [Service(f"webhook-register-{i}", "webhook-register",
                         ["domain-mlflow", "webhook", "register", "--url", str(receiver.url),
                          "--name", f"{WEBHOOK_NAME}-{i}"], env, once=True)
                 for i, receiver in enumerate(receivers, start=1)]
    return services


def mlflow_server_command(store_uri: str, artifacts: str, workers: int, host: str,
                          port: int) -> list[str]:
    """``mlflow server`` as the compose file's ``mlflow`` service runs it: MLflow's Flask
    app on gunicorn's sync workers (on uvicorn, the other choice, ``--workers`` > 1 leaves
    Nagle's algorithm on: every keep-alive request waits ~40 ms for a delayed ACK, and
    each request costs ~12 ms more CPU; docs/operations.md)."""
    return ["mlflow", "server", "--backend-store-uri", store_uri,
            "--artifacts-destination", artifacts, "--serve-artifacts",
            "--workers", str(workers), "--gunicorn-opts", MLFLOW_GUNICORN_OPTS,
            "--host", host, "--port", str(port)]


def mlflow_server_env(encryption_key: str, webhook_cache_ttl: int) -> dict[str, str]:
    """The MLflow server's variables: registry webhooks to private addresses, their
    secrets encrypted with ``encryption_key``; none of MLflow's server jobs (the stack
    runs none, and their consumers take seconds of CPU each at start-up)."""
    return {"MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": encryption_key,
            "MLFLOW_WEBHOOK_CACHE_TTL": str(webhook_cache_ttl),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def domain_env(args: argparse.Namespace, mlflow_url: str, keys: StackSecrets) -> dict[str, str]:
    """What every domain-mlflow service gets: the compose file's x-domain-env."""
    env = {"MLFLOW_TRACKING_URI": mlflow_url, "POSTGRES_DSN": args.postgres_dsn,
           "WEBHOOK_SECRET": keys.webhook_secret, "MLFLOW_UI_URL": mlflow_url,
           "POLL_INTERVAL_SECONDS": f"{args.poll_interval:g}"}
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    if args.localai_url:
        env["LOCALAI_URL"] = args.localai_url
        env["LOCALAI_MODELS_DIR"] = str(args.localai_models_dir.absolute())
        if args.localai_api_key:
            env["LOCALAI_API_KEY"] = args.localai_api_key
    return env


def _url_host(host: str) -> str:
    """The address to call a service on: a wildcard bind is reached on loopback."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def mlflow_store_uri(postgres_dsn: str, database: str) -> str:
    """MLflow's ``postgresql+psycopg://`` store: the config store's server and
    credentials, another database (no search_path of the config store's)."""
    from psycopg.conninfo import conninfo_to_dict

    params = {k: str(v) for k, v in conninfo_to_dict(postgres_dsn).items() if v is not None}
    user, password = params.pop("user", ""), params.pop("password", "")
    host, port = params.pop("host", ""), params.pop("port", "")
    params.pop("dbname", None)
    params.pop("options", None)  # the config store's search_path, not MLflow's
    userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    if host.startswith("/") or "," in host:  # a socket folder or several hosts
        params["host"] = host
        netloc = f"{userinfo}@" if userinfo else ""
    else:
        netloc = (f"{userinfo}@" if userinfo else "") + (f"[{host}]" if ":" in host else host)
        netloc += f":{port}" if port else ""
    if port and "host" in params:
        params["port"] = port
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql+psycopg://{netloc}/{quote(database, safe='')}{query}"


def ensure_mlflow_database(postgres_dsn: str, database: str) -> None:
    """Create MLflow's database beside the config store's, unless it is there."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict

    config_store = conninfo_to_dict(postgres_dsn)
    if config_store.get("dbname") == database and \
            "search_path" not in str(config_store.get("options") or ""):
        raise StackError(f"the config store's database is {database!r}, which MLflow's store "
                         "would share: choose another --mlflow-database")
    try:
        with psycopg.connect(postgres_dsn, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  [database]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except psycopg.errors.DuplicateDatabase:
        pass  # created meanwhile by another `up`
    except psycopg.Error as error:
        raise StackError(f"cannot prepare MLflow's database {database!r}: "
                         f"{str(error).strip().splitlines()[0]}") from None


def free_ports(host: str, count: int) -> list[int]:
    """Ports free on ``host`` now (held together, so all differ)."""
    probes = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            probe.bind((host, 0))
            probes.append(probe)
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def load_secrets(folder: Path) -> StackSecrets:
    """From the environment, else DIR/secrets.json, else new ones kept there (mode 600;
    a value from the environment is never written)."""
    path = folder / SECRETS_FILE
    kept = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    makers = {"webhook_secret": ("WEBHOOK_SECRET", lambda: secrets.token_urlsafe(32)),
              "encryption_key": ("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
                                 lambda: base64.urlsafe_b64encode(os.urandom(32)).decode())}
    values, keep = {}, {}
    for key, (variable, make) in makers.items():
        values[key] = os.environ.get(variable) or kept.get(key) or make()
        if not os.environ.get(variable):
            keep[key] = values[key]
    if keep != kept:
        temporary = path.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(keep, handle)
        temporary.replace(path)
    return StackSecrets(**values)


def redactor(args: argparse.Namespace, keys: StackSecrets) -> Callable[[object], str]:
    from domain_mlflow.redaction import Redactor, secrets_in

    carriers = (args.postgres_dsn, args.redis_url, args.localai_url)
    return Redactor([keys.webhook_secret, keys.encryption_key, args.localai_api_key,
                     *(secret for url in carriers for secret in secrets_in(url))])


# --- processes ----------------------------------------------------------------------

def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc), None where it is gone; a pid
    recorded with its start time is never mistaken for a later process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def running(record: dict[str, Any]) -> bool:
    pid = record.get("pid")
    if not pid:
        return False
    if Path("/proc").is_dir():
        return start_ticks(pid) == record.get("start_ticks")
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def launch(service: Service, folder: Path, base_env: dict[str, str]) -> subprocess.Popen:
    cwd = folder / "run" / service.name
    cwd.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    with (folder / "logs" / f"{service.name}.log").open("ab") as log:
        # Its own session: `down` signals the whole group (mlflow's workers too). The argv
        # is the plan's, a list run without a shell.
        return subprocess.Popen([sys.executable, *PROGRAMS[service.command[0]],  # noqa: S603
                                 *service.command[1:]],
                                cwd=cwd, env={**base_env, **service.env},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def base_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RUN_CONTEXT}
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as the image's ENV
    return env


def log_tail(folder: Path, name: str, lines: int = 8) -> str:
    try:
        text = (folder / "logs" / f"{name}.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def wait_ready(service: Service, process: subprocess.Popen, folder: Path,
               timeout: float) -> None:
    deadline = time.monotonic() + timeout
    log = folder / "logs" / f"{service.name}.log"
    while True:
        code = process.poll()
        if code is not None:
            raise StackError(f"{service.name} exited with code {code}: "
                             f"{log_tail(folder, service.name)}")
        if service.health:
            try:
                if requests.get(service.health, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
        elif service.ready_line:
            if service.ready_line in log.read_text(encoding="utf-8", errors="replace"):
                return
        else:
            return
        if time.monotonic() > deadline:
            raise StackError(f"{service.name} was not ready after {timeout:g}s (see {log})")
        time.sleep(0.2)


def stop(records: list[dict[str, Any]], timeout: float) -> dict[str, str]:
    """SIGTERM to each running process group, SIGKILL to those left after ``timeout``;
    the domain-mlflow services first, the MLflow server they call last."""
    outcome: dict[str, str] = {}
    waves = [[r for r in records if r["role"] != "mlflow"],
             [r for r in records if r["role"] == "mlflow"]]
    for wave in waves:
        alive = [r for r in wave if running(r)]
        for record in wave:
            outcome[record["name"]] = "stopped" if record in alive else "not running"
        for record in alive:
            _signal(record["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [r for r in alive if running(r)]
        for record in alive:
            _signal(record["pid"], signal.SIGKILL)
            outcome[record["name"]] = "killed"
        deadline = time.monotonic() + 10
        while any(running(r) for r in alive) and time.monotonic() < deadline:
            time.sleep(0.1)
    return outcome


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


# --- commands -----------------------------------------------------------------------

def read_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_FILE
    if not path.exists():
        raise StackError(f"no stack in {folder}: {path} does not exist (start one with up)")
    return json.loads(path.read_text(encoding="utf-8"))


def write_state(folder: Path, state: dict[str, Any]) -> None:
    path = folder / STATE_FILE
    path.with_suffix(".tmp").write_text(json.dumps(state, indent=2), encoding="utf-8")
    path.with_suffix(".tmp").replace(path)


def up(args: argparse.Namespace) -> int:
    folder = args.dir.absolute()
    if not args.postgres_dsn:
        raise StackError("--postgres-dsn (or $POSTGRES_DSN) is needed: the config store "
                         "every poller and receiver shares")
    if args.localai_url and not args.localai_models_dir:
        raise StackError("--localai-url needs --localai-models-dir: the folder LocalAI reads "
                         "models from, which the pollers and receivers write")
    if (folder / STATE_FILE).exists() and any(running(r) for r in read_state(folder)["services"]):
        raise StackError(f"a stack already runs in {folder}: stop it with down first")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "artifacts").mkdir(exist_ok=True)
    keys = load_secrets(folder)
    redact = redactor(args, keys)
    mlflow_port, dashboard_port, *webhooks = free_ports(args.host, 2 + args.receivers)
    ports = Ports(args.mlflow_port or mlflow_port, args.dashboard_port or dashboard_port,
                  webhooks)
    ensure_mlflow_database(args.postgres_dsn, args.mlflow_database)
    services = plan(args, ports, keys, mlflow_store_uri(args.postgres_dsn, args.mlflow_database))
    mlflow_url = str(services[0].url)
    state: dict[str, Any] = {
        "dir": str(folder), "host": args.host, "ready": False,
        "mlflow": {"url": mlflow_url, "ui": mlflow_url,
                   "database": args.mlflow_database},
        "dashboard": {"url": next(s.url for s in services if s.role == "dashboard")},
        "webhooks": [], "trainer_env": {"MLFLOW_TRACKING_URI": mlflow_url},
        "poll_interval_seconds": args.poll_interval, "services": []}
    base_env = base_environment()
    started: list[tuple[Service, subprocess.Popen]] = []

    def start(service: Service) -> subprocess.Popen:
        process = launch(service, folder, base_env)
        started.append((service, process))
        state["services"].append({
            "name": service.name, "role": service.role, "pid": process.pid,
            "start_ticks": start_ticks(process.pid), "url": service.url,
            "health": service.health, "log": str(folder / "logs" / f"{service.name}.log"),
            "cwd": str(folder / "run" / service.name),
            "command": [redact(part) for part in service.command]})
        write_state(folder, state)
        return process

    try:
        wait_ready(services[0], start(services[0]), folder, args.startup_timeout)
        daemons = [s for s in services[1:] if not s.once]
        for service, process in [(s, start(s)) for s in daemons]:
            wait_ready(service, process, folder, args.startup_timeout)
        registrations = [(s, launch(s, folder, base_env)) for s in services if s.once]
        for service, process in registrations:
            try:
                code = process.wait(timeout=args.startup_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            if code != 0:
                raise StackError(f"{service.name} exited with code {code}: "
                                 f"{log_tail(folder, service.name)}")
            option = service.command.index
            state["webhooks"].append({"name": service.command[option("--name") + 1],
                                      "url": service.command[option("--url") + 1]})
        state["ready"] = True
        write_state(folder, state)
    except (StackError, OSError) as error:
        stop(state["services"], 10)
        raise StackError(redact(error)) from None
    print(redact(summary(state)), flush=True)
    return 0


def summary(state: dict[str, Any]) -> str:
    lines = [f"{s['name']:<20} pid {s['pid']:<8} {s['url'] or ''}" for s in state["services"]]
    lines += [f"webhook {w['name']} → {w['url']}" for w in state["webhooks"]]
    lines += [f"trainers need only MLFLOW_TRACKING_URI={state['mlflow']['url']}",
              f"state in {Path(state['dir']) / STATE_FILE}; stop with: python deploy/stack.py "
              f"down --dir {state['dir']}"]
    return "\n".join(lines)


def down(args: argparse.Namespace) -> int:
    folder = args.dir.absolute()
    state = read_state(folder)
    outcome = stop(state["services"], args.timeout)
    state["ready"] = False
    write_state(folder, state)
    for name, what in outcome.items():
        print(f"{name:<20} {what}")
    return 0


def status(args: argparse.Namespace) -> int:
    state = read_state(args.dir.absolute())
    rows = []
    for record in state["services"]:
        alive = running(record)
        health = None
        if alive and record.get("health"):
            try:
                health = requests.get(record["health"], timeout=2).status_code == 200
            except requests.RequestException:
                health = False
        rows.append({"name": record["name"], "role": record["role"], "pid": record["pid"],
                     "running": alive, "healthy": health, "url": record["url"],
                     "log": record["log"]})
    if args.json:
        print(json.dumps({"mlflow": state["mlflow"], "dashboard": state["dashboard"],
                          "trainer_env": state["trainer_env"], "webhooks": state["webhooks"],
                          "services": rows}, indent=2))
    else:
        for row in rows:
            what = "running" if row["running"] else "stopped"
            what += {None: "", True: ", healthy", False: ", not answering"}[row["healthy"]]
            print(f"{row['name']:<20} pid {row['pid']:<8} {what:<20} {row['url'] or ''}")
        print(f"trainers need only MLFLOW_TRACKING_URI={state['mlflow']['url']}")
    return 0 if rows and all(row["running"] and row["healthy"] is not False for row in rows) \
        else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return {"up": up, "down": down, "status": status}[args.command](args)
    except StackError as error:
        print(f"stack: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
