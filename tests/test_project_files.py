"""The project's own files agree: pins, MLproject parameter types, generated examples."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import yaml
from mlflow.projects._project_spec import load_project

from tests.helpers import EXAMPLES, REPO_ROOT


def _pyproject_dependencies() -> list[str]:
    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["dependencies"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_torch_is_pinned_to_the_cpu_build_everywhere():
    python_env = yaml.safe_load((REPO_ROOT / "python_env.yaml").read_text())
    conda = yaml.safe_load((REPO_ROOT / "conda.yaml").read_text())
    conda_pip = next(item["pip"] for item in conda["dependencies"] if isinstance(item, dict))
    for requirements in (_pyproject_dependencies(), python_env["dependencies"], conda_pip):
        assert "torch==2.13.0" in requirements


def test_environment_files_carry_the_same_pins_as_pyproject():
    pyproject = {_name(r): r for r in _pyproject_dependencies()}
    python_env = yaml.safe_load((REPO_ROOT / "python_env.yaml").read_text())["dependencies"]
    conda = yaml.safe_load((REPO_ROOT / "conda.yaml").read_text())
    conda_pip = next(item["pip"] for item in conda["dependencies"] if isinstance(item, dict))
    for requirements in (python_env, conda_pip):
        for requirement in requirements:
            assert pyproject[_name(requirement)] == requirement


def test_mlproject_train_parameters_are_typed():
    project = load_project(str(REPO_ROOT))
    params = project.get_entry_point("train").parameters
    types = {name: param.type for name, param in params.items()}
    assert types == {
        "domain_id": "string", "data": "path", "fine_tune": "string", "base_model": "string",
        "max_steps": "int", "learning_rate": "float", "lora_r": "int", "seed": "int",
        "resume": "string", "eval_every": "int", "checkpoint_every": "int",
        "batch_size": "int", "max_length": "int", "max_minutes": "string",
        "eval_examples": "string", "max_new_tokens": "string", "promote": "string",
    }
    assert params["fine_tune"].default == "true"
    assert params["promote"].default == "true"
    assert params["base_model"].default == "tiny"


def test_mlproject_poll_parameters_are_typed():
    params = load_project(str(REPO_ROOT)).get_entry_point("poll").parameters
    assert {name: param.type for name, param in params.items()} == {"interval": "float",
                                                                   "once": "string"}


def test_mlproject_pipeline_parameters_are_typed():
    params = load_project(str(REPO_ROOT)).get_entry_point("pipeline").parameters
    assert {name: param.type for name, param in params.items()} == {
        "project_id": "string", "tables": "string", "privacy_level": "string",
        "domain_filtering": "string", "train": "string", "max_steps": "int",
        "min_records": "int"}
    assert params["train"].default == "auto"


def test_the_example_files_are_what_the_generator_writes(tmp_path):
    subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "generate_data.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("sql_agent.jsonl", "vector_agent.jsonl"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes()
