"""A read-only view of the committed memories and the catalog, which the tools and `vsalmonn search` read.

It reads only what the commit protocol has made visible (DESIGN §4): a stream's memory at its newest
committed checkpoint, and catalog rows (transcript, frame labels) before that checkpoint's committed offset,
since rows past it are work in progress that a restart of the writer removes. So it runs in any process
beside the daemon. Each stream's loaded memory is cached under the newest checkpoint's sequence number; one
small catalog query per call notices a newer checkpoint and loads it instead.

Nothing here writes: not the catalog, not a checkpoint, not the data directory. No LangChain either: the CLI
and plain Python use `MemoryView` directly; `toolkit` wraps it as tools.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vsalmonn.memory_store.models import Event, FrameLabel, Stream, StreamStatus, TranscriptSegment
from vsalmonn.memory_store.names import validate_stream_name
from vsalmonn.memory_store.redact import redact, redact_data

from .timefmt import at_text, secs

if TYPE_CHECKING:
    import numpy as np

    from vsalmonn.memory_store.config import StoreConfig
    from vsalmonn.memory_store.memory import StreamMemory
    from vsalmonn.memory_store.reader import Moment
    from vsalmonn.memory_store.store import CheckpointInfo, MemoryStore
    from vsalmonn.perception.config import PerceptionConfig
    from vsalmonn.perception.encoders.base import TextEncoder

log = logging.getLogger(__name__)

QUERY_MAX = 1000  # characters of a search prompt
K_MAX = 1000  # moments one search may return (the tools allow fewer)
SAID_MAX = 5  # transcript lines kept as one moment's evidence
SAID_CHARS = 300  # characters of one transcript line in a moment's evidence
SEEN_MAX = 3  # labels kept as one moment's evidence
LABEL_ROWS_MAX = 3600  # frames whose labels are counted for one moment (an hour at 1 FPS)
TRANSCRIPT_MAX = 500  # transcript lines one call returns
DESCRIBE_FRAMES = 3  # frames nearest the instant that `describe` reports
DESCRIBE_FRAME_S = 3.0  # ...within this many seconds of it
DESCRIBE_SPEECH_S = 10.0  # transcript within this many seconds either side of the instant
EVENTS_MAX = 200
STREAMS_LISTED = 20  # names shown in an "unknown stream" message


class ViewError(ValueError):
    """A request the view cannot answer as asked; the message is one line that says what to change."""


class UnknownStreamError(ViewError):
    """No stream has the given name."""


# ----------------------------------------------------------------------------------------------- results


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


class Seen(BaseModel):
    """The top labels of one sampled frame, best first."""

    t: float
    labels: list[tuple[str, float]]


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


# ---------------------------------------------------------------------------------------------- the view


@dataclass
class _Loaded:
    stream_id: str
    seq: int  # the newest committed seq when it was loaded (the cache key)
    memory: StreamMemory
    info: CheckpointInfo  # the checkpoint actually loaded (older than `seq` only if newer ones were damaged)


class MemoryView:
    """Read-only answers over a MemoryStore: search, transcript, describe, streams, events.

    `text_encoder` embeds search prompts; without one, the encoder named in `perception` (default
    PerceptionConfig) is made on the first search, so listing streams never loads a model. Safe to call from
    several threads (LangGraph runs tool calls in parallel).
    """

    def __init__(
        self,
        store: MemoryStore,
        text_encoder: TextEncoder | None = None,
        *,
        perception: PerceptionConfig | None = None,
        owns_store: bool = False,
    ) -> None:
        self.store = store
        self._encoder = text_encoder
        self._perception = perception
        self._owns_store = owns_store
        self._cache: dict[str, _Loaded] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_data_dir(
        cls,
        data_dir: Path,
        perception: PerceptionConfig | None = None,
        store_config: StoreConfig | None = None,
        text_encoder: TextEncoder | None = None,
        *,
        read_only: bool = False,
    ) -> MemoryView:
        """The view of the store under `data_dir`, opened (and closed by `close()`) here."""
        from vsalmonn.memory_store.store import MemoryStore

        store = MemoryStore.open(Path(data_dir), store_config, read_only=read_only)
        return cls(store, text_encoder, perception=perception, owns_store=True)

    def close(self) -> None:
        """Drop the cached memories; close the store if this view opened it."""
        with self._lock:
            self._cache.clear()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> MemoryView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- the text encoder -------------------------------------------------------------------------

    @property
    def text_encoder(self) -> TextEncoder:
        with self._lock:
            if self._encoder is None:
                from vsalmonn.perception.config import PerceptionConfig
                from vsalmonn.perception.encoders import create_encoder

                config = self._perception or PerceptionConfig()
                self._encoder = create_encoder("text", config.text_encoder, config, self.store.data_dir)
            return self._encoder

    def encode(self, query: str) -> np.ndarray:
        """The prompt's embedding, (1, d)."""
        return self.text_encoder.encode([query])

    # ----- streams and their memories ---------------------------------------------------------------

    def stream(self, name: str) -> Stream:
        """The catalog row of stream `name`; ViewError for a bad name, UnknownStreamError for a new one."""
        try:
            validate_stream_name(name)
        except ValueError as exc:
            raise ViewError(str(exc)) from None
        streams = self.store.catalog.streams()
        for row in streams:
            if row.name == name:
                return row
        names = [s.name for s in streams]
        known = ", ".join(names[:STREAMS_LISTED]) + (", …" if len(names) > STREAMS_LISTED else "")
        raise UnknownStreamError(f"no stream named {name!r}; known: {known or 'none yet'}")

    def memory(self, name: str) -> tuple[StreamMemory, CheckpointInfo] | None:
        """Stream `name`'s memory at its newest committed checkpoint, or None when it has none yet."""
        loaded = self._latest(name)
        return (loaded.memory, loaded.info) if loaded else None

    def _latest(self, name: str) -> _Loaded | None:
        infos = self.store.checkpoints(name)  # one small query: is there a newer checkpoint?
        with self._lock:
            if not infos:
                self._cache.pop(name, None)
                return None
            newest = infos[0]
            cached = self._cache.get(name)
            if cached is not None and (cached.stream_id, cached.seq) == (newest.stream_id, newest.seq):
                return cached
            memory, info = self.store.open_memory(name)
            if info is None:  # every checkpoint failed to verify (logged by the store)
                self._cache.pop(name, None)
                return None
            loaded = _Loaded(info.stream_id, max(newest.seq, info.seq), memory, info)
            self._cache[name] = loaded
            log.debug("stream %s: loaded checkpoint %d", name, info.seq)
            return loaded

    def _require(self, name: str) -> tuple[Stream, _Loaded]:
        row = self.stream(name)
        loaded = self._latest(name)
        if loaded is None:
            raise ViewError(f"stream {name!r} has no committed checkpoint yet; try again once it has one")
        return row, loaded

    # ----- search -----------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        stream: str | None = None,
        start: float | None = None,
        end: float | None = None,
        k: int = 5,
    ) -> list[Hit]:
        """The `k` moments that best match `query`, best first, over one stream or all of them.

        `start`/`end` (stream seconds) keep moments that overlap [start, end]; the reader then picks its
        slots among those inside the window, so a narrow window is searched as thoroughly as the whole
        stream. Streams without a committed checkpoint contribute nothing.
        """
        query = _check_query(query)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= K_MAX:
            raise ViewError(f"k must be an integer from 1 to {K_MAX}, got {k!r}")
        start, end = _check_window(start, end)
        rows = [self.stream(stream)] if stream is not None else self.store.catalog.streams()
        loaded = [(row, got) for row in rows if (got := self._latest(row.name)) is not None]
        if not loaded:
            return []
        vector = self.encode(query)  # (1, d)
        found: list[tuple[Stream, _Loaded, Moment]] = []
        for row, got in loaded:
            dim = got.memory.config.dim
            if vector.shape[1] != dim:
                raise ViewError(
                    f"stream {row.name!r} holds {dim}-d tokens but the text encoder gives "
                    f"{vector.shape[1]}-d ones; search it with the encoder it was ingested with"
                )
            found += [(row, got, m) for m in got.memory.read(vector, k=k, window=(start, end))]
        found.sort(key=lambda x: (-x[2].score, x[2].t0))
        hits = []
        with self.store.catalog.session() as session:
            for row, got, m in found[:k]:
                evidence = _evidence(session, row.id, m.t0, m.t1, _horizon(got.info))
                hits.append(
                    Hit(
                        stream=row.name, t0=m.t0, t1=m.t1, score=m.score, modality=m.modality,
                        evidence=evidence, slot_ids=list(m.slot_ids), checkpoint_seq=got.info.seq,
                    )
                )  # fmt: skip
        return hits

    # ----- transcript -------------------------------------------------------------------------------

    def transcript(self, stream: str, start: float, end: float) -> Transcript:
        """Transcript segments of `stream` that overlap [start, end], in time order."""
        start, end = _check_window(start, end)
        if start is None or end is None:
            raise ViewError("give both start and end (stream seconds)")
        row, loaded = self._require(stream)
        horizon = _horizon(loaded.info)
        if start > horizon:
            raise ViewError(_past(stream, start, horizon))
        with self.store.catalog.session() as session:
            lines = _lines(session, row.id, start, end, horizon, TRANSCRIPT_MAX + 1)
        more = 0
        if len(lines) > TRANSCRIPT_MAX:
            with self.store.catalog.session() as session:
                total = session.scalar(
                    select(func.count())
                    .select_from(TranscriptSegment)
                    .where(*_overlap(row.id, start, end, horizon))
                )
            lines, more = lines[:TRANSCRIPT_MAX], int(total or 0) - TRANSCRIPT_MAX
        return Transcript(stream=stream, start=start, end=end, covered_until=horizon, lines=lines, more=more)

    # ----- describe ---------------------------------------------------------------------------------

    def describe(self, stream: str, t: float) -> Description:
        """Frames nearest `t` with their labels, speech within ±10 s, and the memory slots containing `t`."""
        t = _check_time(t, "t")
        row, loaded = self._require(stream)
        horizon = _horizon(loaded.info)
        if t > horizon:
            raise ViewError(_past(stream, t, horizon))
        with self.store.catalog.session() as session:
            near = session.scalars(
                select(FrameLabel)
                .where(FrameLabel.stream_id == row.id)
                .where(FrameLabel.t >= t - DESCRIBE_FRAME_S, FrameLabel.t <= t + DESCRIBE_FRAME_S)
                .where(FrameLabel.t < horizon)
                .order_by(func.abs(FrameLabel.t - t), FrameLabel.t)
                .limit(DESCRIBE_FRAMES)
            ).all()
            said = _lines(session, row.id, t - DESCRIBE_SPEECH_S, t + DESCRIBE_SPEECH_S, horizon, 20)
        seen = sorted((Seen(t=f.t, labels=_labels_of(f)) for f in near), key=lambda s: s.t)
        return Description(
            stream=stream, t=t, covered_until=horizon, checkpoint_seq=loaded.info.seq, seen=seen, said=said,
            memory=_slots_at(loaded.memory, t),
        )  # fmt: skip

    # ----- streams ----------------------------------------------------------------------------------

    def streams(self) -> list[StreamSummary]:
        """Every stream, by name, with what its newest committed checkpoint covers and its last status."""
        out = []
        for row in self.store.catalog.streams():
            infos = self.store.checkpoints(row.name)
            newest = infos[0] if infos else None
            with self.store.catalog.session() as session:
                status = session.get(StreamStatus, row.id)
            out.append(
                StreamSummary(
                    name=row.name, kind=row.kind, source=redact(row.source),
                    checkpoint_seq=newest.seq if newest else None,
                    checkpoint_at=newest.created_at if newest else None,
                    t_start=newest.t_start if newest else None, t_end=newest.t_end if newest else None,
                    covered_until=_horizon(newest) if newest else None,
                    state=status.state if status else None, position=status.position if status else None,
                    status_at=status.updated_at if status else None,
                    last_error=redact(status.last_error) if status else None,
                )
            )  # fmt: skip
        return out

    # ----- events -----------------------------------------------------------------------------------

    def events(
        self,
        stream: str | None = None,
        since: float | datetime | None = None,
        kind: str | None = None,
        limit: int = 20,
    ) -> Events:
        """Events, newest first: of one stream, of one kind, and at or after `since`.

        `since` is stream seconds (a number: events without a stream time are left out) or a wall-clock
        datetime (naive means UTC).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= EVENTS_MAX:
            raise ViewError(f"limit must be an integer from 1 to {EVENTS_MAX}, got {limit!r}")
        row = self.stream(stream) if stream is not None else None
        conditions: list[Any] = []
        if row is not None:
            conditions.append(Event.stream_id == row.id)
        if kind is not None:
            conditions.append(Event.kind == kind)
        if isinstance(since, datetime):
            conditions.append(Event.created_at >= (since if since.tzinfo else since.replace(tzinfo=UTC)))
        elif since is not None:
            conditions.append(Event.t >= _check_time(since, "since"))
        with self.store.catalog.session() as session:
            names = {sid: name for sid, name in session.execute(select(Stream.id, Stream.name))}
            rows = session.scalars(
                select(Event)
                .where(*conditions)
                .order_by(Event.created_at.desc(), Event.id.desc())
                .limit(limit + 1)
            ).all()
            kinds_q = select(Event.kind).distinct().order_by(Event.kind)
            if row is not None:
                kinds_q = kinds_q.where(Event.stream_id == row.id)
            kinds = list(session.scalars(kinds_q.limit(50)))
        events = [
            EventRecord(
                id=e.id, stream=names.get(e.stream_id) if e.stream_id else None, kind=e.kind, source=e.source,
                t=e.t, message=redact(e.message), created_at=e.created_at, payload=redact_data(e.payload),
            )
            for e in rows[:limit]
        ]  # fmt: skip
        return Events(events=events, kinds=kinds, more=len(rows) > limit)


# ----------------------------------------------------------------------------------------------- helpers


def _check_query(query: object) -> str:
    if not isinstance(query, str):
        raise ViewError(f"query must be text, not {type(query).__name__}")
    query = query.strip()
    if not query:
        raise ViewError("query is empty; describe what to look for")
    if len(query) > QUERY_MAX:
        raise ViewError(f"query is {len(query)} characters long; the limit is {QUERY_MAX}")
    return query


def _check_time(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ViewError(f"{what} must be a number of seconds, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ViewError(f"{what} must be a finite number of seconds >= 0, got {value}")
    return value


def _check_window(start: object, end: object) -> tuple[float | None, float | None]:
    lo = None if start is None else _check_time(start, "start")
    hi = None if end is None else _check_time(end, "end")
    if lo is not None and hi is not None and lo > hi:
        raise ViewError(f"start ({secs(lo)} s) is after end ({secs(hi)} s)")
    return lo, hi


def _horizon(info: CheckpointInfo) -> float:
    """Stream seconds committed by a checkpoint: its source offset (where ingestion resumes), else its end."""
    for value in (info.source_offset, info.t_end):
        if value is not None and math.isfinite(value):
            return float(value)
    return 0.0


def _past(stream: str, t: float, horizon: float) -> str:
    return (
        f"{at_text(t)} is past what stream {stream!r} has committed so far (up to {at_text(horizon)}); "
        "ask for an earlier time"
    )


def _overlap(stream_id: str, start: float, end: float, horizon: float) -> list[Any]:
    return [
        TranscriptSegment.stream_id == stream_id,
        TranscriptSegment.t1 >= start,
        TranscriptSegment.t0 <= end,
        TranscriptSegment.t0 < horizon,
    ]


def _lines(
    session: Session, stream_id: str, start: float, end: float, horizon: float, limit: int
) -> list[Line]:
    rows = session.scalars(
        select(TranscriptSegment)
        .where(*_overlap(stream_id, start, end, horizon))
        .order_by(TranscriptSegment.t0, TranscriptSegment.id)
        .limit(limit)
    ).all()
    return [Line(t0=r.t0, t1=r.t1, text=r.text) for r in rows]


def _labels_of(row: FrameLabel) -> list[tuple[str, float]]:
    """A frame's labels, tolerating rows that are not shaped as expected."""
    out = []
    for pair in (row.labels or {}).get("labels", []) or []:
        try:
            label, p = pair
            out.append((str(label), float(p)))
        except (TypeError, ValueError):
            continue
    return out


