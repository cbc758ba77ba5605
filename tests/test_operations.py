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
