"""Built-in plugin `surveillance` (DESIGN §7): motion, people and standing natural-language queries.

Enable it with ``[plugins] enabled = ["surveillance"]``; its settings table is `SurveillanceSettings`::

    [plugins.settings.surveillance]
    cooldown_s = 30                                  # per stream and alert kind (and query), stream seconds
    queries = ["a truck at the gate", {text = "people walking on a street", threshold = 0.17}]

    [plugins.settings.surveillance.motion]
    threshold = 0.01                                 # fraction of the frame that changed

    [plugins.settings.surveillance.people]           # needs OpenCV: pip install 'vsalmonn[people]'
    every_n_frames = 2

Events (source ``surveillance``; `t`: the frame's stream time; payload ``thumbnail``: the JPEG's path
relative to the data directory, None when none was written):

- ``surveillance.motion``: payload ``score`` (fraction of the frame that changed), ``region`` (fraction the
  largest changed region covers), ``box`` ([x0, y0, x1, y1] of that region, as fractions of the frame);
- ``surveillance.people``: payload ``count``, ``score`` (the best detection's confidence), ``boxes``
  ([x0, y0, x1, y1] in frame pixels), ``confidences``; the thumbnail shows the boxes;
- ``surveillance.query``: payload ``query``, ``score``, ``threshold``, ``token`` (0: the frame's global
  token, 1…: a regional one).

**Cooldown and de-duplication.** Alerts are keyed by (stream, kind) and, for queries, by the query's text.
A detection raises an event only when no alert of its key was raised in the last `cooldown_s` seconds of
stream time; otherwise it extends the current alert (its end time and hit count, see `alerts()`) and raises
nothing. A detection that goes on and on is therefore announced once every `cooldown_s`. A stream time that
goes backwards (a stream resumed from an earlier offset) starts a new alert.

**Motion** is frame differencing in numpy, no OpenCV needed: each sampled frame is reduced to a grey image
`motion.width` pixels wide (block means over the colour channels), compared with the previous sample of its
stream (1 s earlier at 1 FPS: anything that moved in that second shows), with the median difference taken
off first so that a global change of light does not count. A pixel changed when it moved more than
`pixel_threshold` grey levels. Motion is reported when the changed fraction reaches `threshold` *and* the
largest connected changed region (measured on cells of 4 × 4 analysis pixels) covers `min_area` of the
frame, so scattered noise does not raise alerts. Background subtraction (OpenCV's MOG2) was not chosen: at
1 FPS its model takes `history` frames (minutes) to settle, while the difference of consecutive samples is
right from the second frame and costs about 2–5 ms per 360p frame. On vtest.avi (pedestrians) 1–7 % of the
frame changes from one second to the next, the largest region 0.7–4 %; a static frame gives 0. After a gap
of more than `max_gap_s` the reference frame is replaced first.

**People** are found by OpenCV's HOG people detector (`cv2.HOGDescriptor_getDefaultPeopleDetector`, a
64 × 128 window), on every `every_n_frames`-th frame, rescaled so its short side is `people.short_side`
(540 px: 1.5 × a 360p frame, since the detector sees only people at least 128 px tall; lower it for speed,
raise it to find smaller people). It costs 150–250 ms a frame, far over the ingestion budget, so it runs on
a thread of the plugin: `on_frame` only queues a copy of the frame (up to `max_pending` per stream; when
full, the oldest waiting frame is dropped and counted: the newest frames win). Streams are served in turn.
Detections below `min_confidence` (the SVM's margin) are ignored. Without OpenCV, people detection is off,
with a warning. On vtest.avi (a street seen from above, 360p) every detection at confidence 0.5 or more was a
person, 1–5 per frame; the detection window (128 px at 540, 85 px at 360p, the person filling about three
quarters of it) misses people further away.

**Queries** are scored on each frame's tokens: score = the best cosine, over the frame's tokens (global and
regional), with the query's text embedding (both are unit vectors in the text space), raised as an alert
once it is at least the query's threshold on `query_min_frames` frames in a row. The text embeddings come
from the text encoder given to the plugin (`Surveillance(text_encoder=...)`, or the `text_encoder`
attribute, which the daemon may set to its own), else one made in `configure` from `text_encoder` /
`text_model` (these must name the encoder the pipeline uses: the tokens live in its space; one that cannot
be made keeps the plugin from loading, with the reason). Tokens of another dimension than the embeddings
are not scored (a warning per stream).

The default threshold, 0.30, was calibrated with the default encoders (EfficientNet-Lite0 grounded in
MiniLM) on the frames of the three shared clips (vtest.avi street, anim-1.mov teapot, alea.mpg dice; 90
frames at 1 FPS) with 18 queries that name what a clip shows and 24 unrelated ones (126 query-clip pairs).
Scores are low with this encoder, because the frame is placed in text space through ImageNet classes: on
vtest.avi "a street" scores 0.23–0.33 (median 0.30), "a sidewalk" median 0.31, "a parked car" up to 0.35,
but "people walking on a street" only 0.09–0.20 (median 0.15: ImageNet has no class for a person) and "a cat
sleeping on a sofa" −0.08–0.05. At 0.30 with 2 frames in a row, 10 of 18 matching pairs fire and 6 of 108
unrelated pairs do (at 0.20: 13 of 18 and 18 of 108; at 0.35 single frames: 6 of 18 and 7 of 108); the
false alarms are near misses such as "snow" (0.51) or "a football match" (0.39) on the street clip. So
general scenes and objects work at the default, and a query the encoder scores low (people: use the people
detector, or set its own threshold, e.g. 0.17) needs its threshold set after looking at its scores. Another
encoder (CLIP, SigLIP) has another scale: calibrate again.

Thumbnails are JPEGs of at most `thumb_size` px on their long side, written atomically (aside, then
renamed) under ``<data>/thumbs/<stream>/<kind>-<t>.jpg`` (kind: ``motion``, ``people``, ``query-<slug>``;
`t` as ``000012.000``; a stream name with characters other than letters, digits, ``.``, ``_`` and ``-``
gets a safe folder name with a hash, `safe_name`); they are encoded with OpenCV, else Pillow, else not
written (logged once).

Threads: `on_frame` runs on each stream's thread; the state of a stream is its own, and the alert table and
the people queue are shared under a lock. `flush()` waits for the queued people detections (`on_stream_end`
does so for its stream, `on_shutdown` for all, then stops the thread).

The module itself is a plugin too (its hooks are those of a default instance, `SURVEILLANCE`), so that
``vsalmonn.plugins.builtin.surveillance`` can be named as a plugin; naming the class
(``vsalmonn.plugins.builtin.surveillance:Surveillance``) gives each plugin manager its own instance.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vsalmonn.memory_store.names import path_component
from vsalmonn.memory_store.retention import plugin_paths
from vsalmonn.plugins import hookimpl

log = logging.getLogger(__name__)

NAME = "surveillance"
MOTION_EVENT = "surveillance.motion"
PEOPLE_EVENT = "surveillance.people"
QUERY_EVENT = "surveillance.query"
DEFAULT_QUERY_THRESHOLD = 0.30  # calibrated: module docstring
CELL = 4  # motion regions are measured on cells of CELL x CELL analysis pixels
CELL_FILL = 4  # changed pixels (of CELL * CELL) that make a cell part of a region
JPEG_QUALITY = 85


# --- settings -----------------------------------------------------------------------------------------------


class MotionSettings(BaseModel):
    """``[plugins.settings.surveillance.motion]``: frame differencing (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    threshold: float = Field(0.01, gt=0, le=1, description="fraction of the frame that must change")
    min_area: float = Field(
        0.002, ge=0, le=1, description="fraction of the frame the largest changed region must cover"
    )
    pixel_threshold: int = Field(25, ge=1, le=255, description="grey levels a pixel must change by")
    width: int = Field(160, ge=16, le=1920, description="width of the grey image compared (px)")
    max_gap_s: float = Field(5.0, gt=0, description="a longer gap between frames resets the reference")
    cooldown_s: float | None = Field(None, ge=0, description="overrides cooldown_s for motion alerts")


class PeopleSettings(BaseModel):
    """``[plugins.settings.surveillance.people]``: OpenCV's HOG people detector (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="needs opencv-python-headless (vsalmonn[people]); off without")
    every_n_frames: int = Field(2, ge=1, description="detect on every n-th sampled frame of a stream")
    min_confidence: float = Field(0.5, description="detections with a lower SVM margin are ignored")
    min_count: int = Field(1, ge=1, description="people in view that raise an alert")
    short_side: int = Field(
        540, ge=128, le=2160, description="frames are rescaled to this short side before detection (px)"
    )
    win_stride: int = Field(8, ge=1, le=64, description="HOG window stride (px): larger is faster")
    scale: float = Field(1.05, gt=1.0, le=2.0, description="HOG pyramid scale step: larger is faster")
    max_pending: int = Field(8, ge=1, description="frames per stream waiting for detection; oldest dropped")
    drain_s: float = Field(30.0, ge=0, description="at stream end or shutdown, wait this long for the queue")
    cooldown_s: float | None = Field(None, ge=0, description="overrides cooldown_s for people alerts")


class QuerySettings(BaseModel):
    """One standing query; a plain string in the settings is a query with the default threshold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1, max_length=500)
    threshold: float | None = Field(None, ge=-1, le=1, description="None: query_threshold")
    cooldown_s: float | None = Field(None, ge=0, description="None: cooldown_s")

    @field_validator("text")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("a query must not be blank")
        return value


