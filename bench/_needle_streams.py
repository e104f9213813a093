"""The long streams of ``bench needle``: real footage with planted needles, encoded once and cached as tokens.

A stream of `seconds` at 1 FPS on the 480x360 canvas of ``bench qa`` (`_qa_streams`):

- **background**: the street footage of ``vtest.avi`` (79.5 s, 10 fps) cut into scenes of 20-90 s, each from a
  random point of the clip (any of its 795 frames, so loops do not repeat the same 1 FPS samples) and played
  on, looping, with its own light augmentation: a crop of 75-100 % of the width at a random place, scaled
  back to the canvas, a mirror image half of the time, brightness 0.75-1.25, contrast 0.8-1.2 and a gain of
  0.9-1.1 per colour channel. No two scenes share an augmentation, so no loop is identical.
- **visual needles**: 3-6 s of something else in place of the footage: one of the two other real clips (the
  glass teapot of ``anim-1.mov``, the dice of ``alea.mpg``, played from a random point) or a real photograph
  that ships inside a PyPI package (scikit-image's data, matplotlib's sample data: a cat, a cup of coffee, a
  rocket, an astronaut, a moped, a clock, Grace Hopper, coins, a man with a camera on a tripod), letterboxed
  and slowly zoomed (from 100 % towards 80-90 % of the frame at a random centre), with its own photometric
  jitter. Each needle has a description written for it (`SIGHTS`); each stream shows every sight once, so a
  description names exactly one moment. Photographs were chosen for showing objects that ImageNet's classes
  name: textures and scientific images (the moon, the Hubble deep field, a retina, bricks, gravel) map to
  unrelated classes in the default encoder (the moon to "nematode"), and would measure the encoder, not the
  memory.
- **spoken needles and distractors**: the ../shared/media/speech prompts (one speaker) in the audio: a
  distractor every 20-40 s, and the needles, prompts said nowhere else in the stream whose words differ from
  every other prompt placed, and whose voice lasts 1-8 s; a needle's query is its words (its transcript).

Needles are at seeded random times, at least `MIN_GAP_S` apart and never closer than that to each other's
edges, visual and spoken alike.

Encoding, as the pipeline does it (DESIGN §2) but with no video file in between: each frame goes through the
default vision encoder (EfficientNet-Lite0 with label grounding: 1 global + 4 regional tokens a frame), in
batches of `PerceptionConfig.batch_frames`, each token spanning its frame's second. Speech: each distinct
prompt was transcribed once by the real speech encoder (Whisper-base, `_qa_streams.prompt_transcripts`,
cached); its sentences (`split_sentences`, as the pipeline cuts them) are placed at the prompt's time and
embedded by the default text encoder (MiniLM) as audio tokens. So a stream's tokens are those an ingest of
the same footage would write, less the effects of video compression and of transcribing prompts in context.

The tokens and the stream's plan are cached under ``<data>/bench/`` as ``needle-<seconds>s-<seed>-v<N>``
(.npz + .json, written under temporary names and renamed when whole), so sweeps over memory settings cost
only memory work.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.encoders.base import Segment, Word
from vsalmonn.perception.pipeline import Encoders, split_sentences
from vsalmonn.perception.training_pool import Look, letterbox, zoom

from . import _qa_streams as qs

VERSION = 1  # part of the cached files' names: bump when the recipe below changes
FPS = 1.0
SCENE_S = (20.0, 90.0)
NEEDLE_S = (3, 6)  # whole seconds, both ends included
MIN_GAP_S = 15.0  # between any two needles, edge to edge
FIRST_S = 10.0  # no needle before this
DISTRACTOR_EVERY_S = (20.0, 40.0)
SPOKEN_NEEDLES = 13
SPOKEN_S = (1.0, 8.0)  # a spoken needle is a prompt whose voice lasts this long (some run to a minute)
STREET_FPS = 10.0  # vtest.avi's rate: a scene may start at any of its frames
CUT_MARGIN_S = 5.0  # a rotation's cut is at least this far from every needle and sentence


@dataclass(frozen=True)
class Sight:
    """What a visual needle shows: one of the shared clips, or a photograph inside an installed package."""

    name: str
    query: str
    clip: str | None = None  # a key of `_qa_streams.CLIPS`
    package: str | None = None  # the package whose data holds the photograph
    path: str | None = None  # the photograph, relative to that package


SIGHTS: tuple[Sight, ...] = (
    Sight("teapot", "a glass teapot beside a green ring", clip="teapot"),
    Sight("dice", "pink dice tumbling on a black background", clip="dice"),
    Sight("cat", "a cat", package="skimage", path="data/chelsea.png"),
    Sight("coffee", "a cup of coffee", package="skimage", path="data/coffee.png"),
    Sight("rocket", "a rocket on the launch pad", package="skimage", path="data/rocket.jpg"),
    Sight("astronaut", "an astronaut in a space suit", package="skimage", path="data/astronaut.png"),
    Sight("moped", "a moped", package="skimage", path="data/motorcycle_left.png"),
    Sight("clock", "a clock", package="skimage", path="data/clock_motion.png"),
    Sight(
        "officer",
        "a woman in a navy uniform",
        package="matplotlib",
        path="mpl-data/sample_data/grace_hopper.jpg",
    ),
    Sight("coins", "old coins", package="skimage", path="data/coins.png"),
    Sight("tripod", "a man with a camera on a tripod", package="skimage", path="data/camera.png"),
)


@dataclass(frozen=True)
class Needle:
    """A planted moment and the query that names it; its truth is [t0, t1] in stream seconds."""

    kind: str  # "visual" or "spoken"
    what: str  # a sight's name, or a prompt's file stem
    query: str
    t0: float
    t1: float

    @property
    def modality(self) -> str:
        return "visual" if self.kind == "visual" else "audio"


@dataclass
class NeedleStream:
    """A stream's tokens in time order and its needles."""

    name: str
    seconds: float
    seed: int
    needles: list[Needle]
    visual: np.ndarray  # (F, n, d) float32: n tokens for each of F frames
    frame_t: np.ndarray  # (F,) float64: each frame's time
    audio: np.ndarray  # (A, d) float32: one token per sentence
    audio_t0: np.ndarray  # (A,) float64
    audio_t1: np.ndarray  # (A,) float64
    queries: np.ndarray  # (N, d) float32: each needle's query, embedded by the text encoder
    info: dict[str, Any]


