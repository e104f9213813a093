"""Decoded items into one stream's memory: windows, encoding, writing, checkpoints (DESIGN §2, §5).

Every kind of source ends in a `StreamSink`. Items are gathered in windows of `window_s` seconds of stream
time, aligned to multiples of it. When an item past the window's end arrives, the window is encoded: frames
through the vision encoder into the visual memory (their top labels into the catalog as evidence), audio
through the speech encoder into the transcript and, as text embeddings, into the audio memory. So at a
window's end everything before it is in memory and nothing after it is, and that is where a checkpoint of a
*seekable* source (a file, a file of a watched folder) is taken, with the window's end as its offset: a
restart decodes from there, catalog rows at or after it are removed first, and the result equals an
uninterrupted run.

A *live* source (`exact=False`) resumes at "now" rather than at an offset, so nothing needs to line up with
a checkpoint; instead frames must reach the memory within a second or two. Its frames are encoded as soon as
the input queue runs dry (`idle()`), and only its speech waits for the window end (`live_window_s`, shorter),
because Whisper needs a few seconds of context to transcribe well.

One lock serialises the encoders of all streams in a process: the CPU cores are the shared resource, and two
models running at once on two cores only make both slower while holding twice the memory.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vsalmonn.errors import one_line
from vsalmonn.memory_store import StreamMemory
from vsalmonn.memory_store.objects import ObjectStoreError
from vsalmonn.memory_store.redact import redact
from vsalmonn.memory_store.retention import RetentionSchedule
from vsalmonn.memory_store.rope import kind_positions
from vsalmonn.memory_store.rows import resume
from vsalmonn.memory_store.rows.labels import add_labels
from vsalmonn.memory_store.rows.screen_text import ShownLine, add_screen_text
from vsalmonn.memory_store.rows.transcript import SpokenLine, add_transcript
from vsalmonn.memory_store.store import MemoryStore, StreamWriter

from . import allocator
from .config import PerceptionConfig
from .encoders import FrameTokens, Segment, SpeechEncoder, TextEncoder, VisionEncoder, Word, create_encoder
from .encoders.ocr import FramePicker, OcrReader
from .media import AudioChunk, Frame

if TYPE_CHECKING:
    from vsalmonn.plugins import PluginManager

log = logging.getLogger(__name__)

Item = Frame | AudioChunk
ENCODE_LOCK = threading.Lock()
"""Held while any encoder of this process runs (module docstring)."""

_RATE_WINDOW_S = 30.0  # the rate in status reports is measured over this much recent wall time
_AUDIO_GAP_S = 0.05  # audio chunks further apart than this are transcribed as separate runs


@dataclass
class Encoders:
    """The encoders a pipeline uses; built once, shared by every stream and file of a process."""

    vision: VisionEncoder
    text: TextEncoder
    speech: SpeechEncoder | None
    ocr: OcrReader | None = None  # perception.ocr: on-screen text (encoders/ocr.py)

    @classmethod
    def from_config(
        cls, config: PerceptionConfig, data_dir: Any, *, text: TextEncoder | None = None
    ) -> Encoders:
        """The encoders the settings name; `text`: a text encoder made already (the plugins' shared one)."""
        if text is None:
            text = create_encoder("text", config.text_encoder, config, data_dir)
        vision = create_encoder("vision", config.vision_encoder, config, data_dir, text_encoder=text)
        speech = None
        if config.speech_encoder != "none":
            speech = create_encoder("speech", config.speech_encoder, config, data_dir)
        ocr = OcrReader(min_score=config.ocr_min_score, threads=config.threads) if config.ocr else None
        return cls(vision=vision, text=text, speech=speech, ocr=ocr)


_REDACTED_FIELDS = frozenset({"source", "last_error"})


@dataclass
class StreamStats:
    """A stream's counters: written by its worker thread, read by status reports from another thread.

    Plain attribute writes of ints, floats and strings are atomic under the GIL, so no lock is needed for a
    report that may be one item out of date.
    """

    state: str = "starting"
    source: str | None = None
    position: float | None = None  # stream seconds written into memory
    duration: float | None = None  # of the file being ingested, when known
    lag_s: float | None = None  # live: wall time now minus the wall time of the newest written frame
    frames: int = 0
    segments: int = 0
    drops: int = 0
    errors: int = 0
    last_error: str | None = None
    checkpoints: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    _marks: collections.deque[tuple[float, float]] = field(default_factory=collections.deque, repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        # What is reported (status rows, the CLI's last line) never shows a URL's credentials.
        if name in _REDACTED_FIELDS and isinstance(value, str):
            value = redact(value)
        object.__setattr__(self, name, value)

    def advance(self, position: float, now: float | None = None) -> None:
        """Record that the stream has been written up to `position`."""
        now = time.monotonic() if now is None else now
        self.position = position
        self._marks.append((now, position))
        while len(self._marks) > 2 and now - self._marks[1][0] > _RATE_WINDOW_S:
            self._marks.popleft()

    @property
    def rate(self) -> float | None:
        """Stream seconds per wall second over the recent past: 4.0 is four times real time."""
        marks = list(self._marks)
        if len(marks) < 2 or marks[-1][0] <= marks[0][0]:
            return None
        return (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])

    def fail(self, reason: str, state: str | None = None) -> None:
        self.errors += 1
        self.last_error = one_line(reason)
        if state is not None:
            self.state = state


@dataclass
class _Window:
    end: float
    frames: list[Frame] = field(default_factory=list)
    audio: list[AudioChunk] = field(default_factory=list)
    shown: list[ShownLine] = field(default_factory=list)  # text read on its frames, tokens not yet written


class StreamSink:
    """Encodes a stream's items into its memory and commits its checkpoints (module docstring).

    `time_offset` is added to every item's time: a watched folder's files are appended one after another on
    one stream time axis. `committed` is the stream time before which everything is in memory; it is the
    offset a checkpoint taken now records.
    """

    def __init__(
        self,
        *,
        store: MemoryStore,
        writer: StreamWriter,
        memory: StreamMemory,
        encoders: Encoders,
        perception: PerceptionConfig,
        window_s: float,
        exact: bool = True,
        stats: StreamStats | None = None,
        start: float = 0.0,
        time_offset: float = 0.0,
        lock: threading.Lock = ENCODE_LOCK,
        plugins: PluginManager | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.memory = memory
        self.encoders = encoders
        self.perception = perception
        self.window_s = float(window_s)
        self.exact = exact
        self.stats = stats or StreamStats()
        self.time_offset = float(time_offset)
        self.committed = float(start)
        self._lock = lock
        self.plugins = plugins
        if plugins is not None:
            writer.on_commit.append(self._committed)
        if allocator.trim_after_commit not in writer.on_commit:
            writer.on_commit.append(allocator.trim_after_commit)  # a daemon's heap must not creep
        # Labels, transcripts, events and files must not grow forever either (memory_store.retention).
        if not any(
            isinstance(f, RetentionSchedule) for f in writer.on_commit
        ):  # one per writer, not per file
            writer.on_commit.append(
                RetentionSchedule(
                    store.catalog, store.data_dir, writer.stream_id, writer.name, store.data_retention
                )
            )
        self._window: _Window | None = None
        self._period = 1.0 / perception.fps
        self._last_frame_wall: float | None = None
        self._picker: FramePicker | None = None
        if getattr(encoders, "ocr", None) is not None:  # a stand-in without the field reads no text
            self._picker = FramePicker(
                every_s=perception.ocr_every_s, change=perception.ocr_change,
                max_per_minute=perception.ocr_max_per_minute,
            )  # fmt: skip
        self._last_shown: frozenset[str] = frozenset()  # the lines of the last frame read

    @property
    def stream_id(self) -> str:
        return self.writer.stream_id

    @property
    def stream(self) -> str:
        return self.writer.name

    def _committed(self, info: Any) -> None:
        assert self.plugins is not None
        # the row's own path: relative to the data directory on local disk (as always), a URL in S3
        self.plugins.call(
            "on_checkpoint", stream=self.stream, seq=info.seq, t_end=info.t_end, path=info.location
        )

    # ----- input ------------------------------------------------------------------------------------------

    def add(self, item: Item) -> bool:
        """Take one decoded item; True when it closed a window (a checkpoint may be taken now)."""
        item = self._shift(item)
        t = item.t if isinstance(item, Frame) else item.t0
        closed = False
        if self._window is None:
            self._window = _Window(end=self._end_after(t))
        elif t >= self._window.end:
            self._close_window()
            self._window = _Window(end=self._end_after(t))  # an empty stretch is skipped, not looped over
            closed = True
        if isinstance(item, Frame):
            self._window.frames.append(item)
        else:
            self._window.audio.append(item)
        return closed

    def idle(self) -> None:
        """The input ran dry for now: a live source writes its waiting frames at once (keeps lag low)."""
        if not self.exact and self._window is not None and self._window.frames:
            self._encode_frames(self._window.frames)
            self._window.frames = []

    def finish(self, position: float | None = None) -> None:
        """The source ended: encode what is left; `position` (source time reached) moves `committed` on."""
        if self._window is not None:
            self._close_window(final=True)
            self._window = None
        if position is not None:
            self.committed = max(self.committed, position + self.time_offset)
            self.stats.advance(self.committed)

    def _shift(self, item: Item) -> Item:
        if not self.time_offset:
            return item
        if isinstance(item, Frame):
            return Frame(item.t + self.time_offset, item.image, item.wallclock)
        return AudioChunk(item.t0 + self.time_offset, item.samples, item.sample_rate, item.wallclock)

    def _end_after(self, t: float) -> float:
        return (int(t // self.window_s) + 1) * self.window_s

    # ----- encoding ---------------------------------------------------------------------------------------

    def _close_window(self, final: bool = False) -> None:
        window = self._window
        assert window is not None
        self._encode_frames(window.frames)
        self._encode_audio(window.audio, window.shown)
        if final:
            ends = [f.t + self._period for f in window.frames[-1:]] + [c.t1 for c in window.audio[-1:]]
            end = max([self.committed, *ends])
        else:
            end = window.end
        self.committed = max(self.committed, end)
        self.stats.advance(self.committed)

    def _encode_frames(self, frames: list[Frame]) -> None:
        batch_size = self.perception.batch_frames
        for start in range(0, len(frames), batch_size):
            batch = frames[start : start + batch_size]
            with self._lock:
                encoded = self.encoders.vision.encode([f.image for f in batch])
                tokens, t0, t1, where = _frame_tokens(batch, encoded, self._period)
                self.memory.write(tokens, t0, t1, modality="visual", positions=where)
            self.stats.frames += len(batch)
            add_labels(
                self.store.catalog,
                self.stream_id,
                [(f.t, e.labels) for f, e in zip(batch, encoded, strict=True)],
            )
            if self.plugins is not None:
                for f, e in zip(batch, encoded, strict=True):
                    self.plugins.call(
                        "on_frame", stream=self.stream, t=f.t, frame=f.image, tokens=e.tokens, labels=e.labels
                    )
                self.plugins.call(
                    "on_memory_write", stream=self.stream, modality="visual", t0=t0[0], t1=t1[-1],
                    count=len(t0),
                )  # fmt: skip
            if self._picker is not None:
                self._read_text(batch)
            if batch[-1].wallclock is not None:
                self._last_frame_wall = batch[-1].wallclock
                self.stats.lag_s = max(0.0, time.time() - batch[-1].wallclock)
                self.stats.advance(batch[-1].t)

    def _read_text(self, frames: list[Frame]) -> None:
        """Read the on-screen text of the frames the picker chooses into the catalog and the window.

        A line the previous frame read showed too is not stored again: a slide on screen for a minute is
        one row (and one token) at the time it appeared, not six.
        """
        assert self._picker is not None and self.encoders.ocr is not None
        lines: list[ShownLine] = []
        for frame in frames:
            if not self._picker.pick(frame.t, frame.image):
                continue
            with self._lock:
                read = self.encoders.ocr.read(frame.image)
            texts = frozenset(line.text for line in read)
            lines += [
                ShownLine(frame.t, line.text, line.score)
                for line in read
                if line.text not in self._last_shown
            ]
            self._last_shown = texts
            self.stats.detail["ocr_frames"] = int(self.stats.detail.get("ocr_frames", 0)) + 1
        if lines:
            add_screen_text(self.store.catalog, self.stream_id, lines)
            if self._window is not None:
                self._window.shown += lines

    def _encode_audio(self, chunks: list[AudioChunk], shown: list[ShownLine] | None = None) -> None:
        """Speech into the transcript, and speech and on-screen text as text tokens of the audio memory.

        Both are sentences embedded by the same text encoder, so both go to the memory's text-embedding
        bank ("audio"): a query is compared with them on one scale, whereas the visual bank's tokens are the
        vision encoder's, whose similarities to a query are on another. They are written in one time-ordered
        write, since a modality's tokens must come in time order.
        """
        segments: list[Segment] = []
        if self.encoders.speech is not None and chunks:
            for run in _contiguous_runs(chunks):
                audio = np.concatenate([c.samples for c in run])  # (n,) one contiguous stretch
                with self._lock:
                    segments += self.encoders.speech.transcribe(audio, t_offset=run[0].t0)
            segments = sorted(
                (piece for s in segments if s.text.strip() for piece in split_sentences(s)),
                key=lambda s: s.t0,
            )
        shown = shown or []
        if not segments and not shown:
            return
        spans = [(s.t0, max(s.t1, s.t0), s.text.strip()) for s in segments]
        spans += [(line.t, line.t + self._period, line.text) for line in shown]
        spans.sort(key=lambda span: span[0])
        with self._lock:
            embeddings = self.encoders.text.encode([text for _, _, text in spans])  # (k, d)
            self.memory.write(
                embeddings, [t0 for t0, _, _ in spans], [t1 for _, t1, _ in spans], modality="audio"
            )
        if segments:
            add_transcript(self.store.catalog, self.stream_id, _spoken_lines(segments))
            self.stats.segments += len(segments)
        if self.plugins is not None:
            for segment in segments:
                self.plugins.call("on_transcript", stream=self.stream, segment=segment)
            self.plugins.call(
                "on_memory_write", stream=self.stream, modality="audio", t0=spans[0][0],
                t1=max(t1 for _, t1, _ in spans), count=len(spans),
            )  # fmt: skip

    # ----- checkpoints ------------------------------------------------------------------------------------

    def checkpoint(
        self, source_state: dict[str, Any] | None = None, *, wait: bool = False, flush: bool = False
    ) -> None:
        """Commit the memory as it is now, at offset `committed`; in the background unless `wait`.

        `flush` first runs the TTT update on a partial mini-batch: at the end of a stream, so that the final
        state holds no raw pending tokens (they would be read raw, without the memory's rewrite).
        """
        if flush:
            self.memory.flush()
        self._settle()
        if wait:
            self.writer.commit(
                self.memory.state_dict(copy=False), source_offset=self.committed, source_state=source_state
            )
        else:
            self.writer.submit(self.memory, source_offset=self.committed, source_state=source_state)
        self.stats.checkpoints += 1

    def _settle(self) -> None:
        """Wait for the background checkpoint in flight. One that an object store failed (unreachable, or
        refusing) costs nothing committed: the stream's previous checkpoint stays the one it resumes from,
        rows are kept in line with it on a restart, and the next checkpoint (this one) holds everything the
        failed one would have. So it is one line in the log and a count in the status, and ingest goes on;
        the client's own retries with backoff (`[store.s3]`) have run already. Any other failure is raised.
        A checkpoint the stream ends with is committed synchronously, and its failure ends the stream."""
        try:
            self.writer.wait()
        except ObjectStoreError as exc:
            reason = one_line(str(exc))
            self.stats.fail(reason)
            self.stats.detail["checkpoints_failed"] = int(self.stats.detail.get("checkpoints_failed", 0)) + 1
            log.warning(
                "stream %s: checkpoint not committed, ingest goes on and the next checkpoint tries again: %s",
                self.stream, reason,
            )  # fmt: skip


def forget_from(store: MemoryStore, stream_id: str, offset: float) -> None:
    """Remove the catalog rows a killed run wrote at or after its last checkpoint: they will come again."""
    resume.forget_from(store.catalog, stream_id, offset)


_SENTENCE_END = (".", "?", "!")


def split_sentences(segment: Segment) -> list[Segment]:
    """A recognised segment cut into its sentences, by its word times.

    Whisper often returns two or three sentences as one segment several seconds long; each becomes its own
    transcript row and memory token, so a question about one of them cites that sentence's time rather
    than the whole stretch. A segment without word times, or of one sentence, is returned unchanged.
    """
    words = segment.words
    if len(words) < 2:
        return [segment]
    pieces: list[list[Word]] = [[]]
    for i, word in enumerate(words):
        pieces[-1].append(word)
        if word.text.strip().endswith(_SENTENCE_END) and i < len(words) - 1:
            pieces.append([])
    if len(pieces) == 1:
        return [segment]
    return [
        Segment(
            t0=piece[0].t0,
            t1=piece[-1].t1,
            text=" ".join(w.text.strip() for w in piece),
            words=tuple(piece),
            language=segment.language,
        )
        for piece in pieces
    ]


def _contiguous_runs(chunks: list[AudioChunk]) -> Iterator[list[AudioChunk]]:
    """Audio chunks split where they do not follow each other (a gap in the source, or dropped chunks)."""
    run = [chunks[0]]
    for chunk in chunks[1:]:
        if abs(chunk.t0 - run[-1].t1) > _AUDIO_GAP_S:
            yield run
            run = []
        run.append(chunk)
    yield run


def _frame_tokens(
    frames: list[Frame], encoded: list[FrameTokens], period: float
) -> tuple[np.ndarray, list[float], list[float], list[tuple[float, float]]]:
    """All tokens of a batch of frames with each token's span (the frame's time to the next sample) and
    where in its frame it lies (for the memory's 3-D RoPE)."""
    tokens = np.concatenate([e.tokens for e in encoded])  # (Σ n_i, d)
    t0 = [f.t for f, e in zip(frames, encoded, strict=True) for _ in range(e.tokens.shape[0])]
    where = [
        p
        for e in encoded
        for p in (
            kind_positions(e.kinds) if len(e.kinds) == e.tokens.shape[0] else [(0.0, 0.0)] * e.tokens.shape[0]
        )
    ]
    return tokens, t0, [t + period for t in t0], where


def _spoken_lines(segments: list[Segment]) -> list[SpokenLine]:
    return [
        SpokenLine(t0=s.t0, t1=s.t1, text=s.text.strip(), language=s.language, words=_words(s))
        for s in segments
    ]


def _words(segment: Segment) -> dict[str, Any] | None:
    if not segment.words:
        return None
    return {"words": [{"w": w.text, "t0": w.t0, "t1": w.t1, "p": w.probability} for w in segment.words]}


__all__ = ["ENCODE_LOCK", "Encoders", "StreamSink", "StreamStats", "forget_from"]
