"""On-screen text: which frames to read (`FramePicker`) and the lines read on one (`OcrReader`, rapidocr).

Meetings show slides and screens, cameras show signs and plates; none of it is in the speech or the vision
labels. rapidocr (PP-OCR's detector and recogniser as ONNX models, shipped inside its wheel, run by
onnxruntime) reads a frame in ~0.5-1 s on one of this machine's cores, fifty times the vision encoder's
cost, so only some frames are read: at a scene change, or every `ocr_every_s` seconds when nothing changed,
and never more than `ocr_max_per_minute` a minute.

A scene change is cheap to see: each frame becomes a 64x36 grey thumbnail (block means), and the share of
its cells that differ by more than `_CELL_DELTA` grey levels from the *last frame read* (not the previous
frame) is compared with `ocr_change`. Comparing with the last frame read means a change that came while the
rate cap held reading back is still seen once the cap allows it, and moving footage is read at the cap's
pace rather than at every frame.

The detector sees the frame at its sampled size (`limit_type: max` at 960 px): rapidocr's default scales the
*short* side up to 736 px, which triples the cost of a 360p frame for text a slide shows large anyway.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vsalmonn.errors import one_line

from . import EncoderError

log = logging.getLogger(__name__)

THUMB = (36, 64)  # rows, columns of the change thumbnail
_CELL_DELTA = 24.0  # grey levels (0-255) by which a thumbnail cell must differ to count as changed
DET_SIDE = 960  # the detector's input is scaled so that its long side is at most this


@dataclass(frozen=True)
class TextLine:
    """One line of text read on a frame, with the recogniser's confidence (0-1)."""

    text: str
    score: float


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A (36, 64) float32 grey thumbnail of an RGB (h, w, 3) frame, by block means (crops the remainder)."""
    grey = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    rows, cols = THUMB
    h, w = grey.shape
    bh, bw = max(h // rows, 1), max(w // cols, 1)
    grey = grey[: bh * min(rows, h), : bw * min(cols, w)]
    return grey.reshape(grey.shape[0] // bh, bh, grey.shape[1] // bw, bw).mean(axis=(1, 3))


def changed_share(a: np.ndarray, b: np.ndarray) -> float:
    """The share of thumbnail cells that differ by more than `_CELL_DELTA` grey levels."""
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a - b) > _CELL_DELTA).mean())


class FramePicker:
    """Decides, frame by frame in stream order, which frames are read (module docstring).

    A frame is read when at least `60 / max_per_minute` seconds have passed since the last one read and
    either it differs from that one by at least `change` or `every_s` seconds have passed. The first frame
    is always read. State is per stream and not checkpointed: a restart reads its first frame again.
    """

    def __init__(self, *, every_s: float, change: float, max_per_minute: float) -> None:
        self.every_s = float(every_s)
        self.change = float(change)
        self.min_gap_s = 60.0 / float(max_per_minute)
        self._last_t = -math.inf
        self._last_thumb: np.ndarray | None = None

    def pick(self, t: float, image: np.ndarray) -> bool:
        """Whether the frame at stream time `t` is to be read; records it as the last read when it is."""
        since = t - self._last_t
        if since < self.min_gap_s:
            return False
        thumb = thumbnail(image)
        due = since >= self.every_s or self._last_thumb is None
        if not due and changed_share(thumb, self._last_thumb) < self.change:  # type: ignore[arg-type]
            return False
        self._last_t, self._last_thumb = t, thumb
        return True


class OcrReader:
    """rapidocr with its bundled models, on the CPU: `read(frame)` gives the frame's lines above `min_score`.

    The models are the ones inside the installed wheel (`rapidocr/models/`); rapidocr only downloads when a
    model file is missing there, and this class refuses to start in that case rather than reach the network.
    """

    name = "rapidocr"

    def __init__(self, *, min_score: float = 0.6, threads: int = 1) -> None:
        try:
            from rapidocr import RapidOCR
        except ImportError as exc:
            raise EncoderError(
                "perception.ocr needs rapidocr: pip install 'vsalmonn[ocr]' (or turn perception.ocr off)"
            ) from exc
        _check_bundled_models()
        params = {
            "Global.log_level": "error",
            "Global.use_cls": False,  # text on screens is upright; the angle classifier costs ~15 %
            "Det.limit_type": "max",
            "Det.limit_side_len": DET_SIDE,
            "EngineConfig.onnxruntime.intra_op_num_threads": int(threads),
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        try:
            self._engine: Any = RapidOCR(params=params)
        except Exception as exc:  # rapidocr raises its own kinds and onnxruntime's
            raise EncoderError(f"cannot start rapidocr: {one_line(exc, typed=True)}") from exc
        self.min_score = float(min_score)

    def read(self, image: np.ndarray) -> list[TextLine]:
        """The lines of text on an RGB (h, w, 3) uint8 frame, top to bottom, those scored >= `min_score`."""
        bgr = np.ascontiguousarray(image[..., ::-1])  # rapidocr takes arrays in OpenCV's channel order
        result = self._engine(bgr)
        texts = getattr(result, "txts", None) or ()
        scores = getattr(result, "scores", None) or ()
        lines = []
        for text, score in zip(texts, scores, strict=False):
            text = " ".join(str(text).split())
            if text and float(score) >= self.min_score:
                lines.append(TextLine(text=text, score=float(score)))
        return lines


def _check_bundled_models() -> None:
    """EncoderError unless the wheel's model files are present (else rapidocr would try to download them)."""
    from importlib.resources import files

    folder = files("rapidocr") / "models"
    try:
        names = [p.name for p in folder.iterdir()]
    except (FileNotFoundError, NotADirectoryError, OSError):
        names = []
    for kind in ("det", "rec"):
        if not any(n.endswith(".onnx") and f"_{kind}_" in n for n in names):
            raise EncoderError(
                f"rapidocr's bundled {kind} model is missing from {folder}; reinstall rapidocr==3.10.0"
            )


__all__ = ["FramePicker", "OcrReader", "TextLine", "changed_share", "thumbnail"]
