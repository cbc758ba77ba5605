"""The MLflow Model Registry as domain-mlflow uses it: one registered model per domain.

Registered model name: ``domain.{domain_id}`` (tagged ``domain_id``). Per-domain
gate thresholds live in its tags ``threshold.accuracy``, ``threshold.latency_ms``,
``threshold.training_loss`` and ``threshold.validation_loss``; the promotion mode
(``auto`` or ``manual``) in ``promotion.mode``.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST
from mlflow.tracking import MlflowClient

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.gate import GATED_METRICS, Thresholds
from domain_mlflow.naming import REGISTERED_MODEL_PREFIX, registered_model_name, validate_domain_id
from domain_mlflow.semver import SEMVER_TAG, next_semver
from domain_mlflow.settings import promotion_mode

THRESHOLD_TAG_PREFIX = "threshold."
MODE_TAG = "promotion.mode"  # auto | manual, over PROMOTION_MODE for this domain


def _error_code(error: MlflowException) -> str:
    return str(getattr(error, "error_code", ""))


def _is(error: MlflowException, code: int) -> bool:
    from mlflow.protos.databricks_pb2 import ErrorCode

    return _error_code(error) == ErrorCode.Name(code)


def registered_model_tags(client: MlflowClient, domain_id: str) -> dict[str, str] | None:
    """The tags of the domain's registered model, or ``None`` if it does not exist yet."""
    try:
        return dict(client.get_registered_model(registered_model_name(domain_id)).tags)
    except MlflowException as error:
        if _is(error, RESOURCE_DOES_NOT_EXIST):
            return None
        raise


def threshold_overrides(tags: Mapping[str, str], where: str) -> dict[str, float]:
    """Parse ``threshold.<metric>`` tags; a bad one is a :class:`ConfigError` naming it."""
    overrides: dict[str, float] = {}
    for key, value in tags.items():
        if not key.startswith(THRESHOLD_TAG_PREFIX):
            continue
        metric = key[len(THRESHOLD_TAG_PREFIX) :]
        if metric not in GATED_METRICS:
            raise ConfigError(
                f"tag {key!r} on {where} names no gated metric; use one of "
                + ", ".join(THRESHOLD_TAG_PREFIX + name for name in GATED_METRICS)
            )
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0:
            raise ConfigError(f"tag {key}={value!r} on {where} is not a non-negative number")
        overrides[metric] = number
    return overrides


def domain_thresholds(client: MlflowClient, domain_id: str, defaults: Thresholds) -> Thresholds:
    """``defaults`` (from the environment) with the domain's registered-model tags applied."""
    tags = registered_model_tags(client, domain_id) or {}
    where = f"registered model {registered_model_name(domain_id)!r}"
    return defaults.with_overrides(threshold_overrides(tags, where))


def ensure_registered_model(client: MlflowClient, domain_id: str) -> str:
    name = registered_model_name(domain_id)
    try:
        client.create_registered_model(
            name,
            tags={"domain_id": domain_id},
            description=f"Models of domain {domain_id}, one version per training run.",
        )
    except MlflowException as error:
        if not _is(error, RESOURCE_ALREADY_EXISTS):
            raise
    return name


def paged(search: Any, **kwargs: Any) -> list[Any]:
    """Every item of a paginated MLflow search (``search_model_versions``, ``search_runs``,
    ...), following its page tokens; ``max_results`` in ``kwargs`` is the page size."""
    items: list[Any] = []
    token = None
    while True:
        page = search(page_token=token, **kwargs)
        items.extend(page)
        token = page.token
        if not token:
            return items


# Pages of an incremental search: a small first page (usually all there is), then full ones.
_SINCE_PAGES = (20, 200, 1000)


