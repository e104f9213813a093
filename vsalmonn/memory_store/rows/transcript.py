"""What was said: the `transcript_segments` rows, written by the pipeline, read by the tools and exports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, select

from ..models import TranscriptSegment

if TYPE_CHECKING:
    from ..catalog import Catalog


@dataclass(frozen=True)
class SpokenLine:
    """One recognised stretch of speech to store: stream seconds, text, and word times when known."""

    t0: float
    t1: float
    text: str
    language: str | None = None
    words: dict[str, Any] | None = None  # {"words": [{"w": str, "t0": float, "t1": float, "p": float}, …]}


def add_transcript(catalog: Catalog, stream_id: str, lines: Sequence[SpokenLine]) -> int:
    """Store `lines` as transcript rows of the stream, in one transaction; returns how many."""
    rows = [
        TranscriptSegment(
            stream_id=stream_id, t0=s.t0, t1=s.t1, text=s.text, language=s.language, words=s.words
        )
        for s in lines
    ]
    if rows:
        with catalog.transaction() as session:
            session.add_all(rows)
    return len(rows)


def _overlap(stream_id: str, start: float, end: float, before: float | None) -> list[ColumnElement[bool]]:
    """Rows of the stream whose span meets [start, end] and which begin before `before` (when given)."""
    conditions = [
        TranscriptSegment.stream_id == stream_id,
        TranscriptSegment.t1 >= start,
        TranscriptSegment.t0 <= end,
    ]
    if before is not None:
        conditions.append(TranscriptSegment.t0 < before)
    return conditions


def transcript_between(
    catalog: Catalog,
    stream_id: str,
    start: float,
    end: float,
    *,
    before: float | None = None,
    limit: int | None = None,
) -> list[TranscriptSegment]:
    """The stream's rows that overlap [start, end] and begin before `before`, by time, at most `limit`."""
    query = (
        select(TranscriptSegment)
        .where(*_overlap(stream_id, start, end, before))
        .order_by(TranscriptSegment.t0, TranscriptSegment.id)
    )
    if limit is not None:
        query = query.limit(limit)
    with catalog.session() as session:
        return list(session.scalars(query))


def count_transcript(
    catalog: Catalog, stream_id: str, start: float, end: float, *, before: float | None = None
) -> int:
    """How many rows `transcript_between` would return without a limit."""
    query = (
        select(func.count()).select_from(TranscriptSegment).where(*_overlap(stream_id, start, end, before))
    )
    with catalog.session() as session:
        return int(session.scalar(query) or 0)


def stream_transcript(catalog: Catalog, stream_id: str) -> list[TranscriptSegment]:
    """Every transcript row of the stream in time order, including rows past its last checkpoint."""
    query = (
        select(TranscriptSegment)
        .where(TranscriptSegment.stream_id == stream_id)
        .order_by(TranscriptSegment.t0, TranscriptSegment.id)
    )
    with catalog.session() as session:
        return list(session.scalars(query))


__all__ = ["SpokenLine", "add_transcript", "count_transcript", "stream_transcript", "transcript_between"]