class SurveillanceSettings(BaseModel):
    """The ``[plugins.settings.surveillance]`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    motion: MotionSettings = Field(default_factory=MotionSettings)
    people: PeopleSettings = Field(default_factory=PeopleSettings)
    queries: list[QuerySettings] = Field(
        default_factory=list, description='standing queries: "text" or {text, threshold, cooldown_s}'
    )
    query_threshold: float = Field(
        DEFAULT_QUERY_THRESHOLD, ge=-1, le=1, description="default query threshold (cosine; calibrated)"
    )
    query_min_frames: int = Field(2, ge=1, description="frames in a row at the threshold that raise an alert")
    cooldown_s: float = Field(30.0, ge=0, description="stream seconds between two alerts of one kind")
    thumbs: bool = Field(True, description="write a JPEG thumbnail per alert under <data>/thumbs")
    thumb_size: int = Field(320, ge=32, le=4096, description="long side of a thumbnail (px)")
    text_encoder: str = Field("minilm", description="text encoder of the queries: the pipeline's")
    text_model: Path | None = Field(None, description="its model folder (perception.text_model)")

    @field_validator("queries", mode="before")
    @classmethod
    def _plain_strings(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [{"text": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique_queries(self) -> SurveillanceSettings:
        seen: set[str] = set()
        for query in self.queries:
            if query.text.lower() in seen:
                raise ValueError(f"query {query.text!r} is given twice")
            seen.add(query.text.lower())
        return self


# --- helpers ------------------------------------------------------------------------------------------------


def _cv2() -> Any:
    """OpenCV's module, or None when it is not installed (imported on each call: tests can hide it)."""
    try:
        return importlib.import_module("cv2")
    except ImportError:
        return None


