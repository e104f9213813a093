"""A read-only view of the committed memories and the catalog, which the tools and `vsalmonn search` read.

It reads only what the commit protocol has made visible (DESIGN §4): a stream's memory at its newest
committed checkpoint, and catalog rows (transcript, frame labels) before that checkpoint's committed offset,
since rows past it are work in progress that a restart of the writer removes. So it runs in any process
beside the daemon. Each stream's loaded memory is cached under the newest checkpoint's sequence number; one
small catalog query per call notices a newer checkpoint and loads it instead.

Nothing here writes: not the catalog, not a checkpoint, not the data directory. No LangChain either: the CLI
and plain Python use `MemoryView` directly; `toolkit` wraps it as tools. Its answers are the models of
`results`, its argument checks are in `checks`, a moment's evidence is put into words by `evidence`, and
the catalog is asked through the named queries of `vsalmonn.memory_store.rows`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vsalmonn.memory_store.models import Stream
from vsalmonn.memory_store.names import validate_stream_name
from vsalmonn.memory_store.redact import redact, redact_data
from vsalmonn.memory_store.rows.events import event_kinds, events_after, events_since, last_event_id
from vsalmonn.memory_store.rows.labels import labels_near, labels_of
from vsalmonn.memory_store.rows.screen_text import screen_text_between
from vsalmonn.memory_store.rows.status import read_status
from vsalmonn.memory_store.rows.transcript import count_transcript

from .checks import check_query, check_time, check_window, horizon, past
from .encoding import LazyTextEncoder, NoTextEncoder, TextEncoder, TextEncoderFactory
from .evidence import lines, moment_evidence, slots_at, top_labels
from .results import (
    Description,
    EventRecord,
    Events,
    Hit,
    Line,
    Seen,
    Shown,
    SlotCover,
    StreamSummary,
    Transcript,
    UnknownStreamError,
    ViewError,
)
from .wallclock import TimeArg, epoch_of, ordered, read_time, stream_seconds, wall_of

if TYPE_CHECKING:
    import numpy as np

    from vsalmonn.memory_store.config import StoreConfig
    from vsalmonn.memory_store.memory import StreamMemory
    from vsalmonn.memory_store.reader import Moment
    from vsalmonn.memory_store.store import CheckpointInfo, MemoryStore

log = logging.getLogger(__name__)

K_MAX = 1000  # moments one search may return (the tools allow fewer)
TRANSCRIPT_MAX = 500  # transcript lines one call returns
DESCRIBE_FRAMES = 3  # frames nearest the instant that `describe` reports
DESCRIBE_FRAME_S = 3.0  # ...within this many seconds of it
DESCRIBE_SPEECH_S = 10.0  # transcript within this many seconds either side of the instant
DESCRIBE_SHOWN_S = 10.0  # on-screen text read within this many seconds either side of it
DESCRIBE_SHOWN = 20  # ...at most this many lines
EVENTS_MAX = 200
STREAMS_LISTED = 20  # names shown in an "unknown stream" message


@dataclass
class _Loaded:
    stream_id: str
    seq: int  # the newest committed seq when it was loaded (the cache key)
    memory: StreamMemory
    info: CheckpointInfo  # the checkpoint actually loaded (older than `seq` only if newer ones were damaged)


class MemoryView:
    """Read-only answers over a MemoryStore: search, transcript, describe, streams, events.

    `text_encoder` embeds search prompts; or `text_encoder_factory` makes it on the first search, so that
    listing streams never loads a model (`vsalmonn.app.make_view` passes the one the settings name). A view
    with neither answers everything but search. Safe to call from several threads (LangGraph runs tool
    calls in parallel).
    """

    def __init__(
        self,
        store: MemoryStore,
        text_encoder: TextEncoder | None = None,
        *,
        text_encoder_factory: TextEncoderFactory | None = None,
        owns_store: bool = False,
    ) -> None:
        self.store = store
        self._encoder = LazyTextEncoder(text_encoder, text_encoder_factory)
        self._owns_store = owns_store
        self._cache: dict[str, _Loaded] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_data_dir(
        cls,
        data_dir: Path,
        store_config: StoreConfig | None = None,
        text_encoder: TextEncoder | None = None,
        *,
        text_encoder_factory: TextEncoderFactory | None = None,
        read_only: bool = False,
    ) -> MemoryView:
        """The view of the store under `data_dir`, opened (and closed by `close()`) here."""
        from vsalmonn.memory_store.store import MemoryStore

        store = MemoryStore.open(Path(data_dir), store_config, read_only=read_only)
        return cls(store, text_encoder, text_encoder_factory=text_encoder_factory, owns_store=True)

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
        """The encoder of search prompts (made now by the factory on first use); ViewError without one."""
        try:
            return self._encoder.get()
        except NoTextEncoder as exc:
            raise ViewError(str(exc)) from None

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
        start: TimeArg | str | None = None,
        end: TimeArg | str | None = None,
        k: int = 5,
    ) -> list[Hit]:
        """The `k` moments that best match `query`, best first, over one stream or all of them.

        `start`/`end` keep moments that overlap [start, end]; the reader then picks its slots among those
        inside the window, so a narrow window is searched as thoroughly as the whole stream. Each is stream
        seconds, HH:MM:SS, or a wall-clock datetime (`wallclock`), which only a live stream can place: over
        every stream, those without a wall clock are left out of such a search. Streams without a committed
        checkpoint contribute nothing.
        """
        query = check_query(query)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= K_MAX:
            raise ViewError(f"k must be an integer from 1 to {K_MAX}, got {k!r}")
        start, end = read_time(start, "start"), read_time(end, "end")
        ordered(start, end)
        rows = [self.stream(stream)] if stream is not None else self.store.catalog.streams()
        loaded = [(row, got) for row in rows if (got := self._latest(row.name)) is not None]
        wall = isinstance(start, datetime) or isinstance(end, datetime)
        windows = {}
        for row, got in loaded:
            epoch = epoch_of(got.info)
            if wall and epoch is None and stream is None:
                continue  # a file's stream time is no wall-clock time: it cannot lie in the window
            lo = None if start is None else stream_seconds(start, epoch, row.name, "start")
            hi = None if end is None else stream_seconds(end, epoch, row.name, "end")
            if lo is not None and hi is not None and lo > hi:
                if stream is not None:
                    check_window(lo, hi)  # the one stream asked for: say why nothing can match
                continue
            windows[row.name] = (lo, hi, epoch)
        if wall and loaded and not windows and stream is None:
            raise ViewError(
                "no stream has a wall-clock time (only live streams do; a file's stream time is its own); "
                "give stream seconds or HH:MM:SS"
            )
        loaded = [(row, got) for row, got in loaded if row.name in windows]
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
            lo, hi, _ = windows[row.name]
            found += [(row, got, m) for m in got.memory.read(vector, k=k, window=(lo, hi))]
        found.sort(key=lambda x: (-x[2].score, x[2].t0))
        hits = []
        for row, got, m in found[:k]:
            evidence = moment_evidence(self.store.catalog, row.id, m.t0, m.t1, horizon(got.info))
            epoch = windows[row.name][2]
            hits.append(
                Hit(
                    stream=row.name, t0=m.t0, t1=m.t1, score=m.score, modality=m.modality,
                    evidence=evidence, slot_ids=list(m.slot_ids), checkpoint_seq=got.info.seq,
                    wall_t0=wall_of(m.t0, epoch), wall_t1=wall_of(m.t1, epoch),
                )
            )  # fmt: skip
        return hits

    # ----- transcript -------------------------------------------------------------------------------

    def transcript(self, stream: str, start: TimeArg | str, end: TimeArg | str) -> Transcript:
        """Transcript segments of `stream` that overlap [start, end], in time order (each bound stream
        seconds, HH:MM:SS or, for a live stream, a wall-clock datetime)."""
        if start is None or end is None:
            raise ViewError("give both start and end (stream seconds)")
        row, loaded = self._require(stream)
        epoch = epoch_of(loaded.info)
        start, end = check_window(
            stream_seconds(read_time(start, "start"), epoch, stream, "start"),
            stream_seconds(read_time(end, "end"), epoch, stream, "end"),
        )
        assert start is not None and end is not None
        covered = horizon(loaded.info)
        if start > covered:
            raise ViewError(past(stream, start, covered))
        said = lines(self.store.catalog, row.id, start, end, covered, TRANSCRIPT_MAX + 1)
        more = 0
        if len(said) > TRANSCRIPT_MAX:
            total = count_transcript(self.store.catalog, row.id, start, end, before=covered)
            said, more = said[:TRANSCRIPT_MAX], total - TRANSCRIPT_MAX
        return Transcript(
            stream=stream, start=start, end=end, covered_until=covered, lines=said, more=more, epoch=epoch
        )

    # ----- describe ---------------------------------------------------------------------------------

    def describe(self, stream: str, t: TimeArg | str) -> Description:
        """Frames nearest `t` with their labels, speech within ±10 s, and the memory slots containing `t`
        (stream seconds, HH:MM:SS or, for a live stream, a wall-clock datetime)."""
        row, loaded = self._require(stream)
        epoch = epoch_of(loaded.info)
        t = check_time(stream_seconds(read_time(t, "t"), epoch, stream, "t"), "t")
        covered = horizon(loaded.info)
        if t > covered:
            raise ViewError(past(stream, t, covered))
        catalog = self.store.catalog
        near = labels_near(catalog, row.id, t, within=DESCRIBE_FRAME_S, before=covered, limit=DESCRIBE_FRAMES)
        said = lines(catalog, row.id, t - DESCRIBE_SPEECH_S, t + DESCRIBE_SPEECH_S, covered, 20)
        seen = sorted((Seen(t=f.t, labels=labels_of(f)) for f in near), key=lambda s: s.t)
        # OCR samples frames every few seconds, so text is listed over the speech's span, not the frames'.
        rows = screen_text_between(
            catalog, row.id, t - DESCRIBE_SHOWN_S, t + DESCRIBE_SHOWN_S, before=covered, limit=DESCRIBE_SHOWN
        )
        return Description(
            stream=stream, t=t, covered_until=covered, checkpoint_seq=loaded.info.seq, seen=seen, said=said,
            memory=slots_at(loaded.memory, t), wall=wall_of(t, epoch),
            shown=[Shown(t=r.t, text=" ".join(r.text.split())) for r in rows if r.text.strip()],
        )  # fmt: skip

    # ----- streams ----------------------------------------------------------------------------------

    def streams(self) -> list[StreamSummary]:
        """Every stream, by name, with what its newest committed checkpoint covers and its last status."""
        out = []
        for row in self.store.catalog.streams():
            infos = self.store.checkpoints(row.name)
            newest = infos[0] if infos else None
            status = read_status(self.store.catalog, row.id)
            out.append(
                StreamSummary(
                    name=row.name, kind=row.kind, source=redact(row.source),
                    checkpoint_seq=newest.seq if newest else None,
                    checkpoint_at=newest.created_at if newest else None,
                    t_start=newest.t_start if newest else None, t_end=newest.t_end if newest else None,
                    covered_until=horizon(newest) if newest else None,
                    state=status.state if status else None, position=status.position if status else None,
                    status_at=status.updated_at if status else None,
                    last_error=redact(status.last_error) if status else None,
                    epoch=epoch_of(newest),
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
        stream_id = row.id if row is not None else None
        wall = since if isinstance(since, datetime) else None
        t = check_time(since, "since") if since is not None and wall is None else None
        catalog = self.store.catalog
        rows = events_since(catalog, stream_id=stream_id, kind=kind, since=wall, since_t=t, limit=limit + 1)
        names = {s.id: s.name for s in catalog.streams()}
        kinds = event_kinds(catalog, stream_id, limit=50)
        events = [_record(e, names) for e in rows[:limit]]
        return Events(events=events, kinds=kinds, more=len(rows) > limit)

    def events_after(self, after_id: int | None = None, limit: int = EVENTS_MAX) -> list[EventRecord]:
        """Events stored after the one with id `after_id`, oldest first (None: after the newest, so none):
        a feed that follows the catalog resumes from the last id it gave."""
        catalog = self.store.catalog
        if after_id is None:
            return []
        rows = events_after(catalog, after_id, limit=limit)
        names = {s.id: s.name for s in catalog.streams()} if rows else {}
        return [_record(e, names) for e in rows]

    def last_event_id(self) -> int:
        """The id of the newest stored event (0 when none)."""
        return last_event_id(self.store.catalog)


def _record(e: Any, names: dict[str, str]) -> EventRecord:
    return EventRecord(
        id=e.id, stream=names.get(e.stream_id) if e.stream_id else None, kind=e.kind, source=e.source,
        t=e.t, message=redact(e.message), created_at=e.created_at, payload=redact_data(e.payload),
    )  # fmt: skip


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
