"""Checking a store against its disk, and re-cataloguing checkpoint groups when the catalog is lost.

The catalog commits checkpoints (DESIGN §4): a group without a row is garbage to the next writer. So a catalog
that is truncated, overwritten or deleted would, if a new one were simply started, orphan every stream's
memory, and the next writer would delete it. `MemoryStore.open` refuses that; this module is the way back:
`check_store` says what is on disk and what the catalog says about it, `rebuild_catalog` moves the broken
catalog aside and builds a new one from the groups that verify (each group records its checksum, its stream
and the source offset it resumes from; each stream folder holds `stream.json` with the stream's name).

Both work wherever the groups live (`objects.GroupStore`: a folder, or a prefix in an S3 object store): the
groups are listed, read and set aside through it, and the catalog rows are compared by key. An object store
differs in one thing: it has no temporary names, so a group still being written (by a writer on another node)
looks like an abandoned one until its row exists. `check_store` therefore leaves out of its verdict groups
without a row younger than the store's garbage grace (`gc_grace_s`), as `store gc` does, and says so.

What a group does not hold cannot come back: transcript rows, frame labels, moments, events and status are
catalog-only and are reported as lost.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .catalog import Catalog, CatalogError
from .checkpoint import COMMIT_ATTR, CheckpointError, written_checksum
from .models import Checkpoint, Stream
from .objects import GroupEntry, GroupStore, LocalGroups
from .on_disk import _aware, _span
from .store import CATALOG_FILE, GROUP_SUFFIX, MEMORY_DIR, STREAM_FILE, TMP_PREFIX

log = logging.getLogger(__name__)

DAMAGED_SUFFIX = ".damaged"  # a group that fails its checksum, set aside by rebuild (no writer removes it)
LOST_KINDS = "transcript rows, frame labels, on-screen text, moments, events and status"


@dataclass
class GroupCheck:
    """One checkpoint group of the store, as verified."""

    stream_id: str
    key: str  # <stream id>/<name>.zarr below the store's root
    where: str  # how messages name it: its folder, or its URL in an object store
    seq: int
    ok: bool
    reason: str = ""
    commit: dict[str, Any] = field(default_factory=dict)
    checksum: str | None = None
    state: dict[str, Any] | None = None
    catalogued: bool = False  # a row names it (False too when the catalog is unreadable)

    @property
    def path(self) -> str:
        return self.where


@dataclass
class StoreCheck:
    """What `check_store` found."""

    catalog: str  # "ok", or why the catalog cannot be read
    catalog_ok: bool
    groups: list[GroupCheck]
    # verified groups that no row commits (all of them when the catalog is lost)
    uncatalogued: list[GroupCheck]
    missing: list[str]  # rows whose group is gone
    where: str = ""  # the store's root
    in_flight: list[str] = field(default_factory=list)  # object store: young groups without a row, not judged

    @property
    def damaged(self) -> list[GroupCheck]:
        return [g for g in self.groups if not g.ok]

    def lines(self) -> list[str]:
        out = [f"catalog: {self.catalog}"]
        streams = {g.stream_id for g in self.groups}
        good = sum(g.ok for g in self.groups)
        out.append(
            f"checkpoint groups in {self.where}: {len(self.groups)} of {len(streams)} stream(s), "
            f"{good} verify, {len(self.damaged)} fail their checksum"
        )
        out += [f"  damaged: {g.where} ({g.reason})" for g in self.damaged]
        if self.catalog_ok:
            out += [f"  not in the catalog: {g.where}" for g in self.uncatalogued]
            out += [f"  in the catalog but missing from the store: {m}" for m in self.missing]
        elif good:
            out.append(f"run 'vsalmonn store rebuild' to re-catalogue the {good} group(s) that verify")
        out += [
            f"  no row yet, younger than gc_grace_s (a write in progress?), not checked: {w}"
            for w in self.in_flight
        ]
        return out


def _verify(groups: GroupStore, stream_id: str, key: str, keep_state: bool) -> GroupCheck:
    where = groups.describe(key) if not groups.local else str(groups.location(key))
    seq = _seq_of(key)
    try:
        attrs = groups.read_attrs(key)
        commit = dict(attrs.get(COMMIT_ATTR) or {})
        seq = int(commit.get("seq") or seq)
        state, checksum = groups.read(key, written_checksum(attrs))
    except CheckpointError as exc:
        reason = str(exc).replace(where, "group").replace(groups.describe(key), "group")
        return GroupCheck(stream_id, key, where, seq, False, reason=reason)
    if written_checksum(attrs) is None:
        reason = "readable, but written before groups recorded their checksum: content not verified"
        log.warning("%s: %s", where, reason)
    return GroupCheck(
        stream_id, key, where, seq, True, commit=commit, checksum=checksum,
        state=state if keep_state else None,
    )  # fmt: skip


def _seq_of(key: str) -> int:
    """The sequence number a group's name starts with (``00000007.zarr``, ``00000007-<random>.zarr``)."""
    name = key.rsplit("/", 1)[-1].removesuffix(GROUP_SUFFIX)
    try:
        return int(name.split("-", 1)[0])
    except ValueError:
        return 0


