"""Rows a killed writer left past its last checkpoint: a restart decodes from there and writes them again."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import delete

from ..models import FrameLabel, ScreenText, TranscriptSegment

if TYPE_CHECKING:
    from ..catalog import Catalog

log = logging.getLogger(__name__)


def forget_from(catalog: Catalog, stream_id: str, offset: float) -> tuple[int, int]:
    """Delete the stream's transcript, label and screen-text rows at or after `offset` (stream seconds),
    atomically.

    Returns (transcript rows, label rows) removed; screen-text rows are only logged. Without this, a
    resumed run would store every line and label between the checkpoint and the kill twice.
    """
    with catalog.transaction() as session:
        said = session.execute(
            delete(TranscriptSegment).where(
                TranscriptSegment.stream_id == stream_id, TranscriptSegment.t0 >= offset
            )
        ).rowcount
        seen = session.execute(
            delete(FrameLabel).where(FrameLabel.stream_id == stream_id, FrameLabel.t >= offset)
        ).rowcount
        shown = session.execute(
            delete(ScreenText).where(ScreenText.stream_id == stream_id, ScreenText.t >= offset)
        ).rowcount
    if said or seen or shown:
        log.info(
            "stream %s: dropped %d transcript, %d label and %d screen-text rows past resume offset %.1f s",
            stream_id,
            said,
            seen,
            shown,
            offset,
        )
    return int(said or 0), int(seen or 0)


__all__ = ["forget_from"]
