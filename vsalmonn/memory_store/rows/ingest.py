"""How far each file of a watched folder is ingested (`ingest_files`), and what file a file stream holds.

A folder's checkpoint names the file it was in and that file's offset; the rows here are the folder's
bookkeeping beside it, written after the checkpoint. A kill between the two leaves them disagreeing, and
`reconcile_ingest_files` settles it in favour of the checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from ..models import IngestFile, Stream

if TYPE_CHECKING:
    from ..catalog import Catalog

FINISHED = ("done", "failed", "skipped")
"""States of a file that the folder does not read again."""

_COLUMNS = frozenset(IngestFile.__table__.columns.keys()) - {"id", "stream_id", "path"}


def upsert_ingest_file(catalog: Catalog, stream_id: str, path: str, **values: Any) -> None:
    """Create the stream's row of file `path` if it has none, then set the given columns on it.

    `values` are columns of `IngestFile` (status, offset, stream_offset, error, size, mtime, head_sha256,
    head_bytes); another name is a TypeError, raised before anything is written.
    """
    unknown = set(values) - _COLUMNS
    if unknown:
        raise TypeError(f"not columns of ingest_files: {', '.join(sorted(unknown))}")
    with catalog.transaction() as session:
        row = session.scalars(
            select(IngestFile).where(IngestFile.stream_id == stream_id, IngestFile.path == path)
        ).one_or_none()
        if row is None:
            row = IngestFile(stream_id=stream_id, path=path)
            session.add(row)
        for name, value in values.items():
            setattr(row, name, value)


def reconcile_ingest_files(
    catalog: Catalog, stream_id: str, current: str | None, *, current_done: bool = False
) -> dict[str, IngestFile]:
    """Bring the stream's file rows in line with its last checkpoint and return the finished ones by path.

    `current` is the file the checkpoint was in and `current_done` whether it had read it to the end. A row
    still "ingesting" is then either done (the current file, finished: killed before its row was updated)
    or pending again from 0 (any other file: started, but no checkpoint holds any of it).
    """
    with catalog.transaction() as session:
        rows = session.scalars(select(IngestFile).where(IngestFile.stream_id == stream_id)).all()
        for row in rows:
            if row.path == current and current_done and row.status == "ingesting":
                row.status = "done"
            elif row.status == "ingesting" and row.path != current:
                row.status, row.offset = "pending", 0.0
        return {row.path: row for row in rows if row.status in FINISHED}


def remember_source_identity(catalog: Catalog, stream_id: str, identity: dict[str, Any]) -> None:
    """Record which file a single-file stream reads (`Stream.source_identity`: path, size, head hash)."""
    with catalog.transaction() as session:
        session.execute(update(Stream).where(Stream.id == stream_id).values(source_identity=identity))


__all__ = ["FINISHED", "reconcile_ingest_files", "remember_source_identity", "upsert_ingest_file"]
