"""People by OpenCV's HOG detector, on a thread of the plugin: the frame queue and the detection itself.

Why a thread (150–250 ms a frame, far over the ingestion budget), the rescaling and what it finds: the
package docstring.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .settings import PeopleSettings
from .thumbnails import cv2_module

log = logging.getLogger(__package__ or __name__)


def hog_detector() -> Any:
    """OpenCV's HOG people detector, or None without OpenCV."""
    cv2 = cv2_module()
    if cv2 is None:
        return None
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


@dataclass(frozen=True)
class People:
    """The people found in one frame: boxes in frame pixels, and their confidences."""

    boxes: list[list[int]]
    confidences: list[float]


def detect_people(hog: Any, frame: np.ndarray, settings: PeopleSettings) -> People | None:
    """HOG on the rescaled grey `frame`: the detections at `min_confidence` or more (None without OpenCV)."""
    cv2 = cv2_module()
    if cv2 is None or hog is None:
        return None
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    factor = settings.short_side / min(grey.shape[:2])
    if abs(factor - 1.0) > 1e-3:
        interpolation = cv2.INTER_LINEAR if factor > 1 else cv2.INTER_AREA
        grey = cv2.resize(grey, None, fx=factor, fy=factor, interpolation=interpolation)
    stride = (settings.win_stride, settings.win_stride)
    rects, weights = hog.detectMultiScale(grey, winStride=stride, padding=(8, 8), scale=settings.scale)
    weights = np.ravel(weights) if len(rects) else np.zeros(0)
    keep = [i for i, w in enumerate(weights) if w >= settings.min_confidence]
    height, width = frame.shape[:2]
    boxes = []
    for i in keep:
        x, y, w, h = (float(v) / factor for v in rects[i])
        boxes.append(
            [max(0, round(x)), max(0, round(y)), min(width, round(x + w)), min(height, round(y + h))]
        )
    return People(boxes, [round(float(weights[i]), 3) for i in keep])


class PeopleQueue:
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
