"""Deleting a stream: all of its catalog rows in one transaction, then its files.

The rows go first and at once, so that readers see the stream either whole or gone; the files (checkpoint
groups and whatever the caller names, such as a plugin's thumbnails) go after. A crash between the two
leaves only files no row commits, which a writer's recovery or the next delete removes. The stream's writer
lock is held throughout, so a delete never races a process writing the stream (`StreamBusyError`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, select

from .models import (
    Checkpoint,
    Event,
    Evidence,
    FrameLabel,
    IngestFile,
    MomentRecord,
    ScreenText,
    Stream,
    StreamStatus,
    TranscriptSegment,
)
from .objects import ObjectStoreError
from .store import LOCK_FILE, MemoryStore, _acquire_lock

log = logging.getLogger(__name__)

# Every table with a stream's rows, children before parents (evidence hangs off moments).
_TABLES = (
    ("checkpoints", Checkpoint),
    ("transcript_segments", TranscriptSegment),
    ("frame_labels", FrameLabel),
    ("screen_text", ScreenText),
    ("moments", MomentRecord),
    ("events", Event),
    ("ingest_files", IngestFile),
    ("stream_status", StreamStatus),
)


@dataclass
class StreamFootprint:
    """What deleting a stream removes: rows per table, checkpoint groups, and other files and folders."""

    name: str
    stream_id: str
    rows: dict[str, int] = field(default_factory=dict)
    groups: int = 0
    paths: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        rows = ", ".join(f"{n} {table}" for table, n in self.rows.items() if n)
        files = f"{self.groups} checkpoint group(s)"
        if self.paths:
            files += ", " + ", ".join(str(p) for p in self.paths)
        return f"stream {self.name}: {rows or 'no rows'}; {files}"


def stream_footprint(
    store: MemoryStore, name: str, extra_paths: Sequence[Path] = ()
) -> StreamFootprint | None:
    """What `delete_stream` would remove (None: no such stream); `extra_paths` that exist are listed."""
    with store.catalog.session() as s:
        stream = s.scalar(select(Stream).where(Stream.name == name))
        if stream is None:
            return None
        footprint = StreamFootprint(name, stream.id)
        for table, model in _TABLES:
            footprint.rows[table] = s.scalar(
                select(func.count()).select_from(model).where(model.stream_id == stream.id)
            )
        footprint.rows["evidence"] = s.scalar(
            select(func.count())
            .select_from(Evidence)
            .where(Evidence.moment_id.in_(select(MomentRecord.id).where(MomentRecord.stream_id == stream.id)))
        )
    stream_dir = store.stream_dir(footprint.stream_id)
    if not store.groups.local:
        footprint.groups = len(store.groups.groups(footprint.stream_id))
    elif stream_dir.is_dir():
        footprint.groups = sum(1 for p in stream_dir.iterdir() if p.is_dir())
    footprint.paths = [Path(p) for p in extra_paths if os.path.lexists(p)]
    return footprint


def delete_stream(store: MemoryStore, name: str, extra_paths: Sequence[Path] = ()) -> StreamFootprint | None:
    """Delete stream `name`: its rows in every table (one transaction), then its groups and `extra_paths`.

    Returns what was removed (None: no such stream). Raises `StreamBusyError` while another process writes
    the stream; nothing is deleted then.
    """
    footprint = stream_footprint(store, name, extra_paths)
    if footprint is None:
        return None
    stream_dir = store.stream_dir(footprint.stream_id)
    stream_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = _acquire_lock(stream_dir / LOCK_FILE, name)
    try:
        with store.catalog.transaction() as s:
            moments = select(MomentRecord.id).where(MomentRecord.stream_id == footprint.stream_id)
            s.execute(delete(Evidence).where(Evidence.moment_id.in_(moments)))
            for _, model in _TABLES:
                s.execute(delete(model).where(model.stream_id == footprint.stream_id))
            s.execute(delete(Stream).where(Stream.id == footprint.stream_id))
        log.info("stream %s: catalog rows deleted (%s)", name, footprint.summary())
        # the rows are gone: from here on the stream does not exist for readers; now its files
        for path in footprint.paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if not store.groups.local:  # a group left behind has no row: `store gc` takes it later
            try:
                store.groups.delete_stream(footprint.stream_id)
            except ObjectStoreError as exc:
                log.warning("stream %s: groups left for 'vsalmonn store gc': %s", name, exc)
        store.verified.pop(footprint.stream_id, None)
        store.failed.pop(footprint.stream_id, None)
        for entry in stream_dir.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    finally:
        os.close(lock_fd)
    # the lock file last: a writer that opened it meanwhile holds a lock on a folder with nothing in it
    shutil.rmtree(stream_dir, ignore_errors=True)
    return footprint