def _final_groups(groups: GroupStore) -> dict[str, list[GroupEntry]]:
    """The store's groups by stream id, oldest first, without a folder's temporaries (never final)."""
    found: dict[str, list[GroupEntry]] = {}
    for entry in groups.groups():
        if not entry.key.rsplit("/", 1)[-1].startswith(TMP_PREFIX):
            found.setdefault(entry.stream_id, []).append(entry)
    return found


def _catalog_rows(catalog: Catalog) -> list[str]:
    with catalog.session() as s:
        return list(s.execute(select(Checkpoint.path)).scalars().all())


def _open_catalog(data_dir: Path, url: str | None, read_only: bool) -> tuple[Catalog | None, str]:
    sqlite_file = data_dir / CATALOG_FILE
    if url is None and not sqlite_file.exists():
        return None, f"missing ({sqlite_file})"
    if url is None and sqlite_file.stat().st_size == 0:
        return None, f"empty file ({sqlite_file}, 0 bytes)"
    try:
        catalog = Catalog.for_data_dir(data_dir, url, create=False, read_only=read_only)
        with catalog.session() as s:
            s.scalar(select(Stream.id).limit(1))
    except Exception as exc:  # a garbage file fails in many ways (CatalogError, DBAPI); all mean "unreadable"
        return None, f"unreadable: {' '.join(str(exc).split())}"
    return catalog, "ok"


def check_store(
    data_dir: Path, url: str | None = None, groups: GroupStore | None = None, grace_s: float = 3600.0
) -> StoreCheck:
    """Verify every checkpoint group of the store and compare with the catalog; writes nothing.

    `groups`: where the groups live (default: the folder ``<data>/memory``); `grace_s`: in an object store,
    groups without a row younger than this are reported as possibly in flight, not judged (module docstring).
    """
    data_dir = Path(data_dir)
    groups = groups or LocalGroups(data_dir / MEMORY_DIR, data_dir)
    listed = [e for entries in _final_groups(groups).values() for e in entries]
    catalog, status = _open_catalog(data_dir, url, read_only=True)
    rows: list[str] = []
    if catalog is not None:
        try:
            rows = _catalog_rows(catalog)
            with catalog.session() as s:
                if not s.scalar(select(Stream.id).limit(1)) and listed:
                    status = "holds no streams, though checkpoint groups exist"
        finally:
            catalog.close()
    committed = {groups.key_of(p) for p in rows}
    in_flight: list[str] = []
    if catalog is not None and not groups.local:
        now = datetime.now(UTC)
        young = {
            e.key for e in listed
            if e.key not in committed and (now - _aware(e.modified)).total_seconds() < grace_s
        }  # fmt: skip
        in_flight = [groups.describe(k) for k in sorted(young)]
        listed = [e for e in listed if e.key not in young]
    checked = [_verify(groups, e.stream_id, e.key, keep_state=False) for e in listed]
    if catalog is None:
        return StoreCheck(status, False, checked, [g for g in checked if g.ok], [], groups.url)
    keys = {e.key for e in listed}
    for g in checked:
        g.catalogued = g.key in committed
    uncatalogued = [g for g in checked if g.ok and g.key not in committed]
    missing = [p for p in rows if groups.key_of(p) not in keys]
    return StoreCheck(status, status == "ok", checked, uncatalogued, missing, groups.url, in_flight)


