"""Checkpoints under ``checkpoint_dir/{domain_id}/{training_run_id}/step-NNNNNN/``."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from domain_mlflow.exceptions import CheckpointError

_STATE_FILE = "state.pt"
_META_FILE = "meta.json"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    meta: dict[str, Any]

    @property
    def training_run_id(self) -> str:
        return self.path.parent.name

    def load_state(self) -> dict[str, Any]:
        try:
            return torch.load(self.path / _STATE_FILE, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as error:
            raise CheckpointError(f"cannot read checkpoint {self.path}: {error}") from None


class CheckpointStore:
    """Saves the trainable state of one training run and finds the newest of a domain."""

    def __init__(self, root: str | os.PathLike[str], domain_id: str, keep: int = 2) -> None:
        self.domain_dir = Path(root) / domain_id
        self.keep = keep

    def save(
        self, training_run_id: str, step: int, state: dict[str, Any], meta: dict[str, Any]
    ) -> Path:
        """Write a checkpoint atomically (temp folder, then rename), then prune old ones."""
        run_dir = self.domain_dir / training_run_id
        final = run_dir / f"step-{step:06d}"
        staging = run_dir / f".step-{step:06d}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        torch.save(state, staging / _STATE_FILE)
        (staging / _META_FILE).write_text(json.dumps({**meta, "step": step}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        for old in sorted(run_dir.glob("step-*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def latest(self) -> Checkpoint | None:
        """The checkpoint with the newest write time across this domain's training runs."""
        candidates = [
            path
            for path in self.domain_dir.glob("*/step-*")
            if (path / _STATE_FILE).is_file() and (path / _META_FILE).is_file()
        ]
        if not candidates:
            return None
        newest = max(candidates, key=lambda path: (path.stat().st_mtime_ns, path.name))
        meta = json.loads((newest / _META_FILE).read_text())
        return Checkpoint(path=newest, step=int(meta["step"]), meta=meta)