def load_or_build(
    shared: Path, folder: Path, seconds: float, seed: int, encoders: Callable[[], Encoders]
) -> NeedleStream:
    """The stream (`seconds`, `seed`) from the cache in `folder`, encoded first if absent (`encoders()` is
    called only then, so a warm cache loads no model)."""
    name = f"needle-{seconds:g}s-{seed}-v{VERSION}"
    tokens_path, plan_path = folder / f"{name}.npz", folder / f"{name}.json"
    if tokens_path.is_file() and plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        with np.load(tokens_path) as z:
            arrays = {k: z[k] for k in z.files}
        return NeedleStream(
            name=name,
            seconds=seconds,
            seed=seed,
            needles=[Needle(**n) for n in plan["needles"]],
            info={**plan["info"], "built_s": 0.0},
            **arrays,
        )
    started = time.perf_counter()
    enc = encoders()
    stream = _build(shared, folder, name, seconds, seed, enc)
    stream.info["built_s"] = time.perf_counter() - started
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.{os.getpid()}.tmp.npz"
    np.savez(
        tmp,
        visual=stream.visual,
        frame_t=stream.frame_t,
        audio=stream.audio,
        audio_t0=stream.audio_t0,
        audio_t1=stream.audio_t1,
        queries=stream.queries,
    )
    plan_tmp = folder / f".{name}.{os.getpid()}.tmp.json"
    plan_tmp.write_text(json.dumps({"needles": [asdict(n) for n in stream.needles], "info": stream.info}))
    os.replace(tmp, tokens_path)
    os.replace(plan_tmp, plan_path)  # the plan last: a stream counts as cached only when both are whole
    return stream


