"""The encoded footage that `vsalmonn train-memory` composes its training streams from.

The memory layer trains on arrays (`memory_store.training_streams.TokenPool`); making them needs decoding
and the encoders, which live here. Footage comes from a media folder the user names (the repository's
tests use ../shared/media); pictures may also come from inside installed packages (scikit-image and
matplotlib ship real photographs), so the default training set needs no download.

Every frame of each background clip is put on the 480x360 canvas and encoded under `background_looks`
augmentations (`Look`: a crop, a mirror image, brightness, contrast and colour gain); each sight under
`sight_looks` looks as a slow zoom of `zoom_steps` frames. The pool is cached in the data directory under a
name that hashes the data settings and the encoders, so a second run loads it in a second.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from vsalmonn.memory_store.training_streams import TokenPool

from .pipeline import Encoders

log = logging.getLogger(__name__)

CANVAS = (480, 360)  # width, height: the pipeline's 360p at 4:3
POOL_VERSION = 1


class SightSpec(BaseModel):
    """A needle picture: a file (relative to the media folder) or a resource inside an installed package."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    query: str = Field(description="what a user would ask to find it")
    file: str | None = None
    package: str | None = None
    path: str | None = Field(None, description="the resource inside `package`")

    @model_validator(mode="after")
    def _one_source(self) -> SightSpec:
        if (self.file is None) == (self.package is None or self.path is None):
            raise ValueError(f"sight {self.name!r}: give either file, or package and path")
        return self


class PoolConfig(BaseModel):
    """The ``[data]`` table of the training config file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    media: Path = Field(Path("../shared/media"), description="folder of the background clips and sight files")
    background: list[str] = Field(["vtest.avi"], description="background clips, relative to `media`")
    background_looks: int = Field(3, gt=0, description="augmentations of each background clip")
    sights: list[SightSpec] = Field(default_factory=list, description="needle pictures")
    sight_looks: int = Field(4, gt=1, description="augmentations of each sight (queries use another look)")
    zoom_steps: int = Field(6, gt=1, description="frames of each sight's slow zoom")
    seed: int = 0

    def key(self, encoders: str) -> str:
        """A short hash of everything that shapes the pool, for its cache file's name."""
        raw = json.dumps([POOL_VERSION, encoders, self.model_dump(mode="json")], sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Look:
    """An augmentation: a crop box (fractions of the frame) and photometric changes."""

    box: tuple[float, float, float, float]  # left, top, right, bottom in 0..1
    mirror: bool
    brightness: float
    contrast: float
    gain: tuple[float, float, float]

    @classmethod
    def draw(cls, rng: np.random.Generator, crop: tuple[float, float] = (0.75, 1.0)) -> Look:
        size = float(rng.uniform(*crop))
        left, top = float(rng.uniform(0, 1 - size)), float(rng.uniform(0, 1 - size))
        return cls(
            box=(left, top, left + size, top + size),
            mirror=bool(rng.random() < 0.5),
            brightness=float(rng.uniform(0.75, 1.25)),
            contrast=float(rng.uniform(0.8, 1.2)),
            gain=tuple(float(g) for g in rng.uniform(0.9, 1.1, 3)),  # type: ignore[arg-type]
        )

    def zoomed(self, box: tuple[float, float, float, float]) -> Look:
        return Look(box, self.mirror, self.brightness, self.contrast, self.gain)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 → the same size, cropped, scaled back, mirrored and recoloured."""
        height, width = rgb.shape[:2]
        left, top, right, bottom = self.box
        box = (left * width, top * height, right * width, bottom * height)
        image = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR, box=box)
        x = np.asarray(image, dtype=np.float32)  # (H, W, 3)
        if self.mirror:
            x = x[:, ::-1]
        mean = x.mean()
        x = (x - mean) * self.contrast + mean * self.brightness
        x = x * np.asarray(self.gain, np.float32)
        return np.clip(x, 0, 255).astype(np.uint8)


def letterbox(rgb: np.ndarray, canvas: tuple[int, int] = CANVAS) -> np.ndarray:
    """The picture scaled whole (aspect kept) onto a black canvas of (width, height)."""
    width, height = canvas
    h, w = rgb.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    image = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR))
    out = np.zeros((height, width, 3), np.uint8)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[top : top + nh, left : left + nw] = image
    return out


def clip_frames(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame of a clip on the canvas, and its frame rate."""
    if not path.is_file():
        raise FileNotFoundError(f"background clip {path} does not exist")
    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 0) or 25.0
            for frame in container.decode(video=0):
                frames.append(letterbox(frame.to_ndarray(format="rgb24")))
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot decode {path}: {exc}") from None
    if not frames:
        raise ValueError(f"{path} has no video frames")
    return frames, rate


