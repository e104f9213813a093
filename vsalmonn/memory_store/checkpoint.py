"""One checkpoint = one immutable Zarr v3 group holding a whole `StreamMemory` state (DESIGN §4).

The state is a nested dict of tensors and plain values. Tensors become arrays at their dict path
(``banks/visual/values``); everything else travels as one JSON attribute. The checksum covers the decoded
content (every array's path, dtype, shape and bytes, then the JSON), so it catches flipped bytes whether they
land in a compressed chunk, in metadata, or in the attribute, and it does not depend on the codec.

This module only writes and reads a group at a path or at the root of a Zarr store; where groups live is
`objects.py`'s business, and when one counts as committed the store's (`store.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import zarr.api.asynchronous as zarr_async
from torch import Tensor
from zarr.abc.store import Store
from zarr.codecs import BloscCodec
from zarr.storage import LocalStore

log = logging.getLogger(__name__)

# Format 2 packs the small arrays into one array per item size (`PACK_BELOW`); format 1 stored every array
# on its own. Both are read. The checksum is of the content, not the layout: the same under either format.
FORMAT = "vsalmonn.memory/2"
READABLE_FORMATS = ("vsalmonn.memory/1", FORMAT)
_CHECKSUM_DOMAIN = "vsalmonn.memory/1"
_SCALARS_ATTR = "vsalmonn_scalars"
_FORMAT_ATTR = "vsalmonn_format"
_MANIFEST_ATTR = "vsalmonn_arrays"
_CHECKSUM_ATTR = "vsalmonn_checksum"  # the checksum as written, so that a group verifies without its row
COMMIT_ATTR = "vsalmonn_commit"  # the store's own facts (stream, seq, source offset) for `store rebuild`
# Bytes per chunk, at most: a big bank splits into chunks that compress in parallel (4,096 rows of a dim-384
# float32 bank), while a small array is one chunk, i.e. one object (one request to an object store).
CHUNK_BYTES = 6 * 2**20
# Arrays smaller than this are packed, flat, into one array per item size (``p1`` … ``p8``): a memory has
# about 30 of them (ids, times, counters, fast weights), each of which would otherwise be a metadata object
# and a chunk object of its own.
PACK_BELOW = 2**20
_PACKABLE = (1, 2, 4, 8)
T = TypeVar("T")
# numpy has no bfloat16: those tensors are stored as their raw 16-bit patterns
_VIEW_AS = {torch.bfloat16: torch.int16}


class CheckpointError(RuntimeError):
    """A group that cannot be read back as the state it claims to hold."""


@dataclass(frozen=True)
class GroupInfo:
    checksum: str  # sha256 hex of the canonical content
    bytes_raw: int  # array bytes before compression
    bytes_stored: int  # bytes of every file of the group on disk


def compressor(level: int = 5) -> BloscCodec:
    """LZ4 inside Blosc (numcodecs) with byte shuffle.

    Token vectors are nearly incompressible floats, ids and times compress well. zstd saved about 2 % more
    on a full bank but took twice as long to write and to read, which broke the 300 ms / 200 ms budget.
    """
    return BloscCodec(cname="lz4", clevel=level, shuffle="shuffle")


# ----- flattening --------------------------------------------------------------------------------------
def _flatten(state: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in state.items():
        if "/" in key or not key:
            raise ValueError(f"state key {key!r} cannot name an array")
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            yield from _flatten(value, path + "/")
        else:
            yield path, value


def split_state(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors by path, and the rest (numbers, strings, lists, empty dicts) by path."""
    arrays: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for path, value in _flatten(state):
        if isinstance(value, Tensor):
            arrays[path] = value
        else:
            scalars[path] = value
    return arrays, scalars


