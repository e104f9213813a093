"""Retention of a stream's stored data besides its checkpoints: rows and files, by age and by bytes.

Checkpoints have their own retention (`StreamWriter.apply_retention`). Everything else a stream stores grows
with its running time: a frame-label row per sampled frame, transcript rows, on-screen text rows, events,
the surveillance plugin's thumbnails under ``<data>/thumbs/<stream>/`` and the meeting monitor's live
transcript ``<data>/transcripts/<stream>.txt``. Each kind has a rule (`config.KindRetention`): a maximum
age and a maximum of bytes per stream, 0 meaning unlimited. The rule is age and bytes only, oldest first:
the memory itself is the checkpoint and is unaffected, and a moment of it whose label or transcript rows have
gone still reads from the memory (its evidence then has no text).

Age. Transcript rows and events carry `created_at` (wall time) and are aged by it; frame labels and
on-screen text rows carry only stream time `t`, so they are aged against the stream's newest row of their
kind (a row more than `max_age_s` of stream time before it goes); files by their mtime.

Bytes. Per stream and kind, estimated as the `length()` of the row's text and JSON columns plus a fixed
overhead per row (`ROW_OVERHEAD`: the stream id, numbers, timestamp, record header and the index entry, as
SQLite stores them). SQLite's `dbstat` would measure pages, but per table, not per stream, and PostgreSQL has
none; the estimate works on both dialects. `length()` counts characters, so non-ASCII text is underestimated
by its extra UTF-8 bytes. Files count their size on disk (`st_size`).

Deletes go in batches of `batch_rows` rows, one transaction each, so a large delete never holds the catalog's
write lock for long: an ingesting process inserts between two batches.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Text, cast, delete, func, select

from .catalog import Catalog
from .config import DataRetention, KindRetention
from .models import Checkpoint, Event, FrameLabel, ScreenText, TranscriptSegment
from .names import path_component

log = logging.getLogger(__name__)

THUMBS_DIR = "thumbs"  # <data>/thumbs/<path_component(stream)>/…  (surveillance plugin)
TRANSCRIPTS_DIR = "transcripts"  # <data>/transcripts/<stream>.txt  (meeting monitor)
ROW_KINDS = ("labels", "transcript", "screen_text", "events")
_STREAM_TIME_KINDS = ("labels", "screen_text")  # aged by stream time `t`, not by `created_at`
FILE_KINDS = ("thumbnails", "transcript_files")
KINDS = (*ROW_KINDS, *FILE_KINDS)
# Bytes per row beyond its text/JSON columns: stream id (32), numbers (8 each), timestamp text (26), record
# header and rowid (~10), and one index entry (stream id, key, rowid). Checked against dbstat in the tests.
ROW_OVERHEAD = {"labels": 96, "transcript": 150, "screen_text": 104, "events": 160}
# A live transcript file over its budget is cut to this share of it, so that it is not rewritten every pass.
FILE_TRIM_TO = 0.95


class KindSize(BaseModel):
    """How much of one kind a stream stores."""

    rows: int = 0  # rows, files, or checkpoints
    bytes: int = 0


@dataclass(frozen=True)
class _RowKind:
    model: Any
    order: Any  # oldest first
    size: Any  # SQL expression: estimated bytes of one row
    age: Any  # the column a row's age is measured by: stream time for labels, created_at for the others


def _length(column: Any) -> Any:
    return func.coalesce(func.length(cast(column, Text)), 0)


def _row_kind(kind: str) -> _RowKind:
    if kind == "labels":
        return _RowKind(
            FrameLabel, FrameLabel.t, _length(FrameLabel.labels) + ROW_OVERHEAD[kind], FrameLabel.t
        )
    if kind == "transcript":
        m = TranscriptSegment
        size = _length(m.text) + _length(m.words) + _length(m.language) + ROW_OVERHEAD[kind]
        return _RowKind(m, m.t0, size, m.created_at)
    if kind == "screen_text":
        return _RowKind(ScreenText, ScreenText.t, _length(ScreenText.text) + ROW_OVERHEAD[kind], ScreenText.t)
    if kind == "events":
        size = _length(Event.kind) + _length(Event.source) + _length(Event.message) + _length(Event.payload)
        return _RowKind(Event, Event.created_at, size + ROW_OVERHEAD[kind], Event.created_at)
    raise ValueError(f"not a row kind: {kind}")


def plugin_paths(data_dir: Path, name: str) -> tuple[Path, Path | None]:
    """Where the built-in plugins keep stream `name`'s files: its thumbnail folder and live transcript.

    The one definition of that layout, for the plugins that write there and for retention and deletion. A
    name whose transcript path would leave the transcripts folder gets none.
    """
    thumbs = Path(data_dir) / THUMBS_DIR / path_component(name)
    transcripts = Path(data_dir) / TRANSCRIPTS_DIR
    transcript = transcripts / f"{name}.txt"
    return thumbs, transcript if transcript.parent == transcripts else None


def stream_files(data_dir: Path, name: str) -> dict[str, list[Path]]:
    """The files of stream `name` that retention looks after, by kind (absent ones left out)."""
    thumbs, transcript = plugin_paths(data_dir, name)
    found: dict[str, list[Path]] = {"thumbnails": [], "transcript_files": []}
    try:
        if thumbs.is_dir():
            found["thumbnails"] = [p for p in thumbs.iterdir() if p.is_file() and not p.name.startswith(".")]
        if transcript is not None and transcript.is_file():
            found["transcript_files"] = [transcript]
    except OSError as exc:
        log.warning("retention: files of stream %s not listed: %s", name, exc)
    return found


def stream_sizes(catalog: Catalog, data_dir: Path, stream_id: str, name: str) -> dict[str, KindSize]:
    """Rows and bytes a stream stores, per kind (its checkpoints included): what `vsalmonn status` shows."""
    sizes: dict[str, KindSize] = {}
    with catalog.session() as s:
        for kind in ROW_KINDS:
            k = _row_kind(kind)
            rows, total = s.execute(
                select(func.count(), func.coalesce(func.sum(k.size), 0)).where(k.model.stream_id == stream_id)
            ).one()
            sizes[kind] = KindSize(rows=int(rows), bytes=int(total))
        rows, total = s.execute(
            select(func.count(), func.coalesce(func.sum(Checkpoint.bytes_stored), 0)).where(
                Checkpoint.stream_id == stream_id
            )
        ).one()
    for kind, paths in stream_files(data_dir, name).items():
        sizes[kind] = KindSize(rows=len(paths), bytes=sum(_size(p) for p in paths))
    sizes["checkpoints"] = KindSize(rows=int(rows), bytes=int(total))
    return sizes


def apply_data_retention(
    catalog: Catalog,
    data_dir: Path,
    stream_id: str,
    name: str,
    policy: DataRetention,
    now: datetime | None = None,
) -> dict[str, int]:
    """Delete what `policy` no longer keeps of one stream; the number of rows or files removed, per kind.

    `now` is the wall time ages are measured from (a benchmark passes simulated time). Never raises for a
    file it cannot remove (logged): retention must not stop an ingest.
    """
    now = now or datetime.now(UTC)
    removed: dict[str, int] = {}
    for kind in ROW_KINDS:
        rule = policy.kind(kind)
        if rule.max_age_s or rule.max_bytes:
            removed[kind] = _prune_rows(catalog, stream_id, kind, rule, now, policy.batch_rows)
    files = stream_files(data_dir, name)
    removed["thumbnails"] = _prune_files(files["thumbnails"], policy.thumbnails, now)
    removed["transcript_files"] = _prune_transcripts(files["transcript_files"], policy.transcript_files, now)
    if any(removed.values()):
        log.info("stream %s: retention removed %s", name, {k: v for k, v in removed.items() if v})
    return removed


# ----- rows ------------------------------------------------------------------------------------------------


def _prune_rows(
    catalog: Catalog, stream_id: str, kind: str, rule: KindRetention, now: datetime, batch: int
) -> int:
    k = _row_kind(kind)
    removed = 0
    if rule.max_age_s:
        if kind in _STREAM_TIME_KINDS:
            with catalog.session() as s:
                newest = s.scalar(select(func.max(k.age)).where(k.model.stream_id == stream_id))
            cutoff: Any = None if newest is None else newest - rule.max_age_s
        else:
            cutoff = now - timedelta(seconds=rule.max_age_s)
        if cutoff is not None:
            while True:
                with catalog.transaction() as s:
                    ids = s.scalars(
                        select(k.model.id)
                        .where(k.model.stream_id == stream_id, k.age < cutoff)
                        .order_by(k.age)
                        .limit(batch)
                    ).all()
                    if ids:
                        s.execute(delete(k.model).where(k.model.id.in_(ids)))
                removed += len(ids)
                if len(ids) < batch:
                    break
    if rule.max_bytes:
        with catalog.session() as s:
            total = s.scalar(select(func.coalesce(func.sum(k.size), 0)).where(k.model.stream_id == stream_id))
        excess = int(total or 0) - rule.max_bytes
        while excess > 0:
            with catalog.transaction() as s:
                rows = s.execute(
                    select(k.model.id, k.size)
                    .where(k.model.stream_id == stream_id)
                    .order_by(k.order, k.model.id)
                    .limit(batch)
                ).all()
                ids = []
                for row_id, size in rows:
                    if excess <= 0:
                        break
                    ids.append(row_id)
                    excess -= int(size)
                if ids:
                    s.execute(delete(k.model).where(k.model.id.in_(ids)))
            removed += len(ids)
            if not ids:
                break
    return removed


# ----- files -----------------------------------------------------------------------------------------------


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _unlink(path: Path) -> bool:
    try:
        path.unlink(missing_ok=True)
        return True
    except OSError as exc:
        log.warning("retention: %s not removed: %s", path, exc)
        return False


def _prune_files(paths: list[Path], rule: KindRetention, now: datetime) -> int:
    """Files past the age go, then the oldest (by mtime) while the folder holds more than `max_bytes`."""
    entries = sorted(((_mtime(p), _size(p), p) for p in paths), key=lambda e: e[0])
    removed = 0
    if rule.max_age_s:
        limit = now.timestamp() - rule.max_age_s
        while entries and entries[0][0] < limit:
            removed += _unlink(entries.pop(0)[2])
    if rule.max_bytes:
        total = sum(e[1] for e in entries)
        while entries and total > rule.max_bytes:
            _, size, path = entries.pop(0)
            if _unlink(path):
                removed += 1
                total -= size
    return removed


def _prune_transcripts(paths: list[Path], rule: KindRetention, now: datetime) -> int:
    """A live transcript not written for `max_age_s` goes; one over `max_bytes` keeps its newest lines.

    The file is one appended text, so its age is its mtime (its lines' own times are stream times). Cutting
    it writes the kept tail (whole lines, `FILE_TRIM_TO` of the budget) to a temporary file renamed over it:
    a reader sees the old or the new file, and a line appended during the cut may be lost.
    """
    removed = 0
    for path in paths:
        if rule.max_age_s and _mtime(path) < now.timestamp() - rule.max_age_s:
            removed += _unlink(path)
            continue
        size = _size(path)
        if not rule.max_bytes or size <= rule.max_bytes:
            continue
        keep = int(rule.max_bytes * FILE_TRIM_TO)
        tmp = path.with_name(f".{path.name}.retention.tmp")
        try:
            with open(path, "rb") as f:
                f.seek(max(0, size - keep))
                tail = f.read()
            cut = tail.find(b"\n")
            tail = tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail
            stat = path.stat()
            with open(tmp, "wb") as f:
                f.write(tail)
            os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # its age is still its last write
            os.replace(tmp, path)
            removed += 1
        except OSError as exc:
            log.warning("retention: %s not cut: %s", path, exc)
            tmp.unlink(missing_ok=True)
    return removed


class RetentionSchedule:
    """Applies a stream's data retention at most every `policy.interval_s` of wall time.

    Called after each committed checkpoint (a `StreamWriter.on_commit` listener, on the committing thread,
    so an ingest does not wait for it); the first call applies at once.
    """

    def __init__(self, catalog: Catalog, data_dir: Path, stream_id: str, name: str, policy: DataRetention):
        self.catalog, self.data_dir, self.stream_id, self.name, self.policy = (
            catalog,
            Path(data_dir),
            stream_id,
            name,
            policy,
        )
        self.last: float | None = None

    def __call__(self, info: object = None) -> dict[str, int] | None:
        now = time.monotonic()
        if self.last is not None and now - self.last < self.policy.interval_s:
            return None
        self.last = now
        try:
            return apply_data_retention(self.catalog, self.data_dir, self.stream_id, self.name, self.policy)
        except Exception as exc:  # a locked or failing catalog: try again at the next interval
            log.warning("stream %s: data retention failed: %s", self.name, exc)
            return None
