"""The loopback stack (deploy/stack.py): a real MLflow server on PostgreSQL, two pollers,
two webhook receivers and the dashboard as separate processes; trainers that share
nothing with them but the MLflow server's URL; each version promoted exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient

from domain_mlflow.gate import Thresholds, decide
from domain_mlflow.naming import model_version as model_version_string
from domain_mlflow.naming import registered_model_name
from domain_mlflow.registry import register_version
from domain_mlflow.sinks.config_store import ConfigStore
from domain_mlflow.sinks.localai import LocalAIClient
from domain_mlflow.sinks.redis_sink import RedisSink
from domain_mlflow.sinks.rows import Kind, State
from domain_mlflow.training.publish import version_tags
from tests.helpers import EXAMPLES, LOCALAI_TEST_KEY
from tests.promotion_helpers import PASSING
from tests.stack import RunningStack, loopback_stack, stack_module, wait_for

pytestmark = pytest.mark.mlflow_server

# A few training steps cannot reach the default gate: these domains' own thresholds let
# them through (registered-model tags, as an operator would set them).
LAX = {"threshold.accuracy": "0", "threshold.latency_ms": "100000",
       "threshold.training_loss": "100", "threshold.validation_loss": "100"}
TRAINED = {"0x5678-SQLAgent": "sql_agent.jsonl",
           "0x3579-VectorProcessingAgent": "vector_agent.jsonl"}


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with loopback_stack(tmp_path) as running:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", running.mlflow_url)
        mlflow.set_tracking_uri(running.mlflow_url)
        mlflow.set_registry_uri(running.mlflow_url)
        yield running


def _store(stack: RunningStack, tmp_path: Path) -> ConfigStore:
    return ConfigStore.open(stack.config_dsn, tmp_path / "unused.db")


def _serving(stack: RunningStack) -> RedisSink:
    return RedisSink(stack.redis_url, stack.redis_prefix)


def _production(client: MlflowClient, domain: str) -> int | None:
    alias = client.get_registered_model(registered_model_name(domain)).aliases.get("production")
    return None if alias is None else int(alias)


def _agrees(stack: RunningStack, store: ConfigStore, client: MlflowClient, domain: str,
            version: Any) -> bool:
    """Registry alias, config store, Redis and LocalAI all name ``version``."""
    expected = version.tags["model_version"]
    config = store.get_config(domain)
    redis_value = _serving(stack).get(domain) or {}
    return (_production(client, domain) == int(version.version)
            and config is not None and config.model_version == expected
            and config.registry_version == int(version.version)
            and redis_value.get("model_version") == expected
            and (stack.localai.config(domain) or {}).get("alias") == expected)


def _train(domain: str, data: Path, workdir: Path, mlflow_url: str, cache_dir: str
           ) -> subprocess.Popen[str]:
    """``domain-mlflow train`` in a fresh folder whose environment names nothing of the
    stack but the MLflow server: no config store, no Redis, no LocalAI."""
    workdir.mkdir()
    env = {"MLFLOW_TRACKING_URI": mlflow_url, "DOMAIN_MLFLOW_CACHE_DIR": cache_dir,
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true",
           **{key: os.environ[key] for key in ("PATH", "HOME", "PYTHONPATH") if key in os.environ}}
    return subprocess.Popen(
        [sys.executable, "-m", "domain_mlflow.cli", "train", "--domain-id", domain,
         "--data", str(data), "--max-steps", "3", "--batch-size", "8", "--eval-every", "3",
         "--checkpoint-every", "3", "--eval-examples", "2", "--max-new-tokens", "8",
         "--promote", "false", "--json"],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_trained_domains_are_promoted_once_each_by_the_stack_and_served(
        stack, tiny_base, tiny_cache_dir, tmp_path):
    client = MlflowClient(stack.mlflow_url)
    for domain in TRAINED:
        client.create_registered_model(registered_model_name(domain),
                                       tags={"domain_id": domain, **LAX})
    trainers = {}
    for domain, file in TRAINED.items():
        data = tmp_path / file
        lines = (EXAMPLES / file).read_text(encoding="utf-8").splitlines()[:40]
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
        trainers[domain] = (tmp_path / f"trainer-{file}", _train(
            domain, data, tmp_path / f"trainer-{file}", stack.mlflow_url, tiny_cache_dir))
    results = {}
    for domain, (workdir, process) in trainers.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        results[domain] = json.loads(out[out.index("{"):])
        # It stopped at the registered version and kept no config store of its own.
        assert results[domain]["deployment"] is None
        assert results[domain]["registry_version"] == "1"
        assert not list(workdir.rglob("domain_configs.db"))

    store = _store(stack, tmp_path)
    versions = {domain: client.get_model_version(registered_model_name(domain), "1")
                for domain in TRAINED}
    for domain, version in versions.items():
        wait_for(f"{domain} v1 in production everywhere",
                 lambda d=domain, v=version: _agrees(stack, store, client, d, v), 90, stack,
                 last=lambda d=domain: (_production(client, d), store.get_config(d),
                                        store.promotions_of_version(d, 1)))
    promoters = stack.pids("poller", "webhook")
    assert len(promoters) == 4
    for domain, version in versions.items():
        expected = version.tags["model_version"]
        [promotion] = store.promotions_of_version(domain, 1)
        assert (promotion.kind, promotion.state) == (Kind.PROMOTE, State.DONE)
        assert int(promotion.actor.rsplit(":", 1)[1]) in promoters, promotion.actor
        [promoted] = [e for e in store.history(domain) if e.action == "promote"]
        assert (promoted.registry_version, promoted.model_version) == (1, expected)
        # The merged model reached LocalAI's folder through the server's artifact proxy:
        # byte for byte what the trainer wrote in its own folder.
        trained = trainers[domain][0] / results[domain]["model_path"]
        exported = stack.localai.models_dir / domain / expected
        for name in ("config.json", "model.safetensors"):
            assert (exported / name).read_bytes() == (trained / name).read_bytes()
        answer = LocalAIClient(stack.localai.url, LOCALAI_TEST_KEY).complete(domain, "Count?")
        assert answer["choices"][0]["text"].startswith(f"[{expected}]")
    store.close()

    status = stack.script("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = json.loads(status.stdout)["services"]
    assert {r["name"] for r in rows} == {"mlflow", "poller-1", "poller-2", "webhook-1",
                                         "webhook-2", "dashboard"}
    assert all(r["running"] for r in rows)
    assert json.loads(status.stdout)["trainer_env"] == {"MLFLOW_TRACKING_URI": stack.mlflow_url}


def _shared_merged_model() -> tuple[str, str]:
    """One run's ``merged_model/`` artifact, logged through the server: every burst version
    points at it, as a cheap stand-in for training."""
    with tempfile.TemporaryDirectory() as folder, mlflow.start_run() as run:
        Path(folder, "config.json").write_text(json.dumps({"model_type": "gpt2"}))
        Path(folder, "model.safetensors").write_bytes(b"burst weights")
        mlflow.log_artifacts(folder, "merged_model")
    return f"{run.info.artifact_uri}/merged_model", run.info.run_id


def _register_passing(client: MlflowClient, domain: str, index: int, source: tuple[str, str]
                      ) -> Any:
    at = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=index)
    tags = version_tags(domain_id=domain, model_version=model_version_string(domain, at),
                        training_run_id=f"{domain}_burst_{index}",
                        decision=decide(PASSING, Thresholds()), metrics=PASSING, extra={})
    return register_version(client, domain, source[0], source[1], tags)


def _burst_view(stack: RunningStack, store: ConfigStore, client: MlflowClient,
                registered: dict[str, list[Any]]) -> dict[str, Any]:
    """Where each domain stands, for a failure message."""
    view = {}
    for domain, versions in registered.items():
        config = store.get_config(domain)
        view[domain] = {
            "newest": int(versions[-1].version), "alias": _production(client, domain),
            "config": config and config.registry_version,
            "redis": (_serving(stack).get(domain) or {}).get("registry_version"),
            "localai": (stack.localai.config(domain) or {}).get("alias"),
            "promotions": [(p.registry_version, p.kind.value, p.state.value, p.actor,
                            p.request_key, p.reason, p.last_error)
                           for v in versions
                           for p in store.promotions_of_version(domain, int(v.version))]}
    return view


def _process_tree(pid: int) -> list[str]:
    """The command lines of ``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    lines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            lines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(lines.get(current, ""))
        todo += children.get(current, [])
    return tree


