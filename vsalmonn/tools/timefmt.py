"""Stream times as a model and a person read them: HH:MM:SS first, then the seconds they came from.

Times are seconds of stream time (DESIGN §2, §9). Clock form is floored to the second, as a video player
shows it; the seconds keep one decimal, so "00:01:05 (65.9 s)" is one instant told twice.
"""

from __future__ import annotations

import math


def hms(seconds: float) -> str:
    """`seconds` as HH:MM:SS, floored: 3723.9 -> "01:02:03"; hours grow past two digits when needed."""
    if not math.isfinite(seconds):
        return "--:--:--"
    sign = "-" if seconds < 0 else ""
    total = math.floor(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}"


def secs(seconds: float) -> str:
    """`seconds` with one decimal: 65.04 -> "65.0"."""
    return f"{seconds:.1f}"


def at_text(t: float) -> str:
    """One instant: "00:01:05 (65.0 s)"."""
    return f"{hms(t)} ({secs(t)} s)"


def span_text(t0: float, t1: float) -> str:
    """A span: "00:01:05-00:01:12 (65.0-72.0 s)"."""
    return f"{hms(t0)}-{hms(t1)} ({secs(t0)}-{secs(t1)} s)"
