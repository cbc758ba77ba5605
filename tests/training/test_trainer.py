"""Training end to end on a real MLflow store: LoRA, from scratch, folders, resume, NaN."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from domain_mlflow import DomainTrainer
from domain_mlflow.data import load_training_data, split_examples
from domain_mlflow.exceptions import (
    CheckpointError,
    MalformedJSONError,
    TrainingDivergedError,
    TrainingTimeLimitReached,
)
from domain_mlflow.training.features import encode_example
from domain_mlflow.training.loop import LoopConfig, TrainingLoop
from domain_mlflow.training.models import add_lora, load_base
from tests.helpers import run_torchrun

DOMAIN = "0x5678-SQLAgent"
TINY_BUDGET = {"max_steps": 6, "eval_every": 3, "checkpoint_every": 3, "batch_size": 8}


def _encoded(path: Path, tokenizer):
    data = load_training_data(path)
    train, validation = split_examples(data.examples, 0.2, 0)
    return ([encode_example(e, tokenizer, 128) for e in train],
            [encode_example(e, tokenizer, 128) for e in validation])


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_lora_keeps_base_weights_frozen_and_moves_the_adapters(tiny_base, small_sql_data,
                                                               tiny_cache_dir):
    base = load_base("tiny", tiny_cache_dir, from_scratch=False)
    model = add_lora(base.model, rank=4)
    before = _snapshot(model)
    train, validation = _encoded(small_sql_data, base.tokenizer)
    TrainingLoop(model, train, validation, LoopConfig(max_steps=3, batch_size=8),
                 base.tokenizer.pad_token_id, progress=False).run()
    after = _snapshot(model)
    adapters = [name for name in before if "lora_" in name]
    frozen = [name for name in before if "lora_" not in name]
    assert adapters and frozen
    assert all(not model.get_parameter(name).requires_grad for name in frozen)
    assert all(torch.equal(before[name], after[name]) for name in frozen)
    assert all(not torch.equal(before[name], after[name]) for name in adapters)


def test_from_scratch_trains_every_weight_from_a_random_start(tiny_base, small_sql_data,
                                                              tiny_cache_dir):
    pretrained = load_base("tiny", tiny_cache_dir, from_scratch=False).model
    scratch = load_base("tiny", tiny_cache_dir, from_scratch=True)
    model = scratch.model
    assert all(p.requires_grad for p in model.parameters())
    assert not torch.equal(model.transformer.wte.weight, pretrained.transformer.wte.weight)
    before = _snapshot(model)
    train, validation = _encoded(small_sql_data, scratch.tokenizer)
    TrainingLoop(model, train, validation, LoopConfig(max_steps=3, batch_size=8),
                 scratch.tokenizer.pad_token_id, progress=False).run()
    after = _snapshot(model)
    assert all(not torch.equal(before[name], after[name]) for name in before)


def test_train_domain_model_records_run_artifacts_and_a_registry_version(small_sql_data,
                                                                         tmp_path):
    results = DomainTrainer().train_domain_model(DOMAIN, small_sql_data, **TINY_BUDGET)

    # the seed's result dict
    assert re.fullmatch(rf"{DOMAIN}_\d{{8}}_\d{{6}}", results["training_run_id"])
    assert Path(results["model_path"], "config.json").is_file()
    for key in ("accuracy", "latency_ms", "latency_p95_ms", "training_loss", "validation_loss",
                "tokens_per_second"):
        assert isinstance(results["evaluation"][key], float)
    assert results["should_deploy"] is False  # six steps cannot reach 0.85
    deployment = results["deployment"]  # the gate refused it, and said why
    assert deployment["deployed"] is False
    assert deployment["state"] == "rejected"
    assert "accuracy" in deployment["reason"]
    assert "accuracy" in " ".join(results["gate"]["reasons"])

    client = MlflowClient()
    run = client.get_run(results["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["domain_id"] == DOMAIN
    assert run.data.tags["training_run_id"] == results["training_run_id"]
    assert run.data.tags["validation_status"] == "failed"
    losses = client.get_metric_history(run.info.run_id, "training_loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4, 5, 6]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id,
                                                            "validation_loss")) == [3, 6]
    assert run.data.metrics["accuracy"] == results["evaluation"]["accuracy"]
    assert run.data.params["max_steps"] == "6"
    assert run.data.params["lora_r"] == "16"
    assert run.data.params["base_model"] == "tiny"
    assert run.data.params["data_digest"] == results["data"]["digest"]
    assert run.data.params["data_train_examples"] == str(results["data"]["train_examples"])
    contexts = sorted(d.tags[0].value for d in run.inputs.dataset_inputs)
    assert contexts == ["training", "validation"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"adapter", "merged_model", "tokenizer", "results.json",
            "validation_predictions.json"} <= artifacts
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/results.json")
    assert logged["training_run_id"] == results["training_run_id"]
    assert logged["registry_version"] == "1"

    version = client.get_model_version("domain." + DOMAIN, "1")
    assert version.run_id == run.info.run_id
    assert version.tags["domain_id"] == DOMAIN
    assert version.tags["training_run_id"] == results["training_run_id"]
    assert re.fullmatch(rf"{DOMAIN}-v\d{{8}}_\d{{6}}", version.tags["model_version"])
    assert version.tags["model_version"] == results["model_version"]
    assert version.tags["validation_status"] == "failed"
    assert "accuracy" in version.tags["validation_reasons"]
    assert float(version.tags["accuracy"]) == results["evaluation"]["accuracy"]
    assert json.loads(version.tags["gate_thresholds"])["accuracy"] == 0.85
    assert "stage" not in version.tags  # the aliases say where a version stands

    # the seed's local layout
    local = tmp_path / "models" / DOMAIN / results["training_run_id"]
    assert json.loads((local / "results.json").read_text())["model_version"] == \
        results["model_version"]
    assert (local / "adapter" / "adapter_config.json").is_file()
    checkpoints = tmp_path / "checkpoints" / DOMAIN / results["training_run_id"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000003", "step-000006"]

    # the registered version serves what evaluation measured
    table = pd.read_json(mlflow.artifacts.download_artifacts(
        f"runs:/{run.info.run_id}/validation_predictions.json"), orient="split")
    served = mlflow.pyfunc.load_model(results["model_uri"]).predict(
        pd.DataFrame({"prompt": table["prompt"][:3]}))
    assert list(served) == list(table["prediction"][:3])


def test_lax_thresholds_let_the_version_pass(small_sql_data, monkeypatch):
    monkeypatch.setenv("DEPLOY_ACCURACY_THRESHOLD", "0")
    monkeypatch.setenv("DEPLOY_LATENCY_THRESHOLD", "100000")
    monkeypatch.setenv("DEPLOY_LOSS_THRESHOLD", "100")
    monkeypatch.setenv("DEPLOY_VAL_LOSS_THRESHOLD", "100")
    results = DomainTrainer().train_domain_model(DOMAIN, small_sql_data, **TINY_BUDGET)
    assert results["should_deploy"] is True
    version = MlflowClient().get_model_version("domain." + DOMAIN, results["registry_version"])
    assert version.tags["validation_status"] == "passed"
    assert version.tags["validation_reasons"] == "all thresholds met"


def test_from_scratch_logs_a_full_model_and_no_adapter(small_sql_data):
    results = DomainTrainer().train_domain_model(DOMAIN, small_sql_data, fine_tune=False,
                                                 **TINY_BUDGET)
    artifacts = {a.path for a in MlflowClient().list_artifacts(results["mlflow_run_id"])}
    assert "merged_model" in artifacts
    assert "adapter" not in artifacts
    assert results["adapter_path"] is None
    run = MlflowClient().get_run(results["mlflow_run_id"])
    assert run.data.params["fine_tune"] == "false"
    assert int(run.data.params["trainable_parameters"]) == int(
        run.data.params["total_parameters"])


def test_a_local_folder_base_of_another_architecture_gets_its_own_lora_targets(
    tiny_base, small_sql_data, tmp_path
):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path / "my-llama"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    results = DomainTrainer().train_domain_model(DOMAIN, small_sql_data, base_model=str(folder),
                                                 **TINY_BUDGET)
    adapter = json.loads(Path(results["adapter_path"], "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                              "gate_proj", "up_proj", "down_proj"}
    assert MlflowClient().get_run(results["mlflow_run_id"]).data.params["base_model"] == \
        str(folder)


def test_resume_continues_the_interrupted_run_exactly(small_sql_data, tmp_path):
    trainer = DomainTrainer()
    budget = {**TINY_BUDGET, "checkpoint_every": 2}
    first = trainer.train_domain_model(DOMAIN, small_sql_data, **budget)
    run_dir = tmp_path / "checkpoints" / DOMAIN / first["training_run_id"]
    # Simulate a crash right after the step-4 checkpoint: the step-6 one never happened.
    import shutil

    shutil.rmtree(run_dir / "step-000006")
    assert sorted(p.name for p in run_dir.iterdir()) == ["step-000004"]

    resumed = trainer.train_domain_model(DOMAIN, small_sql_data, resume=True, **budget)

    assert resumed["training_run_id"] == first["training_run_id"]
    assert resumed["steps"] == {"start": 4, "end": 6}
    client = MlflowClient()
    original = {m.step: m.value for m in
                client.get_metric_history(first["mlflow_run_id"], "training_loss")}
    continued = {m.step: m.value for m in
                 client.get_metric_history(resumed["mlflow_run_id"], "training_loss")}
    assert sorted(continued) == [5, 6]
    assert continued == pytest.approx({5: original[5], 6: original[6]}, rel=1e-5)
    tags = client.get_run(resumed["mlflow_run_id"]).data.tags
    assert tags["resumed_from_checkpoint"].endswith("step-000004")
    assert resumed["registry_version"] == "2"


def test_max_minutes_stops_at_a_step_boundary_with_a_checkpoint_and_resume_finishes(
        small_sql_data, tmp_path):
    trainer = DomainTrainer()
    with pytest.raises(TrainingTimeLimitReached, match="stopped at step 1 of 6") as stopped:
        trainer.train_domain_model(DOMAIN, small_sql_data, max_minutes=1e-9, **TINY_BUDGET)
    assert "resume=true" in str(stopped.value)
    [run] = MlflowClient().search_runs(["0"])
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"].startswith("stopped at step 1 of 6")
    assert MlflowClient().search_model_versions() == []
    [checkpoint] = (tmp_path / "checkpoints" / DOMAIN).glob("*/step-*")
    assert checkpoint.name == "step-000001"

    resumed = trainer.train_domain_model(DOMAIN, small_sql_data, resume=True, **TINY_BUDGET)
    assert resumed["steps"] == {"start": 1, "end": 6}
    assert resumed["registry_version"] == "1"


def test_the_loop_prints_what_the_remaining_steps_will_cost(tiny_base, small_sql_data, capsys):
    base = load_base("tiny", tiny_base.parent, from_scratch=False)
    train, validation = _encoded(small_sql_data, base.tokenizer)
    config = LoopConfig(max_steps=5, batch_size=4, eval_every=5, estimate_after=3)
    TrainingLoop(base.model, train, validation, config, base.tokenizer.pad_token_id,
                 progress=False).run()
    [line] = [text for text in capsys.readouterr().err.splitlines()
              if text.startswith("training:")]
    assert re.fullmatch(r"training: \d+\.\d\d s per step measured over steps 2-3; 2 of 5 "
                        r"steps left, about 0m\d\ds \(plus evaluation\)", line), line


def test_resume_without_a_checkpoint_is_a_clear_error(small_sql_data):
    with pytest.raises(CheckpointError, match="no checkpoint of domain"):
        DomainTrainer().train_domain_model(DOMAIN, small_sql_data, resume=True)
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_a_diverging_loss_fails_the_run_and_registers_nothing(small_sql_data):
    with pytest.raises(TrainingDivergedError, match="nothing is registered"):
        DomainTrainer().train_domain_model(DOMAIN, small_sql_data, learning_rate=1e30,
                                           **TINY_BUDGET)
    runs = mlflow.search_runs(search_all_experiments=True)
    assert list(runs["status"]) == ["FAILED"]
    assert "became nan" in runs["tags.failure_reason"][0].lower() or \
        "became inf" in runs["tags.failure_reason"][0].lower()
    assert MlflowClient().search_model_versions() == []


def test_bad_data_starts_no_run_and_registers_nothing(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "sql": "s"}\n{"question": \n', encoding="utf-8")
    with pytest.raises(MalformedJSONError, match="line 2"):
        DomainTrainer().train_domain_model(DOMAIN, path)
    assert mlflow.search_runs(search_all_experiments=True).empty
    assert MlflowClient().search_registered_models() == []


def test_the_seed_constructor_keeps_secrets_out_of_mlflow(small_sql_data, tmp_path):
    trainer = DomainTrainer(
        localai_url="http://localai:8080",
        postgres_dsn="postgres://trainer:pg-s3cret@postgres:5432/amodels",
        checkpoint_dir=tmp_path / "seed-checkpoints",
        model_output_dir=tmp_path / "seed-models",
    )
    results = trainer.train_domain_model(DOMAIN, small_sql_data, **TINY_BUDGET)
    assert Path(results["model_path"]).is_relative_to(tmp_path / "seed-models")
    assert (tmp_path / "seed-checkpoints" / DOMAIN / results["training_run_id"]).is_dir()
    run = MlflowClient().get_run(results["mlflow_run_id"])
    version = MlflowClient().get_model_version("domain." + DOMAIN, results["registry_version"])
    recorded = [*run.data.params.values(), *run.data.tags.values(), *version.tags.values(),
                json.dumps(results)]
    assert not any("pg-s3cret" in value for value in recorded)


def test_an_unreachable_hub_id_is_a_clear_base_model_error(small_sql_data, monkeypatch):
    from domain_mlflow.exceptions import BaseModelError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError, match="hub id"):
        DomainTrainer().train_domain_model(DOMAIN, small_sql_data,
                                           base_model="no-such-org/no-such-model")
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_a_missing_local_folder_is_a_clear_base_model_error(small_sql_data, tmp_path):
    from domain_mlflow.exceptions import BaseModelError

    with pytest.raises(BaseModelError, match="does not exist"):
        DomainTrainer().train_domain_model(DOMAIN, small_sql_data,
                                           base_model=str(tmp_path / "missing"))


def test_torchrun_with_two_processes_trains_one_run_and_one_version(small_sql_data, tmp_path):
    """Data-parallel under torchrun: rank 0 alone logs, checkpoints and registers."""
    done = run_torchrun("-m", "domain_mlflow.cli", "train", "--domain-id", DOMAIN, "--data",
                        str(small_sql_data), "--max-steps", "4", "--eval-every", "2",
                        "--checkpoint-every", "2", "--batch-size", "8", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)  # one report: rank 0's
    client = MlflowClient()
    [run] = client.search_runs([results["experiment_id"]])
    assert run.data.params["world_size"] == "2"
    assert run.data.tags["training_run_id"] == results["training_run_id"]
    losses = client.get_metric_history(run.info.run_id, "training_loss")
    assert [m.step for m in losses] == [1, 2, 3, 4]
    [version] = client.search_model_versions(f"name = 'domain.{DOMAIN}'")
    assert version.tags["training_run_id"] == results["training_run_id"]
    steps = sorted(p.name for p in (tmp_path / "checkpoints" / DOMAIN /
                                    results["training_run_id"]).iterdir())
    assert steps == ["step-000002", "step-000004"]
