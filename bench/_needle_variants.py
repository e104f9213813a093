"""Extra memory settings for ``bench needle``, named in a TOML file: trained θ files and layer options.

Issue 17 compares layers that differ in their options (RoPE, the mapped long-span target, ...) and in the θ
trained for each. Writing every such row into the benchmark would freeze one experiment into its code; a
file names them instead, and the rows land in the same sweep, summary and ablation table as the built-in
ones. ``$VSALMONN_BENCH_NEEDLE_VARIANTS`` is the file's path::

    [paper-gd]                                   # rows "merge/paper-gd" and "discard/paper-gd"
    slow_weights = "runs/paper-gd.safetensors"   # a train-memory file: its layer options come with it
    policies = ["merge", "discard"]              # the default
    optimizer = "hf_cg_newton"                   # any MemoryConfig field overrides the file's

A θ file records the MemoryConfig fields it was trained under (``trained.train.memory``); those that shape
the layer are taken from there unless the table sets them, so a row cannot pair a θ with a layer it was not
trained for by omission. ``$VSALMONN_BENCH_NEEDLE_ONLY`` (comma-separated fnmatch patterns such as
``merge/off,*/paper-*``) keeps only the settings it matches, so a sweep of new rows need not repeat the old.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vsalmonn.cli.output import UsageError
from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.config import TTTConfig
from vsalmonn.memory_store.slow_weights import load_slow_weights

VARIANTS_ENV, ONLY_ENV = "VSALMONN_BENCH_NEEDLE_VARIANTS", "VSALMONN_BENCH_NEEDLE_ONLY"
DEFAULT_POLICIES = ("merge", "discard")
# MemoryConfig fields that decide the layer's shape or its maths: they must be those θ was trained under.
LAYER_FIELDS = frozenset(TTTConfig.model_fields) - {"optimizer", "cg_max_iter", "cg_tol", "cg_stop_fraction"}


def variant_settings(base: dict[str, Any]) -> dict[str, MemoryConfig]:
    """The settings of the variants file (none without one), named "{policy}/{variant}"; `base` holds the
    fields every bench setting shares (the budgets)."""
    raw_path = os.environ.get(VARIANTS_ENV, "").strip()
    if not raw_path:
        return {}
    path = Path(raw_path)
    try:
        tables = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{VARIANTS_ENV}: cannot read {path}: {exc}") from None
    out: dict[str, MemoryConfig] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise UsageError(f"{VARIANTS_ENV}: {path}: {name!r} is not a table")
        fields = dict(table)
        policies = fields.pop("policies", list(DEFAULT_POLICIES))
        weights = fields.get("slow_weights")
        if weights not in (None, "default", "untrained"):
            weights = str((path.parent / str(weights)).resolve())
            fields = {**trained_layer(Path(weights)), **fields, "slow_weights": weights}
        for policy in policies:
            try:
                out[f"{policy}/{name}"] = MemoryConfig(
                    **{**base, "policy": policy, "audio_policy": policy, **fields}
                )
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(x) for x in first["loc"])
                raise UsageError(f"{VARIANTS_ENV}: [{name}] {where}: {first['msg']}") from None
    return out


def trained_layer(path: Path) -> dict[str, Any]:
    """The layer fields (and the inner optimiser) a train-memory file was trained under."""
    try:
        _, info = load_slow_weights(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{VARIANTS_ENV}: {exc}") from None
    memory = info.trained_memory()  # the optimiser under today's name (old files said hf_cg for hf_cg_newton)
    return {k: v for k, v in memory.items() if k in LAYER_FIELDS or k == "optimizer"}


def keep(names: list[str]) -> set[str]:
    """The setting names `$VSALMONN_BENCH_NEEDLE_ONLY` keeps (all without it)."""
    raw = os.environ.get(ONLY_ENV, "").strip()
    if not raw:
        return set(names)
    patterns = [p.strip() for p in raw.split(",") if p.strip()]
    kept = {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    if not kept:
        raise UsageError(f"{ONLY_ENV}={raw!r} matches no setting; settings: {', '.join(names)}")
    return kept
