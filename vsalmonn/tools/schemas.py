"""The tools' argument schemas: pydantic models with field descriptions written for the calling model.

They refuse what cannot be answered before anything is read (types, limits, a start after the end, a stream
name no stream could have), so that the model gets a one-line reason to act on (see `validation_message`).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from vsalmonn.memory_store.names import validate_stream_name

from .checks import QUERY_MAX
from .wallclock import TIME_HELP, TimeArg, ordered, parse_time

K_LIMIT = 50
QUERY_LIMIT = QUERY_MAX  # one limit for the tool, the view, the CLI and the REST API
TIME_LIMIT = 1e9  # seconds (about 31 years of stream): anything larger is a mistake
EVENTS_LIMIT = 200

_SINCE_HELP = "give seconds of stream time (a number >= 0) or an ISO 8601 date-time such as "
_SINCE_HELP += "'2025-01-31T14:00:00Z'"


def _since(value: Any) -> float | datetime:
    """A number (or numeric text) is stream seconds; other text is an ISO 8601 date-time (naive means UTC)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(_SINCE_HELP)
    try:
        seconds = float(value)
    except ValueError:
        try:
            return TypeAdapter(datetime).validate_python(value)
        except ValidationError:
            raise ValueError(_SINCE_HELP) from None
    if not (math.isfinite(seconds) and 0 <= seconds <= TIME_LIMIT):
        raise ValueError(_SINCE_HELP)
    return seconds


def _time(value: Any) -> TimeArg:
    """A time argument (`wallclock.parse_time`), refused past TIME_LIMIT seconds."""
    parsed = parse_time(value)
    if not isinstance(parsed, datetime) and parsed > TIME_LIMIT:
        raise ValueError(f"{parsed:.0f} s is beyond any stream; give {TIME_HELP}")
    return parsed


StreamName = Annotated[str, AfterValidator(validate_stream_name)]
# Seconds, HH:MM:SS or a wall-clock ISO date-time, read into stream seconds or a UTC datetime. The schema a
# model reads says the same: a number, or text in one of the two forms.
Time = Annotated[
    TimeArg,
    BeforeValidator(_time),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}]}),
]

_STREAM_HELP = "Name of a stream, exactly as list_streams shows it."


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Window(_Args):
    @model_validator(mode="after")
    def _ordered(self) -> _Window:
        ordered(getattr(self, "start", None), getattr(self, "end", None))
        return self


class SearchArgs(_Window):
    query: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=QUERY_LIMIT)] = (
        Field(
            description=(
                "What to look for, in plain words: something seen ('a red car stops at the gate') or said "
                "('someone says goodbye'). Short, concrete descriptions work best."
            )
        )
    )
    stream: StreamName | None = Field(None, description=f"{_STREAM_HELP} Leave out to search every stream.")
    start: Time | None = Field(
        None,
        description=(
            "Only moments that end at or after this time: stream seconds (65), stream time as HH:MM:SS "
            "(00:01:05), or, for a live stream, wall-clock time in ISO 8601 ('2026-12-03T14:00:00Z')."
        ),
    )
    end: Time | None = Field(
        None, description="Only moments that begin at or before this time, in the same forms as start."
    )
    k: int = Field(
        5, ge=1, le=K_LIMIT, description=f"How many moments to return, best first (1 to {K_LIMIT})."
    )


class TranscriptArgs(_Window):
    stream: StreamName = Field(description=_STREAM_HELP)
    start: Time = Field(
        description=(
            "Start of the range: stream seconds (65), HH:MM:SS (00:01:05), or, for a live stream, an ISO "
            "8601 wall-clock time."
        )
    )
    end: Time = Field(description="End of the range, in the same forms as start; not before start.")


class DescribeArgs(_Args):
    stream: StreamName = Field(description=_STREAM_HELP)
    t: Time = Field(
        description=(
            "The instant to describe: stream seconds (65), HH:MM:SS (00:01:05), or, for a live stream, an "
            "ISO 8601 wall-clock time."
        )
    )


class ListStreamsArgs(_Args):
    pass


class ListEventsArgs(_Args):
    stream: StreamName | None = Field(
        None, description=f"{_STREAM_HELP} Leave out for events of every stream."
    )
    since: Annotated[float | datetime, BeforeValidator(_since)] | None = Field(
        None,
        description=(
            "Only events at or after this point: a number is seconds of stream time (e.g. 120); a date-time "
            "in ISO 8601 (e.g. '2025-01-31T14:00:00Z') is wall-clock time when the event was recorded."
        ),
    )
    kind: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None = (
        Field(
            None,
            description="Only events of this kind, e.g. 'alert' or 'reconnect'; leave out for all kinds.",
        )
    )
    limit: int = Field(
        20, ge=1, le=EVENTS_LIMIT, description=f"Most events to return, newest first (1 to {EVENTS_LIMIT})."
    )


def validation_message(tool: str) -> Any:
    """A `handle_validation_error` for `tool`: one line naming each bad argument and why, never its value."""

    def message(exc: ValidationError | Any) -> str:
        try:
            errors = exc.errors()
        except Exception:  # a foreign error type: say something useful anyway
            return f"invalid arguments for {tool}; check them against its schema and call again"
        parts = []
        for err in errors[:3]:
            loc = ".".join(str(x) for x in err.get("loc", ()))
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "not an argument of this tool"
            parts.append(f"{loc}: {msg}" if loc else msg)
        if len(errors) > 3:
            parts.append(f"{len(errors) - 3} more")
        text = " ".join("; ".join(parts).split())[:400]
        return f"invalid arguments for {tool}: {text}. Fix them and call again."

    return message
