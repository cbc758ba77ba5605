"""A test double of the LocalAI HTTP server as released in v4.9.0 (github.com/mudler/LocalAI).

Each handler's docstring names the LocalAI function it follows; the files, under that tag:

- routes: core/http/routes/localai.go, openai.go, ui_api.go, health.go
- errors: core/http/app.go (the HTTPErrorHandler), core/http/render.go (notFoundHandler)
- keys: core/http/auth/middleware.go, core/http/auth/public_routes.go
- listing: core/http/endpoints/openai/list.go, core/services/galleryop/list_models.go
- configs: core/http/endpoints/localai/import_model.go, edit_model.go, config_meta.go,
  core/services/modeladmin/config.go, core/config/model_config.go, model_config_loader.go
- deletion jobs: core/http/endpoints/localai/gallery.go, core/services/galleryop/enqueue.go,
  service.go, models.go, operation.go, managers_local.go, core/gallery/models.go
- loading and inference: core/http/middleware/request.go, core/http/endpoints/openai/
  completion.go and chat.go, core/http/endpoints/localai/backend_monitor.go, pkg/model/loader.go

Not modelled: GET /api/models/config-json answers the YAML as written, where LocalAI
answers the loaded ModelConfig with its defaults filled in; PATCH merges every mapping,
where patchMerge replaces the map-valued fields (roles, ...) whole; no gallery installs.
"""

from __future__ import annotations

import contextlib
import copy
import hmac
import json
import math
import os
import queue
import re
import threading
import time
import uuid
from functools import partial
from http.client import responses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

Json = dict[str, Any]
SKIP_FILES = {"model_card", "readme", "readme.md"}
SKIP_SUFFIXES = (".tmpl", ".keep", ".yaml", ".yml", ".json", ".txt", ".pt", ".onnx", ".md",
                 ".ds_store", ".", ".safetensors", ".bin", ".gguf", ".ggml", ".ckpt", ".zip",
                 ".tag", ".bak", ".partial", ".tar.gz")
NOT_FOUND = "model {} not found. To see available models, call GET /v1/models"
q = partial(json.dumps, ensure_ascii=False)  # Go's %q, for ordinary strings


class Reply(Exception):
    """A finished HTTP answer, returned or raised by any handler."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def error(code: int, message: str, kind: str = "", echo: bool = False, **extra: Any) -> Reply:
    """schema.ErrorResponse, as the HTTPErrorHandler in core/http/app.go writes a handler's
    error; echo=True: an echo.HTTPError ("code=N, message=.."), and a 404 answered by
    notFoundHandler (core/http/render.go) instead."""
    if echo:
        message = "Resource not found" if code == 404 else f"code={code}, message={message}"
    return Reply(code, {"error": {"code": code, "message": message, "type": kind}}, **extra)


def params(cfg: Json) -> Json:
    value = cfg.get("parameters")
    return value if isinstance(value, dict) else {}


def validate(cfg: Json, configs: dict[str, Json] | None = None) -> str | None:
    """ModelConfig.Validate (core/config/model_config.go), plus ValidateAliasTarget
    (core/config/model_config_loader.go) when `configs` is given."""
    name, alias = str(cfg.get("name") or ""), str(cfg.get("alias") or "")
    backend, weights = str(cfg.get("backend") or ""), str(params(cfg).get("model") or "")
    if alias and alias == name:
        return f"alias {q(name)} cannot point to itself"
    if alias and (backend or weights):
        return (f"alias config {q(name)} must not set backend or parameters.model: "
                "an alias is a pure redirect")
    for target in (backend, weights, str(cfg.get("mmproj") or "")):
        if target.startswith("/") or ".." in target:
            return f"invalid file path: {target}"
    if backend and not re.fullmatch(r"[a-zA-Z0-9_-]+", backend):
        return f"invalid backend name: {backend}"
    if alias and configs is not None and alias not in configs:
        return f"alias target {q(alias)} does not exist"
    if alias and configs is not None and configs[alias].get("alias"):
        return f"alias target {q(alias)} is itself an alias (chains are not allowed)"
    return None


def deep_merge(dst: Json, src: Json) -> Json:
    """patchMerge (core/services/modeladmin/config.go): mappings merge key by key, anything
    else replaces."""
    for key, value in src.items():
        both = isinstance(value, dict) and isinstance(dst.get(key), dict)
        dst[key] = deep_merge(dst[key], value) if both else value
    return dst


def op_status(*, deletion: bool = False, error: str = "", processed: bool = False,
              message: str = "", progress: int = 0, phase: str = "", element: str = "",
              cancellable: bool = False) -> Json:
    """A gallery job's galleryop.OpStatus as its MarshalJSON writes it (operation.go)."""
    status: Json = {"deletion": deletion, "file_name": ""}
    if error:
        status["error"] = error
    status.update({"processed": processed, "message": message, "progress": progress})
    if phase:
        status["phase"] = phase
    status.update({"file_size": "", "downloaded_size": "", "gallery_element_name": element,
                   "cancelled": False, "cancellable": cancellable})
    return status


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    parts = content if isinstance(content, list) else [{"text": content or ""}]
    return " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


