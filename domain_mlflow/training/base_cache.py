"""Building a base model's folder once: under a file lock, in a staging folder renamed
into place when complete, so that a killed build never leaves a folder that looks done."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

_log = logging.getLogger(__name__)

DONE_MARKER = "BUILD_COMPLETE"


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def staging_dir(target: Path) -> Path:
    return target.with_name(target.name + ".building")


def build_once(target: Path, build: Callable[[Path], None], what: str,
               resumable: bool = False) -> Path:
    """Return ``target``, running ``build(staging)`` first when it is not complete.

    Safe when several processes ask at once: one builds, the others wait and reuse.
    A staging folder left by a killed build is said so; with ``resumable`` it is
    handed to ``build`` as it is (the builder continues from what it left there),
    otherwise the build starts again from an empty folder.
    """
    if (target / DONE_MARKER).is_file():
        return target
    with exclusive(target.with_name(target.name + ".lock")):
        if (target / DONE_MARKER).is_file():
            return target
        staging = staging_dir(target)
        if staging.exists():
            _log.warning("an earlier build of %s in %s was interrupted; %s", what, staging,
                         "continuing from what it saved" if resumable else "starting it again")
            if not resumable:
                shutil.rmtree(staging)
        staging.mkdir(parents=True, exist_ok=True)
        _log.info("building %s once into %s", what, target)
        build(staging)
        (staging / DONE_MARKER).write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target