def versions_since(client: MlflowClient, filter_string: str, since_millis: int | None,
                   first_page: int = _SINCE_PAGES[0]) -> list[ModelVersion]:
    """The versions matching ``filter_string`` registered at or after ``since_millis``
    (epoch milliseconds), newest first: pages in creation order (``first_page`` versions,
    then 200, then 1,000), stopping at the first older one, so the cost follows what is
    new. ``None``: every version."""
    if since_millis is None:
        return paged(client.search_model_versions, filter_string=filter_string,
                     max_results=_SINCE_PAGES[-1])
    found: list[ModelVersion] = []
    token, page_number = None, 0
    pages = (first_page, *_SINCE_PAGES[1:])
    while True:
        size = pages[min(page_number, len(pages) - 1)]
        page = client.search_model_versions(filter_string, max_results=size,
                                            order_by=["creation_timestamp DESC"],
                                            page_token=token)
        fresh = [v for v in page if (v.creation_timestamp or 0) >= since_millis]
        found += fresh
        token, page_number = page.token, page_number + 1
        if not token or len(fresh) < len(page):
            return found


def changed_versions(client: MlflowClient, filter_string: str, since_millis: int
                     ) -> list[ModelVersion]:
    """What :func:`versions_since` returns, found through the registered models, so that
    a read with nothing new costs the same however many old versions there are. MLflow
    stamps a registered model's ``last_updated_timestamp`` with its new version's
    creation time in the version's own transaction, so only the models updated at or
    after ``since_millis`` can have versions that new: one short page of the models,
    newest first, names them. A few: their versions in one search; a page or more: the
    search over every version (then its cost follows the burst, not the history)."""
    models = client.search_registered_models(filter_string, max_results=_SINCE_PAGES[0],
                                             order_by=["last_updated_timestamp DESC"])
    changed = [model.name for model in models
               if (model.last_updated_timestamp or 0) >= since_millis]
    if len(changed) == len(models) and models.token:
        return versions_since(client, filter_string, since_millis)
    # Only our names go into the filter: a domain id never holds a quote.
    ours = [name for name in changed if domain_of(name)]
    if not ours:
        return []
    names = ", ".join(f"'{name}'" for name in ours)
    # A changed model usually has one version that new: a first page of two each stops
    # at an older one without reading the model's history.
    return versions_since(client, f"name IN ({names})", since_millis, first_page=2 * len(ours))


def register_version(
    client: MlflowClient,
    domain_id: str,
    source: str,
    run_id: str,
    tags: Mapping[str, str],
    model_id: str | None = None,
) -> ModelVersion:
    """Create the next version of the domain's registered model with ``tags``, and its
    ``semver`` tag derived from the newest earlier version (see :mod:`domain_mlflow.semver`)
    unless ``tags`` hold one."""
    name = ensure_registered_model(client, domain_id)
    tags = dict(tags)
    if SEMVER_TAG not in tags:
        tags[SEMVER_TAG] = next_semver(latest_semver_tags(client, name), tags)
    return client.create_model_version(name=name, source=source, run_id=run_id, tags=tags,
                                       model_id=model_id)


def latest_semver_tags(client: MlflowClient, name: str) -> dict[str, str] | None:
    """The tags of the registered model's newest version that has a semver, or None."""
    newest = client.search_model_versions(f"name = '{name}' AND tags.{SEMVER_TAG} LIKE '%'",
                                          order_by=["version_number DESC"], max_results=1)
    return dict(newest[0].tags) if newest else None


PRODUCTION_ALIAS = "production"
PREVIOUS_ALIAS = "previous"
METRIC_TAGS = ("accuracy", "latency_ms", "latency_p95_ms", "training_loss", "validation_loss",
               "tokens_per_second")


def domain_of(registered_model: str) -> str | None:
    """The domain id of one of our registered models, or None for anybody else's."""
    from domain_mlflow.exceptions import InvalidDomainIdError

    if not registered_model.startswith(REGISTERED_MODEL_PREFIX):
        return None
    try:
        return validate_domain_id(registered_model[len(REGISTERED_MODEL_PREFIX):])
    except InvalidDomainIdError:
        return None  # named like ours by hand, but no domain id we would ever write


def get_domain_version(client: MlflowClient, domain_id: str, version: int | str) -> ModelVersion:
    from domain_mlflow.exceptions import UnknownVersionError

    name = registered_model_name(domain_id)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as error:
        if _is(error, RESOURCE_DOES_NOT_EXIST) or "not found" in str(error).lower():
            raise UnknownVersionError(
                f"registered model {name!r} has no version {version}"
            ) from None
        raise