# -- the plan ------------------------------------------------------------------------------------------------


def _needle_times(rng: np.random.Generator, seconds: float, lengths: list[float]) -> list[float]:
    """Start times for needles of these lengths, in the given order, at random but at least MIN_GAP_S apart
    (and from the stream's start and end): the free time is shared out at random between the gaps."""
    slack = seconds - FIRST_S - MIN_GAP_S - sum(lengths) - MIN_GAP_S * (len(lengths) - 1)
    if slack <= 0:
        raise ValueError(f"{len(lengths)} needles do not fit into {seconds:g} s")
    gaps = rng.dirichlet(np.ones(len(lengths) + 1)) * slack  # (N + 1,)
    out: list[float] = []
    at = FIRST_S
    for i, length in enumerate(lengths):
        at += gaps[i] + (MIN_GAP_S if i else 0.0)
        out.append(round(float(at), 3))
        at += length
    return out


def _plan(
    shared: Path,
    rng: np.random.Generator,
    seconds: float,
    transcripts: dict[str, list[dict[str, Any]]],
    sights: tuple[Sight, ...] = SIGHTS,
    spoken_needles: int = SPOKEN_NEEDLES,
) -> tuple[list[Needle], list[tuple[float, str]]]:
    """The needles (time order) and every prompt placed (start, stem): needles and distractors; `sights`
    and `spoken_needles` are another variant's (``bench needle_open``).

    A visual needle starts on a whole second and lasts whole seconds, so its truth is exactly the frames
    it replaces; a spoken one lasts as long as its voice.
    """
    texts = {stem: " ".join(s["text"] for s in segs).strip() for stem, segs in transcripts.items()}
    said = [s for s in sorted(texts) if texts[s]]
    short = [s for s in said if SPOKEN_S[0] <= _voice_s(shared, s) <= SPOKEN_S[1]]
    spoken = [short[i] for i in rng.permutation(len(short))[:spoken_needles]]
    needle_texts = {texts[s].lower() for s in spoken}
    distractors = [s for s in said if s not in spoken and texts[s].lower() not in needle_texts]
    kinds = [("visual", s.name) for s in sights] + [("spoken", s) for s in spoken]
    order = rng.permutation(len(kinds))
    kinds = [kinds[i] for i in order]
    lengths = [
        float(rng.integers(NEEDLE_S[0], NEEDLE_S[1] + 1)) if kind == "visual" else _voice_s(shared, stem)
        for kind, stem in kinds
    ]
    starts = [
        float(np.ceil(t)) if kind == "visual" else float(t)
        for (kind, _), t in zip(kinds, _needle_times(rng, seconds, [x + 1.0 for x in lengths]), strict=True)
    ]
    query = {s.name: s.query for s in sights}
    needles = [
        Needle(kind, what, query[what] if kind == "visual" else texts[what], t, round(t + length, 3))
        for (kind, what), t, length in zip(kinds, starts, lengths, strict=True)
    ]
    placed = [(n.t0, n.what) for n in needles if n.kind == "spoken"]
    busy = [(n.t0 - 2.0, n.t1 + 2.0) for n in needles if n.kind == "spoken"]
    at, i = float(rng.uniform(*DISTRACTOR_EVERY_S)) / 2, 0
    order_d = [distractors[j] for j in rng.permutation(len(distractors))]
    while at < seconds:
        stem = order_d[i % len(order_d)]
        end = at + _voice_s(shared, stem)
        if end < seconds and not any(a < end and at < b for a, b in busy):
            placed.append((round(at, 3), stem))
            i += 1
        at = end + float(rng.uniform(*DISTRACTOR_EVERY_S))
    return needles, sorted(placed)


def _voice_s(shared: Path, stem: str) -> float:
    """Seconds of a prompt's voice (trimmed of silence, as it is placed)."""
    return round(len(qs.prompt_voice(shared, stem)) / qs.AUDIO_RATE, 3)


# -- pictures ------------------------------------------------------------------------------------------------


