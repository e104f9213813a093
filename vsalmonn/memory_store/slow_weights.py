"""Trained slow weights θ of the TTT layer: one safetensors file each, and the one shipped in the package.

θ is trained once per pair of encoders (their tokens are what the layer learns to rewrite and read), so a file
says which encoders and sizes it was trained for, and a memory only starts from a file that fits it. The
tensors carry a checksum in the file's metadata: a damaged or hand-edited file is refused rather than silently
giving a memory that retrieves worse than the untrained identity-like θ.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

from vsalmonn.errors import one_line

from .config import OPTIMIZER_ALIASES, MemoryConfig, saved_fields

log = logging.getLogger(__name__)

FORMAT = 1
METADATA_KEY = "vsalmonn"
SHIPPED = "ttt-efficientnet-lite0-minilm.safetensors"


class SlowWeightsInfo(BaseModel):
    """What a slow-weights file was trained for, its checksum, and free-form provenance (``trained``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT
    vision_encoder: str
    text_encoder: str
    dim: int
    heads: int
    mlp_ratio: int
    checksum: str
    trained: dict[str, Any] = Field(default_factory=dict)

    @property
    def encoders(self) -> str:
        """The pair as `MemoryConfig.encoders` spells it (vision/text)."""
        return f"{self.vision_encoder}/{self.text_encoder}"

    def trained_memory(self) -> dict[str, Any]:
        """The MemoryConfig fields θ was trained under, with the optimiser under today's name.

        Files written since the rename of issue 17 carry the whole config (``trained.memory``); older ones
        only the fields the training config set (``trained.train.memory``), where "hf_cg" named the solver
        now called "hf_cg_newton".
        """
        if isinstance(self.trained.get("memory"), dict):
            return saved_fields(dict(self.trained["memory"]))
        train = self.trained.get("train")
        fields = dict(train.get("memory") or {}) if isinstance(train, dict) else {}
        if "optimizer" in fields:
            old = {"hf_cg": "hf_cg_newton", **OPTIMIZER_ALIASES}
            fields["optimizer"] = old.get(fields["optimizer"], fields["optimizer"])
        return fields


def checksum(state: dict[str, Tensor]) -> str:
    """sha256 over the tensors in name order: each name, dtype, shape and the raw bytes of its CPU copy."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_slow_weights(
    path: Path,
    state: dict[str, Tensor],
    *,
    vision_encoder: str,
    text_encoder: str,
    dim: int,
    heads: int,
    mlp_ratio: int,
    trained: dict[str, Any] | None = None,
) -> SlowWeightsInfo:
    """Write θ (a `TTTLayer.state_dict()`) to ``path`` and return what the file says about it.

    The file is written under a temporary name in the same folder and renamed into place, so a process
    killed midway never leaves a half-written file where a memory would look for one.
    """
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    info = SlowWeightsInfo(
        vision_encoder=vision_encoder,
        text_encoder=text_encoder,
        dim=dim,
        heads=heads,
        mlp_ratio=mlp_ratio,
        checksum=checksum(tensors),
        trained=dict(trained or {}),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    data = save(tensors, metadata={METADATA_KEY: info.model_dump_json()})  # a few MB at most
    # Opened here rather than by mkstemp or save_file, whose 0600 mode would follow the file into place: a
    # shipped file must be readable like any other file of the package.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote slow weights for %s (dim %d) to %s", info.encoders, dim, path)
    return info


def load_slow_weights(path: Path) -> tuple[dict[str, Tensor], SlowWeightsInfo]:
    """Read and verify a file from `save_slow_weights`; ValueError with a one-line reason if unusable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"slow weights {path}: not a file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is no mapping)
    except (SafetensorError, OSError) as exc:
        reason = one_line(exc)
        raise ValueError(f"slow weights {path}: not a safetensors file ({reason})") from None
    if METADATA_KEY not in metadata:
        raise ValueError(f"slow weights {path}: no {METADATA_KEY} metadata")
    try:
        info = SlowWeightsInfo.model_validate_json(metadata[METADATA_KEY])
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "metadata"
        raise ValueError(
            f"slow weights {path}: bad {METADATA_KEY} metadata ({where}: {first['msg']})"
        ) from None
    if info.format != FORMAT:
        raise ValueError(f"slow weights {path}: format {info.format} is not {FORMAT}")
    if checksum(state) != info.checksum:
        raise ValueError(f"slow weights {path}: checksum mismatch (the file is damaged or was edited)")
    return state, info


def shipped_path() -> Path:
    """Where the package's trained θ for the default encoders lives (it may not exist in a build)."""
    return Path(str(files("vsalmonn.memory_store") / "weights" / SHIPPED))


# path -> (mtime_ns, size, state, info): many memories share one read of each file.
_cache: dict[str, tuple[int, int, dict[str, Tensor], SlowWeightsInfo]] = {}
# problems with the shipped θ already warned about, so a process creating many memories warns once.
_warned: set[str] = set()


def _load_cached(path: Path) -> tuple[dict[str, Tensor], SlowWeightsInfo]:
    key = str(path.resolve())
    try:
        st = path.stat()
    except OSError:
        raise ValueError(f"slow weights {path}: not a file") from None
    hit = _cache.get(key)
    if hit is not None and hit[:2] == (st.st_mtime_ns, st.st_size):
        return dict(hit[2]), hit[3]
    state, info = load_slow_weights(path)
    _cache[key] = (st.st_mtime_ns, st.st_size, state, info)
    return dict(state), info


def _mismatch(info: SlowWeightsInfo, config: MemoryConfig) -> str | None:
    """Which of encoders/dim/heads/mlp_ratio differ between a file and a memory, as one phrase; else None."""
    ours = (config.encoders, config.dim, config.heads, config.mlp_ratio)
    theirs = (info.encoders, info.dim, info.heads, info.mlp_ratio)
    if ours == theirs:
        return None

    def spell(enc: str, dim: int, heads: int, ratio: int) -> str:
        return f"{enc} (dim {dim}, heads {heads}, mlp_ratio {ratio})"

    return f"they were trained for {spell(*theirs)} but the memory has {spell(*ours)}"


# The layer options that change what θ means (issue 17): a file trained under other values does not fit.
LAYER_OPTIONS = (
    "rope",
    "rope_regions",
    "value_time_code",
    "long_span_target",
    "target_ln_affine",
    "inner_gelu",
)


def _layer_mismatch(info: SlowWeightsInfo, config: MemoryConfig) -> str | None:
    """Which layer options differ between the config θ was trained under and the memory's, as one phrase.

    A field the file does not record was at its default when θ was trained (older files record only the
    fields their training config set)."""
    trained = info.trained_memory()
    theirs = {name: trained.get(name, MemoryConfig.model_fields[name].default) for name in LAYER_OPTIONS}
    differ = [
        f"{name} {value!r} (the memory: {getattr(config, name)!r})"
        for name, value in theirs.items()
        if value != getattr(config, name)
    ]
    return "they were trained with " + ", ".join(differ) if differ else None


def resolve_slow_weights(config: MemoryConfig) -> dict[str, Tensor] | None:
    """The θ a fresh memory starts from, or None for the untrained identity-like θ.

    ``config.slow_weights`` is "untrained", "default" (the shipped file when it exists and fits the memory's
    encoders and sizes, else untrained with a warning) or a path (which must load and fit: ValueError if not).
    The returned dict is the caller's; its tensors are shared with a cache and must not be changed in place.
    """
    choice = config.slow_weights
    if choice == "untrained":
        return None
    if choice == "default":
        path = shipped_path()
        if not path.is_file():
            log.debug("no shipped slow weights at %s; the memory starts untrained", path)
            return None
    else:
        path = Path(choice).expanduser()
    try:
        state, info = _load_cached(path)
    except ValueError as exc:
        if choice != "default":
            raise
        _warn_once(f"{exc}; the memory uses the untrained θ")
        return None
    problem = _mismatch(info, config)
    if problem is None and choice != "default":
        problem = _layer_mismatch(info, config)
    if problem is None:
        return state
    if choice != "default":
        raise ValueError(f"slow weights {path} do not fit this memory: {problem}")
    _warn_once(
        f"shipped slow weights not used: {problem}; the memory uses the untrained θ "
        "(`vsalmonn train-memory` trains slow weights for its encoders)"
    )
    return None


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)
