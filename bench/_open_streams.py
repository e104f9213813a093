"""The streams of ``bench needle_open``: `_needle_streams`' recipe with needles described outside ImageNet.

The background, the audio (prompts as distractors, spoken needles) and the timing rules are exactly those of
``bench needle`` (`_needle_streams`: `_plan`, `_frames`, `_sentences`, `rotations` are reused, not copied).
What differs is the visual needles (`OPEN_SIGHTS`): real pictures again (the two shared animation clips,
photographs shipped in the wheels of scikit-image and scikit-learn), but each described by what a person
would say and ImageNet's 1000 classes do not name: cartoons and computer animation, scenes (a temple above a
lake, galaxies in the night sky, a brick wall), actions (a man taking a photograph). The descriptions were
written from looking at each picture, before any measurement, and have not been changed since.

Textures and scientific images, which ``bench needle`` leaves out because the default encoder maps them to
unrelated ImageNet classes, are in: measuring that encoder's reach outside its classes is the point here.

Cached under ``<data>/bench/`` (names distinct from ``bench needle``'s):

- ``needle-open-<seconds>s-<seed>-v<N>.json``: the plan (needles with their descriptions, the placed prompts'
  sentences with times), written last;
- ``…-lite0.npz``: the default vision encoder's classifier logits per frame and cell, (F, 1 + r², 1000), so
  every grounding of those logits in text space (`VOCABULARIES`) is compared on the same frames without
  running the network again; and the MiniLM embeddings of the sentences and of the needles' descriptions;
- ``…-clip-<key>.npz``: tokens, sentences and descriptions of a configured CLIP/SigLIP folder
  (``perception.clip_model``), keyed by the folder's name and size, when one is configured.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.encoders.base import Segment

from . import _needle_streams as ns
from . import _qa_streams as qs

VERSION = 1  # part of the cached files' names: bump when the recipe below changes
SPOKEN_NEEDLES = 8  # the audio is the standard stream's; fewer spoken needles leave room for 16 pictures

Sight = ns.Sight
SK = "skimage"
SKL = "sklearn"

# Written from the pictures before any measurement (see the module docstring); never tuned to a result.
OPEN_SIGHTS: tuple[Sight, ...] = (
    Sight("room", "a computer animation of a room with a wooden floor", clip="teapot"),
    Sight("falling", "an animation of small pink objects falling in the dark", clip="dice"),
    Sight("snake", "a cartoon drawing of a snake", package=SK, path="data/logo.png"),
    Sight("horse", "a black silhouette of a horse", package=SK, path="data/horse.png"),
    Sight("temple", "a temple on a hill above a lake", package=SKL, path="datasets/images/china.jpg"),
    Sight("garden", "an orange flower in a garden", package=SKL, path="datasets/images/flower.jpg"),
    Sight("galaxies", "galaxies in the night sky", package=SK, path="data/hubble_deep_field.jpg"),
    Sight("moon", "the surface of the moon", package=SK, path="data/moon.png"),
    Sight("lawn", "a grass lawn seen from above", package=SK, path="data/grass.png"),
    Sight("wall", "a brick wall", package=SK, path="data/brick.png"),
    Sight("page", "a page of printed text", package=SK, path="data/page.png"),
    Sight("photographer", "a man taking a photograph", package=SK, path="data/camera.png"),
    Sight(
        "portrait", "a woman smiling for a portrait in front of a flag", package=SK, path="data/astronaut.png"
    ),
    Sight("cafe", "breakfast on a café table", package=SK, path="data/coffee.png"),
    Sight("eye", "a photograph of the back of an eye", package=SK, path="data/retina.jpg"),
    Sight("microscope", "tissue under a microscope", package=SK, path="data/ihc.png"),
)


@dataclass
class OpenPlan:
    """A stream's needles and sentences (what every encoder shares), from the cache or just made."""

    name: str
    seconds: float
    seed: int
    needles: list[ns.Needle]
    sentences: list[dict[str, Any]]  # {"t0", "t1", "text"} in time order
    info: dict[str, Any] = field(default_factory=dict)


def stream_name(seconds: float, seed: int) -> str:
    return f"needle-open-{seconds:g}s-{seed}-v{VERSION}"


def _draw(
    shared: Path, folder: Path, seconds: float, seed: int, speech: Callable[[], Any]
) -> tuple[np.random.Generator, list[ns.Needle], list[Segment]]:
    """The plan and the generator positioned to draw the frames next: calling this twice gives the same
    frames, so a second encoder reproduces the stream without storing it."""
    rng = np.random.default_rng([seed, int(seconds), 2])  # 2: not the standard stream's draws
    transcripts = qs.prompt_transcripts(shared, speech(), folder)
    needles, placed = ns._plan(shared, rng, seconds, transcripts, OPEN_SIGHTS, SPOKEN_NEEDLES)
    return rng, needles, ns._sentences(transcripts, placed, seconds)


