"""LocalAI: the merged model exported into its models folder and served under a stable name.

LocalAI's ``transformers`` backend cannot load LoRA adapters, so each version's
merged model is copied to ``LOCALAI_MODELS_DIR/{domain_id}/{model_version}/`` and
gets its own config named ``{model_version}``. The stable serving name (the
domain id) is an alias config (LocalAI >= 4.5) pointing at the versioned one;
moving it is a re-import of the alias. LocalAI does not watch its folder and keeps
a loaded model's weights until ``POST /backend/shutdown``, so the replaced version
is shut down and the result is checked with ``GET /v1/models``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from domain_mlflow.exceptions import SinkError
from domain_mlflow.redaction import Redactor, secrets_in

_COMPLETE_MARKER = ".export-complete"
MERGED_MODEL_ARTIFACT = "merged_model"
_RETRY_STATUSES = {429, 500, 502, 503, 504}
PROMPT_TEMPLATE_GO = "### Prompt:\n{{.Input}}\n### Response:\n"
# Written by training into the merged model: its prompt format and, as a Go template,
# the completion template that prompts it as it was trained (its chat template, say).
SERVING_PROMPT_FILE = "serving_prompt.json"


class LocalAIClient:
    """LocalAI's HTTP API; every call has a timeout and bounded retries with backoff."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 10.0,
                 retries: int = 3, backoff: float = 0.25) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        # requests' errors quote the URL; a server's answer may echo the key
        self.redact = Redactor([api_key, *secrets_in(base_url)])
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def request(self, method: str, path: str, *, json: Any = None, ok: tuple[int, ...] = (200,),
                timeout: float | None = None) -> Any:
        """Send one call; retry connection errors and 429/5xx; return the decoded body.

        A failure is a :class:`SinkError` whose ``status`` is the last HTTP status LocalAI
        answered, or None when the last attempt got no answer (refused, timed out).
        """
        import requests

        url = f"{self.base_url}{path}"
        problem, status = "", None
        for attempt in range(self.retries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self.session.request(method, url, json=json,
                                                timeout=timeout or self.timeout)
            except requests.RequestException as error:
                problem, status = f"{type(error).__name__}: {error}", None
                continue
            if response.status_code in ok:
                return response.json() if response.content else None
            problem = f"HTTP {response.status_code}: {self.redact(response.text)[:300]}"
            status = response.status_code
            if status not in _RETRY_STATUSES:
                break
        raise SinkError(self.redact(f"LocalAI {method} {path} failed: {problem}"),
                        status=status)

    def model_names(self) -> set[str]:
        body = self.request("GET", "/v1/models")
        return {item["id"] for item in body.get("data", [])}

    def import_config(self, config: dict[str, Any]) -> None:
        self.request("POST", "/models/import", json=config)

    def model_config(self, name: str) -> dict[str, Any] | None:
        """The config LocalAI holds for ``name``, or None when it has none (404)."""
        try:
            return self.request("GET", f"/api/models/config-json/{quote(name, safe='')}")
        except SinkError as error:
            if error.status == 404:
                return None
            raise

    def aliases(self) -> dict[str, str]:
        """Every alias config LocalAI lists: its name -> the config it points at."""
        found = {}
        for name in sorted(self.model_names()):
            config = self.model_config(name)
            if config and config.get("alias"):
                found[name] = str(config["alias"])
        return found

    def delete_model(self, name: str, wait_seconds: float = 10.0) -> None:
        """Delete the config ``name``, its YAML and the files no other config names.

        ``POST /models/delete/:name`` drops the config from LocalAI's memory and enqueues a
        gallery job that removes the files; wait (bounded) until the job is processed, then
        check ``GET /v1/models``: in LocalAI 4.9 a request or reload that re-read the YAML
        before the job removed it puts the config back until LocalAI restarts.
        """
        job = self.request("POST", f"/models/delete/{quote(name, safe='')}") or {}
        status = self.wait_for_job(str(job["uuid"]), wait_seconds) if job.get("uuid") else None
        if status is not None and (status.get("error") or status.get("cancelled")):
            raise SinkError(f"LocalAI could not delete {name!r}: "
                            f"{status.get('error') or 'the deletion job was cancelled'}")
        if name in self.model_names():
            raise SinkError(f"LocalAI still lists {name!r} after deleting it: a request or reload "
                            "read its config back before the deletion job removed the file; "
                            "restart LocalAI to drop it")

    def job_status(self, job_id: str) -> dict[str, Any] | None:
        """``GET /models/jobs/:uuid``: the gallery job's status, or None when LocalAI has none.

        LocalAI answers 500 for an id it has no status for: after a restart, and always
        before 4.8, whose delete handed back an id the job never ran under.
        """
        try:
            return self.request("GET", f"/models/jobs/{quote(job_id, safe='')}")
        except SinkError as error:
            if error.status == 500:
                return None
            raise

    def wait_for_job(self, job_id: str, wait_seconds: float = 10.0) -> dict[str, Any] | None:
        """Poll the job with backoff until LocalAI has processed it (None: it has no status)."""
        deadline, pause = time.monotonic() + wait_seconds, self.backoff
        while True:
            status = self.job_status(job_id)
            if status is None or status.get("processed"):
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                raise SinkError(f"LocalAI job {job_id} is still {status.get('message')!r} "
                                f"{wait_seconds:g} s after it was submitted; see "
                                f"GET /models/jobs/{job_id}")
            time.sleep(min(pause, left))
            pause = min(pause * 2, 2.0)

    def shutdown(self, model: str) -> bool:
        """Unload ``model``; False when it was not loaded.

        LocalAI >= 4.8 answers 404. Before, it answered 500 for any failure, so only the
        message ("model not found") tells an unloaded model from a real fault.
        """
        try:
            self.request("POST", "/backend/shutdown", json={"model": model})
        except SinkError as error:
            if error.status == 404 or (error.status == 500 and "model not found" in str(error)):
                return False
            raise
        return True

    def complete(self, model: str, prompt: str, max_tokens: int = 64,
                 timeout: float | None = None) -> dict[str, Any]:
        return self.request("POST", "/v1/completions", timeout=timeout,
                            json={"model": model, "prompt": prompt, "max_tokens": max_tokens})


def merged_model_fetcher(run_id: str, tracking_uri: str | None = None
                         ) -> Callable[[Path], Path]:
    """A ``fetch_model`` for :meth:`LocalAISink.export`: the run's ``merged_model`` artifact."""

    def fetch(tmp: Path) -> Path:
        import mlflow

        return Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=MERGED_MODEL_ARTIFACT, dst_path=str(tmp),
            tracking_uri=tracking_uri,
        ))

    return fetch


