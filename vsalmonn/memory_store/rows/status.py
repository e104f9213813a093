"""What each ingesting process last reported (`stream_status`), and each stream's state at a glance."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..models import Checkpoint, Stream, StreamStatus

if TYPE_CHECKING:
    from ..catalog import Catalog


@dataclass(frozen=True)
class StatusReport:
    """One stream's counters as its ingesting process reports them; the columns of its `stream_status` row."""

    stream_id: str
    state: str
    updated_at: datetime
    pid: int | None = None
    host: str | None = None
    source: str | None = None  # already redacted by the caller
    position: float | None = None
    duration: float | None = None
    rate: float | None = None
    lag_s: float | None = None
    frames: int = 0
    segments: int = 0
    drops: int = 0
    errors: int = 0
    last_error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None


@dataclass(frozen=True)
class StreamOverview:
    """A stream with its last status report and its newest checkpoint row (either may be missing)."""

    stream: Stream
    status: StreamStatus | None
    checkpoint: Checkpoint | None


def upsert_statuses(catalog: Catalog, reports: Iterable[StatusReport]) -> None:
    """Create or overwrite the `stream_status` row of each report, all in one transaction."""
    with catalog.transaction() as session:
        for report in reports:
            row = session.get(StreamStatus, report.stream_id) or StreamStatus(stream_id=report.stream_id)
            for f in fields(report):
                value = getattr(report, f.name)
                setattr(row, f.name, dict(value) if f.name == "detail" else value)
            session.add(row)


def read_status(catalog: Catalog, stream_id: str) -> StreamStatus | None:
    """The stream's last status report, or None when no process has reported on it."""
    with catalog.session() as session:
        return session.get(StreamStatus, stream_id)


def stream_overviews(catalog: Catalog) -> list[StreamOverview]:
    """Every stream, by name, with its status row and newest checkpoint row, read in one snapshot."""
    out = []
    with catalog.session() as session:
        for stream in session.scalars(select(Stream).order_by(Stream.name)).all():
            checkpoint = session.scalars(
                select(Checkpoint)
                .where(Checkpoint.stream_id == stream.id)
                .order_by(Checkpoint.seq.desc())
                .limit(1)
            ).first()
            out.append(StreamOverview(stream, session.get(StreamStatus, stream.id), checkpoint))
    return out


__all__ = ["StatusReport", "StreamOverview", "read_status", "stream_overviews", "upsert_statuses"]
