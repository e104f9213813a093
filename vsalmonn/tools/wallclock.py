"""Wall-clock time beside stream time: how a time argument is read, and how one axis maps onto the other.

Every stored time is stream seconds (DESIGN §2). A live source's stream time is wall-clock time since its
first start, its *epoch*, which each checkpoint keeps (``source_state["epoch"]``, Unix seconds), so for a
live stream "14:00 today" is a stream time: the instant minus the epoch. A file has no epoch: its stream
time is the file's own, and a wall-clock bound means nothing for it.

A time argument, wherever a person or a model writes one (the tools, ``vsalmonn search``, the REST API), is
one of:

- seconds of stream time, a number or its text: ``65``, ``"65.5"``;
- stream time as a clock: ``"00:01:05"``, ``"1:05"``, ``"01:02:03.5"`` (what the tools' answers print);
- a wall-clock date-time in ISO 8601: ``"2026-12-03T14:00:00Z"``, ``"2026-12-03 14:00"`` (naive means UTC).

The clock form is read as stream time, never as a time of day: a model copies "00:01:05" out of an answer,
and a time of day without its date would be a guess.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .results import ViewError

if TYPE_CHECKING:
    from vsalmonn.memory_store.store import CheckpointInfo

TimeArg = float | datetime
"""Stream seconds, or a wall-clock instant (aware, UTC)."""

TIME_HELP = (
    "seconds of stream time (65), stream time as HH:MM:SS (00:01:05), or an ISO 8601 wall-clock date-time "
    "('2026-12-03T14:00:00Z'; naive means UTC)"
)
_CLOCK = re.compile(r"^(?:(\d+):)?([0-5]?\d):([0-5]\d(?:\.\d+)?)$")
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d)$", re.IGNORECASE)
_AGO_UNIT = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def utc(when: datetime) -> datetime:
    """`when` as an aware UTC datetime (naive means UTC, as everywhere in the catalog)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_time(value: Any, what: str = "") -> TimeArg:
    """A time argument (module docstring) as stream seconds or an aware UTC datetime; ValueError, one line
    (beginning "`what`: " when given), saying which forms are accepted, for anything else."""
    if isinstance(value, datetime):
        return utc(value)
    named = f"{what}: " if what else ""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{named}give {TIME_HELP}")
    if isinstance(value, str):
        text = value.strip()
        clock = _CLOCK.match(text)
        if clock:
            hours, minutes, seconds = clock.groups()
            return int(hours or 0) * 3600.0 + int(minutes) * 60.0 + float(seconds)
        try:
            value = float(text)
        except ValueError:
            try:
                return utc(datetime.fromisoformat(text))
            except ValueError:
                raise ValueError(f"{named}{text[:40]!r} is not a time; give {TIME_HELP}") from None
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{named}stream seconds must be finite and >= 0, got {value!r}")
    return seconds