class LocalAISink:
    """Exports, configures, switches and verifies one domain's model in LocalAI."""

    def __init__(self, client: LocalAIClient, models_dir: str | os.PathLike[str]) -> None:
        self.client = client
        self.models_dir = Path(models_dir)

    def export_dir(self, domain_id: str, model_version: str) -> Path:
        return self.models_dir / domain_id / model_version

    def export(self, domain_id: str, model_version: str,
               fetch_model: Callable[[Path], Path]) -> Path:
        """Copy the merged model in once; ``fetch_model(tmp)`` returns a folder with it."""
        target = self.export_dir(domain_id, model_version)
        if (target / _COMPLETE_MARKER).is_file():
            return target
        staging = target.with_name(f".{model_version}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        downloads = staging.with_name(f".{model_version}.download")
        shutil.rmtree(downloads, ignore_errors=True)
        downloads.mkdir(parents=True)
        try:
            shutil.copytree(fetch_model(downloads), staging)
        finally:
            shutil.rmtree(downloads, ignore_errors=True)
        (staging / _COMPLETE_MARKER).write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return target

    @staticmethod
    def versioned_config(domain_id: str, model_version: str,
                         completion_template: str = PROMPT_TEMPLATE_GO,
                         semver: str | None = None) -> dict[str, Any]:
        """The config that serves one version under its own name; ``description`` (a
        field of LocalAI's ModelConfig, core/config/model_config.go) names its semver."""
        return {
            "name": model_version,
            "description": (f"{domain_id} {semver} ({model_version})" if semver
                            else f"{domain_id} ({model_version})"),
            "backend": "transformers",
            "type": "AutoModelForCausalLM",
            "parameters": {"model": f"{domain_id}/{model_version}", "temperature": 0},
            "template": {"completion": completion_template},
        }

    def completion_template(self, domain_id: str, model_version: str) -> str:
        """The exported version's own completion template (``serving_prompt.json``);
        the plain format for a model exported without one."""
        path = self.export_dir(domain_id, model_version) / SERVING_PROMPT_FILE
        try:
            template = json.loads(path.read_text(encoding="utf-8"))["completion_template"]
        except (OSError, ValueError, KeyError, TypeError):
            return PROMPT_TEMPLATE_GO
        return template if isinstance(template, str) and "{{.Input}}" in template \
            else PROMPT_TEMPLATE_GO

    @staticmethod
    def weights_of(config: dict[str, Any]) -> str:
        """``parameters.model`` of a versioned config: ``<domain_id>/<model_version>``."""
        return str((config.get("parameters") or {}).get("model") or "")

    @classmethod
    def domain_of_config(cls, config: dict[str, Any]) -> str | None:
        """The domain whose weights a versioned config serves, or None for another config."""
        weights = cls.weights_of(config)
        return weights.split("/", 1)[0] if "/" in weights else None

    def serve_version(self, domain_id: str, model_version: str,
                      semver: str | None = None) -> None:
        """Configure the version under its own name and confirm LocalAI lists it."""
        self.client.import_config(self.versioned_config(
            domain_id, model_version, self.completion_template(domain_id, model_version),
            semver))
        if model_version not in self.client.model_names():
            raise SinkError(f"LocalAI does not list {model_version!r} after importing it")

    def point(self, serving_name: str, model_version: str, replaced_version: str | None
              ) -> None:
        """Point the alias ``serving_name`` at a served version, unload the replaced one."""
        self.client.import_config({"name": serving_name, "alias": model_version})
        if replaced_version and replaced_version != model_version:
            self.client.shutdown(replaced_version)
        missing = {serving_name, model_version} - self.client.model_names()
        if missing:
            raise SinkError(f"LocalAI does not list {sorted(missing)} after the switch")

    def serving_names(self) -> set[str]:
        return self.client.model_names()
