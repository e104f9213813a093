"""The checks `MemoryView` makes of its arguments; each fails with a `ViewError` saying what to change."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .results import ViewError
from .timefmt import at_text, secs

if TYPE_CHECKING:
    from vsalmonn.memory_store.store import CheckpointInfo

QUERY_MAX = 2000  # characters of a search prompt (and of a question: the agent searches with it)


def check_query(query: object) -> str:
    """The prompt, stripped; refused when not text, empty, or longer than QUERY_MAX."""
    if not isinstance(query, str):
        raise ViewError(f"query must be text, not {type(query).__name__}")
    query = query.strip()
    if not query:
        raise ViewError("query is empty; describe what to look for")
    if len(query) > QUERY_MAX:
        raise ViewError(f"query is {len(query)} characters long; the limit is {QUERY_MAX}")
    return query


def check_time(value: object, what: str) -> float:
    """`value` as finite, non-negative stream seconds (a bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ViewError(f"{what} must be a number of seconds, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ViewError(f"{what} must be a finite number of seconds >= 0, got {value}")
    return value


def check_window(start: object, end: object) -> tuple[float | None, float | None]:
    """An optional [start, end] window of stream seconds, start not after end."""
    lo = None if start is None else check_time(start, "start")
    hi = None if end is None else check_time(end, "end")
    if lo is not None and hi is not None and lo > hi:
        raise ViewError(f"start ({secs(lo)} s) is after end ({secs(hi)} s)")
    return lo, hi


def horizon(info: CheckpointInfo) -> float:
    """Stream seconds committed by a checkpoint: its source offset (where ingestion resumes), else its end."""
    for value in (info.source_offset, info.t_end):
        if value is not None and math.isfinite(value):
            return float(value)
    return 0.0


def past(stream: str, t: float, covered: float) -> str:
    """The message for a time past what a stream has committed."""
    return (
        f"{at_text(t)} is past what stream {stream!r} has committed so far (up to {at_text(covered)}); "
        "ask for an earlier time"
    )


__all__ = ["QUERY_MAX", "check_query", "check_time", "check_window", "horizon", "past"]