def test_the_stacks_mlflow_server_runs_on_gunicorn_without_job_consumers(stack):
    answer = requests.get(f"{stack.mlflow_url}/health", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Server"].startswith("gunicorn")
    tree = _process_tree(stack.service("mlflow")["pid"])
    assert sum("-m gunicorn" in line for line in tree) == 3  # the arbiter and its 2 workers
    assert not [line for line in tree if "huey" in line or "_job_runner" in line]


def test_a_burst_with_a_poller_and_a_receiver_killed_leaves_nothing_undecided(stack, tmp_path):
    client = MlflowClient(stack.mlflow_url)
    source = _shared_merged_model()
    domains = [f"burst-{i}" for i in range(5)]
    registered: dict[str, list[Any]] = {domain: [] for domain in domains}
    for index in range(30):
        if index == 12:  # mid-burst: one of each kind dies without a word
            stack.kill("poller-1")
            stack.kill("webhook-1")
        domain = domains[index % len(domains)]
        registered[domain].append(_register_passing(client, domain, index, source))

    store = _store(stack, tmp_path)

    def settled() -> bool:
        decided = all(store.promotions_of_version(d, int(v.version))
                      for d, versions in registered.items() for v in versions)
        return decided and not store.open_promotions() and all(
            _agrees(stack, store, client, d, versions[-1])
            for d, versions in registered.items())

    wait_for("every burst version decided and each domain's newest in production", settled,
             120, stack, last=lambda: _burst_view(stack, store, client, registered))
    survivors = {stack.service("poller-2")["pid"], stack.service("webhook-2")["pid"]}
    killed = {stack.service("poller-1")["pid"], stack.service("webhook-1")["pid"]}
    for domain, versions in registered.items():
        promotions = [store.promotions_of_version(domain, int(v.version)) for v in versions]
        assert [len(of_version) for of_version in promotions] == [1] * len(versions), [
            (p.registry_version, p.kind, p.state, p.actor, p.request_key, p.reason)
            for of_version in promotions for p in of_version]
        assert {(p.kind, p.state in (State.DONE, State.REJECTED))
                for [p] in promotions} == {(Kind.PROMOTE, True)}
        assert {int(p.actor.rsplit(":", 1)[1]) for [p] in promotions} <= survivors | killed
        promoted = Counter(e.registry_version for e in store.history(domain, limit=1000)
                           if e.action == "promote")
        assert set(promoted.values()) == {1}, promoted
        newest = int(versions[-1].version)
        assert promoted[newest] == 1
        assert store.get_config(domain).version_number == len(promoted)
    store.close()

    status = stack.script("status")
    assert status.returncode == 1  # two services are down
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if " pid " in line}
    assert "stopped" in lines["poller-1"] and "stopped" in lines["webhook-1"]
    assert "running" in lines["poller-2"] and "running" in lines["webhook-2"]

    records = stack.state()["services"]
    down = stack.script("down", "--timeout", "10")
    assert down.returncode == 0, down.stderr
    assert not [r["name"] for r in records if stack_module().running(r)]
    # No secret in what the stack printed or wrote beside secrets.json.
    kept = json.loads((stack.folder / "secrets.json").read_text(encoding="utf-8"))
    written = stack.up_output + (stack.folder / "stack.json").read_text(encoding="utf-8")
    for secret in (*kept.values(), LOCALAI_TEST_KEY):
        assert secret not in written
    assert oct((stack.folder / "secrets.json").stat().st_mode & 0o777) == "0o600"