@functools.cache
def _picture(media: Path, sight: SightSpec) -> np.ndarray:
    if sight.file is not None:
        source = media / sight.file
        if not source.is_file():
            raise FileNotFoundError(f"sight {sight.name!r}: {source} does not exist")
        with Image.open(source) as image:
            return letterbox(np.asarray(image.convert("RGB")))
    assert sight.package and sight.path
    try:
        resource = importlib.resources.files(sight.package).joinpath(sight.path)
    except ModuleNotFoundError:
        raise ValueError(
            f"sight {sight.name!r} needs package {sight.package!r}, which is not installed"
        ) from None
    with importlib.resources.as_file(resource) as path, Image.open(path) as image:
        return letterbox(np.asarray(image.convert("RGB")))


def zoom(
    look: Look, sources: Sequence[np.ndarray], end: float, centre: tuple[float, float]
) -> list[np.ndarray]:
    """`look` applied to each source in turn, its crop shrinking from the whole frame to `end` of it around
    `centre` (fractions of the frame): a slow zoom, over a still picture or the frames of a clip."""
    cx, cy = centre
    out = []
    for i, source in enumerate(sources):
        size = 1.0 + (end - 1.0) * (i / max(1, len(sources) - 1))
        left = min(max(cx - size / 2, 0.0), 1.0 - size)
        top = min(max(cy - size / 2, 0.0), 1.0 - size)
        out.append(look.zoomed((left, top, left + size, top + size)).apply(source))
    return out


def _zoom(look: Look, picture: np.ndarray, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A slow zoom from the whole picture towards 80-90 % of it around a point near the centre."""
    end = float(rng.uniform(0.8, 0.9))
    cx, cy = float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.4, 0.6))
    return zoom(look, [picture] * steps, end, (cx, cy))


def build_pool(config: PoolConfig, encoders: Encoders, batch: int = 16, progress: bool = True) -> TokenPool:
    """Decode, augment and encode the footage and pictures of `config` (minutes for the default set)."""
    if not config.sights:
        raise ValueError("the training data names no sights (needle pictures)")
    rng = np.random.default_rng(config.seed)
    clips = [(name, *clip_frames(config.media / name)) for name in config.background]
    pictures = [_picture(config.media, s) for s in config.sights]
    total = sum(len(f) for _, f, _ in clips) * config.background_looks
    total += len(pictures) * config.sight_looks * config.zoom_steps
    bar = tqdm(total=total, desc="encoding the training pool", unit="frame", disable=not progress)

    def encode(frames: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for i in range(0, len(frames), batch):
            out += [t.tokens for t in encoders.vision.encode(frames[i : i + batch])]
            bar.update(min(batch, len(frames) - i))
        return np.stack(out).astype(np.float32)  # (F, n, d)

    with bar:
        background, rates = [], []
        for _, frames, rate in clips:
            for _ in range(config.background_looks):
                look = Look.draw(rng)
                background.append(encode([look.apply(f) for f in frames]))
                rates.append(rate)
        sights = np.stack(
            [
                np.stack(
                    [
                        encode(_zoom(Look.draw(rng, crop=(0.9, 1.0)), picture, config.zoom_steps, rng))
                        for _ in range(config.sight_looks)
                    ]
                )
                for picture in pictures
            ]
        )  # (S, V, Z, n, d)
    queries = encoders.text.encode([s.query for s in config.sights]).astype(np.float32)  # (S, d)
    return TokenPool(
        background=background,
        background_fps=rates,
        sights=sights,
        sight_names=[s.name for s in config.sights],
        sight_queries=queries,
        info={"clips": [n for n, _, _ in clips], "frames_encoded": total},
    )


def load_or_build_pool(
    config: PoolConfig, encoder_names: str, folder: Path, encoders: Callable[[], Encoders]
) -> TokenPool:
    """The pool from its cache in `folder`, built first if absent (`encoders()` is called only then)."""
    path = folder / f"pool-{config.key(encoder_names)}.npz"
    if path.is_file():
        log.info("training pool: %s", path)
        return TokenPool.load(path)
    pool = build_pool(config, encoders())
    pool.info["encoders"] = encoder_names
    pool.save(path)
    log.info("training pool written to %s", path)
    return pool
