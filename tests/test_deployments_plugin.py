"""The ``localai`` MLflow deployments target, through MLflow's own API and CLI.

Real MLflow registry (SQLite in tmp_path), the LocalAI double on loopback with an API key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from mlflow.deployments import PredictionsResponse, get_deploy_client
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from domain_mlflow import deployments
from tests.helpers import LOCALAI_TEST_KEY
from tests.localai_double import LocalAIDouble
from tests.promotion_helpers import register_domain_version

DOMAIN = "0x5678-SQLAgent"
REGISTERED = f"domain.{DOMAIN}"
API_KEY = LOCALAI_TEST_KEY


@pytest.fixture
def versions(localai):
    """Two registered versions of the domain; ``production`` on the first."""
    first, second = register_domain_version(DOMAIN), register_domain_version(DOMAIN)
    MlflowClient().set_registered_model_alias(REGISTERED, "production", first.version)
    return first, second


def served_version(double: LocalAIDouble, name: str, prompt: str = "How many orders?") -> str:
    """The versioned config that answers ``name`` in the double (its weights folder)."""
    answer = get_deploy_client("localai").predict(name, prompt)
    text = answer["predictions"][0]
    assert text.endswith(f"] {prompt}")
    return text[1:text.index("]")]


def assert_error(call, code: str, *fragments: str) -> None:
    with pytest.raises(MlflowException) as caught:
        call()
    assert caught.value.error_code == code, caught.value.message
    for fragment in fragments:
        assert fragment in caught.value.message


def test_create_get_list_predict_update_and_delete_a_deployment(localai, versions):
    first, second = versions
    v1, v2 = first.tags["model_version"], second.tags["model_version"]
    client = get_deploy_client("localai")

    created = client.create_deployment("sql-agent", f"models:/{REGISTERED}@production")
    assert created == {"name": "sql-agent", "flavor": "transformers",
                       "model_uri": f"models:/{REGISTERED}@production",
                       "registered_model": REGISTERED, "registry_version": str(first.version),
                       "domain_id": DOMAIN, "model_version": v1}
    # LocalAI serves the alias config over the versioned config of the exported merged model.
    assert localai.config("sql-agent") == {"name": "sql-agent", "alias": v1}
    assert localai.config(v1)["parameters"]["model"] == f"{DOMAIN}/{v1}"
    exported = localai.models_dir / DOMAIN / v1 / "model.safetensors"
    assert exported.read_bytes() == first.tags["training_run_id"].encode()
    assert served_version(localai, "sql-agent") == v1

    assert client.get_deployment("sql-agent") == {
        "name": "sql-agent", "flavor": "transformers", "model_version": v1, "domain_id": DOMAIN,
        "backend": "transformers", "weights": f"{DOMAIN}/{v1}", "localai_url": localai.url}
    assert client.list_deployments() == [
        {"name": "sql-agent", "flavor": "transformers", "model_version": v1}]

    updated = client.update_deployment("sql-agent", f"models:/{REGISTERED}/{second.version}")
    assert (updated["name"], updated["flavor"], updated["model_version"]) == \
        ("sql-agent", "transformers", v2)
    assert localai.config("sql-agent")["alias"] == v2
    assert localai.loaded_folder(v1) is None  # the replaced weights were unloaded
    assert served_version(localai, "sql-agent") == v2
    # The plugin is not the promotion path: the registry's production alias did not move.
    production = MlflowClient().get_registered_model(REGISTERED).aliases["production"]
    assert str(production) == str(first.version)

    client.delete_deployment("sql-agent")
    assert "sql-agent" not in localai.model_names()
    assert not (localai.models_dir / "sql-agent.yaml").exists()
    assert {v1, v2} <= set(localai.model_names())  # versioned configs and weights stay
    assert (localai.models_dir / DOMAIN / v2 / "model.safetensors").is_file()
    client.delete_deployment("sql-agent")  # deleting again is not an error
    assert client.list_deployments() == []
    assert_error(lambda: client.get_deployment("sql-agent"), "RESOURCE_DOES_NOT_EXIST",
                 "no deployment named 'sql-agent'")


def test_the_target_uri_can_carry_localai_address(localai, versions, monkeypatch):
    monkeypatch.delenv("LOCALAI_URL")
    client = get_deploy_client(f"localai:/{localai.url}")
    client.create_deployment("explicit", f"models:/{REGISTERED}/{versions[1].version}")
    assert localai.config("explicit")["alias"] == versions[1].tags["model_version"]
    assert_error(lambda: get_deploy_client("localai"), "INVALID_PARAMETER_VALUE", "LOCALAI_URL")
    assert_error(lambda: get_deploy_client("localai:/ftp://host"), "INVALID_PARAMETER_VALUE",
                 "localai:/http://HOST:PORT")


def test_a_name_in_use_is_refused_by_create_and_update_needs_an_existing_deployment(
        localai, versions):
    client = get_deploy_client("localai")
    uri = f"models:/{REGISTERED}@production"
    client.create_deployment("taken", uri)
    assert_error(lambda: client.create_deployment("taken", uri), "RESOURCE_ALREADY_EXISTS",
                 "mlflow deployments update")
    assert_error(lambda: client.update_deployment("missing", uri), "RESOURCE_DOES_NOT_EXIST",
                 "no deployment named 'missing'")
    assert_error(lambda: client.update_deployment("taken"), "INVALID_PARAMETER_VALUE",
                 "nothing to update")
    assert "missing" not in localai.model_names()


@pytest.mark.parametrize(("model_uri", "code", "fragment"), [
    (f"models:/{REGISTERED}@staging", "RESOURCE_DOES_NOT_EXIST", "names no registered model"),
    (f"models:/{REGISTERED}/99", "RESOURCE_DOES_NOT_EXIST", "names no registered model"),
    ("models:/domain.unknown@production", "RESOURCE_DOES_NOT_EXIST", "names no registered"),
    ("runs:/0123456789abcdef/merged_model", "INVALID_PARAMETER_VALUE", "is not supported"),
    ("/tmp/some/folder", "INVALID_PARAMETER_VALUE", "models:/NAME@ALIAS"),
])
def test_an_unusable_model_uri_is_refused_and_nothing_is_served(localai, versions, model_uri,
                                                                 code, fragment):
    client = get_deploy_client("localai")
    assert_error(lambda: client.create_deployment("agent", model_uri), code, fragment)
    assert localai.model_names() == []
    assert not (localai.models_dir / DOMAIN).exists()


def test_a_version_not_registered_by_training_is_refused(localai):
    registry = MlflowClient()
    registry.create_registered_model("someone-elses-model")
    registry.create_model_version("someone-elses-model", "/nowhere")
    assert_error(lambda: get_deploy_client("localai").create_deployment(
        "agent", "models:/someone-elses-model/1"), "INVALID_PARAMETER_VALUE",
        "not registered by domain-mlflow training")
    assert localai.model_names() == []


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"flavor": "python_function"}, "use --flavor transformers"),
    ({"config": {"replicas": "2"}}, "accepts no config keys"),
    ({"endpoint": "e1"}, "has no endpoints"),
])
def test_unsupported_flavors_config_keys_and_endpoints_are_refused(localai, versions, kwargs,
                                                                   fragment):
    assert_error(lambda: get_deploy_client("localai").create_deployment(
        "agent", f"models:/{REGISTERED}@production", **kwargs), "INVALID_PARAMETER_VALUE",
        fragment)
    assert localai.model_names() == []


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "x" * 101])
def test_a_deployment_name_unsafe_as_a_localai_file_name_is_refused(localai, versions, name):
    assert_error(lambda: get_deploy_client("localai").create_deployment(
        name, f"models:/{REGISTERED}@production"), "INVALID_PARAMETER_VALUE", "deployment name")
    assert localai.model_names() == []


def test_create_without_a_models_folder_names_the_variable(localai, versions, monkeypatch):
    monkeypatch.delenv("LOCALAI_MODELS_DIR")
    client = get_deploy_client("localai")
    assert_error(lambda: client.create_deployment("agent", f"models:/{REGISTERED}@production"),
                 "INVALID_PARAMETER_VALUE", "LOCALAI_MODELS_DIR is not set")
    assert localai.model_names() == []
    assert client.list_deployments() == []  # reading needs only the address


def test_a_model_config_that_is_not_an_alias_is_left_alone(localai, versions):
    client = get_deploy_client("localai")
    client.create_deployment("agent", f"models:/{REGISTERED}@production")
    v1 = versions[0].tags["model_version"]
    assert_error(lambda: client.delete_deployment(v1), "INVALID_PARAMETER_VALUE",
                 "not a deployment")
    assert_error(lambda: client.get_deployment(v1), "INVALID_PARAMETER_VALUE",
                 "not a deployment")
    assert localai.config(v1)["backend"] == "transformers"
    assert [d["name"] for d in client.list_deployments()] == ["agent"]


def test_a_domains_serving_name_is_left_to_promotion(localai):
    from domain_mlflow.promotion import manual
    from tests.promotion_helpers import make_promoter

    first, second = register_domain_version(DOMAIN), register_domain_version(DOMAIN)
    assert manual.promote(make_promoter("cli"), DOMAIN, int(first.version))["deployed"]
    v1 = first.tags["model_version"]
    assert localai.config(DOMAIN) == {"name": DOMAIN, "alias": v1}  # promotion's alias
    client = get_deploy_client("localai")

    assert client.list_deployments() == [
        {"name": DOMAIN, "flavor": "transformers", "model_version": v1}]
    assert client.get_deployment(DOMAIN)["model_version"] == v1
    uri = f"models:/{REGISTERED}/{second.version}"
    for change in (lambda: client.update_deployment(DOMAIN, uri),
                   lambda: client.delete_deployment(DOMAIN)):
        assert_error(change, "INVALID_PARAMETER_VALUE", "domain-mlflow rollback")
    assert localai.config(DOMAIN) == {"name": DOMAIN, "alias": v1}

    # A canary beside it is the plugin's to create, update and delete.
    client.create_deployment("canary", uri)
    assert served_version(localai, DOMAIN) == v1
    assert served_version(localai, "canary") == second.tags["model_version"]


def test_create_refuses_the_name_promotion_would_give_the_domain(localai, versions):
    assert_error(lambda: get_deploy_client("localai").create_deployment(
        DOMAIN, f"models:/{REGISTERED}@production"), "INVALID_PARAMETER_VALUE",
        f"serving name of domain {DOMAIN!r}")
    assert DOMAIN not in localai.model_names()


def test_localai_failing_is_an_mlflow_error_naming_the_call(localai, versions):
    localai.fail_next("/models/import", 500, count=10)
    assert_error(lambda: get_deploy_client("localai").create_deployment(
        "agent", f"models:/{REGISTERED}@production"), "INTERNAL_ERROR",
        "LocalAI POST /models/import failed: HTTP 500")
    assert "agent" not in localai.model_names()


def test_a_wrong_api_key_is_refused_by_localai(localai, versions, monkeypatch):
    monkeypatch.setenv("LOCALAI_API_KEY", "wrong")
    assert_error(lambda: get_deploy_client("localai").list_deployments(), "INTERNAL_ERROR",
                 "HTTP 401")


@pytest.mark.parametrize(("inputs", "prompts", "max_tokens"), [
    ("Count rows", ["Count rows"], None),
    (["Count rows", "List users"], ["Count rows", "List users"], None),
    ({"prompt": "Count rows", "max_tokens": 8}, ["Count rows"], 8),
    ({"prompt": ["Count rows", "List users"]}, ["Count rows", "List users"], None),
    (pd.DataFrame({"prompt": ["Count rows", "List users"]}), ["Count rows", "List users"], None),
])
def test_predict_takes_prompts_in_several_shapes(localai, versions, inputs, prompts,
                                                 max_tokens):
    client = get_deploy_client("localai")
    client.create_deployment("agent", f"models:/{REGISTERED}@production")
    v1 = versions[0].tags["model_version"]
    answer = client.predict("agent", inputs)
    assert isinstance(answer, PredictionsResponse)
    assert answer["predictions"] == [f"[{v1}] {prompt}" for prompt in prompts]
    assert answer["usage"]["prompt_tokens"] == sum(len(p.split()) for p in prompts)
    assert answer.get_predictions()[0].tolist() == answer["predictions"]
    sent = [json.loads(call["body"]) for call in localai.calls("/v1/completions")]
    assert [(body["model"], body["prompt"]) for body in sent] == [("agent", p) for p in prompts]
    # Without max_tokens the client sends its default of 64.
    assert {body["max_tokens"] for body in sent} == {max_tokens or 64}


@pytest.mark.parametrize("inputs", [
    42, [], {"text": "x"}, {"prompt": "x", "max_tokens": 0}, ["ok", 3],
    pd.DataFrame({"question": ["x"]}),
])
def test_predict_refuses_inputs_it_cannot_send(localai, inputs):
    assert_error(lambda: get_deploy_client("localai").predict("agent", inputs),
                 "INVALID_PARAMETER_VALUE", "predict inputs")
    assert localai.calls("/v1/completions") == []


def test_predict_against_an_unknown_deployment_reports_localai_404(localai):
    assert_error(lambda: get_deploy_client("localai").predict("nobody", "hi"), "INTERNAL_ERROR",
                 "HTTP 404")


def test_run_local_says_localai_runs_as_its_own_server():
    with pytest.raises(MlflowException, match="LocalAI runs as its own server"):
        deployments.run_local("agent", f"models:/{REGISTERED}@production")


# --- MLflow's own CLI -------------------------------------------------------------------

def _mlflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([sys.executable, "-m", "mlflow", "deployments", *args], env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def test_mlflow_deployments_cli_creates_predicts_and_gets_a_deployment(localai, versions,
                                                                        tmp_path):
    v1 = versions[0].tags["model_version"]
    created = _mlflow_cli("create", "-t", "localai", "--name", "cli-agent",
                          "-m", f"models:/{REGISTERED}@production")
    assert created.returncode == 0, created.stderr
    assert "transformers deployment cli-agent is created" in created.stdout
    assert localai.config("cli-agent") == {"name": "cli-agent", "alias": v1}
    assert (localai.models_dir / DOMAIN / v1 / "config.json").is_file()

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompt": ["Count rows", "List users"]}))
    predicted = _mlflow_cli("predict", "-t", "localai", "--name", "cli-agent",
                            "-I", str(prompts))
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["predictions"] == [f"[{v1}] Count rows",
                                                           f"[{v1}] List users"]

    got = _mlflow_cli("get", "-t", f"localai:/{localai.url}", "--name", "cli-agent")
    assert got.returncode == 0, got.stderr
    assert f"model_version: {v1}" in got.stdout.splitlines()


def test_mlflow_deployments_help_prints_the_target_help(monkeypatch):
    monkeypatch.delenv("LOCALAI_URL", raising=False)  # help needs no LocalAI at all
    shown = _mlflow_cli("help", "-t", "localai")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == deployments.target_help() + "\n"
    assert "localai:/http://HOST:PORT" in shown.stdout
    assert "domain-mlflow promote" in shown.stdout
