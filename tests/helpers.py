"""Helpers shared by several test modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
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
    """``domain-mlflow ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "domain_mlflow.cli", *args],
                          env=env or dict(os.environ), capture_output=True, text=True,
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
