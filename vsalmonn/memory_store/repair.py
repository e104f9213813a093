"""Checking a store against its disk, and re-cataloguing checkpoint groups when the catalog is lost.

The catalog commits checkpoints (DESIGN §4): a group without a row is garbage to the next writer. So a catalog
that is truncated, overwritten or deleted would, if a new one were simply started, orphan every stream's
memory, and the next writer would delete it. `MemoryStore.open` refuses that; this module is the way back:
`check_store` says what is on disk and what the catalog says about it, `rebuild_catalog` moves the broken
catalog aside and builds a new one from the groups that verify (each group records its checksum, its stream
and the source offset it resumes from; each stream folder holds `stream.json` with the stream's name).

What a group does not hold cannot come back: transcript rows, frame labels, moments, events and status are
catalog-only and are reported as lost.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .catalog import Catalog, CatalogError
from .checkpoint import COMMIT_ATTR, CheckpointError, read_group, read_group_attrs, written_checksum
from .models import Checkpoint, Stream
from .on_disk import _groups_on_disk, _span
from .store import CATALOG_FILE, GROUP_SUFFIX, MEMORY_DIR, STREAM_FILE

log = logging.getLogger(__name__)

DAMAGED_SUFFIX = ".damaged"  # a group that fails its checksum, set aside by rebuild (no writer removes it)
LOST_KINDS = "transcript rows, frame labels, on-screen text, moments, events and status"


@dataclass
class GroupCheck:
    """One checkpoint group on disk, as verified."""

    stream_id: str
    path: Path
    seq: int
    ok: bool
    reason: str = ""
    commit: dict[str, Any] = field(default_factory=dict)
    checksum: str | None = None
    state: dict[str, Any] | None = None


@dataclass
class StoreCheck:
    """What `check_store` found."""

    catalog: str  # "ok", or why the catalog cannot be read
    catalog_ok: bool
    groups: list[GroupCheck]
    uncatalogued: list[
        GroupCheck
    ]  # verified groups that no row commits (all of them when the catalog is lost)
    missing: list[str]  # rows whose group is gone

    @property
    def damaged(self) -> list[GroupCheck]:
        return [g for g in self.groups if not g.ok]

    def lines(self) -> list[str]:
        out = [f"catalog: {self.catalog}"]
        streams = {g.stream_id for g in self.groups}
        good = sum(g.ok for g in self.groups)
        out.append(
            f"checkpoint groups on disk: {len(self.groups)} of {len(streams)} stream(s), {good} verify, "
            f"{len(self.damaged)} fail their checksum"
        )
        out += [f"  damaged: {g.path} ({g.reason})" for g in self.damaged]
        if self.catalog_ok:
            out += [f"  not in the catalog: {g.path}" for g in self.uncatalogued]
            out += [f"  in the catalog but missing on disk: {m}" for m in self.missing]
        elif good:
            out.append(f"run 'vsalmonn store rebuild' to re-catalogue the {good} group(s) that verify")
        return out


def _verify(stream_id: str, path: Path, keep_state: bool) -> GroupCheck:
    seq = _seq_of(path)
    try:
        attrs = read_group_attrs(path)
        commit = dict(attrs.get(COMMIT_ATTR) or {})
        seq = int(commit.get("seq") or seq)
        state, checksum = read_group(path, written_checksum(attrs))
    except CheckpointError as exc:
        return GroupCheck(stream_id, path, seq, False, reason=str(exc).replace(str(path), "group"))
    if written_checksum(attrs) is None:
        reason = "readable, but written before groups recorded their checksum: content not verified"
        log.warning("%s: %s", path, reason)
    return GroupCheck(
        stream_id, path, seq, True, commit=commit, checksum=checksum, state=state if keep_state else None
    )


def _seq_of(path: Path) -> int:
    try:
        return int(path.name.removesuffix(GROUP_SUFFIX))
    except ValueError:
        return 0


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


def check_store(data_dir: Path, url: str | None = None) -> StoreCheck:
    """Verify every checkpoint group under `data_dir` and compare with the catalog; writes nothing."""
    data_dir = Path(data_dir)
    groups = [
        _verify(stream_id, path, keep_state=False)
        for stream_id, paths in _groups_on_disk(data_dir / MEMORY_DIR).items()
        for path in paths
    ]
    catalog, status = _open_catalog(data_dir, url, read_only=True)
    if catalog is None:
        return StoreCheck(status, False, groups, [g for g in groups if g.ok], [])
    try:
        rows = _catalog_rows(catalog)
        paths = {str(Path(p)) for p in rows}
        with catalog.session() as s:
            if not s.scalar(select(Stream.id).limit(1)) and groups:
                status = "holds no streams, though checkpoint groups exist"
    finally:
        catalog.close()
    on_disk = {str(g.path.relative_to(data_dir)) for g in groups}
    uncatalogued = [g for g in groups if g.ok and str(g.path.relative_to(data_dir)) not in paths]
    missing = [p for p in rows if str(Path(p)) not in on_disk]
    return StoreCheck(status, status == "ok", groups, uncatalogued, missing)


@dataclass
class RebuildResult:
    moved_aside: list[Path]
    streams: list[tuple[str, str, int]]  # (name, id, checkpoints catalogued)
    damaged: list[Path]  # groups set aside as <name>.damaged

    def lines(self) -> list[str]:
        out = [f"moved the unreadable catalog aside: {p}" for p in self.moved_aside]
        out += [f"stream {name} ({sid}): {n} checkpoint(s) catalogued" for name, sid, n in self.streams]
        out += [f"failed its checksum, set aside (not catalogued): {p}" for p in self.damaged]
        out.append(f"not recoverable from checkpoint groups: {LOST_KINDS} of these streams")
        return out


def rebuild_catalog(data_dir: Path, url: str | None = None) -> RebuildResult:
    """A new catalog from the checkpoint groups on disk; the old, unreadable one is moved aside, not deleted.

    Refused (CatalogError) when the catalog reads fine and holds streams: there is nothing to rebuild, and a
    rebuild would drop its transcript rows and events. Only a SQLite catalog is moved aside; a PostgreSQL one
    must be empty (its database is the administrator's to recreate).
    """
    data_dir = Path(data_dir)
    found = _groups_on_disk(data_dir / MEMORY_DIR)
    if not found:
        raise CatalogError(f"no checkpoint groups under {data_dir / MEMORY_DIR}: nothing to rebuild from")
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
        for stream_id, paths in found.items():
            checks = [_verify(stream_id, p, keep_state=True) for p in paths]
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
                    stored = sum(f.stat().st_size for f in c.path.rglob("*") if f.is_file())
                    raw = sum(int(v.numel() * v.element_size()) for v in _tensors(c.state))
                    s.add(
                        Checkpoint(
                            stream_id=stream_id, seq=c.seq, path=str(c.path.relative_to(data_dir)),
                            t_start=t_start, t_end=t_end, source_offset=c.commit.get("source_offset"),
                            source_state=c.commit.get("source_state"),
                            tokens_visual=int(next_id.get("visual", 0)),
                            tokens_audio=int(next_id.get("audio", 0)),
                            checksum=c.checksum, bytes_raw=raw, bytes_stored=stored,
                        )
                    )  # fmt: skip
            for c in checks:
                if not c.ok:
                    aside = c.path.with_name(c.path.name + DAMAGED_SUFFIX)
                    os.replace(c.path, aside)
                    result.damaged.append(aside)
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
