"""MLflow deployments plugin for target ``localai``: registry versions served by LocalAI.

Declared under ``[project.entry-points."mlflow.deployments"]``, so MLflow's own
``mlflow deployments create -t localai --name N -m models:/domain.X@production``
exports the version's merged model into ``LOCALAI_MODELS_DIR`` and points the LocalAI
alias config ``N`` at the version's config, with the :class:`LocalAISink` promotion
uses. A deployment *is* that alias config; nothing else records it.

It does not write the config store or Redis, and does not move the registry's
``production`` alias: that is ``domain-mlflow promote``, the gated path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)

from domain_mlflow.exceptions import ConfigError, DomainMlflowError, InvalidDomainIdError
from domain_mlflow.naming import serving_name, validate_domain_id
from domain_mlflow.predict_inputs import TARGET, completion_requests
from domain_mlflow.services import Services
from domain_mlflow.settings import redact_url
from domain_mlflow.sinks.localai import LocalAIClient, LocalAISink
from domain_mlflow.sinks.targets import ServingTargets

FLAVOR = "transformers"  # the LocalAI backend that loads the merged model
_EXPLICIT_URL_PREFIX = f"{TARGET}:/"
_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))")


def target_help() -> str:
    """What ``mlflow deployments help -t localai`` prints."""
    return """\
Target "localai": serve a registered domain-mlflow model version with LocalAI.

Target URI
  localai                    LocalAI's address comes from LOCALAI_URL
  localai:/http://HOST:PORT  the address given explicitly (http or https)

Environment
  LOCALAI_URL            LocalAI's base URL (required with target "localai")
  LOCALAI_MODELS_DIR     the folder LocalAI reads models from (required by create/update)
  LOCALAI_API_KEY        sent as "Authorization: Bearer <key>" (optional)
  LOCALAI_TIMEOUT_SECONDS  per-request timeout, default 10
  MLFLOW_TRACKING_URI    the registry that models:/ URIs are resolved in

Model URI and flavor
  models:/NAME@ALIAS or models:/NAME/VERSION of a version registered by domain-mlflow
  training (it has the tags domain_id and model_version and a run with a merged_model
  artifact). Flavor: "transformers" (the default; LocalAI's backend for the merged
  model). No -C config keys are accepted.

What each command does
  create  copy the merged model to LOCALAI_MODELS_DIR/<domain_id>/<model_version>/, import
          the versioned config <model_version>, then the alias config NAME -> it; fails if
          LocalAI already has a model NAME
  update  the same for another version, then unload the replaced version's weights
  delete  remove the alias config NAME (POST /models/delete/NAME); the versioned config
          and its weights stay, as other names may point at them; idempotent
  list    every alias config LocalAI lists, promotion's per-domain names included
  get     NAME's alias target (model_version), domain_id, backend and weights folder
  predict POST /v1/completions per prompt; input: a string, a list of strings,
          {"prompt": ..., "max_tokens": N}, or a table with a "prompt" column
          (and optionally "max_tokens"); returns {"predictions": [text, ...], "usage": ...}

Not done here: the config store, Redis and the registry's "production" alias are not
touched. "domain-mlflow promote DOMAIN --version N" is the gated path that updates all of
them and serves the domain under the name DOMAIN; create, update and delete refuse that
name (list and get show it). run-local is not supported: LocalAI runs as its own server.

Examples
  export LOCALAI_URL=http://127.0.0.1:8080 LOCALAI_MODELS_DIR=/srv/localai/models
  mlflow deployments create -t localai --name sql-agent -m models:/domain.0x5678-SQLAgent@production
  mlflow deployments update -t localai --name sql-agent -m models:/domain.0x5678-SQLAgent/4
  mlflow deployments predict -t localai --name sql-agent -I prompts.json
  mlflow deployments get -t localai:/http://127.0.0.1:8080 --name sql-agent
  mlflow deployments delete -t localai --name sql-agent
"""


def run_local(name: str, model_uri: str, flavor: str | None = None,
              config: dict[str, str] | None = None) -> None:
    """Not supported: LocalAI runs as its own server (MLflow calls this with these 4 args)."""
    raise MlflowException(
        f"target {TARGET!r} has no run-local mode: LocalAI runs as its own server. Start "
        f"LocalAI, set LOCALAI_URL and LOCALAI_MODELS_DIR, then run `mlflow deployments "
        f"create -t {TARGET} --name {name} -m {model_uri}`",
        INVALID_PARAMETER_VALUE,
    )


@dataclass(frozen=True)
class RegisteredVersion:
    """A registry version as LocalAI serves it: where its merged model comes from."""

    registered_model: str
    version: str
    domain_id: str
    model_version: str
    run_id: str


def localai_url(target_uri: str, env_url: str | None) -> str:
    """LocalAI's base URL from ``localai`` (with LOCALAI_URL) or ``localai:/<url>``."""
    if target_uri == TARGET:
        if not env_url:
            raise MlflowException(
                f"target {TARGET!r} reads LocalAI's address from LOCALAI_URL, which is not set: "
                f"set it (e.g. http://127.0.0.1:8080) or use target '{TARGET}:/http://HOST:PORT'",
                INVALID_PARAMETER_VALUE,
            )
        return env_url
    url = target_uri[len(_EXPLICIT_URL_PREFIX):]
    parts = urlsplit(url)
    if target_uri.startswith(_EXPLICIT_URL_PREFIX) and parts.scheme in ("http", "https") \
            and parts.netloc:
        return url
    raise MlflowException(
        f"target {redact_url(target_uri)!r} is not valid: use {TARGET!r} (address from "
        f"LOCALAI_URL) or '{TARGET}:/http://HOST:PORT'",
        INVALID_PARAMETER_VALUE,
    )


def resolve_model_uri(model_uri: str, registry: Any) -> RegisteredVersion:
    """The registered version ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` names."""
    match = _MODELS_URI.fullmatch(model_uri or "")
    if match is None:
        raise MlflowException(
            f"model URI {model_uri!r} is not supported by target {TARGET!r}: use "
            "models:/NAME@ALIAS or models:/NAME/VERSION of a version registered by "
            "domain-mlflow training (LocalAI serves its merged_model artifact)",
            INVALID_PARAMETER_VALUE,
        )
    name = match["name"]
    try:
        version = (registry.get_model_version_by_alias(name, match["alias"]) if match["alias"]
                   else registry.get_model_version(name, match["version"]))
    except MlflowException as error:
        raise MlflowException(f"model URI {model_uri!r} names no registered model version: "
                              f"{error.message}", RESOURCE_DOES_NOT_EXIST) from None
    tags = version.tags or {}
    if not tags.get("domain_id") or not tags.get("model_version") or not version.run_id:
        raise MlflowException(
            f"{name} version {version.version} ({model_uri}) was not registered by "
            "domain-mlflow training: it lacks the tag domain_id or model_version, or a run "
            "with a merged_model artifact",
            INVALID_PARAMETER_VALUE,
        )
    for tag in ("domain_id", "model_version"):
        _check_safe_name(tags[tag], f"tag {tag} of {name} version {version.version}")
    return RegisteredVersion(name, str(version.version), tags["domain_id"],
                             tags["model_version"], version.run_id)