def version_metrics(version: ModelVersion) -> dict[str, float]:
    """The metrics training wrote as version tags (unparsable values are left out)."""
    metrics = {}
    for key in METRIC_TAGS:
        try:
            metrics[key] = float(version.tags[key])
        except (KeyError, ValueError):
            continue
    return metrics


def production_version(client: MlflowClient, domain_id: str) -> int | None:
    name = registered_model_name(domain_id)
    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if _is(error, RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = model.aliases.get(PRODUCTION_ALIAS)
    return int(version) if version is not None else None


def registry_uri(client: MlflowClient) -> str:
    """Where ``client`` reads and writes the registry."""
    import mlflow

    return str(getattr(client, "_registry_uri", None) or mlflow.get_registry_uri())


def is_local_file(registry_uri: str) -> bool:
    """Whether the registry is a file on this host (a SQLite or file store): every
    process writing it queues on the file's one lock."""
    scheme = registry_uri.partition(":")[0].lower() if "://" in registry_uri else "file"
    return scheme in ("sqlite", "file")


def default_concurrency(registry_uri: str) -> int:
    """Registry calls side by side: 1 on a local SQLite or file store (its writes queue
    on one file), 16 against a tracking server or a database server."""
    return 1 if is_local_file(registry_uri) else 16


def _writer(client: MlflowClient) -> object:
    """What alias and tag writes to our ``domain.*`` models go through.

    Before every alias or tag write MlflowClient reads the whole registered model to
    check that the name is not a prompt: on a SQLite store that read is 80% of the
    write, against a server it is a second round trip. The check cannot fail for us:
    every version we write to was read through MLflow's own prompt-excluding reads
    (``search_model_versions``, ``get_model_version``) or registered by us, and MLflow
    refuses a prompt under an existing model's name. So the writes go straight to
    the client's registry client, and to the public client where it has none.
    """
    registry = getattr(client, "_get_registry_client", None)
    return registry() if callable(registry) else client


def set_version_tags(client: MlflowClient, domain_id: str, version: int | str,
                     tags: Mapping[str, str]) -> None:
    """Set ``tags`` on one version of the domain's registered model."""
    writer, name = _writer(client), registered_model_name(domain_id)
    for key, value in tags.items():
        writer.set_model_version_tag(name, str(version), key, value)


def move_production_alias(client: MlflowClient, domain_id: str, version: int,
                          replaced: int | None) -> None:
    """``production`` → ``version``; the replaced version keeps ``previous`` for rollback.

    The aliases are the registry's only record of the stage: a ``stage`` tag would say
    the same in two more writes per promotion (see docs/promotion.md)."""
    writer, name = _writer(client), registered_model_name(domain_id)
    if replaced is not None and replaced != version:
        writer.set_registered_model_alias(name, PREVIOUS_ALIAS, str(replaced))
    writer.set_registered_model_alias(name, PRODUCTION_ALIAS, str(version))


THRESHOLD_CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class DomainPolicy:
    """What a domain's registered-model tags decide: its gate thresholds and whether a
    passing version deploys by itself (``auto``) or waits for approval (``manual``)."""

    thresholds: Thresholds
    mode: str

    @classmethod
    def from_tags(cls, domain_id: str, tags: Mapping[str, str], defaults: Thresholds,
                  default_mode: str) -> DomainPolicy:
        where = f"registered model {registered_model_name(domain_id)!r}"
        mode = tags.get(MODE_TAG)
        return cls(defaults.with_overrides(threshold_overrides(tags, where)),
                   promotion_mode(f"tag {MODE_TAG} on {where}", mode) if mode else default_mode)


POLICY_TAGS = (*(THRESHOLD_TAG_PREFIX + metric for metric in GATED_METRICS), MODE_TAG)


def policy_tags(client: MlflowClient, name_filter: str,
                each: Callable[[Callable[[str], Any], list[str]], list[Any]] | None = None
                ) -> dict[str, dict[str, str]]:
    """Domain → the tags of its registered model, for every model matching
    ``name_filter`` that holds a threshold or promotion-mode tag: one search per tag
    key, each returning only such models (a model without any is on the defaults).
    Far cheaper than reading every model: MLflow builds each result with its latest
    versions. ``each`` runs the searches (side by side)."""
    searches = [f"{name_filter} AND tags.`{key}` LIKE '%'" for key in POLICY_TAGS]
    search = functools.partial(paged, client.search_registered_models, max_results=1000)
    pages = (each or (lambda call, items: [call(item) for item in items]))(
        lambda where: search(filter_string=where), searches)
    return {domain: dict(model.tags) for page in pages for model in page
            if (domain := domain_of(model.name))}


class DomainRegistry:
    """The registry of one process: its MlflowClient and each domain's policy (thresholds,
    promotion mode), cached briefly (a changed ``threshold.*`` or ``promotion.mode`` tag
    applies within THRESHOLD_CACHE_SECONDS)."""

    def __init__(self, client: MlflowClient, defaults: Thresholds,
                 default_mode: str = "auto", concurrency: int = 1) -> None:
        self.client = client
        self.defaults = defaults
        self.default_mode = default_mode
        self.concurrency = max(1, concurrency)
        self._policies: dict[str, tuple[float, DomainPolicy]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._one_at_a_time = threading.RLock()

    @property
    def local_file(self) -> bool:
        """Whether this registry is a file on this host (see :func:`is_local_file`)."""
        return is_local_file(registry_uri(self.client))

    def each(self, call: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``call`` on every item, at most ``concurrency`` at a time in this process
        (registry calls side by side, over MLflow's one HTTP session pool); the results
        in order. With a concurrency of 1 the threads that call this take turns, a whole
        list at a time: a SQLite store's writes queue on one file lock, so two threads
        writing at once only make each other wait on it."""
        if not items:
            return []  # nothing to wait for a turn for
        if self.concurrency == 1:
            with self._one_at_a_time:
                return [call(item) for item in items]
        if len(items) < 2:
            return [call(item) for item in items]
        with self._pool_lock:  # one pool per process: every batch's calls share the bound
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency,
                                                thread_name_prefix="registry")
        return list(self._pool.map(call, items))

    def policy(self, domain_id: str) -> DomainPolicy:
        cached = self._policies.get(domain_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        return self._remember(domain_id, registered_model_tags(self.client, domain_id) or {})

    def thresholds(self, domain_id: str) -> Thresholds:
        return self.policy(domain_id).thresholds

    def promotion_mode(self, domain_id: str) -> str:
        return self.policy(domain_id).mode

    def prime_thresholds(self, domain_id: str, tags: Mapping[str, str]) -> None:
        """Fill the cache from registered-model tags already fetched (the poller's search)."""
        self._remember(domain_id, tags)

    def _remember(self, domain_id: str, tags: Mapping[str, str]) -> DomainPolicy:
        policy = DomainPolicy.from_tags(domain_id, tags, self.defaults, self.default_mode)
        self._policies[domain_id] = (time.monotonic() + THRESHOLD_CACHE_SECONDS, policy)
        return policy

    def version(self, domain_id: str, version: int | str) -> ModelVersion:
        return get_domain_version(self.client, domain_id, version)

    def version_of_run(self, domain_id: str, training_run_id: str) -> ModelVersion | None:
        """The newest version tagged with ``training_run_id``, or None."""
        if "'" in training_run_id or "\\" in training_run_id:
            return None  # our run ids never hold quotes; nothing can match
        found = self.client.search_model_versions(
            f"name = '{registered_model_name(domain_id)}' "
            f"AND tags.training_run_id = '{training_run_id}'")
        return max(found, key=lambda v: int(v.version), default=None)

    def model(self, domain_id: str) -> Any | None:
        """The domain's registered model (tags, aliases), or None when there is none."""
        try:
            return self.client.get_registered_model(registered_model_name(domain_id))
        except MlflowException as error:
            if _is(error, RESOURCE_DOES_NOT_EXIST):
                return None
            raise
