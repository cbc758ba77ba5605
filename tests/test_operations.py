"""The docker compose file: the full stack, commands our CLI accepts, settings that pass."""

from __future__ import annotations

import shlex

import pytest
import yaml

from domain_mlflow.cli import build_parser
from domain_mlflow.settings import load_settings
from tests.helpers import REPO_ROOT

COMPOSE = REPO_ROOT / "deploy" / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _command(service: dict) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else shlex.split(command)


def test_the_full_stack_is_there(compose):
    assert set(compose["services"]) >= {"postgres", "redis", "mlflow", "localai", "poller",
                                        "webhook", "webhook-register", "monitor", "dashboard",
                                        "trainer"}
    server = _command(compose["services"]["mlflow"])
    assert server[:2] == ["mlflow", "server"]
    assert server[server.index("--backend-store-uri") + 1].startswith("postgresql+psycopg://")
    assert "--artifacts-destination" in server


def test_every_domain_mlflow_command_parses_with_the_real_cli(compose):
    parser = build_parser()
    ours = {name: _command(service) for name, service in compose["services"].items()
            if "command" in service and _command(service)[0] == "domain-mlflow"}
    assert set(ours) == {"poller", "webhook", "webhook-register", "monitor", "dashboard",
                         "trainer"}
    for name, command in ours.items():
        args = parser.parse_args(command[1:])
        assert callable(args.handler), name


def test_the_shared_environment_passes_the_settings_checks(compose):
    env = {key: value.replace("${POSTGRES_PASSWORD}", "pw").replace("${LOCALAI_API_KEY}", "k")
           .replace("${WEBHOOK_SECRET}", "s")
           for key, value in compose["x-domain-env"].items()}
    settings = load_settings(env)
    assert settings.postgres_dsn.endswith("@postgres:5432/domain_mlflow")
    assert settings.localai_models_dir == "/models"
    # LocalAI reads the folder our sink writes to.
    localai = compose["services"]["localai"]
    assert localai["environment"]["MODELS_PATH"] == "/models"
    assert "models:/models" in localai["volumes"]


def test_only_loopback_ports_are_published(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_the_image_pins_cpu_torch_like_pyproject():
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in dockerfile
    assert "torch==2.13.0" in (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")


# --- the loopback stack (deploy/stack.py) runs the compose file's services ------------

# Options whose values name where a service runs (hosts, ports, URLs, folders, names),
# which differ between the compose network and one host by design.
PLACE_OPTIONS = {"--host", "--port", "--url", "--name", "--interval",
                 "--artifacts-destination", "--backend-store-uri"}


def _is_option(word: str) -> bool:
    """``--name``; a value may start with ``--`` too (``--gunicorn-opts "--timeout 600"``)."""
    return word.startswith("--") and " " not in word


def _shape(command: list[str]) -> tuple[list[str], dict[str, str | None]]:
    """A command's subcommands and its options, the values of PLACE_OPTIONS left out."""
    words = [word for word in command[:next((i for i, w in enumerate(command)
                                              if w.startswith("--")), len(command))]]
    options: dict[str, str | None] = {}
    rest = command[len(words):]
    for index, word in enumerate(rest):
        if not _is_option(word):
            continue
        value = rest[index + 1] if index + 1 < len(rest) and \
            not _is_option(rest[index + 1]) else None
        options[word] = "<place>" if word in PLACE_OPTIONS else value
    return words, options


@pytest.fixture(scope="module")
def stack_plan():
    from tests.stack import stack_module

    stack = stack_module()
    args = stack.make_parser().parse_args([
        "up", "--dir", "/srv/stack", "--postgres-dsn",
        "postgresql://app:pw@db:5432/domain_mlflow", "--redis-url", "redis://redis:6379/0",
        "--localai-url", "http://localai:8080", "--localai-models-dir", "/models",
        "--localai-api-key", "k"])
    store_uri = stack.mlflow_store_uri(args.postgres_dsn, args.mlflow_database)
    return stack.plan(args, stack.Ports(5000, 8085, [8090, 8091]),
                      stack.StackSecrets("s", "fernet"), store_uri)


def test_the_loopback_stack_runs_each_compose_service_with_its_command_and_variables(
        compose, stack_plan):
    assert {service.role for service in stack_plan} == {"mlflow", "poller", "webhook",
                                                        "webhook-register", "dashboard"}
    for service in stack_plan:
        composed = compose["services"][service.role]
        assert _shape(service.command) == _shape(_command(composed)), service.name
        assert set(service.env) == set(composed["environment"]), service.name
    [server] = [s.command for s in stack_plan if s.role == "mlflow"]
    uri = server[server.index("--backend-store-uri") + 1]
    assert uri == "postgresql+psycopg://app:pw@db:5432/mlflow"  # not the config store's


def test_the_loopback_stack_runs_as_many_pollers_and_receivers_as_the_compose_file(
        compose, stack_plan):
    for role in ("poller", "webhook"):
        count = sum(service.role == role for service in stack_plan)
        assert count == compose["services"][role]["deploy"]["replicas"] == 2, role
    # One MLflow webhook per receiver: registering under one name would move it.
    names = [s.command[s.command.index("--name") + 1] for s in stack_plan
             if s.role == "webhook-register"]
    assert names == ["domain-mlflow-1", "domain-mlflow-2"]


def test_the_loopback_stack_registers_the_receivers_path():
    from domain_mlflow.promotion.webhook import PATH
    from tests.stack import stack_module

    assert stack_module().WEBHOOK_PATH == PATH


@pytest.mark.parametrize(("dsn", "uri"), [
    ("postgresql://u:p%40ss@db:5433/configs?options=-csearch_path%3Dcfg&sslmode=require",
     "postgresql+psycopg://u:p%40ss@db:5433/mlflow?sslmode=require"),
    ("host=db port=5432 dbname=configs user=u password='a b'",
     "postgresql+psycopg://u:a%20b@db:5432/mlflow"),
    ("postgresql://u@/configs?host=/var/run/postgresql",
     "postgresql+psycopg://u@/mlflow?host=%2Fvar%2Frun%2Fpostgresql"),
])
def test_mlflow_gets_another_database_on_the_config_stores_server(dsn, uri):
    from tests.stack import stack_module

    assert stack_module().mlflow_store_uri(dsn, "mlflow") == uri