class LocalAIDeploymentClient(BaseDeploymentClient):
    """Deployments on one LocalAI server; a deployment is an alias config named ``name``."""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        with _as_mlflow_errors():
            self.services = Services.from_settings()
        self.settings = self.services.settings
        self.localai_url = localai_url(target_uri, self.settings.localai_url)
        self.localai = LocalAIClient(self.localai_url, self.settings.localai_api_key,
                                     timeout=self.settings.localai_timeout_seconds)

    def create_deployment(self, name: str, model_uri: str, flavor: str | None = None,
                          config: dict[str, str] | None = None,
                          endpoint: str | None = None) -> dict[str, Any]:
        """Export ``model_uri``'s merged model and serve it as ``name``; ``name`` must be new."""
        _check_arguments(name, flavor, config, endpoint)
        with _as_mlflow_errors():
            if self.localai.model_config(name) is not None:
                raise MlflowException(
                    f"LocalAI already has a model named {name!r}: use `mlflow deployments "
                    f"update -t {TARGET} --name {name} -m URI` to serve another version",
                    RESOURCE_ALREADY_EXISTS,
                )
            return self._deploy(name, model_uri, replaced_version=None)

    def update_deployment(self, name: str, model_uri: str | None = None,
                          flavor: str | None = None, config: dict[str, str] | None = None,
                          endpoint: str | None = None) -> dict[str, Any]:
        """Point ``name`` at ``model_uri``'s version and unload the one it replaces."""
        _check_arguments(name, flavor, config, endpoint)
        if not model_uri:
            raise MlflowException(
                f"nothing to update for {name!r}: give the model to serve with -m "
                "models:/NAME@ALIAS (a LocalAI deployment has no other settings)",
                INVALID_PARAMETER_VALUE,
            )
        with _as_mlflow_errors():
            replaced, _ = self._deployment(name, changing=True)
            return self._deploy(name, model_uri, replaced_version=replaced)

    def delete_deployment(self, name: str, config: dict[str, str] | None = None,
                          endpoint: str | None = None) -> None:
        """Remove the alias config ``name``; a name LocalAI does not have is not an error."""
        _check_arguments(name, None, config, endpoint)
        with _as_mlflow_errors():
            if self.localai.model_config(name) is None:
                return
            self._deployment(name, changing=True)
            self.localai.delete_model(name)

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Every alias config LocalAI lists, as ``{name, flavor, model_version}``."""
        _check_endpoint(endpoint)
        with _as_mlflow_errors():
            return [{"name": name, "flavor": FLAVOR, "model_version": target}
                    for name, target in self.localai.aliases().items()]

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        """``name``'s alias target (``model_version``), its domain, backend and weights."""
        _check_arguments(name, None, None, endpoint)
        with _as_mlflow_errors():
            target, served = self._deployment(name, changing=False)
        weights = LocalAISink.weights_of(served)
        return {
            "name": name,
            "flavor": FLAVOR,
            "model_version": target,
            "domain_id": LocalAISink.domain_of_config(served),
            "backend": served.get("backend"),
            "weights": weights or None,
            "localai_url": redact_url(self.localai_url),
        }

    def predict(self, deployment_name: str | None = None, inputs: Any = None,
                endpoint: str | None = None) -> PredictionsResponse:
        """One ``POST /v1/completions`` per prompt; the texts in ``predictions``."""
        _check_endpoint(endpoint)
        if not deployment_name:
            raise MlflowException("predict needs the deployment name", INVALID_PARAMETER_VALUE)
        calls = completion_requests(inputs)
        with _as_mlflow_errors():
            answers = [self.localai.complete(deployment_name, prompt, **options)
                       for prompt, options in calls]
        usage: dict[str, int] = {}
        for answer in answers:
            for key, count in (answer.get("usage") or {}).items():
                usage[key] = usage.get(key, 0) + int(count)
        return PredictionsResponse({
            "predictions": [answer["choices"][0]["text"] for answer in answers],
            "model": deployment_name,
            "usage": usage,
        })

    def _deploy(self, name: str, model_uri: str, replaced_version: str | None
                ) -> dict[str, Any]:
        registry = self.services.registry
        version = resolve_model_uri(model_uri, registry.client)
        if name == version.model_version:
            raise MlflowException(
                f"deployment name {name!r} is the name of the version's own LocalAI config; "
                "choose another name", INVALID_PARAMETER_VALUE)
        if name == serving_name(version.domain_id):
            raise _owned_by_promotion(name)
        # LocalAI alone: the plugin never writes the config store, Redis or the alias.
        targets = ServingTargets(registry, localai=LocalAISink(self.localai, self._models_dir()))
        targets.serve(name, version.domain_id, version.model_version, version.run_id,
                      replaced_version)
        return {
            "name": name,
            "flavor": FLAVOR,
            "model_uri": model_uri,
            "registered_model": version.registered_model,
            "registry_version": version.version,
            "domain_id": version.domain_id,
            "model_version": version.model_version,
        }

    def _deployment(self, name: str, *, changing: bool) -> tuple[str, dict[str, Any]]:
        """``name``'s alias target and that target's config. ``changing``: refuse a domain's
        serving name, which ``domain-mlflow promote`` owns."""
        existing = self.localai.model_config(name)
        if existing is None:
            raise MlflowException(
                f"no deployment named {name!r} on {redact_url(self.localai_url)}: LocalAI has "
                f"no model config by that name (see `mlflow deployments list -t {TARGET}`)",
                RESOURCE_DOES_NOT_EXIST,
            )
        if not existing.get("alias"):
            raise _not_a_deployment(name)
        target = str(existing["alias"])
        served = self.localai.model_config(target) or {}
        domain = LocalAISink.domain_of_config(served)
        if changing and domain is not None and serving_name(domain) == name:
            raise _owned_by_promotion(name)
        return target, served

    def _models_dir(self) -> str:
        if not self.settings.localai_models_dir:
            raise MlflowException(
                "LOCALAI_MODELS_DIR is not set: set it to the folder LocalAI reads models "
                "from; create and update copy the merged model there",
                INVALID_PARAMETER_VALUE,
            )
        return self.settings.localai_models_dir


