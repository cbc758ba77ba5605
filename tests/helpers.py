"""Helpers shared by several test modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples" / "data"


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


LOCALAI_TEST_KEY = "localai-test-key"


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``domain-mlflow ARGS`` run in this process, the way Click's CliRunner runs a
    command: what it prints to stdout and stderr (its log lines and warnings among
    them) and its exit code, as a :class:`subprocess.CompletedProcess`.

    The call starts from what a fresh process has: the environment (exactly ``env``
    when given), a root logger without handlers, Python's default warning filters,
    MLflow's tracking and registry URIs and experiment taken from the environment, no
    active run. What the CLI sets of that process-wide state is put back afterwards.

    ``timeout`` cannot be enforced in-process: it is accepted for the signature of
    :func:`run_cli_process`, which a test about the process itself uses (signals,
    daemons, start-up and import-time behaviour, calls from several threads at once:
    ``sys.stdout`` is one per process).
    """
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from domain_mlflow.cli import main

    del timeout  # see the docstring
    out, err = io.StringIO(), io.StringIO()
    with _as_a_fresh_process(env), redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exited:  # argparse's mistakes and --help
            code = exited.code
            if code is None:
                code = 0
            elif not isinstance(code, int):
                print(code, file=sys.stderr)  # as Python does at exit
                code = 1
        except Exception:  # what reaches the top: a traceback on stderr and exit 1
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["domain-mlflow", *args], code, out.getvalue(),
                                       err.getvalue())


@contextmanager
def _as_a_fresh_process(env: dict[str, str] | None) -> Iterator[None]:
    """The process-wide state :func:`run_cli` starts from, restored on the way out.
    Entered before ``sys.stderr`` is redirected: the CLI's log handler, created inside,
    writes to the redirected stream."""
    import logging
    import warnings

    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils
    from mlflow.tracking import fluent

    assert fluent.active_run() is None, "the CLI would see this run: use run_cli_process"
    saved_environ = dict(os.environ)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    package = logging.getLogger("domain_mlflow")
    saved_package_level = package.level
    saved_mlflow = (tracking_utils._tracking_uri, registry_utils._registry_uri,
                    fluent._active_experiment_id, fluent._last_active_run_id.get())

    def show_warning(message: Any, category: Any, filename: str, lineno: int,
                     file: Any = None, line: str | None = None) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():  # restores the filters and showwarning
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        for handler in saved_handlers:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        # Python's default filters; pytest's would record the warnings instead of
        # showing them on stderr.
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                         ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        warnings.showwarning = show_warning
        tracking_utils._tracking_uri = registry_utils._registry_uri = None
        fluent._active_experiment_id = None
        try:
            yield
        finally:
            while fluent.active_run():  # a process's exit would end it too
                fluent.end_run()
            for handler in root.handlers[:]:
                root.removeHandler(handler)
                handler.close()
            for handler in saved_handlers:
                root.addHandler(handler)
            root.setLevel(saved_level)
            package.setLevel(saved_package_level)
            os.environ.clear()
            os.environ.update(saved_environ)
            (tracking_utils._tracking_uri, registry_utils._registry_uri,
             fluent._active_experiment_id) = saved_mlflow[:3]
            fluent._last_active_run_id.set(saved_mlflow[3])


def run_cli_process(*args: str, env: dict[str, str] | None = None,
                    timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m domain_mlflow.cli ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "domain_mlflow.cli", *args],
                          env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=timeout, check=False)


def run_torchrun(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node=2 ARGS`` (a script, or ``-m`` and a module)."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=2", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    """A user mistake: exit ``code``, one line on stderr naming it, no traceback."""
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("domain-mlflow") and "error: " in lines[0], lines[0]
    assert text in lines[0]


@contextmanager
def lock_held_elsewhere(database: Any, name: str, release_after: float | None = None
                        ) -> Iterator[None]:
    """Another thread holds the named lock for the block (or for ``release_after`` s)."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with database.lock(name) as got:
            assert got
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    timer = threading.Timer(release_after, release.set) if release_after is not None else None
    if timer:
        timer.start()
    try:
        yield
    finally:
        release.set()
        thread.join()


def open_promotion(version: Any, error: str) -> Any:
    """An unfinished promotion of registry ``version`` (as ``register_domain_version``
    returns it), written straight to the environment's config store: approved, with one
    failed attempt that says ``error``."""
    from datetime import timedelta

    from domain_mlflow.settings import load_settings
    from domain_mlflow.sinks.config_store import ConfigStore

    store = ConfigStore.from_settings(load_settings())
    try:
        promotion, created = store.create_promotion(
            request_key=f"test-in-flight:{version.name}:{version.version}",
            domain_id=version.tags["domain_id"], registry_version=int(version.version),
            kind="promote", actor="test", reason="in flight", metrics={},
            model_version=version.tags["model_version"], model_uri=version.source,
            run_id=version.run_id, targets={},
        )
        assert created
        promotion = store.advance(promotion, "approved")
        return store.record_failure(promotion, error, timedelta(minutes=5), promotion.targets)
    finally:
        store.close()


def with_query_parameter(url: str, key: str, value: str) -> str:
    """``url`` with ``key=value`` added to its query."""
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` (a URL) whose connections resolve unqualified names in ``schema``."""
    return with_query_parameter(dsn, "options", f"-csearch_path%3D{schema}")


def with_application_name(dsn: str, name: str) -> str:
    """``dsn`` (a URL) whose connections show ``name`` in ``pg_stat_activity``."""
    return with_query_parameter(dsn, "application_name", name)


def connections_named(admin_dsn: str, name: str, settle_seconds: float = 10.0) -> int:
    """Open PostgreSQL connections with application name ``name``, once those that are
    closing have gone (a backend leaves ``pg_stat_activity`` a moment after its client
    hung up): the count as soon as it is 0, else after ``settle_seconds``."""
    import time

    import psycopg

    deadline = time.monotonic() + settle_seconds
    with psycopg.connect(admin_dsn, autocommit=True) as connection:
        while True:
            [count] = connection.execute("SELECT count(*) FROM pg_stat_activity "
                                         "WHERE application_name = %s", (name,)).fetchone()
            if count == 0 or time.monotonic() > deadline:
                return count
            time.sleep(0.1)