@dataclass
class RebuildResult:
    moved_aside: list[Path]
    streams: list[tuple[str, str, int]]  # (name, id, checkpoints catalogued)
    damaged: list[str]  # groups set aside as <name>.damaged (their folder or URL)

    def lines(self) -> list[str]:
        out = [f"moved the unreadable catalog aside: {p}" for p in self.moved_aside]
        out += [f"stream {name} ({sid}): {n} checkpoint(s) catalogued" for name, sid, n in self.streams]
        out += [f"failed its checksum, set aside (not catalogued): {p}" for p in self.damaged]
        out.append(f"not recoverable from checkpoint groups: {LOST_KINDS} of these streams")
        return out


def rebuild_catalog(
    data_dir: Path, url: str | None = None, groups: GroupStore | None = None
) -> RebuildResult:
    """A new catalog from the checkpoint groups of the store; the old, unreadable one is moved aside, not
    deleted. `groups`: where the groups live (default: the folder ``<data>/memory``).

    Refused (CatalogError) when the catalog reads fine and holds streams: there is nothing to rebuild, and a
    rebuild would drop its transcript rows and events. Only a SQLite catalog is moved aside; a PostgreSQL one
    must be empty (its database is the administrator's to recreate). A stream's name comes from its local
    sidecar (``<data>/memory/<id>/stream.json``, with its source and kind) when this node has one, else from
    the commit attributes inside its groups.
    """
    data_dir = Path(data_dir)
    groups = groups or LocalGroups(data_dir / MEMORY_DIR, data_dir)
    found = _final_groups(groups)
    if not found:
        raise CatalogError(f"no checkpoint groups in {groups.url}: nothing to rebuild from")
    catalog, _status = _open_catalog(data_dir, url, read_only=True)
    if catalog is not None:
        try:
            with catalog.session() as s:
                has_streams = s.scalar(select(Stream.id).limit(1)) is not None
        finally:
            catalog.close()
        if has_streams:
            raise CatalogError(
                f"the catalog of {data_dir} reads fine and holds streams; nothing to rebuild "
                "('vsalmonn store check' lists what differs)"
            )
    checked = {
        stream_id: [_verify(groups, stream_id, e.key, keep_state=True) for e in entries]
        for stream_id, entries in found.items()
    }  # every group read before anything is moved: an unreachable object store changes nothing
    moved: list[Path] = []
    if url is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            old = data_dir / (CATALOG_FILE + suffix)
            if old.exists():
                aside = old.with_name(f"{CATALOG_FILE}.broken-{stamp}{suffix}")
                os.replace(old, aside)
                moved.append(aside)
    result = RebuildResult(moved, [], [])
    with Catalog.for_data_dir(data_dir, url) as new:
        for stream_id, checks in checked.items():
            meta = _stream_meta(data_dir / MEMORY_DIR / stream_id)
            name = str(meta.get("name") or "") or next(
                (str(c.commit["stream"]) for c in checks if c.commit.get("stream")),
                f"recovered-{stream_id[:8]}",
            )
            good = [c for c in checks if c.ok]
            with new.transaction() as s:
                s.add(
                    Stream(
                        id=stream_id, name=name, source=meta.get("source"), kind=meta.get("kind"),
                        config=meta.get("config"),
                    )
                )  # fmt: skip
                s.flush()
                for c in good:
                    assert c.state is not None and c.checksum is not None
                    t_start, t_end = _span(c.state)
                    next_id = c.state.get("next_id", {})
                    raw = sum(int(v.numel() * v.element_size()) for v in _tensors(c.state))
                    s.add(
                        Checkpoint(
                            stream_id=stream_id, seq=c.seq, path=groups.row_path(c.key),
                            t_start=t_start, t_end=t_end, source_offset=c.commit.get("source_offset"),
                            source_state=c.commit.get("source_state"),
                            tokens_visual=int(next_id.get("visual", 0)),
                            tokens_audio=int(next_id.get("audio", 0)),
                            checksum=c.checksum, bytes_raw=raw, bytes_stored=groups.stored_bytes(c.key),
                        )
                    )  # fmt: skip
            for c in checks:
                if not c.ok:
                    result.damaged.append(groups.set_aside(c.key, DAMAGED_SUFFIX))
            result.streams.append((name, stream_id, len(good)))
    return result


def _tensors(state: dict[str, Any]) -> list[Any]:
    from torch import Tensor

    out: list[Any] = []
    for value in state.values():
        if isinstance(value, Tensor):
            out.append(value)
        elif isinstance(value, dict):
            out += _tensors(value)
    return out


def _stream_meta(folder: Path) -> dict[str, Any]:
    try:
        value = json.loads((folder / STREAM_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
