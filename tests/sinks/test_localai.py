"""The LocalAI double over real HTTP: auth, listing, import/reload, aliases, loading,
deletion jobs, faults; and our LocalAI client against it."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from domain_mlflow.exceptions import SinkError
from domain_mlflow.sinks.localai import LocalAIClient
from tests.localai_double import LocalAIDouble

KEY = "sk-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
UNAUTHORIZED = {"error": {"code": 401, "message": "An authentication key is required",
                          "type": "invalid_request_error"}}
NOT_FOUND = {"error": {"code": 404, "message": "Resource not found", "type": ""}}


def write_config(models_dir: Path, name: str, **fields: object) -> Path:
    path = models_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **fields}), encoding="utf-8")
    return path


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """Two weights folders and one transformers config serving the first."""
    root = tmp_path / "localai-models"
    for folder in ("support-v1", "support-v2", "support-v3"):
        (root / folder).mkdir(parents=True)
        (root / folder / "config.json").write_text("{}", encoding="utf-8")
    write_config(root, "support-v1", backend="transformers", parameters={"model": "support-v1"})
    return root


@pytest.fixture
def localai(models_dir: Path) -> Iterator[LocalAIDouble]:
    with LocalAIDouble(models_dir, api_keys=[KEY]) as double:
        yield double


def get(localai: LocalAIDouble, path: str, **kwargs: object) -> requests.Response:
    return requests.get(localai.url + path, headers=kwargs.pop("headers", AUTH), timeout=5,
                        **kwargs)


def post(localai: LocalAIDouble, path: str, **kwargs: object) -> requests.Response:
    return requests.post(localai.url + path, headers=kwargs.pop("headers", AUTH), timeout=5,
                         **kwargs)


def listed(localai: LocalAIDouble, query: str = "") -> list[str]:
    response = get(localai, "/v1/models" + query)
    assert response.status_code == 200
    assert response.json()["object"] == "list"
    return [item["id"] for item in response.json()["data"]]


def complete(localai: LocalAIDouble, model: str, prompt: str = "hello there") -> requests.Response:
    return post(localai, "/v1/completions", json={"model": model, "prompt": prompt})


def import_config(localai: LocalAIDouble, config: dict[str, object]) -> requests.Response:
    return post(localai, "/models/import", json=config)


# -- authentication (core/http/auth/middleware.go) -----------------------------------------
def test_missing_key_gets_401_with_bearer_challenge_and_openai_error(localai: LocalAIDouble):
    response = get(localai, "/v1/models", headers={})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == UNAUTHORIZED


def test_wrong_key_gets_the_same_401(localai: LocalAIDouble):
    response = get(localai, "/v1/models", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


@pytest.mark.parametrize("headers", [
    {"Authorization": f"Bearer {KEY}"},
    {"Authorization": KEY},
    {"x-api-key": KEY},
    {"xi-api-key": KEY},
])
def test_bearer_raw_authorization_x_api_key_and_xi_api_key_are_accepted(
        localai: LocalAIDouble, headers: dict[str, str]):
    assert get(localai, "/v1/models", headers=headers).status_code == 200


def test_a_wrong_authorization_header_does_not_fall_back_to_x_api_key(localai: LocalAIDouble):
    headers = {"Authorization": "Bearer wrong", "x-api-key": KEY}
    assert get(localai, "/v1/models", headers=headers).status_code == 401
    assert get(localai, "/v1/models", headers={"Authorization": "bearer " + KEY}).status_code == 401


def test_healthz_and_readyz_need_no_key_and_answer_200_empty(localai: LocalAIDouble):
    for path in ("/healthz", "/readyz"):
        response = get(localai, path, headers={})
        assert (response.status_code, response.content) == (200, b"")


def test_unknown_route_is_401_without_key_and_generic_404_with_key(localai: LocalAIDouble):
    assert get(localai, "/v1/nowhere", headers={}).status_code == 401
    response = get(localai, "/v1/nowhere")
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


def test_without_api_keys_every_route_is_open(models_dir: Path):
    with LocalAIDouble(models_dir) as open_localai:
        assert get(open_localai, "/v1/models", headers={}).status_code == 200


def test_the_double_refuses_a_non_loopback_host(models_dir: Path):
    with pytest.raises(ValueError, match="loopback"):
        LocalAIDouble(models_dir, host="0.0.0.0")


# -- listing (core/http/endpoints/openai/list.go, core/services/galleryop/list_models.go) --
def test_models_lists_configs_then_loose_files_but_no_folders_or_weights(
        models_dir: Path, localai: LocalAIDouble):
    for name in ("loose-model", "weights.safetensors", "README.md", "notes.txt", "x.bak-old"):
        (models_dir / name).write_text("x", encoding="utf-8")
    assert listed(localai) == ["support-v1", "loose-model"]
    assert get(localai, "/models").json()["data"] == [
        {"id": "support-v1", "object": "model"}, {"id": "loose-model", "object": "model"}]


def test_models_filter_is_an_unanchored_regex(localai: LocalAIDouble):
    assert import_config(localai, {"name": "qwen-v2", "parameters": {"model": "support-v2"}}).ok
    assert listed(localai, "?filter=v2") == ["qwen-v2"]
    assert listed(localai, "?filter=^support") == ["support-v1"]
    assert listed(localai, "?filter=nothing-like-this") == []


def test_loose_files_used_by_a_config_are_hidden_unless_exclude_configured_is_false(
        models_dir: Path, localai: LocalAIDouble):
    (models_dir / "raw-weights").write_text("x", encoding="utf-8")
    assert import_config(localai, {"name": "raw", "parameters": {"model": "raw-weights"}}).ok
    assert "raw-weights" not in listed(localai)
    assert "raw-weights" in listed(localai, "?excludeConfigured=false")


# -- import (core/http/endpoints/localai/import_model.go) ----------------------------------
def test_import_json_writes_name_yaml_and_lists_it_at_once(
        models_dir: Path, localai: LocalAIDouble):
    config = {"name": "support", "backend": "transformers", "parameters": {"model": "support-v2"}}
    response = import_config(localai, config)
    assert response.status_code == 200
    assert response.json() == {"success": True, "filename": "support.yaml",
                               "message": "Model configuration created successfully"}
    assert yaml.safe_load((models_dir / "support.yaml").read_text(encoding="utf-8")) == config
    assert "support" in listed(localai)
    assert localai.config("support") == config


@pytest.mark.parametrize("content_type", ["application/x-yaml", "text/plain", ""])
def test_import_accepts_a_yaml_body(localai: LocalAIDouble, content_type: str):
    body = "name: from-yaml\nbackend: transformers\nparameters:\n  model: support-v3\n"
    headers = {**AUTH, "Content-Type": content_type}
    response = post(localai, "/models/import", data=body.encode(), headers=headers)
    assert response.status_code == 200
    assert localai.config("from-yaml") == {"name": "from-yaml", "backend": "transformers",
                                           "parameters": {"model": "support-v3"}}


def test_import_overwrites_an_existing_config_with_200_not_409(
        models_dir: Path, localai: LocalAIDouble):
    config = {"name": "support-v1", "parameters": {"model": "support-v2"}}
    assert import_config(localai, config).status_code == 200
    on_disk = yaml.safe_load((models_dir / "support-v1.yaml").read_text(encoding="utf-8"))
    assert on_disk["parameters"]["model"] == "support-v2"


@pytest.mark.parametrize(("config", "error"), [
    ({"backend": "transformers"}, "Name is required"),
    ({"name": "", "backend": "transformers"}, "Name is required"),
    ({"name": "x", "parameters": {"model": "../escape"}}, "invalid file path: ../escape"),
    ({"name": "x", "parameters": {"model": "/abs/path"}}, "invalid file path: /abs/path"),
    ({"name": "x", "backend": "trans formers"}, "invalid backend name: trans formers"),
    ({"name": "a", "alias": "missing"}, 'alias target "missing" does not exist'),
    ({"name": "a", "alias": "a"}, 'alias "a" cannot point to itself'),
    ({"name": "a", "alias": "support-v1", "backend": "transformers"},
     'alias config "a" must not set backend or parameters.model: an alias is a pure redirect'),
])
def test_import_rejects_invalid_configs_with_400(
        models_dir: Path, localai: LocalAIDouble, config: dict[str, object], error: str):
    response = import_config(localai, config)
    assert response.status_code == 400
    assert response.json() == {"success": False, "message": "", "error": error}
    assert sorted(p.name for p in models_dir.glob("*.yaml")) == ["support-v1.yaml"]


def test_import_rejects_an_alias_chain_and_an_empty_body(localai: LocalAIDouble):
    assert import_config(localai, {"name": "stable", "alias": "support-v1"}).status_code == 200
    chained = import_config(localai, {"name": "chained", "alias": "stable"})
    assert chained.status_code == 400
    assert chained.json()["error"] == (
        'alias target "stable" is itself an alias (chains are not allowed)')
    empty = post(localai, "/models/import", data=b"")
    assert (empty.status_code, empty.json()["error"]) == (400, "Request body is empty")


# -- reload and the absence of a watcher (edit_model.go, core/config/model_config_loader.go)
def test_a_yaml_written_to_disk_is_not_listed_until_reload(
        models_dir: Path, localai: LocalAIDouble):
    write_config(models_dir, "dropped", parameters={"model": "support-v2"})
    assert "dropped" not in listed(localai)
    response = post(localai, "/models/reload")
    assert response.status_code == 200
    assert response.json() == {"success": True,
                               "message": "Model configurations reloaded successfully"}
    assert "dropped" in listed(localai)


def test_reload_never_removes_a_config_whose_file_was_deleted(
        models_dir: Path, localai: LocalAIDouble):
    (models_dir / "support-v1.yaml").unlink()
    assert post(localai, "/models/reload").status_code == 200
    assert listed(localai) == ["support-v1"]


def test_reload_skips_invalid_files_and_still_answers_200(
        models_dir: Path, localai: LocalAIDouble):
    write_config(models_dir, "bad-path", parameters={"model": "../outside"})
    (models_dir / "broken.yaml").write_text("name: [unclosed", encoding="utf-8")
    (models_dir / ".hidden.yaml").write_text("name: hidden\n", encoding="utf-8")
    assert post(localai, "/models/reload").status_code == 200
    assert localai.model_names() == ["support-v1"]


def test_inference_lazily_reads_name_yaml_for_an_unknown_name(
        models_dir: Path, localai: LocalAIDouble):
    write_config(models_dir, "lazy", parameters={"model": "support-v3"})
    response = complete(localai, "lazy")
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == "[support-v3] hello there"


# -- inference (core/http/middleware/request.go, core/http/endpoints/openai/) --------------
def test_completion_response_shape_and_word_count_usage(localai: LocalAIDouble):
    before = int(time.time())
    body = complete(localai, "support-v1", "one two three").json()
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert before <= body["created"] <= int(time.time())
    assert (body["object"], body["model"]) == ("text_completion", "support-v1")
    assert body["choices"] == [{"index": 0, "finish_reason": "stop",
                                "text": "[support-v1] one two three"}]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions"])
def test_chat_answers_the_last_user_message(localai: LocalAIDouble, path: str):
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "first"}, {"role": "user", "content": "second one"}]
    response = post(localai, path, json={"model": "support-v1", "messages": messages})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"] == [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "[support-v1] second one"}}]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_unknown_model_is_404_with_the_exact_message(localai: LocalAIDouble, path: str):
    response = post(localai, path, json={"model": "nope", "prompt": "x", "messages": []})
    assert response.status_code == 404
    assert response.json() == {"error": {
        "code": 404, "type": "invalid_request_error",
        "message": 'model "nope" not found. To see available models, call GET /v1/models'}}


def test_existence_check_is_an_unanchored_regex_so_a_prefix_reaches_the_loader(
        models_dir: Path, localai: LocalAIDouble):
    response = complete(localai, "support")
    assert response.status_code == 500
    assert response.json() == {"error": {
        "code": 500, "type": "", "message": f"could not load model: {models_dir / 'support'} "
                                            "not found"}}


def test_a_config_whose_weights_folder_is_missing_fails_to_load_with_500(
        models_dir: Path, localai: LocalAIDouble):
    assert import_config(localai, {"name": "ghost", "parameters": {"model": "gone"}}).ok
    response = complete(localai, "ghost")
    assert response.status_code == 500
    assert response.json()["error"]["message"] == f"could not load model: {models_dir / 'gone'} " \
                                                  "not found"
    assert localai.loaded == {}


def test_malformed_json_body_is_a_400_in_the_generic_shape(localai: LocalAIDouble):
    headers = {**AUTH, "Content-Type": "application/json"}
    response = post(localai, "/v1/chat/completions", data=b"{not json", headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and error["type"] == ""
    assert error["message"].startswith("code=400, message=failed parsing request body: ")


# -- aliases, loaded weights, shutdown, config-json (model_config_loader.go, pkg/model/,
# -- backend_monitor.go, config_meta.go) -----------------------------------------------------
def test_alias_is_listed_served_by_the_target_backend_and_echoed(localai: LocalAIDouble):
    assert import_config(localai, {"name": "support", "alias": "support-v1"}).status_code == 200
    assert listed(localai) == ["support", "support-v1"]
    body = complete(localai, "support").json()
    assert body["model"] == "support"
    assert body["choices"][0]["text"] == "[support-v1] hello there"
    assert list(localai.loaded) == ["support-v1"]
    assert localai.loaded_folder("support") == localai.loaded_folder("support-v1")


def test_shutdown_by_alias_name_is_not_resolved_and_is_404(localai: LocalAIDouble):
    assert import_config(localai, {"name": "support", "alias": "support-v1"}).ok
    assert complete(localai, "support").ok
    response = post(localai, "/backend/shutdown", json={"model": "support"})
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert "support-v1" in localai.loaded


def test_reimport_keeps_serving_old_weights_until_backend_shutdown(
        models_dir: Path, localai: LocalAIDouble):
    assert complete(localai, "support-v1").json()["choices"][0]["text"].startswith("[support-v1]")
    config = {"name": "support-v1", "backend": "transformers",
              "parameters": {"model": "support-v2"}}
    assert import_config(localai, config).status_code == 200
    assert localai.config("support-v1")["parameters"]["model"] == "support-v2"
    assert complete(localai, "support-v1").json()["choices"][0]["text"].startswith("[support-v1]")
    assert localai.loaded_folder("support-v1") == models_dir / "support-v1"

    response = post(localai, "/v1/backend/shutdown", json={"model": "support-v1"})
    assert (response.status_code, response.json()) == (200, {"message": "model stopped"})
    assert localai.loaded == {}
    assert complete(localai, "support-v1").json()["choices"][0]["text"].startswith("[support-v2]")
    assert localai.loaded_folder("support-v1") == models_dir / "support-v2"


def test_patching_an_alias_swaps_the_target_and_leaves_the_old_backend_loaded(
        models_dir: Path, localai: LocalAIDouble):
    write_config(models_dir, "support-v2", parameters={"model": "support-v2"})
    assert post(localai, "/models/reload").ok
    assert import_config(localai, {"name": "support", "alias": "support-v1"}).ok
    assert complete(localai, "support").json()["choices"][0]["text"].startswith("[support-v1]")
    response = requests.patch(localai.url + "/api/models/config-json/support", headers=AUTH,
                              json={"alias": "support-v2"}, timeout=5)
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Model 'support' updated successfully"}
    assert yaml.safe_load((models_dir / "support.yaml").read_text())["alias"] == "support-v2"
    assert complete(localai, "support").json()["choices"][0]["text"].startswith("[support-v2]")
    assert sorted(localai.loaded) == ["support-v1", "support-v2"]


def test_patch_deep_merges_and_reports_flat_errors(models_dir: Path, localai: LocalAIDouble):
    url = localai.url + "/api/models/config-json/"
    merged = requests.patch(url + "support-v1", headers=AUTH, timeout=5,
                            json={"parameters": {"temperature": 0.2}})
    assert merged.status_code == 200
    assert localai.config("support-v1")["parameters"] == {"model": "support-v1", "temperature": 0.2}
    missing = requests.patch(url + "nope", headers=AUTH, json={"backend": "x"}, timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {"error": "model configuration not found"}
    bad = requests.patch(url + "support-v1", headers=AUTH, json={"backend": "a b"}, timeout=5)
    assert (bad.status_code, bad.json()) == (
        400, {"error": "invalid model configuration: invalid backend name: a b"})
    empty = requests.patch(url + "support-v1", headers=AUTH, json={}, timeout=5)
    assert (empty.status_code, empty.json()) == (400, {"error": "request body is empty"})
    assert get(localai, "/api/models/config-json/support-v1").json()["parameters"] == {
        "model": "support-v1", "temperature": 0.2}


def test_shutdown_of_a_model_that_is_not_loaded_or_not_named(localai: LocalAIDouble):
    not_loaded = post(localai, "/backend/shutdown", json={"model": "support-v1"})
    assert (not_loaded.status_code, not_loaded.json()) == (404, NOT_FOUND)
    unnamed = post(localai, "/backend/shutdown", json={})
    assert unnamed.status_code == 400
    assert unnamed.json() == {"error": {
        "code": 400, "message": "code=400, message=model is required", "type": ""}}


# -- deletion, a gallery job (core/http/endpoints/localai/gallery.go, core/services/galleryop/,
# -- core/gallery/models.go) ------------------------------------------------------------------
def job_status(localai: LocalAIDouble, job_id: str) -> requests.Response:
    return get(localai, f"/models/jobs/{job_id}")


def wait_processed(localai: LocalAIDouble, job_id: str, seconds: float = 10.0) -> dict:
    deadline = time.monotonic() + seconds
    while not (status := job_status(localai, job_id).json())["processed"]:
        assert time.monotonic() < deadline, status
        time.sleep(0.02)
    return status


def op_status(**fields: object) -> dict[str, object]:
    """An OpStatus as LocalAI writes it: these fields, the rest at their zero value."""
    return {"deletion": False, "file_name": "", "processed": False, "message": "",
            "progress": 0, "file_size": "", "downloaded_size": "", "gallery_element_name": "",
            "cancelled": False, "cancellable": False, **fields}


@pytest.fixture
def slow_jobs(models_dir: Path) -> Iterator[LocalAIDouble]:
    """The double with its gallery jobs held back 1 s: time to look between POST and job."""
    with LocalAIDouble(models_dir, api_keys=[KEY], job_delay=1.0) as double:
        yield double


def client_of(localai: LocalAIDouble) -> LocalAIClient:
    return LocalAIClient(localai.url, KEY, timeout=5, backoff=0.02)


def test_delete_answers_a_job_drops_the_config_at_once_and_the_files_when_the_job_runs(
        models_dir: Path, slow_jobs: LocalAIDouble):
    assert import_config(slow_jobs, {"name": "retired", "parameters": {"model": "support-v3"}}).ok
    assert complete(slow_jobs, "retired").ok
    response = post(slow_jobs, "/models/delete/retired")
    assert response.status_code == 200
    job = response.json()
    assert job == {"uuid": job["uuid"], "status": f"{slow_jobs.url}/models/jobs/{job['uuid']}"}
    assert "retired" not in listed(slow_jobs)  # RemoveModelConfig, in the handler
    assert (models_dir / "retired.yaml").is_file() and "retired" in slow_jobs.loaded
    queued = op_status(deletion=True, message="queued", phase="queued",
                       gallery_element_name="retired", cancellable=True)
    assert job_status(slow_jobs, job["uuid"]).json() == queued
    completed = op_status(deletion=True, processed=True, message="completed", progress=100,
                          gallery_element_name="retired")
    assert wait_processed(slow_jobs, job["uuid"]) == completed
    assert get(slow_jobs, "/models/jobs").json() == {job["uuid"]: completed}
    assert not (models_dir / "retired.yaml").exists() and slow_jobs.loaded == {}
    assert (models_dir / "support-v3").is_dir()  # os.Remove leaves a non-empty folder
    assert complete(slow_jobs, "retired").status_code == 404


def test_until_the_job_ran_a_request_reads_the_yaml_back_and_the_name_outlives_the_job(
        models_dir: Path, slow_jobs: LocalAIDouble):
    assert import_config(slow_jobs, {"name": "retired", "parameters": {"model": "support-v3"}}).ok
    job = post(slow_jobs, "/models/delete/retired").json()
    assert "retired" not in listed(slow_jobs)
    assert complete(slow_jobs, "retired").ok  # LoadModelConfigFileByName: retired.yaml is there
    assert "retired" in listed(slow_jobs)
    assert wait_processed(slow_jobs, job["uuid"])["message"] == "completed"
    assert not (models_dir / "retired.yaml").exists()
    assert "retired" in listed(slow_jobs)  # v4.9.0 reloads additively after the job


def test_deleting_a_name_without_a_yaml_fails_its_job_with_go_s_error(
        models_dir: Path, localai: LocalAIDouble):
    response = post(localai, "/models/delete/never-was")
    assert response.status_code == 200  # the handler accepts any name
    problem = f"remove {models_dir / 'never-was.yaml'}: no such file or directory"
    assert wait_processed(localai, response.json()["uuid"]) == op_status(
        deletion=True, error=problem, processed=True, message=f"error: {problem}")


def test_a_delete_keeps_the_files_another_config_names(models_dir: Path, localai: LocalAIDouble):
    (models_dir / "shared.gguf").write_text("x", encoding="utf-8")
    (models_dir / "own.gguf").write_text("x", encoding="utf-8")
    write_config(models_dir, "keeper", parameters={"model": "shared.gguf"})
    write_config(models_dir, "retired", parameters={"model": "shared.gguf"}, mmproj="own.gguf")
    assert post(localai, "/models/reload").ok
    wait_processed(localai, post(localai, "/models/delete/retired").json()["uuid"])
    assert (models_dir / "shared.gguf").is_file() and not (models_dir / "own.gguf").exists()
    assert listed(localai) == ["keeper", "support-v1"]


def test_a_job_id_without_a_status_is_a_500_in_the_generic_shape(localai: LocalAIDouble):
    response = job_status(localai, str(uuid.uuid1()))
    assert (response.status_code, response.json()) == (500, {"error": {
        "code": 500, "message": "could not find any status for ID", "type": ""}})
    assert get(localai, "/models/jobs").json() == {}


# -- our client against the double (domain_mlflow/sinks/localai.py) --------------------------
def test_delete_model_returns_only_once_the_job_removed_the_files(
        models_dir: Path, slow_jobs: LocalAIDouble):
    assert import_config(slow_jobs, {"name": "retired", "alias": "support-v1"}).ok
    started = time.monotonic()
    client_of(slow_jobs).delete_model("retired")
    assert time.monotonic() - started >= 0.9  # the listing drops the name at once; not enough
    assert not (models_dir / "retired.yaml").exists()
    assert "retired" not in listed(slow_jobs)
    assert len(slow_jobs.calls("/models/jobs/")) >= 2


def test_delete_model_raises_the_job_s_error(models_dir: Path, localai: LocalAIDouble):
    problem = f"remove {models_dir / 'never-was.yaml'}: no such file or directory"
    with pytest.raises(SinkError, match=re.escape(f"delete 'never-was': {problem}")) as failed:
        client_of(localai).delete_model("never-was")
    assert failed.value.status is None  # LocalAI answered every call; the job failed


def test_delete_model_raises_when_a_request_during_the_job_left_the_name_listed(
        slow_jobs: LocalAIDouble):
    assert import_config(slow_jobs, {"name": "retired", "alias": "support-v1"}).ok
    failures: list[SinkError] = []

    def delete() -> None:
        try:
            client_of(slow_jobs).delete_model("retired")
        except SinkError as error:
            failures.append(error)

    deleting = threading.Thread(target=delete)
    deleting.start()
    deadline = time.monotonic() + 5  # the job is listed once the handler dropped the config
    while not get(slow_jobs, "/models/jobs").json() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert complete(slow_jobs, "retired").ok  # reads retired.yaml back before the job runs
    deleting.join(10)
    [failure] = failures
    assert "still lists 'retired' after deleting it" in str(failure)


def test_without_a_job_status_delete_model_checks_the_listing_alone(localai: LocalAIDouble):
    """LocalAI before 4.8 hands back an id that its deletion job never runs under."""
    assert import_config(localai, {"name": "retired", "alias": "support-v1"}).ok
    localai.fail_next("/models/jobs/", 500, count=3)  # every attempt of the first poll
    client_of(localai).delete_model("retired")
    assert "retired" not in listed(localai)
    assert len(localai.calls("/models/jobs/")) == 3


def test_the_client_reads_404s_and_other_failures_from_the_status(localai: LocalAIDouble):
    client = client_of(localai)
    assert client.model_config("nope") is None
    assert client.shutdown("support-v1") is False  # not loaded: 404
    assert complete(localai, "support-v1").ok
    assert client.shutdown("support-v1") is True
    localai.fail_next("/backend/shutdown", 500, count=3)
    with pytest.raises(SinkError, match="HTTP 500") as failed:
        client.shutdown("support-v1")
    assert failed.value.status == 500


# -- fault injection and the call log ------------------------------------------------------
def test_fail_next_answers_the_status_count_times_then_recovers(localai: LocalAIDouble):
    localai.fail_next("/v1/models", 503, count=2)
    statuses = [get(localai, "/v1/models").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    localai.fail_next("/v1/completions", 500)
    failed = complete(localai, "support-v1")
    assert failed.json() == {"error": {
        "code": 500, "message": "code=500, message=Internal Server Error", "type": ""}}


def test_faults_are_checked_after_auth(localai: LocalAIDouble):
    localai.fail_next("/v1/models", 503)
    assert get(localai, "/v1/models", headers={}).status_code == 401
    assert get(localai, "/v1/models").status_code == 503


def test_hang_times_the_client_out_until_clear_faults(localai: LocalAIDouble):
    localai.hang("/v1/chat", 30)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(localai.url + "/v1/chat/completions", headers=AUTH, timeout=0.3,
                      json={"model": "support-v1", "messages": [{"role": "user", "content": "x"}]})
    assert get(localai, "/v1/models").status_code == 200
    localai.clear_faults()
    started = time.monotonic()
    assert complete(localai, "support-v1").status_code == 200
    assert time.monotonic() - started < 2


def test_every_request_is_logged_with_method_path_headers_and_body(localai: LocalAIDouble):
    complete(localai, "support-v1", "logged prompt")
    get(localai, "/v1/models?filter=x", headers={})
    first, second = localai.calls()
    assert (first["method"], first["path"]) == ("POST", "/v1/completions")
    assert first["headers"]["Authorization"] == f"Bearer {KEY}"
    assert '"prompt": "logged prompt"' in first["body"]
    assert (second["method"], second["path"], second["body"]) == ("GET", "/v1/models?filter=x", "")
    assert localai.calls("/v1/models") == [second]