def _pil_image() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError:
        return None


safe_name = path_component  # the store's retention and `status` find the thumbnails by the same rule


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'q'}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def grey_small(frame: np.ndarray, width: int) -> np.ndarray:
    """(h, w) float32 grey image about `width` px wide: means of `step` x `step` blocks over all channels.

    Two contiguous integer reductions (each row's blocks, then each block's rows): about 3 ms for a 360p
    frame, where one float mean over both block axes takes 8.
    """
    height_in, width_in = frame.shape[:2]
    channels = frame.shape[2] if frame.ndim == 3 else 1
    step = max(1, width_in // width)
    h, w = height_in // step, width_in // step
    rows = frame[: h * step, : w * step].reshape(h * step, w, step * channels)
    sums = rows.sum(axis=-1, dtype=np.uint32).reshape(h, step, w).sum(axis=1, dtype=np.uint32)
    return sums.astype(np.float32) * np.float32(1.0 / (step * step * channels))


def largest_region(active: np.ndarray) -> tuple[int, tuple[int, int, int, int] | None]:
    """Cells in the largest 4-connected region of the bool grid `active`, and its box (r0, c0, r1, c1)."""
    rows, cols = active.shape
    seen = np.zeros_like(active, dtype=bool)
    best, box = 0, None
    for r0, c0 in zip(*np.nonzero(active), strict=True):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        stack = [(int(r0), int(c0))]
        size, top, left, bottom, right = 0, int(r0), int(c0), int(r0), int(c0)
        while stack:
            r, c = stack.pop()
            size += 1
            top, bottom, left, right = min(top, r), max(bottom, r), min(left, c), max(right, c)
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < rows and 0 <= cc < cols and active[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
        if size > best:
            best, box = size, (top, left, bottom + 1, right + 1)
    return best, box


@dataclass(frozen=True)
class MotionResult:
    score: float  # fraction of the analysis image that changed
    region: float  # fraction the largest changed region covers
    box: tuple[float, float, float, float] | None  # that region: x0, y0, x1, y1 as fractions of the frame


def motion_between(previous: np.ndarray, current: np.ndarray, pixel_threshold: float) -> MotionResult:
    """How much changed between two grey images of `grey_small` (module docstring)."""
    diff = current - previous
    diff -= np.median(diff)  # a global change of light is not motion
    changed = np.abs(diff) > pixel_threshold
    score = float(changed.mean())
    h, w = (changed.shape[0] // CELL) * CELL, (changed.shape[1] // CELL) * CELL
    if score == 0.0 or h == 0 or w == 0:
        return MotionResult(score, 0.0, None)
    cells = changed[:h, :w].reshape(h // CELL, CELL, w // CELL, CELL).sum(axis=(1, 3)) >= CELL_FILL
    size, box = largest_region(cells)
    if box is None:
        return MotionResult(score, 0.0, None)
    rows, cols = cells.shape
    r0, c0, r1, c1 = box
    return MotionResult(score, size / cells.size, (c0 / cols, r0 / rows, c1 / cols, r1 / rows))


@dataclass
class Alert:
    """One alert as it stands: raised at `t0`, extended by later detections within its cooldown."""

    stream: str
    kind: str  # motion, people, query
    key: str  # the kind, or "query:<text>"
    t0: float
    t1: float
    hits: int = 1
    event_id: int | None = None
    score: float | None = None  # the best score seen

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "kind": self.kind,
            "key": self.key,
            "t0": self.t0,
            "t1": self.t1,
            "hits": self.hits,
            "event_id": self.event_id,
            "score": self.score,
        }


@dataclass
class _StreamState:
    """What one stream's frames leave behind; touched only by that stream's thread."""

    frames: int = 0
    motion_ref: np.ndarray | None = None
    motion_t: float | None = None
    streaks: dict[str, int] = field(default_factory=dict)
    warned_dim: bool = False


class _PeopleQueue:
    """Frames waiting for the people detector, per stream, served in turn by one thread (module docstring)."""

    def __init__(self, detect: Callable[[str, float, np.ndarray], None], max_pending: int) -> None:
        self.detect = detect
        self.max_pending = max_pending
        self.dropped: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.errors = 0
        self._pending: dict[str, deque[tuple[float, np.ndarray]]] = {}
        self._busy: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def submit(self, stream: str, t: float, frame: np.ndarray) -> None:
        with self._cond:
            if self._stopping:
                return
            pending = self._pending.setdefault(stream, deque())
            if len(pending) >= self.max_pending:
                pending.popleft()
                self.dropped[stream] = self.dropped.get(stream, 0) + 1
            pending.append((t, frame))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vsalmonn-surveillance", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _next(self) -> tuple[str, float, np.ndarray] | None:
        """The oldest frame of the next stream in turn (the caller holds the lock); None when none waits."""
        for stream in list(self._pending):
            pending = self._pending[stream]
            if pending:
                self._pending[stream] = self._pending.pop(stream)  # to the end: the others come first
                t, frame = pending.popleft()
                return stream, t, frame
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                item = self._next()
                while item is None and not self._stopping:
                    self._cond.wait()
                    item = self._next()
                if item is None:
                    return
                self._busy.add(item[0])
            stream, t, frame = item
            try:
                self.detect(stream, t, frame)
            except Exception as exc:  # the thread must outlive a bad frame
                self.errors += 1
                log.error("surveillance: people detection failed on %s at %.1f s: %s", stream, t, exc)
            finally:
                with self._cond:
                    self._busy.discard(stream)
                    self.done[stream] = self.done.get(stream, 0) + 1
                    self._cond.notify_all()

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per stream: (frames detected, frames dropped)."""
        with self._cond:
            streams = set(self.done) | set(self.dropped)
            return {s: (self.done.get(s, 0), self.dropped.get(s, 0)) for s in streams}

    def flush(self, stream: str | None = None, timeout: float | None = None) -> bool:
        """Wait until no frame (of `stream`, or of any) waits or is being detected; False on timeout."""

        def idle() -> bool:
            if stream is None:
                return not self._busy and not any(self._pending.values())
            return stream not in self._busy and not self._pending.get(stream)

        with self._cond:
            return self._cond.wait_for(idle, timeout)

    def close(self, timeout: float | None) -> None:
        """Detect what waits (up to `timeout` seconds), then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("surveillance: people detection still running at shutdown")


# --- the plugin ---------------------------------------------------------------------------------------------


class Surveillance:
    """The surveillance plugin; see the module docstring. `text_encoder`: embeds the standing queries (a
    `vsalmonn.perception.encoders.TextEncoder`); without one, `configure` makes one when there are queries."""

    def __init__(self, *, text_encoder: Any = None) -> None:
        self.settings = SurveillanceSettings()
        self.data_dir: Path | None = None
        self.people_enabled = False
        self._text_encoder = text_encoder
        self._emit: Callable[..., Any] | None = None
        self._queries: list[QuerySettings] = []
        self._query_vectors: np.ndarray | None = None  # (q, d) unit rows
        self._hog: Any = None
        self._people: _PeopleQueue | None = None
        self._streams: dict[str, _StreamState] = {}
        self._alerts: dict[tuple[str, str], Alert] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._thumb_warned = False
        self._lock = threading.Lock()  # the tables above; never held while calling out

    # ----- hooks ------------------------------------------------------------------------------------------

    @hookimpl
    def plugin_settings_model(self) -> type[BaseModel]:
        return SurveillanceSettings

    @hookimpl
    def configure(self, config: Any, emit: Callable[..., Any], data_dir: Path | None) -> None:
        settings = config
        if not isinstance(settings, SurveillanceSettings):
            settings = SurveillanceSettings.model_validate(config)
        self._close_people(timeout=0)
        if settings.thumbs and _cv2() is None:  # imported here, not on a stream's first alert (~0.1 s)
            _pil_image()
        hog, people = None, None
        if settings.people.enabled:
            cv2 = _cv2()
            if cv2 is None:
                log.warning(
                    "surveillance: people detection is off: OpenCV is not installed "
                    "(pip install 'vsalmonn[people]')"
                )
            else:
                hog = cv2.HOGDescriptor()
                hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
                people = _PeopleQueue(self._detect_people, settings.people.max_pending)
        with self._lock:
            self.settings = settings
            self._emit = emit
            self.data_dir = Path(data_dir) if data_dir is not None else None
            self._hog, self._people = hog, people
            self.people_enabled = people is not None
            self._queries = list(settings.queries)
            self._query_vectors = None
            self._streams.clear()
            self._alerts.clear()
            self._counts.clear()
        if self._queries:
            self._embed_queries()

    @hookimpl
    def on_frame(self, stream: str, t: float, frame: np.ndarray, tokens: np.ndarray) -> None:
        t = float(t)
        state = self._stream(stream)
        state.frames += 1
        settings = self.settings
        if settings.motion.enabled:
            self._motion(stream, state, t, frame)
        if self._query_vectors is not None:
            self._score_queries(stream, state, t, frame, tokens)
        people = self._people
        if people is not None and (state.frames - 1) % settings.people.every_n_frames == 0:
            people.submit(stream, t, np.array(frame, dtype=np.uint8, copy=True))

    @hookimpl
    def on_stream_end(self, stream: str) -> None:
        people = self._people
        if people is not None and not people.flush(stream, self.settings.people.drain_s):
            log.warning("surveillance: %s ended with people detections still queued", stream)
        with self._lock:
            state = self._streams.get(stream)
        if state is not None:  # a stream that starts again compares nothing with its old last frame
            state.motion_ref, state.motion_t = None, None
            state.streaks.clear()

    @hookimpl
    def on_shutdown(self) -> None:
        self._close_people(timeout=self.settings.people.drain_s)

    # ----- public -----------------------------------------------------------------------------------------

    @property
    def text_encoder(self) -> Any:
        return self._text_encoder

    @text_encoder.setter
    def text_encoder(self, encoder: Any) -> None:
        """Use `encoder` (the pipeline's own, say) for the queries from now on: they are embedded again."""
        self._text_encoder = encoder
        if self._queries and encoder is not None:
            self._embed_queries()

    def flush(self, stream: str | None = None, timeout: float | None = None) -> bool:
        """Wait until the queued people detections (of `stream`, or all) are done; False on timeout."""
        people = self._people
        return True if people is None else people.flush(stream, timeout)

    def alerts(self, stream: str | None = None) -> list[dict[str, Any]]:
        """The current alert of each key (of `stream`, or all): t0, t1, hits, event_id, best score."""
        with self._lock:
            return [a.as_dict() for a in self._alerts.values() if stream is None or a.stream == stream]

    def stats(self) -> dict[str, dict[str, int]]:
        """Per stream: frames seen, events raised and detections folded into an alert, people queue counts."""
        people = self._people
        with self._lock:
            out = {name: dict(counts) for name, counts in self._counts.items()}
            for name, state in self._streams.items():
                out.setdefault(name, {})["frames"] = state.frames
        if people is not None:
            for name, (done, dropped) in people.counts().items():
                entry = out.setdefault(name, {})
                entry["people_detected"] = entry.get("people_detected", 0) + done
                entry["people_dropped"] = entry.get("people_dropped", 0) + dropped
        return out

    # ----- detectors --------------------------------------------------------------------------------------

    def _stream(self, stream: str) -> _StreamState:
        with self._lock:
            state = self._streams.get(stream)
            if state is None:
                state = self._streams[stream] = _StreamState()
            return state

    def _motion(self, stream: str, state: _StreamState, t: float, frame: np.ndarray) -> None:
        settings = self.settings.motion
        grey = grey_small(frame, settings.width)
        previous, previous_t = state.motion_ref, state.motion_t
        state.motion_ref, state.motion_t = grey, t
        if (
            previous is None
            or previous.shape != grey.shape
            or previous_t is None
            or not 0 < t - previous_t <= settings.max_gap_s
        ):
            return
        result = motion_between(previous, grey, settings.pixel_threshold)
        if result.score < settings.threshold or result.region < settings.min_area:
            return
        box = None if result.box is None else [round(v, 4) for v in result.box]
        self._raise(
            stream, "motion", "motion", t, result.score, frame,
            cooldown=settings.cooldown_s,
            message=f"motion in {stream}: {100 * result.score:.1f}% of the frame changed",
            payload={"score": round(result.score, 4), "region": round(result.region, 4), "box": box},
        )  # fmt: skip

    def _embed_queries(self) -> None:
        encoder = self._text_encoder
        if encoder is None:
            from vsalmonn.perception.config import PerceptionConfig
            from vsalmonn.perception.encoders import create_encoder

            config = PerceptionConfig(
                text_encoder=self.settings.text_encoder, text_model=self.settings.text_model
            )
            started = time.perf_counter()
            encoder = create_encoder("text", config.text_encoder, config, self.data_dir or Path("."))
            self._text_encoder = encoder
            log.info("surveillance: text encoder %s loaded in %.1f s", config.text_encoder,
                     time.perf_counter() - started)  # fmt: skip
        vectors = np.asarray(encoder.encode([q.text for q in self._queries]), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        with self._lock:
            self._query_vectors = np.ascontiguousarray(vectors)

    def _score_queries(
        self, stream: str, state: _StreamState, t: float, frame: np.ndarray, tokens: np.ndarray
    ) -> None:
        vectors = self._query_vectors
        if vectors is None or tokens is None or len(tokens) == 0:
            return
        tokens = np.asarray(tokens, dtype=np.float32)
        if tokens.ndim != 2 or tokens.shape[1] != vectors.shape[1]:
            if not state.warned_dim:
                state.warned_dim = True
                log.warning(
                    "surveillance: %s: frame tokens are %s, the query embeddings %d-d: queries not scored "
                    "(text_encoder must be the pipeline's)", stream, tokens.shape, vectors.shape[1],
                )  # fmt: skip
            return
        sims = tokens @ vectors.T  # (n, q): tokens and queries are unit rows
        best = sims.argmax(axis=0)
        scores = sims[best, np.arange(sims.shape[1])]
        for index, query in enumerate(self._queries):
            threshold = self.settings.query_threshold if query.threshold is None else query.threshold
            score = float(scores[index])
            if score < threshold:
                state.streaks[query.text] = 0
                continue
            streak = state.streaks[query.text] = state.streaks.get(query.text, 0) + 1
            if streak < self.settings.query_min_frames:
                continue
            self._raise(
                stream, "query", f"query:{query.text}", t, score, frame,
                cooldown=query.cooldown_s,
                message=f"{stream}: {query.text!r} seen (score {score:.2f} >= {threshold:.2f})",
                payload={
                    "query": query.text, "score": round(score, 4), "threshold": threshold,
                    "token": int(best[index]),
                },
                thumb_kind=f"query-{_slug(query.text)}",
            )  # fmt: skip

    def _detect_people(self, stream: str, t: float, frame: np.ndarray) -> None:
        """On the people thread: HOG on the rescaled grey frame, then maybe an alert."""
        cv2, hog, settings = _cv2(), self._hog, self.settings.people
        if cv2 is None or hog is None:
            return
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        factor = settings.short_side / min(grey.shape[:2])
        if abs(factor - 1.0) > 1e-3:
            interpolation = cv2.INTER_LINEAR if factor > 1 else cv2.INTER_AREA
            grey = cv2.resize(grey, None, fx=factor, fy=factor, interpolation=interpolation)
        stride = (settings.win_stride, settings.win_stride)
        rects, weights = hog.detectMultiScale(grey, winStride=stride, padding=(8, 8), scale=settings.scale)
        weights = np.ravel(weights) if len(rects) else np.zeros(0)
        keep = [i for i, w in enumerate(weights) if w >= settings.min_confidence]
        with self._lock:
            counts = self._counts.setdefault(stream, {})
            counts["people_frames"] = counts.get("people_frames", 0) + (1 if keep else 0)
        if len(keep) < settings.min_count:
            return
        height, width = frame.shape[:2]
        boxes = []
        for i in keep:
            x, y, w, h = (float(v) / factor for v in rects[i])
            boxes.append(
                [max(0, round(x)), max(0, round(y)), min(width, round(x + w)), min(height, round(y + h))]
            )
        confidences = [round(float(weights[i]), 3) for i in keep]
        best = max(confidences)
        self._raise(
            stream, "people", "people", t, best, frame,
            cooldown=settings.cooldown_s,
            message=f"{len(keep)} {'person' if len(keep) == 1 else 'people'} in {stream} "
            f"(best confidence {best:.2f})",
            payload={"count": len(keep), "score": best, "boxes": boxes, "confidences": confidences},
            boxes=boxes,
        )  # fmt: skip

    # ----- alerts -----------------------------------------------------------------------------------------

    def _raise(
        self,
        stream: str,
        kind: str,
        key: str,
        t: float,
        score: float,
        frame: np.ndarray,
        *,
        cooldown: float | None,
        message: str,
        payload: dict[str, Any],
        thumb_kind: str | None = None,
        boxes: list[list[int]] | None = None,
    ) -> None:
        """A detection: a new alert (an event, a thumbnail), or one more hit of the current one."""
        cooldown_s = self.settings.cooldown_s if cooldown is None else cooldown
        with self._lock:
            current = self._alerts.get((stream, key))
            counts = self._counts.setdefault(stream, {})
            if current is not None and current.t0 <= t < current.t0 + cooldown_s:
                current.t1 = max(current.t1, t)
                current.hits += 1
                current.score = score if current.score is None else max(current.score, score)
                counts[f"{kind}_folded"] = counts.get(f"{kind}_folded", 0) + 1
                return
            alert = self._alerts[(stream, key)] = Alert(stream, kind, key, t, t, score=score)
            counts[f"{kind}_alerts"] = counts.get(f"{kind}_alerts", 0) + 1
            emit = self._emit
        thumbnail = self._thumbnail(stream, thumb_kind or kind, t, frame, boxes)
        log.info("surveillance: %s", message)
        if emit is None:
            return
        record = emit(f"surveillance.{kind}", message, stream=stream, t=t, **payload, thumbnail=thumbnail)
        event_id = getattr(record, "id", None)
        if event_id is not None:
            with self._lock:
                alert.event_id = event_id

    def _thumbnail(
        self, stream: str, kind: str, t: float, frame: np.ndarray, boxes: list[list[int]] | None
    ) -> str | None:
        """Write the alert's JPEG; its path relative to the data directory, or None when none was written."""
        if not self.settings.thumbs or self.data_dir is None:
            return None
        try:
            data = encode_jpeg(frame, self.settings.thumb_size, boxes)
        except Exception as exc:
            log.warning("surveillance: thumbnail of %s at %.1f s not encoded: %s", stream, t, exc)
            return None
        if data is None:
            if not self._thumb_warned:
                self._thumb_warned = True
                log.debug("surveillance: no JPEG encoder (OpenCV or Pillow): alerts carry no thumbnails")
            return None
        path = plugin_paths(self.data_dir, stream)[0] / f"{kind}-{t:010.3f}.jpg"
        relative = path.relative_to(self.data_dir)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # a reader sees the whole file or none
        except OSError as exc:
            log.warning("surveillance: thumbnail %s not written: %s", path, exc)
            tmp.unlink(missing_ok=True)
            return None
        return relative.as_posix()

    def _close_people(self, timeout: float | None) -> None:
        with self._lock:
            people, self._people = self._people, None
            self.people_enabled = False
        if people is None:
            return
        people.close(timeout)
        with self._lock:  # its counts stay in stats()
            for stream, (done, dropped) in people.counts().items():
                counts = self._counts.setdefault(stream, {})
                counts["people_detected"] = counts.get("people_detected", 0) + done
                counts["people_dropped"] = counts.get("people_dropped", 0) + dropped


def encode_jpeg(frame: np.ndarray, size: int, boxes: list[list[int]] | None = None) -> bytes | None:
    """`frame` (RGB) as JPEG bytes, long side at most `size`, `boxes` drawn in; None without an encoder."""
    height, width = frame.shape[:2]
    factor = min(1.0, size / max(height, width))
    cv2 = _cv2()
    if cv2 is not None:
        image = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR)
        for x0, y0, x1, y1 in boxes or ():
            cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), (0, 255, 0), 2)
        if factor < 1.0:
            new_size = (max(1, round(width * factor)), max(1, round(height * factor)))
            image = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return bytes(data) if ok else None
    pil = _pil_image()
    if pil is not None:
        import io

        image = pil.fromarray(np.ascontiguousarray(frame[..., :3]))
        if boxes:
            from PIL import ImageDraw

            draw = ImageDraw.Draw(image)
            for box in boxes:
                draw.rectangle([int(v) for v in box], outline=(0, 255, 0), width=2)
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()
    return None


# The module as a plugin: the hooks of one default instance (see the module docstring).
SURVEILLANCE = Surveillance()
plugin_settings_model = SURVEILLANCE.plugin_settings_model
configure = SURVEILLANCE.configure
on_frame = SURVEILLANCE.on_frame
on_stream_end = SURVEILLANCE.on_stream_end
on_shutdown = SURVEILLANCE.on_shutdown