def join_state(arrays: dict[str, Tensor], scalars: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for path, value in [*arrays.items(), *scalars.items()]:
        node = state
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return state


def _encode_float(value: Any) -> Any:
    """JSON has no inf or NaN; keep them as tagged strings so that they round-trip exactly."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, dict):
        return {k: _encode_float(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode_float(v) for v in value]
    return value


def _decode_float(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _decode_float(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_float(v) for v in value]
    return value


def _scalars_json(scalars: dict[str, Any]) -> str:
    return json.dumps(_encode_float(scalars), sort_keys=True, allow_nan=False, separators=(",", ":"))


def _numpy(t: Tensor) -> np.ndarray:
    t = t.detach().to("cpu")
    if t.dtype in _VIEW_AS:
        t = t.view(_VIEW_AS[t.dtype])
    return t.contiguous().numpy()


def _checksum(arrays: dict[str, np.ndarray], dtypes: dict[str, str], scalars_json: str) -> str:
    digest = hashlib.sha256(_CHECKSUM_DOMAIN.encode())
    for path in sorted(arrays):
        a = arrays[path]
        digest.update(f"\0{path}\0{dtypes[path]}\0{list(a.shape)}\0".encode())
        digest.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    digest.update(b"\0scalars\0" + scalars_json.encode())
    return digest.hexdigest()


# ----- writing -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncodedState:
    """A state ready to be written anywhere: its arrays under their short names, the group's attributes
    (manifest, scalars, checksum) and the checksum of the whole."""

    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]
    checksum: str
    bytes_raw: int


def encode_state(state: dict[str, Any], extra_attrs: dict[str, Any] | None = None) -> EncodedState:
    """Split `state` into arrays and attributes and checksum it; nothing is written yet."""
    tensors, scalars = split_state(state)
    arrays = {p: _numpy(t) for p, t in tensors.items()}
    dtypes = {p: str(t.dtype).removeprefix("torch.") for p, t in tensors.items()}
    scalars_json = _scalars_json(scalars)
    checksum = _checksum(arrays, dtypes, scalars_json)
    manifest: dict[str, dict[str, Any]] = {}
    stored: dict[str, np.ndarray] = {}
    packs: dict[str, list[np.ndarray]] = {}
    for i, p in enumerate(sorted(arrays)):
        a = arrays[p]
        entry: dict[str, Any] = {"dtype": dtypes[p], "shape": list(a.shape)}
        if a.nbytes < PACK_BELOW and a.dtype.itemsize in _PACKABLE:
            name = f"p{a.dtype.itemsize}"
            parts = packs.setdefault(name, [])
            entry |= {"name": name, "offset": sum(x.size for x in parts), "numpy": a.dtype.str}
            parts.append(np.ascontiguousarray(a).reshape(-1).view(f"u{a.dtype.itemsize}"))  # (n,)
        else:
            entry["name"] = _array_name(i)
            stored[entry["name"]] = a
        manifest[p] = entry
    stored |= {name: np.concatenate(parts) for name, parts in packs.items()}
    attrs = {
        **(extra_attrs or {}),
        _FORMAT_ATTR: FORMAT, _SCALARS_ATTR: scalars_json, _MANIFEST_ATTR: manifest, _CHECKSUM_ATTR: checksum,
    }  # fmt: skip
    return EncodedState(
        arrays=stored,
        attrs=attrs,
        checksum=checksum,
        bytes_raw=sum(a.nbytes for a in arrays.values()),
    )


def write_group(
    path: Path,
    state: dict[str, Any],
    *,
    level: int = 5,
    fsync: bool = True,
    extra_attrs: dict[str, Any] | None = None,
) -> GroupInfo:
    """Write `state` as a new Zarr group at `path` (which must not exist) and make it durable.

    The caller writes to a temporary name and renames afterwards; `fsync` makes every file and folder of the
    group reach the disk before this returns, so a later rename and catalog row never point at data that a
    power cut could still lose. Arrays are written concurrently: a state has a few dozen of them, and one
    after the other the per-array overhead cost more than compressing the bank.
    """
    encoded = encode_state(state, extra_attrs)
    if path.exists():
        raise CheckpointError(f"checkpoint group {path} already exists; groups are never overwritten")
    run_sync(write_encoded(LocalStore(path), encoded, level))
    if fsync:
        fsync_tree(path)
    stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return GroupInfo(checksum=encoded.checksum, bytes_raw=encoded.bytes_raw, bytes_stored=stored)


def _array_name(index: int) -> str:
    """Arrays sit flat in the group under short names (packs under ``p<item size>``); the manifest maps
    state paths to them, and a packed one to its offset (in items) in its pack."""
    return f"a{index:03d}"


async def write_encoded(store: Store, encoded: EncodedState, level: int = 5) -> None:
    """Write an encoded state as a new group at the root of `store` (a folder or an object-store prefix)."""
    group = await zarr_async.open_group(store=store, mode="w-", zarr_format=3, attributes=encoded.attrs)
    codec = compressor(level)

    async def one(name: str, a: np.ndarray) -> None:
        array = await group.create_array(
            name, shape=a.shape, dtype=a.dtype, chunks=_chunks(a), compressors=[codec]
        )
        if a.size:
            await array.setitem(Ellipsis, a)

    await asyncio.gather(*(one(name, a) for name, a in encoded.arrays.items()))


def _chunks(a: np.ndarray) -> tuple[int, ...]:
    """Whole rows (the first axis) up to `CHUNK_BYTES` a chunk; an array of any size has at least one row
    a chunk."""
    if not a.ndim:
        return ()
    row_bytes = max(1, a.nbytes // a.shape[0]) if a.shape[0] else 1
    return (max(1, min(a.shape[0], CHUNK_BYTES // row_bytes)), *a.shape[1:])


def fsync_tree(root: Path) -> None:
    """fsync every file and folder below `root`, folders after their contents."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----- reading -----------------------------------------------------------------------------------------
def read_group(path: Path, expected_checksum: str | None = None) -> tuple[dict[str, Any], str]:
    """The state stored at `path` and the checksum of what was read.

    Raises CheckpointError when the group is missing, unreadable, not ours, or (given `expected_checksum`)
    holds other content than was committed.
    """
    if not path.is_dir():
        raise CheckpointError(f"checkpoint group {path} is missing")
    return read_store(LocalStore(path, read_only=True), str(path), expected_checksum)


def read_store(
    store: Store,
    where: str,
    expected_checksum: str | None = None,
    *,
    passthrough: tuple[type[BaseException], ...] = (),
) -> tuple[dict[str, Any], str]:
    """`read_group` for the group at the root of any Zarr store; `where` names it in errors.

    Errors of a type in `passthrough` are raised as they are instead of as CheckpointError: an object store
    that cannot be reached says nothing about the group, which must not be taken for damaged.
    """
    try:
        attrs, by_name = run_sync(_read_arrays(store))
        if attrs.get(_FORMAT_ATTR) not in READABLE_FORMATS:
            raise CheckpointError(
                f"{where} is not a vsalmonn memory checkpoint ({attrs.get(_FORMAT_ATTR)!r})"
            )
        scalars_json = str(attrs[_SCALARS_ATTR])
        manifest: dict[str, dict[str, Any]] = attrs[_MANIFEST_ATTR]
        arrays = {p: _unpacked(by_name[entry["name"]], entry) for p, entry in manifest.items()}
        dtypes = {p: entry["dtype"] for p, entry in manifest.items()}
        scalars = _decode_float(json.loads(scalars_json))
    except CheckpointError:
        raise
    except passthrough:
        raise
    except Exception as exc:  # zarr, numcodecs and json raise many kinds on damaged data
        raise CheckpointError(f"checkpoint group {where} is unreadable: {type(exc).__name__}: {exc}") from exc
    checksum = _checksum(arrays, dtypes, scalars_json)
    if expected_checksum is not None and checksum != expected_checksum:
        raise CheckpointError(f"checkpoint group {where} fails its checksum")
    tensors = {p: _tensor(a, dtypes[p]) for p, a in arrays.items()}
    return join_state(tensors, scalars), checksum


async def _read_arrays(store: Store) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    group = await zarr_async.open_group(store=store, mode="r", zarr_format=3)
    attrs = dict(group.attrs)
    names = sorted({entry["name"] for entry in attrs.get(_MANIFEST_ATTR, {}).values()})

    async def one(name: str) -> np.ndarray:
        array = await zarr_async.open_array(store=store, path=name, mode="r", zarr_format=3)
        return np.asarray(await array.getitem(Ellipsis))

    values = await asyncio.gather(*(one(name) for name in names))
    return attrs, dict(zip(names, values, strict=True))


def _unpacked(stored: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
    """One state array from the array it is stored in: all of it, or (packed) its items at its offset."""
    if "offset" in entry:
        start, count = int(entry["offset"]), math.prod(entry["shape"])
        if start + count > stored.size:
            raise ValueError(f"pack {entry['name']} holds {stored.size} items, not {start + count}")
        stored = stored[start : start + count].view(np.dtype(entry["numpy"]))
    return stored.reshape(entry["shape"])


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also from a thread whose event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _tensor(a: np.ndarray, dtype: str) -> Tensor:
    target = getattr(torch, dtype)
    t = torch.from_numpy(np.asarray(a, order="C"))  # ascontiguousarray would turn 0-d into 1-d
    if target in _VIEW_AS:
        return t.view(target)
    return t.to(target)


def read_group_attrs(path: Path) -> dict[str, Any]:
    """The attributes of the group at `path` (no arrays read); CheckpointError when it is unreadable."""
    return read_store_attrs(LocalStore(path, read_only=True), str(path))


def read_store_attrs(
    store: Store, where: str, *, passthrough: tuple[type[BaseException], ...] = ()
) -> dict[str, Any]:
    """`read_group_attrs` for the group at the root of any Zarr store (`passthrough` as in `read_store`)."""
    try:
        group = run_sync(zarr_async.open_group(store=store, mode="r", zarr_format=3))
        return dict(group.attrs)
    except passthrough:
        raise
    except Exception as exc:
        raise CheckpointError(f"checkpoint group {where} is unreadable: {type(exc).__name__}: {exc}") from exc


def written_checksum(attrs: dict[str, Any]) -> str | None:
    """The checksum a group recorded when it was written (None for groups older than that attribute)."""
    value = attrs.get(_CHECKSUM_ATTR)
    return str(value) if value else None
