"""What `MemoryView` answers, as pydantic models (the tools' artifacts are their JSON), and its errors.

Every time is stream seconds; a stream's `covered_until` is its committed offset, past which nothing is
known yet. A live stream's times are also given on the wall clock (`wall_*`, `epoch`: UTC), since its stream
time is wall-clock time since its first start (`wallclock`); a file's are not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class ViewError(ValueError):
    """A request the view cannot answer as asked; the message is one line that says what to change."""


class UnknownStreamError(ViewError):
    """No stream has the given name."""


class Hit(BaseModel):
    """One moment a search found: where, how well it matches, and what was said and seen in it."""

    model_config = ConfigDict(frozen=True)

    stream: str
    t0: float  # stream seconds
    t1: float
    score: float
    modality: str  # visual or audio
    evidence: list[str]  # "said: '...'" lines overlapping the span, then "seen: label (p)" labels within it
    slot_ids: list[int]  # the memory slots behind the moment (stable ids)
    checkpoint_seq: int  # the committed memory state it was read from
    wall_t0: datetime | None = None  # the span on the wall clock, for a live stream (its epoch + t0)
    wall_t1: datetime | None = None


class Moment(BaseModel):
    """A hit as `search --json` and ``GET /api/search`` give it: the moment and its evidence, without the
    slot ids and checkpoint a program has no use for."""

    model_config = ConfigDict(frozen=True)

    stream: str
    t0: float  # stream seconds
    t1: float
    score: float
    modality: str
    evidence: list[str]
    wall_t0: datetime | None = None  # on the wall clock (UTC), for a live stream; None for a file's
    wall_t1: datetime | None = None


class SearchResult(BaseModel):
    """The moments a search found, best first: the one JSON schema of `search --json` and the REST API."""

    model_config = ConfigDict(frozen=True)

    moments: list[Moment]

    @classmethod
    def of(cls, hits: list[Hit]) -> SearchResult:
        fields = Moment.model_fields
        return cls(moments=[Moment(**{name: getattr(h, name) for name in fields}) for h in hits])


class Line(BaseModel):
    """A transcript segment."""

    model_config = ConfigDict(frozen=True)

    t0: float
    t1: float
    text: str


class Transcript(BaseModel):
    """What was said in a stream between two times, as far as the stream is committed."""

    stream: str
    start: float
    end: float
    covered_until: float  # the stream's committed offset: nothing later is known yet
    lines: list[Line]
    more: int = 0  # lines left out past TRANSCRIPT_MAX
    epoch: datetime | None = None  # stream time 0 on the wall clock (UTC), for a live stream


class Seen(BaseModel):
    """The top labels of one sampled frame, best first."""

    t: float
    labels: list[tuple[str, float]]


class Shown(BaseModel):
    """A line of on-screen text read on a frame (OCR), at that frame's time."""

    model_config = ConfigDict(frozen=True)

    t: float
    text: str


class SlotCover(BaseModel):
    """The memory slots of one modality whose spans contain an instant."""

    modality: str
    slots: int
    t0: float  # the union of their spans: wide when the memory merged a long stretch into them
    t1: float


class Description(BaseModel):
    """What is known about one instant of a stream: frames near it, speech around it, memory slots on it."""

    stream: str
    t: float
    covered_until: float
    checkpoint_seq: int
    seen: list[Seen]
    said: list[Line]
    memory: list[SlotCover]
    wall: datetime | None = None  # `t` on the wall clock (UTC), for a live stream
    shown: list[Shown] = []  # on-screen text read within ±10 s (OCR; empty when it is off)


class StreamSummary(BaseModel):
    """A stream as the catalog knows it: source, what its newest checkpoint covers, what its ingester says."""

    name: str
    kind: str | None
    source: str | None  # user and password of a URL removed
    checkpoint_seq: int | None
    checkpoint_at: datetime | None
    t_start: float | None  # the memory's span at that checkpoint
    t_end: float | None
    covered_until: float | None  # the committed offset: ingestion resumes here
    state: str | None  # from the ingesting process's status report, when there is one
    position: float | None
    status_at: datetime | None
    last_error: str | None
    epoch: datetime | None = None  # stream time 0 on the wall clock (UTC): a live stream's first start


class EventRecord(BaseModel):
    """One catalog event: an alert, a fault, a reconnect."""

    id: int
    stream: str | None
    kind: str
    source: str | None
    t: float | None  # stream seconds, when it has one
    message: str
    created_at: datetime
    payload: dict[str, Any] | None


class Events(BaseModel):
    """Events matching a request, newest first, and the kinds that exist (to correct a wrong `kind`)."""

    events: list[EventRecord]
    kinds: list[str]
    more: bool  # there are more than were returned


__all__ = [
    "Description",
    "EventRecord",
    "Events",
    "Hit",
    "Line",
    "Moment",
    "SearchResult",
    "Seen",
    "Shown",
    "SlotCover",
    "StreamSummary",
    "Transcript",
    "UnknownStreamError",
    "ViewError",
]