def frames(
    shared: Path, folder: Path, seconds: float, seed: int, speech: Callable[[], Any]
) -> tuple[list[ns.Needle], list[Segment], Iterator[np.ndarray]]:
    rng, needles, sentences = _draw(shared, folder, seconds, seed, speech)
    return needles, sentences, ns._frames(shared, rng, seconds, needles, OPEN_SIGHTS)


def load_plan(folder: Path, seconds: float, seed: int) -> OpenPlan | None:
    path = folder / f"{stream_name(seconds, seed)}.json"
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    return OpenPlan(
        name=stream_name(seconds, seed),
        seconds=seconds,
        seed=seed,
        needles=[ns.Needle(**n) for n in raw["needles"]],
        sentences=raw["sentences"],
        info=raw["info"],
    )


def _atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def encode_stream(
    shared: Path,
    folder: Path,
    seconds: float,
    seed: int,
    suffix: str,
    speech: Callable[[], Any],
    encode_frames: Callable[[list[np.ndarray]], np.ndarray],
    encode_texts: Callable[[list[str]], np.ndarray],
) -> dict[str, np.ndarray]:
    """The stream's arrays for one encoder (cached as ``<name>-<suffix>.npz``): "frames" (F, …) whatever
    `encode_frames` makes of a batch, "audio" (A, d) and "queries" (N, d) from `encode_texts`. The plan is
    written beside them (last) when absent."""
    name = stream_name(seconds, seed)
    path = folder / f"{name}-{suffix}.npz"
    if path.is_file() and (folder / f"{name}.json").is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    started = time.perf_counter()
    needles, sentences, stream = frames(shared, folder, seconds, seed, speech)
    batch = PerceptionConfig().batch_frames
    total = int(seconds * ns.FPS)
    out: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    with tqdm(
        total=total, desc=f"encoding {name} ({suffix})", unit="frame", file=sys.stderr, leave=False
    ) as bar:
        for i, frame in enumerate(stream):
            pending.append(frame)
            if len(pending) == batch or i == total - 1:
                out.append(encode_frames(pending))
                bar.update(len(pending))
                pending = []
    arrays = {
        "frames": np.concatenate(out).astype(np.float32),  # (F, …)
        "audio": np.asarray(encode_texts([s.text.strip() for s in sentences]), np.float32),  # (A, d)
        "queries": np.asarray(encode_texts([n.query for n in needles]), np.float32),  # (N, d)
    }
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_npz(path, **arrays)
    plan_path = folder / f"{name}.json"
    if not plan_path.is_file():
        plan = {
            "needles": [asdict(n) for n in needles],
            "sentences": [{"t0": s.t0, "t1": max(s.t1, s.t0), "text": s.text.strip()} for s in sentences],
            "info": {"frames": total, "encode_s": time.perf_counter() - started, "encoder": suffix},
        }
        tmp = plan_path.with_name(f".{plan_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(plan))
        os.replace(tmp, plan_path)
    return arrays


def clip_suffix(folder: Path) -> str:
    """A cache key for a CLIP/SigLIP folder: its name and the sizes of its files (no hashing of weights)."""
    files = sorted((p.name, p.stat().st_size) for p in Path(folder).iterdir() if p.is_file())
    digest = hashlib.sha256(json.dumps([str(Path(folder).resolve().name), files]).encode()).hexdigest()
    return f"clip-{digest[:12]}"


def needle_stream(
    plan: OpenPlan, visual: np.ndarray, audio: np.ndarray, queries: np.ndarray, variant: str
) -> ns.NeedleStream:
    """`bench needle`'s stream type from a plan and one encoder's tokens, so its memory writing, reading
    and rotations apply unchanged."""
    t0 = np.asarray([s["t0"] for s in plan.sentences], np.float64)  # (A,)
    t1 = np.asarray([s["t1"] for s in plan.sentences], np.float64)  # (A,)
    return ns.NeedleStream(
        name=f"{plan.name}[{variant}]",
        seconds=plan.seconds,
        seed=plan.seed,
        needles=plan.needles,
        visual=visual.astype(np.float32),  # (F, n, d)
        frame_t=np.arange(visual.shape[0], dtype=np.float64) / ns.FPS,
        audio=audio.astype(np.float32),
        audio_t0=t0,
        audio_t1=t1,
        queries=queries.astype(np.float32),
        info={**plan.info, "variant": variant},
    )