def _check_arguments(name: str, flavor: str | None, config: dict[str, str] | None,
                     endpoint: str | None) -> None:
    _check_safe_name(name, "deployment name")
    if flavor not in (None, FLAVOR):
        raise MlflowException(
            f"flavor {flavor!r} is not supported by target {TARGET!r}: LocalAI serves the "
            f"merged model with its {FLAVOR!r} backend; use --flavor {FLAVOR} or leave it out",
            INVALID_PARAMETER_VALUE,
        )
    if config:
        raise MlflowException(
            f"target {TARGET!r} accepts no config keys (got {sorted(config)}): LocalAI's "
            "address, API key and models folder come from the target URI and LOCALAI_* "
            "variables", INVALID_PARAMETER_VALUE)
    _check_endpoint(endpoint)


def _check_endpoint(endpoint: str | None) -> None:
    if endpoint:
        raise MlflowException(f"target {TARGET!r} has no endpoints (got {endpoint!r})",
                              INVALID_PARAMETER_VALUE)


def _check_safe_name(value: Any, what: str) -> None:
    """LocalAI keeps names as ``<name>.yaml`` and folders: the domain-id rule keeps them safe."""
    try:
        validate_domain_id(value)
    except InvalidDomainIdError as error:
        raise MlflowException(f"{what} is not usable as a LocalAI name: {error}",
                              INVALID_PARAMETER_VALUE) from None


def _owned_by_promotion(name: str) -> MlflowException:
    return MlflowException(
        f"{name!r} is the serving name of domain {name!r}, which `domain-mlflow promote` "
        "manages with the config store and Redis: use `domain-mlflow promote` or "
        "`domain-mlflow rollback` for it, and another name for a deployment",
        INVALID_PARAMETER_VALUE,
    )


def _not_a_deployment(name: str) -> MlflowException:
    return MlflowException(
        f"LocalAI model {name!r} is not a deployment (an alias config) but a model config "
        "with weights; the plugin leaves it alone (deleting it would delete its files)",
        INVALID_PARAMETER_VALUE,
    )


@contextmanager
def _as_mlflow_errors() -> Iterator[None]:
    """Our errors (bad settings, LocalAI failures) as the MlflowException MLflow expects."""
    try:
        yield
    except DomainMlflowError as error:
        code = INVALID_PARAMETER_VALUE if isinstance(error, ConfigError) else INTERNAL_ERROR
        raise MlflowException(str(error), code) from error
