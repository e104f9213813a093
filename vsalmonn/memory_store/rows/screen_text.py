"""What was shown: the `screen_text` rows, lines read on sampled frames by perception's OCR.

Written by the pipeline with the window of their frame (before the checkpoint that covers it), read by the
tools as a moment's evidence and by the exports beside the transcript.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..models import ScreenText

if TYPE_CHECKING:
    from ..catalog import Catalog


@dataclass(frozen=True)
class ShownLine:
    """One line of text read on a frame to store: the frame's stream seconds, the text and its score."""

    t: float
    text: str
    score: float


def add_screen_text(catalog: Catalog, stream_id: str, lines: Sequence[ShownLine]) -> int:
    """Store `lines` as screen-text rows of the stream, in one transaction; returns how many."""
    rows = [ScreenText(stream_id=stream_id, t=s.t, text=s.text, score=float(s.score)) for s in lines]
    if rows:
        with catalog.transaction() as session:
            session.add_all(rows)
    return len(rows)


def screen_text_between(
    catalog: Catalog,
    stream_id: str,
    start: float,
    end: float,
    *,
    before: float | None = None,
    limit: int | None = None,
) -> list[ScreenText]:
    """The stream's rows read at start <= t <= end (and t < `before`), by time, at most `limit`."""
    query = select(ScreenText).where(
        ScreenText.stream_id == stream_id, ScreenText.t >= start, ScreenText.t <= end
    )
    if before is not None:
        query = query.where(ScreenText.t < before)
    query = query.order_by(ScreenText.t, ScreenText.id)
    if limit is not None:
        query = query.limit(limit)
    with catalog.session() as session:
        return list(session.scalars(query))


def stream_screen_text(catalog: Catalog, stream_id: str) -> list[ScreenText]:
    """Every screen-text row of the stream in time order, including rows past its last checkpoint."""
    query = select(ScreenText).where(ScreenText.stream_id == stream_id).order_by(ScreenText.t, ScreenText.id)
    with catalog.session() as session:
        return list(session.scalars(query))


__all__ = ["ShownLine", "add_screen_text", "screen_text_between", "stream_screen_text"]