def top_labels(rows: Sequence[FrameLabel], n: int = SEEN_MAX) -> list[tuple[str, float, int]]:
    """The labels in most of `rows`: (label, mean probability where seen, frames), most frequent first."""
    count: Counter[str] = Counter()
    total: defaultdict[str, float] = defaultdict(float)
    for row in rows:
        for label, p in _labels_of(row):
            count[label] += 1
            total[label] += p
    ranked = sorted(count, key=lambda label: (-count[label], -total[label], label))
    return [(label, total[label] / count[label], count[label]) for label in ranked[:n]]


def _evidence(session: Session, stream_id: str, t0: float, t1: float, horizon: float) -> list[str]:
    """What a moment rests on that a reader can check: speech overlapping it, labels of frames inside it."""
    said = _lines(session, stream_id, t0, t1, horizon, SAID_MAX)
    frames = session.scalars(
        select(FrameLabel)
        .where(FrameLabel.stream_id == stream_id)
        .where(FrameLabel.t >= t0, FrameLabel.t < max(t1, t0 + 1e-3), FrameLabel.t < horizon)
        .order_by(FrameLabel.t)
        .limit(LABEL_ROWS_MAX)
    ).all()
    evidence = [f"said: {_quote(line.text, SAID_CHARS)}" for line in said]
    # ImageNet names list synonyms ("web site, website"): the first is enough to say what was seen.
    evidence += [f"seen: {label.split(',')[0].strip()} ({p:.2f})" for label, p, _ in top_labels(frames)]
    return evidence


def _quote(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"'{text}'"


def _slots_at(memory: StreamMemory, t: float) -> list[SlotCover]:
    """Per modality, how many memory slots contain `t` and the union of their spans."""
    candidates = getattr(memory, "_candidates", None)
    out = []
    for modality in ("visual", "audio"):
        if candidates is not None:
            c = candidates(modality)
            t0, t1 = c.t0, c.t1
        else:
            bank = memory.banks[modality]  # type: ignore[index]
            t0, t1 = bank.t0, bank.t1
        hit = (t0 <= t) & (t1 >= t)  # (S,)
        n = int(hit.sum())
        if n:
            out.append(
                SlotCover(modality=modality, slots=n, t0=float(t0[hit].min()), t1=float(t1[hit].max()))
            )
    return out


__all__ = [
    "Description",
    "EventRecord",
    "Events",
    "Hit",
    "Line",
    "MemoryView",
    "Seen",
    "SlotCover",
    "StreamSummary",
    "Transcript",
    "UnknownStreamError",
    "ViewError",
    "redact",
    "top_labels",
]