class LocalAIDouble:
    """An in-process LocalAI v4.9.0 server on loopback, with fault injection for tests.

    Gallery jobs (deletions) run in the background, one at a time, each `job_delay`
    seconds after it was enqueued at the earliest.
    """

    def __init__(self, models_dir: Path, api_keys: list[str] | None = None,
                 host: str = "127.0.0.1", port: int = 0, job_delay: float = 0.05) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"the double binds to loopback only, not {host}")
        self.models_dir = Path(models_dir).absolute()
        self.api_keys = [k for k in api_keys or [] if k]
        self.host, self.port, self.url = host, port, ""
        self.job_delay = job_delay
        self.configs: dict[str, Json] = {}
        self.loaded: dict[str, Json] = {}  # ModelID -> {"folder": Path, "config": snapshot}
        self.requests: list[Json] = []
        self._files: dict[str, Path] = {}
        self._fail: dict[str, list[int]] = {}
        self._hang: dict[str, float] = {}
        self._behaviour: dict[str, Json] = {}  # model name -> delay, error rate, count
        self._jobs: dict[str, Json] = {}  # job uuid -> OpStatus
        self._queue: queue.Queue[tuple[str, str, float] | None] = queue.Queue()
        self._stopped = threading.Event()
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._routes: list[tuple[str, str, Any]] = [
            ("GET", r"/healthz|/readyz", lambda r: Reply(200)),
            ("GET", r"(/v1)?/models", self._list_models),
            ("POST", r"/models/import", self._import),
            ("POST", r"/models/reload", self._reload),
            ("POST", r"(/v1)?/backend/shutdown", self._shutdown),
            ("POST", r"/models/delete/(?P<name>[^/]+)", self._delete),
            ("GET", r"/models/jobs/(?P<name>[^/]+)", self._job),
            ("GET", r"/models/jobs", self._all_jobs),
            ("GET", r"/api/models/config-json/(?P<name>[^/]+)", self._get_config),
            ("PATCH", r"/api/models/config-json/(?P<name>[^/]+)", self._patch),
            ("POST", r"(/v1)?(/chat)?/completions", self._inference),
        ]

    def start(self) -> LocalAIDouble:
        """Load every config in models_dir, as startup does (core/application/startup.go:
        LoadModelConfigsFromPath), start the gallery worker, then serve."""
        with self._lock:
            self._load_dir()
        self._stopped.clear()
        threading.Thread(target=self._gallery_worker, daemon=True).start()
        handler = type("Handler", (_Handler,), {"double": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads, self._server.block_on_close = True, False
        self.url = f"http://{self.host}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving; jobs still queued never run."""
        self.clear_faults()  # wakes hung requests
        self._stopped.set()
        self._queue.put(None)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalAIDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, route_prefix: str, status: int, count: int = 1,
                  message: str | None = None) -> None:
        """The next `count` requests under route_prefix answer `status` (checked after auth),
        with `message` as the error's text where given (LocalAI passes a backend's error
        text through, whatever it holds)."""
        with self._lock:
            self._fail[route_prefix] = [status, count, message]

    def hang(self, route_prefix: str, seconds: float) -> None:
        """Requests under route_prefix sleep `seconds` before answering, until clear_faults."""
        with self._lock:
            self._hang[route_prefix] = seconds

    def behave(self, model: str, *, delay_seconds: float = 0.0, error_rate: float = 0.0
               ) -> None:
        """Inference asked for ``model`` (a versioned name) sleeps ``delay_seconds`` and
        fails with 500 at ``error_rate``, spread evenly (the k-th request fails when
        floor(k * rate) grows): one arm of a rollout slower or erroring."""
        with self._lock:
            self._behaviour[model] = {"delay": delay_seconds, "rate": error_rate, "count": 0}

    def clear_faults(self) -> None:
        with self._lock:
            self._fail.clear()
            self._hang.clear()
            self._behaviour.clear()

    def _behave(self, model: str) -> None:
        with self._lock:
            behaviour = self._behaviour.get(model)
            if behaviour is None:
                return
            behaviour["count"] += 1
            count, rate, delay = behaviour["count"], behaviour["rate"], behaviour["delay"]
        if delay:
            time.sleep(delay)
        if math.floor(count * rate) > math.floor((count - 1) * rate):
            # A backend's failure: InferenceEndpoint's error through HTTPErrorHandler.
            raise error(500, f"rpc error: code = Unknown desc = {model} failed to generate")

    def model_names(self) -> list[str]:
        """The config names (aliases included) the loader holds, sorted: what ListModels
        (core/services/galleryop/list_models.go) lists before the loose files."""
        with self._lock:
            return sorted(self.configs)

    def config(self, name: str) -> Json | None:
        with self._lock:
            return copy.deepcopy(self.configs.get(name))

    def loaded_folder(self, name: str) -> Path | None:
        """Weights folder of the backend serving `name`, through one alias hop
        (ModelConfigLoader.ResolveAlias, core/config/model_config_loader.go)."""
        with self._lock:
            cfg = self.configs.get(name) or {"name": name}
            cfg = self.configs.get(str(cfg.get("alias")), cfg) if cfg.get("alias") else cfg
            entry = self.loaded.get(str(cfg.get("name") or params(cfg).get("model")))
            return entry["folder"] if entry else None

    def calls(self, path_prefix: str | None = None) -> list[Json]:
        with self._lock:
            return [r for r in self.requests if r["path"].startswith(path_prefix or "")]

    def _read_into(self, path: Path, first_only: bool = False) -> None:
        """readModelConfigsFromFile + Validate (core/config/model_config_loader.go): a list or
        one config; invalid ones skipped; first_only: ReadModelConfig, the lazy read."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return
        docs = data if isinstance(data, list) and data else [data]
        for cfg in docs[:1] if first_only else docs:
            name = cfg.get("name") if isinstance(cfg, dict) else None
            if isinstance(name, str) and name and validate(cfg) is None:
                self.configs[name], self._files[name] = cfg, path

    def _load_dir(self) -> None:
        """LoadModelConfigsFromPath (core/config/model_config_loader.go): non-recursive
        *.yaml/*.yml, no dotfiles, additive (a config whose file is gone stays)."""
        for path in sorted(self.models_dir.iterdir()):
            if path.suffix.lower() in (".yaml", ".yml") and not path.name.startswith("."):
                self._read_into(path)

    def _list(self, rx: re.Pattern[str] | None, skip_configured: bool) -> list[str]:
        """ListModels (core/services/galleryop/list_models.go): config names, then the loose
        non-directory files in name order (ModelLoader.ListFilesInModelPath)."""
        cfgs = [(n, c) for n, c in sorted(self.configs.items()) if rx is None or rx.search(n)]
        skip = {str(params(c).get("model") or "") for _, c in cfgs} if skip_configured else set()
        names = [n for n, _ in cfgs]
        for entry in sorted(self.models_dir.iterdir()):
            low, ok = entry.name.lower(), rx is None or rx.search(entry.name)
            if ok and not (low in SKIP_FILES or low.endswith(SKIP_SUFFIXES) or ".bak" in low
                           or entry.is_dir() or entry.name in skip):
                names.append(entry.name)
        return names

    def _dispatch(self, method: str, target: str, headers: Any, raw: bytes) -> Reply:
        """Log, authenticate (core/http/auth/middleware.go; public_routes.go names the routes
        that need no key), inject faults, route; anything else is notFoundHandler's 404."""
        url = urlsplit(target)
        with self._lock:
            self.requests.append({"method": method, "path": target, "headers": dict(headers),
                                  "body": raw.decode("utf-8", "replace")})
        public = method == "GET" and url.path in ("/healthz", "/readyz")
        if self.api_keys and not public and not self._authorized(headers):
            return error(401, "An authentication key is required", "invalid_request_error",
                         headers={"WWW-Authenticate": "Bearer"})
        try:  # Echo's c.Bind: JSON; an empty body (or null) binds nothing
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            body = exc
        body = {} if body is None else body
        query = {k: v[0] for k, v in parse_qs(url.query, True).items()}
        try:
            self._faults(url.path)
            for route_method, pattern, handler in self._routes:
                match = re.fullmatch(pattern, url.path)
                if match and route_method == method:
                    name = unquote(match.groupdict().get("name") or "")
                    return handler(SimpleNamespace(path=url.path, query=query, name=name, raw=raw,
                                                   headers=headers, body=body))
            return error(404, "Not Found", echo=True)
        except Reply as reply:
            return reply

    def _authorized(self, headers: Any) -> bool:
        """extractKey + isValidLegacyKey (core/http/auth/middleware.go): only the first
        non-empty source counts; constant-time compare."""
        auth = str(headers.get("Authorization") or "")
        key = auth[7:] if auth.startswith("Bearer ") else auth or str(
            headers.get("x-api-key") or headers.get("xi-api-key") or "")
        return any([hmac.compare_digest(key.encode(), k.encode()) for k in self.api_keys])

    def _faults(self, path: str) -> None:
        """fail_next and hang: counted on arrival, answered after the hang."""
        with self._lock:
            slot = next((s for p, s in self._fail.items() if path.startswith(p) and s[1]), None)
            if slot:
                slot[1] -= 1
            hang = next((s for p, s in self._hang.items() if path.startswith(p)), 0.0)
        deadline = time.monotonic() + hang
        while time.monotonic() < deadline and self._hang:
            time.sleep(0.02)
        if slot:
            raise error(slot[0], slot[2] or responses.get(slot[0], "Error"), echo=True)

    def _list_models(self, r: Any) -> Reply:
        """GET /v1/models: ListModelsEndpoint (core/http/endpoints/openai/list.go), unanchored
        `filter`, `excludeConfigured` defaults to true (SKIP_IF_CONFIGURED)."""
        try:
            rx = re.compile(r.query["filter"]) if r.query.get("filter") else None
        except re.error as exc:
            return error(500, f"error parsing regexp: {exc}")
        with self._lock:
            names = self._list(rx, r.query.get("excludeConfigured", "") in ("", "true"))
        return Reply(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]})

    def _import(self, r: Any) -> Reply:
        """POST /models/import: ImportModelEndpoint (core/http/endpoints/localai/
        import_model.go): JSON/YAML config, validate, write <name>.yaml, reload."""
        def fail(status: int, message: str) -> Reply:
            return Reply(status, {"success": False, "message": "", "error": message})
        if not r.raw:
            return fail(400, "Request body is empty")
        ctype = str(r.headers.get("Content-Type") or "")
        is_json = "application/json" in ctype or ("yaml" not in ctype and r.raw.strip()[:1] == b"{")
        try:
            cfg = json.loads(r.raw) if is_json else yaml.safe_load(r.raw.decode("utf-8"))
            if not isinstance(cfg or {}, dict):
                raise ValueError(f"cannot unmarshal {type(cfg).__name__} into a model config")
        except (ValueError, yaml.YAMLError) as exc:
            return fail(400, f"Failed to parse {'JSON' if is_json else 'YAML'}: {exc}")
        name = (cfg or {}).get("name")
        if not isinstance(name, str) or not name:
            return fail(400, "Name is required")
        path = Path(os.path.normpath(self.models_dir / f"{name}.yaml"))
        with self._lock:
            problem = validate(cfg, self.configs)
            if not problem and self.models_dir not in path.parents:  # utils.VerifyPath
                problem = "Model path not trusted: path is outside of trusted root"
            if problem:
                return fail(400, problem)
            try:
                path.write_text(yaml.safe_dump(cfg), encoding="utf-8")  # overwrites, no 409
            except OSError as exc:
                return fail(500, f"Failed to write configuration file: {exc}")
            self._load_dir()
        return Reply(200, {"success": True, "message": "Model configuration created successfully",
                           "filename": path.name})

    def _reload(self, r: Any) -> Reply:
        """POST /models/reload: ReloadModelsEndpoint (core/http/endpoints/localai/
        edit_model.go): additive; never removes names, never unloads."""
        with self._lock:
            self._load_dir()
        return Reply(200, {"success": True,
                           "message": "Model configurations reloaded successfully"})

    def _shutdown(self, r: Any) -> Reply:
        """POST /backend/shutdown: BackendShutdownEndpoint (core/http/endpoints/localai/
        backend_monitor.go, 4.8+), ModelLoader.ShutdownModel keyed by model ID, so an alias
        is not resolved; "not loaded" is a 404, which notFoundHandler answers."""
        if not isinstance(r.body, dict):
            return error(400, f"Syntax error: {r.body}", echo=True)
        if not r.body.get("model"):
            return error(400, "model is required", echo=True)
        model = str(r.body["model"])
        with self._lock:
            if self.loaded.pop(model, None) is None:
                return error(404, f"model {q(model)} is not loaded on this instance or on any "
                             "worker node", echo=True)
        return Reply(200, {"message": "model stopped"})

    def _delete(self, r: Any) -> Reply:
        """POST /models/delete/:name: DeleteModelGalleryEndpoint (core/http/endpoints/localai/
        gallery.go). EnqueueModelOp (enqueue.go) gives the job a "queued" status and hands it
        to the worker; the config leaves memory at once (RemoveModelConfig), its YAML only
        when the job runs, so a lazy read or a reload meanwhile brings it back."""
        op = str(uuid.uuid1())
        with self._lock:
            self._set_job(op, message="queued", phase="queued", element=r.name, deletion=True,
                          cancellable=True)
            self.configs.pop(r.name, None)
        self._queue.put((op, r.name, time.monotonic() + self.job_delay))
        host = r.headers.get("Host") or urlsplit(self.url).netloc  # middleware.BaseURL
        return Reply(200, {"uuid": op, "status": f"http://{host}/models/jobs/{op}"})

    def _job(self, r: Any) -> Reply:
        """GET /models/jobs/:uuid: GetOpStatusEndpoint (gallery.go); an id without a status is
        a plain error, a 500 from the HTTPErrorHandler."""
        with self._lock:
            status = copy.deepcopy(self._jobs.get(r.name))
        return Reply(200, status) if status else error(500, "could not find any status for ID")

    def _all_jobs(self, r: Any) -> Reply:
        """GET /models/jobs: GetAllStatusEndpoint (gallery.go), every job's status by id."""
        with self._lock:
            return Reply(200, copy.deepcopy(self._jobs))

    def _set_job(self, op: str, **fields: Any) -> None:
        """GalleryService.UpdateStatus (service.go): a new status replaces the old one, but a
        job that was a deletion stays one."""
        status, previous = op_status(**fields), self._jobs.get(op)
        status["deletion"] = status["deletion"] or bool(previous and previous["deletion"])
        self._jobs[op] = status

    def _gallery_worker(self) -> None:
        """GalleryService.Start (service.go): one job at a time, in the order enqueued."""
        while (job := self._queue.get()) is not None:
            op, name, due = job
            if self._stopped.wait(max(0.0, due - time.monotonic())):
                return
            self._run_deletion(op, name)

    def _run_deletion(self, op: str, name: str) -> None:
        """modelHandler (core/services/galleryop/models.go) for a deletion: DeleteModel
        (managers_local.go: ShutdownModel, its failure only logged, then
        DeleteModelFromSystem), then an additive reload; an error fails the job (Start's
        updateError)."""
        with self._lock:
            self._set_job(op, message=f"processing model: {name}")
            self.loaded.pop(name, None)
            problem = self._delete_from_disk(name)
            if problem:
                self._set_job(op, processed=True, error=problem, message=f"error: {problem}")
                return
            self._load_dir()  # v4.9.0: a config re-read while the job waited stays listed
            self._set_job(op, deletion=True, processed=True, element=name, message="completed",
                          progress=100)

    def _model_files(self, name: str) -> set[Path]:
        """listModelFiles (core/gallery/models.go): the weights and mmproj <name>.yaml names,
        and its ._gallery_ file."""
        try:
            cfg = yaml.safe_load((self.models_dir / f"{name}.yaml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            cfg = None
        cfg = cfg if isinstance(cfg, dict) else {}
        named = [str(params(cfg).get("model") or "") if not cfg.get("artifacts") else "",
                 str(cfg.get("mmproj") or ""), f"._gallery_{name}.yaml"]
        return {self.models_dir / file for file in named if file}

    def _delete_from_disk(self, name: str) -> str | None:
        """DeleteModelFromSystem (core/gallery/models.go): remove the files no other YAML
        names (os.Remove: a non-empty folder stays, and that is only logged), then
        <name>.yaml, whose failure is the job's error (Go's PathError text)."""
        others: set[Path] = set()
        for path in self.models_dir.iterdir():
            if (path.suffix in (".yaml", ".yml") and not path.name.startswith("._gallery_")
                    and path.name not in (f"{name}.yaml", f"{name}.yml") and not path.is_dir()):
                others |= self._model_files(path.stem)
        for path in sorted(self._model_files(name) - others):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        config_file = self.models_dir / f"{name}.yaml"
        try:
            config_file.unlink()
        except OSError as exc:
            return f"remove {config_file}: {(exc.strerror or str(exc)).lower()}"
        return None

    def _get_config(self, r: Any) -> Reply:
        """GET /api/models/config-json/:name (core/http/routes/ui_api.go): the loader's config
        (no lazy read), or a 404."""
        cfg = self.config(r.name)
        return Reply(200, cfg) if cfg else Reply(404, {"error": "model configuration not found"})

    def _patch(self, r: Any) -> Reply:
        """PATCH /api/models/config-json/:name: PatchConfigEndpoint (core/http/endpoints/
        localai/config_meta.go) and ConfigService.PatchConfig (core/services/modeladmin/
        config.go): deep-merge into the YAML on disk, validate, write, reload."""
        if not r.raw or not isinstance(r.body, dict) or not r.body:
            fail = "request body is empty" if isinstance(r.body, dict) else "invalid JSON: "
            fail += "" if isinstance(r.body, dict) else str(r.body)
            return Reply(400, {"error": fail if r.raw else "request body is empty or unreadable"})
        with self._lock:
            path = self._files.get(r.name)
            if r.name not in self.configs or path is None:
                return Reply(404, {"error": "model configuration not found"})
            try:
                merged = deep_merge(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, r.body)
            except (OSError, yaml.YAMLError, AttributeError) as exc:
                return Reply(500, {"error": f"read config file: {exc}"})
            fail = validate(merged, self.configs)
            if fail:
                return Reply(400, {"error": f"invalid model configuration: {fail}"})
            path.write_text(yaml.safe_dump(merged), encoding="utf-8")
            self._load_dir()
        return Reply(200, {"success": True, "message": f"Model '{r.name}' updated successfully"})

    def _resolve(self, model: str) -> Json:
        """RequestExtractor.SetModelAndConfig (core/http/middleware/request.go): the lazy
        <name>.yaml read (LoadModelConfigFileByName, which puts it back in the loader),
        CheckIfModelExists, one alias hop (ResolveAlias)."""
        with self._lock:
            lazy = self.models_dir / f"{model.lstrip('/')}.yaml"
            if model not in self.configs and lazy.is_file():
                self._read_into(lazy, first_only=True)
            cfg = copy.deepcopy(self.configs.get(model, {}))
            if not params(cfg).get("model"):  # a config without parameters.model uses the name
                cfg["parameters"] = {**params(cfg), "model": model}
            try:  # CheckIfModelExists: the name is an unanchored regex; a bad one skips it
                exists = self._list(re.compile(model), False) or (self.models_dir / model).exists()
            except re.error:
                exists = True
            if "/" not in model and not exists:
                raise error(404, NOT_FOUND.format(q(model)), "invalid_request_error")
            alias = str(cfg.get("alias") or "")
            target = self.configs.get(alias, {})
            if alias and (not target or target.get("alias")):
                why = f"another alias {q(alias)} (chains are not allowed)" if target else (
                    f"unknown model {q(alias)}")
                raise error(400, f"alias {q(model)} points to {why}", "invalid_request_error")
            return copy.deepcopy(target) if alias else cfg

    def _load(self, cfg: Json) -> Path:
        """ModelLoader.LoadModel (pkg/model/loader.go): cached by model ID only, so a loaded
        backend keeps its weights; a failure is "could not load model" (initializers.go)."""
        key = str(cfg.get("name") or params(cfg).get("model"))
        with self._lock:
            if key not in self.loaded:
                folder = self.models_dir / str(params(cfg).get("model") or key)
                if not folder.exists():
                    raise error(500, f"could not load model: {folder} not found")
                self.loaded[key] = {"folder": folder, "config": copy.deepcopy(cfg)}
            return Path(self.loaded[key]["folder"])

    def _inference(self, r: Any) -> Reply:
        """POST /v1/(chat/)completions: CompletionEndpoint and ChatEndpoint (core/http/
        endpoints/openai/completion.go, chat.go), minimal non-streaming OpenAI responses."""
        if not isinstance(r.body, dict):
            return error(400, f"failed parsing request body: {r.body}", echo=True)
        # No model: BuildFilteredFirstAvailableDefaultModel, then (completions)
        # BuildConstantDefaultModelNameMiddleware("gpt-4o"), core/http/routes/openai.go.
        with self._lock:
            model = str(r.body.get("model") or next(iter(sorted(self.configs)), "gpt-4o"))
        folder = self._load(self._resolve(model)).name
        self._behave(model)
        chat = r.path.endswith("/chat/completions")
        messages = [m for m in r.body.get("messages") or [] if isinstance(m, dict)]
        users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
        prompt = (users or [""])[-1] if chat else text_of(r.body.get("prompt"))
        seen = " ".join(text_of(m.get("content")) for m in messages) if chat else prompt
        text = f"[{folder}] {prompt}"
        choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        usage = {"prompt_tokens": len(seen.split()), "completion_tokens": len(text.split())}
        return Reply(200, {
            "created": int(time.time()), "object": "chat.completion" if chat else "text_completion",
            "id": str(uuid.uuid4()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", **choice}],
            "usage": {**usage, "total_tokens": sum(usage.values())}})


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler that hands every request to the double."""

    protocol_version = "HTTP/1.1"
    # LocalAI is a Go server: Go's TCP connections default to TCP_NODELAY ("The default
    # is true (no delay)", SetNoDelay in net/tcpsock.go). Without it, headers and body
    # written apart meet Nagle's algorithm and a kept-alive client waits ~40 ms each.
    disable_nagle_algorithm = True
    double: LocalAIDouble

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = self.double._dispatch(self.command, self.path, self.headers, raw)
        text = "" if reply.body is None else json.dumps(  # Go: compact, HTML-escaped, newline
            reply.body, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c") + "\n"
        data = text.replace(">", "\\u003e").encode("utf-8") if text else b""
        if data:
            reply.headers["Content-Type"] = "application/json"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            self.send_response(reply.status)
            for key, value in {**reply.headers, "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle
