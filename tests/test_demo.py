"""``domain-mlflow demo`` as a user runs it: both example domains with default parameters.

This is also the check that the bundled SQL example, trained with the defaults,
clears the default gate (accuracy >= 0.85) while the vector example does not.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from domain_mlflow.demo import run_demo
from domain_mlflow.services import Services
from domain_mlflow.settings import load_settings
from domain_mlflow.sinks.config_store import ConfigStore
from tests.conftest import TEST_POSTGRES_DSN
from tests.helpers import REPO_ROOT, connections_named, with_application_name

SQL, VECTOR = "0x5678-SQLAgent", "0x3579-VectorProcessingAgent"


@pytest.mark.slow
def test_the_demo_promotes_the_sql_agent_and_rejects_the_vector_agent(tiny_base, tmp_path):
    # A checkout with the project's .gitignore: whatever the demo writes must be ignored.
    shutil.copy(REPO_ROOT / ".gitignore", tmp_path / ".gitignore")
    for command in (["init", "-q"], ["add", ".gitignore"],
                    ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ignore"]):
        subprocess.run(["git", *command], cwd=tmp_path, check=True, capture_output=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "domain_mlflow.cli", "demo"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout

    client = MlflowClient()
    production = client.get_registered_model(f"domain.{SQL}").aliases["production"]
    version = client.get_model_version(f"domain.{SQL}", str(production))
    assert float(version.tags["accuracy"]) >= 0.85, version.tags["validation_reasons"]
    assert version.tags["validation_status"] == "passed"
    assert (f"in production: version {production} ({version.tags['model_version']})"
            in out)
    [rejected] = client.search_model_versions(f"name = 'domain.{VECTOR}'")
    assert rejected.tags["validation_status"] == "failed"
    assert "production" not in client.get_registered_model(f"domain.{VECTOR}").aliases
    assert f"rejected by the gate: {rejected.tags['validation_reasons']}" in out

    config_store = tmp_path / "domain_configs.db"
    assert f"config store   {config_store}" in out
    store = ConfigStore.open(None, config_store)
    try:
        assert store.get_config(SQL).model_version == version.tags["model_version"]
        assert store.get_config(VECTOR) is None
        assert [entry.action for entry in store.history(VECTOR)] == ["reject"]
    finally:
        store.close()
    for hint in ("mlflow ui --backend-store-uri", "domain-mlflow dashboard",
                 "domain-mlflow status"):
        assert hint in out
    untracked = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                               cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert untracked == ""
    assert list((tmp_path / ".domain_configs.db.locks").glob("*.lock"))  # not in the root
    assert not list(tmp_path.glob(".domain_configs.db.*.lock"))


def test_run_demo_closes_the_connections_it_opened(tiny_base, postgres_dsn):
    name = f"demo-{os.getpid()}"
    configured = dataclasses.replace(
        load_settings(), postgres_dsn=with_application_name(postgres_dsn, name))
    report = run_demo(max_steps=2, settings=configured, progress=False)
    assert connections_named(TEST_POSTGRES_DSN, name) == 0
    with Services(configured) as services:  # each domain decided once, in the demo's store
        assert {domain: len(services.store.history(domain)) for domain in report["domains"]
                } == {SQL: 1, VECTOR: 1}
