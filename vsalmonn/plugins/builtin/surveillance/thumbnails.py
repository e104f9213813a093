"""Alert thumbnails: JPEGs encoded with OpenCV, else Pillow, written atomically under ``<data>/thumbs``."""

from __future__ import annotations

import importlib
import io
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from vsalmonn.memory_store.retention import plugin_paths

log = logging.getLogger(__package__ or __name__)

JPEG_QUALITY = 85


def cv2_module() -> Any:
    """OpenCV's module, or None when it is not installed (imported on each call: tests can hide it)."""
    try:
        return importlib.import_module("cv2")
    except ImportError:
        return None


def pil_image() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError:
        return None


def encode_jpeg(frame: np.ndarray, size: int, boxes: list[list[int]] | None = None) -> bytes | None:
    """`frame` (RGB) as JPEG bytes, long side at most `size`, `boxes` drawn in; None without an encoder."""
    height, width = frame.shape[:2]
    factor = min(1.0, size / max(height, width))
    cv2 = cv2_module()
    if cv2 is not None:
        image = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR)
        for x0, y0, x1, y1 in boxes or ():
            cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), (0, 255, 0), 2)
        if factor < 1.0:
            new_size = (max(1, round(width * factor)), max(1, round(height * factor)))
            image = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return bytes(data) if ok else None
    pil = pil_image()
    if pil is not None:
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


def write_thumbnail(data_dir: Path, stream: str, name: str, data: bytes) -> str | None:
    """Write `data` as `stream`'s thumbnail `name`, whole or not at all; its path relative to `data_dir`."""
    path = plugin_paths(data_dir, stream)[0] / name
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
    return path.relative_to(data_dir).as_posix()
