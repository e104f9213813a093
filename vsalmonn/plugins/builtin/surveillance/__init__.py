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
attribute), else the pipeline's shared one from the plugin context (``context.text_encoder`` of
`configure`: the program's one text model, so nothing is loaded twice), else, for a plugin used standalone
(a plugin manager that has no text encoder to give), one made in `configure` from the `text_encoder` /
`text_model` settings (these must name the encoder the pipeline uses: the tokens live in its space; one
that cannot be made keeps the plugin from loading, with the reason). Tokens of another dimension than the
embeddings are not scored (a warning per stream).

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

Modules: `settings` (the table), `motion`, `people` (the detector and its thread), `thumbnails`; this one
holds the plugin: its hooks, the queries and the alerts.

The module itself is a plugin too (its hooks are those of a default instance, `SURVEILLANCE`), so that
``vsalmonn.plugins.builtin.surveillance`` can be named as a plugin; naming the class
(``vsalmonn.plugins.builtin.surveillance:Surveillance``) gives each plugin manager its own instance.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from vsalmonn.memory_store.names import path_component
from vsalmonn.plugins import hookimpl
from vsalmonn.plugins.context import PluginContext

from .motion import MotionResult, grey_small, largest_region, motion_between
from .people import PeopleQueue, detect_people, hog_detector
from .settings import (
    DEFAULT_QUERY_THRESHOLD,
    MotionSettings,
    PeopleSettings,
    QuerySettings,
    SurveillanceSettings,
)
from .thumbnails import cv2_module, encode_jpeg, pil_image, write_thumbnail

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_QUERY_THRESHOLD",
    "Alert",
    "MotionResult",
    "MotionSettings",
    "PeopleSettings",
    "QuerySettings",
    "Surveillance",
    "SurveillanceSettings",
    "encode_jpeg",
    "grey_small",
    "largest_region",
    "motion_between",
    "safe_name",
]

NAME = "surveillance"
MOTION_EVENT = "surveillance.motion"
PEOPLE_EVENT = "surveillance.people"
QUERY_EVENT = "surveillance.query"

safe_name = path_component  # the store's retention and `status` find the thumbnails by the same rule


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'q'}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


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


# --- the plugin ---------------------------------------------------------------------------------------------


class Surveillance:
    """The surveillance plugin; see the module docstring. `text_encoder`: embeds the standing queries (a
    `vsalmonn.perception.encoders.TextEncoder`); without one, `configure` takes the context's shared one,
    and makes its own only when the context has none to give (and there are queries)."""

    def __init__(self, *, text_encoder: Any = None) -> None:
        self.settings = SurveillanceSettings()
        self.data_dir: Path | None = None
        self.people_enabled = False
        self._text_encoder = text_encoder
        self._emit: Callable[..., Any] | None = None
        self._queries: list[QuerySettings] = []
        self._query_vectors: np.ndarray | None = None  # (q, d) unit rows
        self._hog: Any = None
        self._people: PeopleQueue | None = None
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
    def configure(
        self,
        config: Any,
        emit: Callable[..., Any],
        data_dir: Path | None,
        context: PluginContext | None = None,
    ) -> None:
        settings = config
        if not isinstance(settings, SurveillanceSettings):
            settings = SurveillanceSettings.model_validate(config)
        self._close_people(timeout=0)
        if settings.thumbs and cv2_module() is None:  # imported here, not on a stream's first alert (~0.1 s)
            pil_image()
        hog, people = None, None
        if settings.people.enabled:
            cv2 = cv2_module()
            if cv2 is None:
                log.warning(
                    "surveillance: people detection is off: OpenCV is not installed "
                    "(pip install 'vsalmonn[people]')"
                )
            else:
                hog = hog_detector()
                people = PeopleQueue(self._detect_people, settings.people.max_pending)
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
            if self._text_encoder is None and context is not None:
                self._text_encoder = context.text_encoder  # the pipeline's (None: none to share)
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
        if encoder is None:  # standalone: no encoder given, and no context that shares the pipeline's
            from vsalmonn.perception.config import PerceptionConfig
            from vsalmonn.perception.encoders import create_encoder

            config = PerceptionConfig(
                text_encoder=self.settings.text_encoder, text_model=self.settings.text_model
            )
            started = time.perf_counter()
            encoder = create_encoder("text", config.text_encoder, config, self.data_dir or Path("."))
            self._text_encoder = encoder
            log.info("surveillance: own text encoder %s loaded in %.1f s (none shared)", config.text_encoder,
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
        """On the people thread: the detector on the frame, then maybe an alert."""
        found = detect_people(self._hog, frame, self.settings.people)
        if found is None:
            return
        with self._lock:
            counts = self._counts.setdefault(stream, {})
            counts["people_frames"] = counts.get("people_frames", 0) + (1 if found.boxes else 0)
        count = len(found.boxes)
        if count < self.settings.people.min_count:
            return
        boxes, confidences = found.boxes, found.confidences
        best = max(confidences)
        self._raise(
            stream, "people", "people", t, best, frame,
            cooldown=self.settings.people.cooldown_s,
            message=f"{count} {'person' if count == 1 else 'people'} in {stream} "
            f"(best confidence {best:.2f})",
            payload={"count": count, "score": best, "boxes": boxes, "confidences": confidences},
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
        return write_thumbnail(self.data_dir, stream, f"{kind}-{t:010.3f}.jpg", data)

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


# The module as a plugin: the hooks of one default instance (see the module docstring).
SURVEILLANCE = Surveillance()
plugin_settings_model = SURVEILLANCE.plugin_settings_model
configure = SURVEILLANCE.configure
on_frame = SURVEILLANCE.on_frame
on_stream_end = SURVEILLANCE.on_stream_end
on_shutdown = SURVEILLANCE.on_shutdown