@functools.cache
def _photo(sight: Sight) -> np.ndarray:
    """The photograph on the canvas (RGB, letterboxed)."""
    assert sight.package and sight.path
    try:
        resource = importlib.resources.files(sight.package).joinpath(sight.path)
    except ModuleNotFoundError:
        raise RuntimeError(
            f"bench needle needs package {sight.package!r} for its photographs: pip install -e '.[bench]'"
        ) from None
    with importlib.resources.as_file(resource) as path, Image.open(path) as image:
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            # A cut-out (a silhouette, a logo) on white, as it is meant to be seen, not on black.
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
        rgb = np.asarray(image.convert("RGB"))
    return _letterbox(rgb)


_letterbox = letterbox  # the package's: the photographs and training pictures sit on the same canvas


def _frames(
    shared: Path,
    rng: np.random.Generator,
    seconds: float,
    needles: list[Needle],
    sights_shown: tuple[Sight, ...] = SIGHTS,
) -> Iterator[np.ndarray]:
    """The stream's frames, one per second: scenes of street footage with the visual needles in place."""
    _, street = qs._decoded(shared / qs.CLIPS["street"])
    sights = {s.name: s for s in sights_shown}
    shown = sorted((n for n in needles if n.kind == "visual"), key=lambda n: n.t0)
    total = int(seconds * FPS)
    t, k = 0, 0
    scene_start, scene_end, scene_first = 0, -1, 0
    scene_look: Look | None = None
    while t < total:
        if k < len(shown) and t >= shown[k].t0 * FPS:
            needle = shown[k]
            count = round((needle.t1 - needle.t0) * FPS)
            for frame in _needle_frames(shared, rng, sights[needle.what], count)[: total - t]:
                yield frame
                t += 1
            k += 1
            continue
        if t >= scene_end:
            scene_start, scene_end = t, t + int(rng.uniform(*SCENE_S) * FPS)
            scene_first = int(rng.integers(len(street)))
            scene_look = Look.draw(rng)
        assert scene_look is not None
        index = (scene_first + round((t - scene_start) * STREET_FPS / FPS)) % len(street)
        yield scene_look.apply(street[index])
        t += 1


def _needle_frames(shared: Path, rng: np.random.Generator, sight: Sight, count: int) -> list[np.ndarray]:
    """`count` frames of a sight at 1 FPS: its clip from a random point, or its photograph slowly zoomed."""
    look = Look.draw(rng, crop=(0.9, 1.0))
    end_size = float(rng.uniform(0.8, 0.9))
    cx, cy = float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.4, 0.6))
    if sight.clip is not None:
        times, images = qs._decoded(shared / qs.CLIPS[sight.clip])
        length = qs.clip_duration(shared, sight.clip)
        phase = float(rng.uniform(0, length))
        picks = [
            int(np.searchsorted(times, (phase + i / FPS) % length + 1e-6, side="right")) - 1
            for i in range(count)
        ]
        sources = [images[max(0, p)] for p in picks]
    else:
        sources = [_photo(sight)] * count
    return zoom(look, sources, end_size, (cx, cy))


# -- building ------------------------------------------------------------------------------------------------


