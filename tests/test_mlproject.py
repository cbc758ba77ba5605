"""`mlflow run . -e train` and `domain-mlflow train` as a user runs them: subprocesses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import REPO_ROOT, write_jsonl

pytestmark = pytest.mark.mlproject

DOMAIN = "chat-support"


def _chat_records(n: int) -> list[dict]:
    """A data set in the messages format, which no other test trains on."""
    topics = ["refund", "password", "invoice", "shipping", "account", "upgrade", "login"]
    return [
        {"domain_id": DOMAIN, "messages": [
            {"role": "system", "content": "Answer with the team to contact."},
            {"role": "user", "content": f"Ticket {i}: a question about {topics[i % 7]}."},
            {"role": "assistant", "content": f"team-{topics[i % 7]}"},
        ]}
        for i in range(n)
    ]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLFLOW_RUN_ID", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


def _mlflow_run(tmp_path: Path, **params: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mlflow", "run", str(REPO_ROOT), "-e", "train",
               "--env-manager", "local"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return subprocess.run(command, cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=600, check=False)


def test_mlflow_run_trains_and_registers_a_version(tiny_base, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", _chat_records(30))
    done = _mlflow_run(tmp_path, domain_id=DOMAIN, data=data, max_steps=4, eval_every=2,
                       checkpoint_every=2)
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient()
    [version] = client.search_model_versions(f"name='domain.{DOMAIN}'")
    assert version.tags["domain_id"] == DOMAIN
    assert re.fullmatch(rf"{DOMAIN}-v\d{{8}}_\d{{6}}", version.tags["model_version"])
    assert re.fullmatch(rf"{DOMAIN}_\d{{8}}_\d{{6}}", version.tags["training_run_id"])
    assert version.tags["validation_status"] in {"passed", "failed"}

    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "train"
    assert run.data.tags["training_run_id"] == version.tags["training_run_id"]
    assert run.data.params["max_steps"] == "4"
    assert run.data.params["data"] == str(data)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "training_loss")]
    assert sorted(steps) == [1, 2, 3, 4]
    for metric in ("accuracy", "latency_ms", "latency_p95_ms", "validation_loss",
                   "tokens_per_second"):
        assert metric in run.data.metrics
    results = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/results.json")
    assert results["model_version"] == version.tags["model_version"]
    assert results["data"]["records"] == 30


def test_mlflow_run_on_a_malformed_file_fails_with_the_line_and_registers_nothing(tiny_base,
                                                                                 tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n'
                    '{"prompt": "e", completion: "f"}\n', encoding="utf-8")
    done = _mlflow_run(tmp_path, domain_id=DOMAIN, data=data, max_steps=2)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("domain-mlflow:")]
    assert ours == [f"domain-mlflow: error: {data}, line 3: invalid JSON: "
                    "Expecting property name enclosed in double quotes (column 17)"]
    assert "Traceback" not in done.stderr.split("domain-mlflow: error")[0]
    assert MlflowClient().search_model_versions() == []


def test_a_failed_mlflow_run_is_named_after_its_domain_and_says_why(small_sql_data, tmp_path):
    done = _mlflow_run(tmp_path, domain_id="nope", data=small_sql_data, max_steps=2)
    assert done.returncode != 0
    assert "domain-mlflow: error:" in done.stderr

    client = MlflowClient()
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED"
    assert run.data.tags["mlflow.project.entryPoint"] == "train"
    assert run.data.tags["domain_id"] == "nope"
    reason = run.data.tags["failure_reason"]
    assert "no record of domain 'nope'" in reason
    assert "1 other domain(s): '0x5678-SQLAgent' (40)" in reason
    assert "-P domain_id=" in reason
    assert re.fullmatch(r"nope_\d{8}_\d{6}", run.info.run_name)
    assert client.search_model_versions() == []


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "domain_mlflow.cli", *args], cwd=tmp_path,
                          env=_env(tmp_path, **env), capture_output=True, text=True,
                          timeout=600, check=False)


_PROGRESS = re.compile(r"INFO domain_mlflow\.training\.progress: (\w+): (?:step|example) "
                       r"(\d+) of (\d+) \(\d+%\), [\d.]+ (?:\w+/s|s/\w+), ETA \d+m\d\ds")


def test_cli_train_with_piped_output_logs_progress_lines_with_an_eta(tiny_base, small_sql_data,
                                                                     tmp_path):
    done = _cli(tmp_path, "train", "--domain-id", "0x5678-SQLAgent", "--data",
                str(small_sql_data), "--max-steps", "4", "--eval-examples", "3",
                DOMAIN_MLFLOW_PROGRESS_SECONDS="0")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [match.groups() for match in map(_PROGRESS.match, done.stderr.splitlines()) if match]
    assert [line for line in lines if line[0] == "training"] == [
        ("training", str(step), "4") for step in range(1, 5)]
    assert [line for line in lines if line[0] == "evaluation"] == [
        ("evaluation", str(n), "3") for n in range(1, 4)]
    assert "\r" not in done.stderr  # no bar drawn into the pipe


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"question": "q", "sql": "s"}\n{"question": "only"}\n',
         "line 2: record has 'question' but no 'sql'"),
        (b"", "file is empty"),
        (b'{"prompt": "caf\xe9", "completion": "x"}\n', "line 1: not valid UTF-8"),
    ],
)
def test_cli_train_on_bad_data_prints_one_line_and_exits_2(tmp_path, content, expected):
    data = tmp_path / "bad.jsonl"
    data.write_bytes(content)
    done = _cli(tmp_path, "train", "--domain-id", DOMAIN, "--data", str(data))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("domain-mlflow: error: ")
    assert expected in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("domain_id", ["../escape", "it's", "x" * 300])
def test_cli_train_refuses_unsafe_domain_ids(tmp_path, domain_id):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}] * 2)
    done = _cli(tmp_path, "train", "--domain-id", domain_id, "--data", str(data))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "domain id" in done.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_cli_train_json_output_is_the_result_dict(tiny_base, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", _chat_records(20))
    done = _cli(tmp_path, "train", "--domain-id", DOMAIN, "--data", str(data), "--max-steps",
                "2", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert {"training_run_id", "model_path", "evaluation", "should_deploy",
            "deployment"} <= set(results)
    assert Path(results["model_path"]).is_dir()


def test_cli_help_lists_train(tmp_path):
    done = _cli(tmp_path, "--help")
    assert done.returncode == 0
    assert "train" in done.stdout
    done = _cli(tmp_path, "train", "--help")
    assert "--from-scratch" in done.stdout


def test_mlflow_run_poll_once_promotes_a_new_version(tmp_path):
    from tests.promotion_helpers import PASSING, register_domain_version

    version = register_domain_version("polled-domain", PASSING)
    command = [sys.executable, "-m", "mlflow", "run", str(REPO_ROOT), "-e", "poll",
               "--env-manager", "local", "-P", "once=true"]
    done = subprocess.run(command, cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    aliases = MlflowClient().get_registered_model("domain.polled-domain").aliases
    assert str(aliases["production"]) == str(version.version)
