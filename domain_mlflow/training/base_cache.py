"""Building a base model's folder once: under a file lock, in a staging folder renamed
into place when complete, so that a killed build never leaves a folder that looks done."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from domain_mlflow.exceptions import BaseModelError

_log = logging.getLogger(__name__)

DONE_MARKER = "BUILD_COMPLETE"
MODEL_CONFIG = "config.json"  # what transformers needs to load a model folder


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
               resumable: bool = False, required: tuple[str, ...] = ()) -> Path:
    """Return ``target``, running ``build(staging)`` first when it is not complete.

    Safe when several processes ask at once: one builds, the others wait and reuse.
    A staging folder left by a killed build is said so; with ``resumable`` it is
    handed to ``build`` as it is (the builder continues from what it left there),
    otherwise the build starts again from an empty folder. A folder marked complete
    that lacks a file of ``required`` is built again.
    """
    if _complete(target, required):
        return target
    with exclusive(target.with_name(target.name + ".lock")):
        if _complete(target, required):
            return target
        if (target / DONE_MARKER).is_file():
            _log.warning("%s in %s is marked complete but lacks %s; building it again",
                         what, target, ", ".join(required))
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


def _complete(target: Path, required: tuple[str, ...]) -> bool:
    return all((target / name).is_file() for name in (DONE_MARKER, *required))


def save_model_folder(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write ``model`` and ``tokenizer`` as a transformers folder, or fail saying why not.

    transformers writes a model only from rank 0 once ``torch.distributed`` is
    initialised, and says nothing on the other ranks; a folder without the model
    must not be taken for a finished base.
    """
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if not (folder / MODEL_CONFIG).is_file():
        raise BaseModelError(
            f"transformers wrote no model into {folder}: this process is not rank 0 of an "
            "initialised torch.distributed group. Build the base before the group starts "
            "(domain-mlflow train does), or from rank 0"
        )
