"""What was seen: the catalog's `frame_labels` rows, the vision encoder's best labels of each sampled frame.

The stored shape (``{"labels": [[label, probability], …]}``, best first) is private to this module: the
pipeline hands (time, labels) pairs to `add_labels`, readers get them back through `labels_of`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ..models import FrameLabel

if TYPE_CHECKING:
    from ..catalog import Catalog

Labels = Sequence[tuple[str, float]]
"""A frame's labels with their probabilities, best first."""


def add_labels(catalog: Catalog, stream_id: str, frames: Iterable[tuple[float, Labels]]) -> int:
    """Store the labels of each (stream seconds, labels) frame, in one transaction; frames without labels are
    skipped. Returns how many rows were written."""
    rows = [
        FrameLabel(stream_id=stream_id, t=t, labels={"labels": [list(pair) for pair in labels]})
        for t, labels in frames
        if labels
    ]
    if rows:
        with catalog.transaction() as session:
            session.add_all(rows)
    return len(rows)


def labels_of(row: FrameLabel) -> list[tuple[str, float]]:
    """A row's labels, best first, skipping entries that are not (label, probability) pairs."""
    out = []
    for pair in (row.labels or {}).get("labels", []) or []:
        try:
            label, p = pair
            out.append((str(label), float(p)))
        except (TypeError, ValueError):
            continue
    return out


def labels_between(
    catalog: Catalog, stream_id: str, t0: float, t1: float, *, before: float | None = None, limit: int
) -> list[FrameLabel]:
    """The stream's frames with t0 <= t < t1 (and t < `before`), in time order, at most `limit`."""
    query = select(FrameLabel).where(FrameLabel.stream_id == stream_id, FrameLabel.t >= t0, FrameLabel.t < t1)
    if before is not None:
        query = query.where(FrameLabel.t < before)
    with catalog.session() as session:
        return list(session.scalars(query.order_by(FrameLabel.t).limit(limit)))


def labels_near(
    catalog: Catalog, stream_id: str, t: float, *, within: float, before: float | None = None, limit: int
) -> list[FrameLabel]:
    """The `limit` frames of the stream nearest `t` and at most `within` seconds from it, nearest first."""
    query = select(FrameLabel).where(
        FrameLabel.stream_id == stream_id, FrameLabel.t >= t - within, FrameLabel.t <= t + within
    )
    if before is not None:
        query = query.where(FrameLabel.t < before)
    query = query.order_by(func.abs(FrameLabel.t - t), FrameLabel.t).limit(limit)
    with catalog.session() as session:
        return list(session.scalars(query))


__all__ = ["Labels", "add_labels", "labels_between", "labels_near", "labels_of"]