def _build(
    shared: Path, folder: Path, name: str, seconds: float, seed: int, encoders: Encoders
) -> NeedleStream:
    rng = np.random.default_rng([seed, int(seconds)])
    transcripts = qs.prompt_transcripts(shared, encoders.speech, folder)
    needles, placed = _plan(shared, rng, seconds, transcripts)
    batch = PerceptionConfig().batch_frames
    tokens: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    total = int(seconds * FPS)
    started = time.perf_counter()
    bar = tqdm(total=total, desc=f"encoding {name}", unit="frame", file=sys.stderr, leave=False)
    with bar:
        for i, frame in enumerate(_frames(shared, rng, seconds, needles)):
            pending.append(frame)
            if len(pending) == batch or i == total - 1:
                tokens += [e.tokens for e in encoders.vision.encode(pending)]
                bar.update(len(pending))
                pending = []
    visual = np.stack(tokens).astype(np.float32)  # (F, n, d)
    sentences = _sentences(transcripts, placed, seconds)
    audio = encoders.text.encode([s.text.strip() for s in sentences]).astype(np.float32)  # (A, d)
    queries = encoders.text.encode([n.query for n in needles]).astype(np.float32)  # (N, d)
    info = {
        "frames": int(visual.shape[0]),
        "tokens_per_frame": int(visual.shape[1]),
        "visual_tokens": int(visual.shape[0] * visual.shape[1]),
        "audio_tokens": int(audio.shape[0]),
        "prompts_placed": len(placed),
        "encode_s": time.perf_counter() - started,
    }
    return NeedleStream(
        name=name,
        seconds=seconds,
        seed=seed,
        needles=needles,
        visual=visual,
        frame_t=np.arange(visual.shape[0], dtype=np.float64) / FPS,
        audio=audio,
        audio_t0=np.asarray([s.t0 for s in sentences], np.float64),
        audio_t1=np.asarray([max(s.t1, s.t0) for s in sentences], np.float64),
        queries=queries,
        info=info,
    )


def _sentences(
    transcripts: dict[str, list[dict[str, Any]]], placed: list[tuple[float, str]], seconds: float
) -> list[Segment]:
    """Every placed prompt's transcript at its place, cut into sentences as the pipeline cuts them."""
    out = []
    for at, stem in placed:
        for seg in transcripts[stem]:
            words = tuple(Word(w, at + a, at + b, p) for w, a, b, p in seg["words"])
            segment = Segment(at + seg["t0"], at + seg["t1"], seg["text"], words, seg["language"])
            out += [x for x in split_sentences(segment) if x.text.strip() and x.t0 < seconds]
    return sorted(out, key=lambda x: x.t0)


# -- rotations -----------------------------------------------------------------------------------------------


def rotations(stream: NeedleStream, count: int) -> list[NeedleStream]:
    """The stream and `count` - 1 rotations of it: the same footage and audio started at another point, a
    cut at a random second outside every needle and every sentence (±`CUT_MARGIN_S`), with what came before
    the cut moved to the end. Each frame's tokens are exactly those its frame gets (the vision encoder sees
    one frame at a time), so a rotation is a stream in its own right, with every needle at another age and
    every mini-batch and reduction of the memory falling elsewhere, at no encoding cost."""
    out = [stream]
    rng = np.random.default_rng([stream.seed, int(stream.seconds), 1])
    frames = stream.frame_t.shape[0]
    busy = [(n.t0, n.t1) for n in stream.needles] + list(zip(stream.audio_t0, stream.audio_t1, strict=True))
    while len(out) < count:
        cut = int(rng.integers(1, frames))
        if any(a - CUT_MARGIN_S <= cut <= b + CUT_MARGIN_S for a, b in busy):
            continue
        out.append(_rotated(stream, cut, len(out)))
    return out


def _rotated(stream: NeedleStream, cut: int, index: int) -> NeedleStream:
    """The stream from second `cut` to its end, then from its start to `cut`."""
    shift = stream.seconds - cut

    def moved(t: np.ndarray | float) -> Any:
        return np.where(np.asarray(t) >= cut, np.asarray(t) - cut, np.asarray(t) + shift)

    a0, a1 = moved(stream.audio_t0), moved(stream.audio_t1)  # (A,) each
    order = np.argsort(a0, kind="stable")  # (A,)
    needles = [
        Needle(n.kind, n.what, n.query, float(moved(n.t0)), float(moved(n.t0)) + (n.t1 - n.t0))
        for n in stream.needles
    ]
    return NeedleStream(
        name=f"{stream.name}@{cut}s",
        seconds=stream.seconds,
        seed=stream.seed,
        needles=needles,
        visual=np.roll(stream.visual, -cut, axis=0),  # (F, n, d): frame `cut` first
        frame_t=stream.frame_t,
        audio=stream.audio[order],
        audio_t0=a0[order],
        audio_t1=a1[order],
        queries=stream.queries,
        info={**stream.info, "rotation": index, "cut_s": cut},
    )
