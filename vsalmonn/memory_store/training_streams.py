"""Token streams to train the slow weights on, composed from encoded pools (`vsalmonn train-memory`).

Encoding frames is the slow part of making a stream (a 3-hour stream is 10,800 frames through the vision
encoder), and training wants hundreds of different streams. So footage is encoded once into a `TokenPool`:
every frame of each background clip under a few augmentations, and every needle picture under a few
augmentations as a short zoom. Streams are then composed from the pool at training time, each one new:
scenes of 20-90 s cut from a random frame of a random look, played on at 1 FPS, with needles (a few seconds
of a picture) in place of the footage at random times, and a query per needle: the text embedding of the
picture's description, or the first (global) token of a frame of the same picture under another look
("the token of a past frame").

The pool is made by the perception layer (`vsalmonn.perception.training_pool`), which owns the encoders;
this module only needs arrays, so the memory layer stays free of perception.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .rope import frame_positions

FPS = 1.0
SCENE_S = (20.0, 90.0)
NEEDLE_S = (3, 6)  # whole seconds, both ends included
MIN_GAP_S = 15.0
FIRST_S = 10.0


@dataclass
class TokenPool:
    """Encoded footage to compose streams from.

    ``background[c]`` is one (clip, look) pair: its frames at the clip's own rate, each a set of tokens;
    ``sights`` holds every needle picture under ``V`` looks, ``Z`` zoom steps each.
    """

    background: list[np.ndarray]  # each (F_c, n, d) float32
    background_fps: list[float]  # (C,) frames per second of each entry
    sights: np.ndarray  # (S, V, Z, n, d) float32
    sight_names: list[str]
    sight_queries: np.ndarray  # (S, d) float32: each sight's description through the text encoder
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.sights.shape[-1])

    @property
    def tokens_per_frame(self) -> int:
        return int(self.sights.shape[-2])

    def save(self, path: Path) -> None:
        """Write the pool as one .npz (under a temporary name, renamed when whole)."""
        arrays = {f"background_{i}": b for i, b in enumerate(self.background)}
        meta = {
            "background_fps": self.background_fps,
            "sight_names": self.sight_names,
            "info": self.info,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, sights=self.sights, sight_queries=self.sight_queries, meta=json.dumps(meta), **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> TokenPool:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            count = len(meta["background_fps"])
            return cls(
                background=[z[f"background_{i}"] for i in range(count)],
                background_fps=[float(f) for f in meta["background_fps"]],
                sights=z["sights"],
                sight_names=list(meta["sight_names"]),
                sight_queries=z["sight_queries"],
                info=meta["info"],
            )


@dataclass(frozen=True)
class TrainNeedle:
    """A planted moment [t0, t1] of a training stream and the query that asks for it."""

    sight: int
    t0: float
    t1: float
    kind: str  # "text" or "image"


@dataclass
class TrainStream:
    """Visual tokens in time order, each spanning its frame's second, and the needles with their queries."""

    tokens: np.ndarray  # (N, d) float32
    t0: np.ndarray  # (N,) float64
    needles: list[TrainNeedle]
    queries: np.ndarray  # (len(needles), d) float32
    per_frame: int = 1  # tokens a frame, in the encoders' order (global, then the regions)

    @property
    def positions(self) -> np.ndarray:
        """(N, 2): where in its frame each token lies (`rope.frame_positions`), for 3-D RoPE."""
        return np.tile(np.asarray(frame_positions(self.per_frame)), (len(self.t0) // self.per_frame, 1))

    @property
    def seconds(self) -> float:
        return float(self.t0[-1] + 1.0 / FPS) if len(self.t0) else 0.0


def compose(
    pool: TokenPool,
    rng: np.random.Generator,
    seconds: float,
    sights: Sequence[int],
    needles: int,
    text_share: float = 0.5,
) -> TrainStream:
    """A new stream of `seconds` from the pool, with `needles` of the given sights (each at most once)."""
    count = min(needles, len(sights))
    chosen = rng.choice(np.asarray(sights), size=count, replace=False) if count else np.zeros(0, int)
    lengths = [int(rng.integers(NEEDLE_S[0], NEEDLE_S[1] + 1)) for _ in range(count)]
    starts = _needle_starts(rng, seconds, lengths)
    total = int(seconds * FPS)
    frames: list[np.ndarray] = []
    plan: list[TrainNeedle] = []
    queries: list[np.ndarray] = []
    looks = pool.sights.shape[1]
    t = 0
    k = 0
    scene_end, clip, first, scene_start = -1, 0, 0, 0
    while t < total:
        if k < count and t >= starts[k]:
            sight, length = int(chosen[k]), lengths[k]
            look = int(rng.integers(looks))
            zoom = np.round(np.linspace(0, pool.sights.shape[2] - 1, length)).astype(int)  # (length,)
            shown = pool.sights[sight, look, zoom][: total - t]  # (length, n, d)
            frames += list(shown)
            plan.append(TrainNeedle(sight, float(t), float(t + len(shown)), "text"))
            if rng.random() < text_share or looks < 2:
                queries.append(pool.sight_queries[sight])
            else:
                other = int((look + rng.integers(1, looks)) % looks)
                step = int(rng.integers(pool.sights.shape[2]))
                queries.append(pool.sights[sight, other, step, 0])  # (d,) a global token
                plan[-1] = TrainNeedle(sight, float(t), float(t + len(shown)), "image")
            t += len(shown)
            k += 1
            continue
        if t >= scene_end:
            scene_start, scene_end = t, t + int(rng.uniform(*SCENE_S) * FPS)
            clip = int(rng.integers(len(pool.background)))
            first = int(rng.integers(len(pool.background[clip])))
        source = pool.background[clip]
        index = (first + round((t - scene_start) * pool.background_fps[clip] / FPS)) % len(source)
        frames.append(source[index])
        t += 1
    per_frame = pool.tokens_per_frame
    tokens = np.stack(frames).reshape(-1, pool.dim).astype(np.float32)  # (N, d)
    t0 = np.repeat(np.arange(len(frames), dtype=np.float64) / FPS, per_frame)  # (N,)
    q = np.stack(queries).astype(np.float32) if queries else np.zeros((0, pool.dim), np.float32)
    return TrainStream(tokens=tokens, t0=t0, needles=plan, queries=q, per_frame=per_frame)


def _needle_starts(rng: np.random.Generator, seconds: float, lengths: list[int]) -> list[int]:
    """Whole-second start times, at least MIN_GAP_S apart: the free time shared out at random."""
    if not lengths:
        return []
    slack = seconds - FIRST_S - MIN_GAP_S * len(lengths) - sum(lengths)
    if slack <= 0:
        raise ValueError(f"{len(lengths)} needles do not fit into {seconds:g} s")
    gaps = rng.dirichlet(np.ones(len(lengths) + 1)) * slack  # (N + 1,)
    out, at = [], FIRST_S
    for i, length in enumerate(lengths):
        at += gaps[i] + (MIN_GAP_S if i else 0.0)
        out.append(int(at))
        at = int(at) + length
    return out