def read_time(value: Any, what: str) -> TimeArg | None:
    """A time argument as the view and the REST API take it: None (or blank text) for none, else
    `parse_time`'s value; ViewError, one line, naming `what` and the accepted forms, for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return parse_time(value, what)
    except ValueError as exc:
        raise ViewError(str(exc)) from None


def parse_since(text: str, now: datetime | None = None) -> TimeArg:
    """`--since`: a span back from now (``90s``, ``30m``, ``1h``, ``2d``) as a wall-clock instant, or any
    time argument."""
    ago = _AGO.match(text.strip())
    if ago:
        amount, unit = float(ago.group(1)), ago.group(2).lower()
        return utc(now or datetime.now(UTC)) - timedelta(seconds=amount * _AGO_UNIT[unit])
    try:
        return parse_time(text, "since")
    except ValueError:
        raise ValueError(
            f"since: {text[:40]!r} is neither a span back from now (90s, 30m, 1h, 2d) nor a time; "
            f"give one of those or {TIME_HELP}"
        ) from None


def epoch_of(info: CheckpointInfo | None) -> datetime | None:
    """The wall-clock instant of stream time 0 that a checkpoint of a live stream keeps; None for a file."""
    epoch = info.epoch if info is not None else None
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def wall_of(t: float, epoch: datetime | None) -> datetime | None:
    """Stream time `t` on the wall clock, when the stream has an epoch."""
    return None if epoch is None else epoch + timedelta(seconds=t)


def stream_seconds(value: TimeArg, epoch: datetime | None, stream: str, what: str) -> float:
    """A time argument as stream seconds of `stream`: a wall-clock instant is counted from its epoch (before
    the epoch: 0); ViewError for a wall-clock instant and a stream without one."""
    if not isinstance(value, datetime):
        return float(value)
    if epoch is None:
        raise ViewError(
            f"{what} is a wall-clock time, but stream {stream!r} has none (a file's stream time is its own); "
            "give stream seconds or HH:MM:SS"
        )
    return max(0.0, (utc(value) - epoch).total_seconds())


def ordered(start: TimeArg | None, end: TimeArg | None) -> None:
    """Refuse a window whose start is after its end when both are on the same axis (mixed axes are checked
    per stream, once its epoch is known)."""
    if start is None or end is None or isinstance(start, datetime) != isinstance(end, datetime):
        return
    if start > end:  # type: ignore[operator]
        raise ViewError(f"start ({show(start)}) must not be after end ({show(end)})")


def show(value: TimeArg) -> str:
    """A time argument as a message names it."""
    if isinstance(value, datetime):
        return utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{value:.1f} s"


__all__ = [
    "TIME_HELP",
    "TimeArg",
    "epoch_of",
    "ordered",
    "parse_since",
    "parse_time",
    "read_time",
    "show",
    "stream_seconds",
    "utc",
    "wall_of",
]


# -- a window named in a question's words ------------------------------------------------------------------

QUESTION_AROUND_S = 300.0
""""At 14:00 today" is a moment a person names loosely: the window is this many seconds either side."""

_NUMBER_WORDS = {"a": 1.0, "an": 1.0, "one": 1.0, "two": 2.0, "three": 3.0, "few": 3.0}
_SPAN_UNIT = r"(seconds?|secs?|minutes?|mins?|hours?|hrs?|h|days?|d)"
_LAST = re.compile(
    rf"\b(?:last|past)\s+(?:(\d+(?:\.\d+)?|an?|one|two|three|few)\s*)?{_SPAN_UNIT}\b", re.IGNORECASE
)
_SINCE_SPAN = re.compile(r"\bsince\s+(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\b", re.IGNORECASE)
_AGO_WORDS = re.compile(rf"\b(\d+(?:\.\d+)?|an?|one|two|three|few)\s*{_SPAN_UNIT}\s+ago\b", re.IGNORECASE)
# A time of day after a word that places it; never HH:MM:SS, which is stream time (module docstring).
_TIME_OF_DAY = re.compile(
    r"\b(at|around|about|since|from|after|before|until|till|between|and|to)\s+"
    r"(\d{1,2})(?::([0-5]\d))?(?!:\d)\s*(am|pm|a\.m\.|p\.m\.)?(?![\w:])",
    re.IGNORECASE,
)
_DAY = re.compile(r"\b(today|yesterday|this (?:morning|afternoon|evening)|tonight)\b", re.IGNORECASE)
_UTC = re.compile(r"\butc\b", re.IGNORECASE)


def _span_s(amount: str | None, unit: str) -> float:
    value = _NUMBER_WORDS.get((amount or "a").lower())
    number = value if value is not None else float(amount or 1)
    return number * _AGO_UNIT[unit.lower()[0]]  # every unit's first letter: s, m, h or d


def question_window(
    question: str, now: datetime | None = None
) -> tuple[datetime | None, datetime | None] | None:
    """The wall-clock window a question names in words, (start, end) with either open, or None.

    Read: a span back from now ("in the last 30 minutes", "the past hour", "since 1h", "2 hours ago": ±
    `QUESTION_AROUND_S` around that instant), and a time of day placed by a word before it ("at 14:00",
    "since 9am", "between 14:00 and 15:30", "before 8 pm") when the question also says which day ("today",
    "yesterday", "this morning") or gives am/pm or "UTC". A bare "at 1:05" stays stream time, as in every
    time argument: a question about a file says "at 1:05" of the file. Times of day are UTC, like every
    naive time here; "at" means ± `QUESTION_AROUND_S`.
    """
    now = utc(now or datetime.now(UTC))
    last = _LAST.search(question) or _SINCE_SPAN.search(question)
    if last:
        return now - timedelta(seconds=_span_s(last.group(1), last.group(2))), None
    ago = _AGO_WORDS.search(question)
    if ago:
        at = now - timedelta(seconds=_span_s(ago.group(1), ago.group(2)))
        around = timedelta(seconds=QUESTION_AROUND_S)
        return at - around, at + around
    day = _DAY.search(question)
    date = now.date() - timedelta(days=1 if day and day.group(1).lower() == "yesterday" else 0)
    start: datetime | None = None
    end: datetime | None = None
    for match in _TIME_OF_DAY.finditer(question):
        word, hours, minutes, half = (
            match.group(1).lower(),
            int(match.group(2)),
            match.group(3),
            match.group(4),
        )
        if not (day or half or _UTC.search(question)) or (minutes is None and not half):
            continue  # no day, no am/pm: a stream time; "at 3" alone: a count, not a time
        if half:
            if not 1 <= hours <= 12:
                continue
            hours = hours % 12 + (12 if half.lower().startswith("p") else 0)
        if hours > 23:
            continue
        instant = datetime(date.year, date.month, date.day, hours, int(minutes or 0), tzinfo=UTC)
        if word in ("since", "from", "after", "between"):
            start = instant
        elif word in ("before", "until", "till") or (word in ("and", "to") and start is not None):
            end = instant
        elif word in ("at", "around", "about"):
            around = timedelta(seconds=QUESTION_AROUND_S)
            start, end = instant - around, instant + around
    if start is None and end is None:
        return None
    return start, end
