"""The memory smoke run behind ``vsalmonn demo`` until the real demo (a bundled video) exists.

It streams a synthetic, deterministic stream through :class:`StreamMemory` the way a 1 FPS encoder would feed
it: slowly drifting near-duplicate visual tokens (a static scene), a few audio tokens, and a handful of
distinct vectors planted at known times. Then it asks the reader for each planted vector and reports where
the planted time ranks. Because the banks are smaller than the stream, this exercises the whole write path:
TTT updates, bank reduction, and the reader over a reduced bank.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vsalmonn.memory_store import MemoryConfig, Moment, StreamMemory

log = logging.getLogger(__name__)

FPS = 1.0
TOKENS_PER_FRAME = 8
VISUAL_TOKENS = 20_000
AUDIO_SEGMENT_S = 2.0
CHUNK_FRAMES = 60
"""Frames per write call: one minute of stream, as an encoder that batches its output would write it."""
TOP_K = 5

DEMO_BUDGETS = {"visual_slots": 4096, "audio_slots": 256}
"""Bank budgets the demo uses unless the settings name their own: smaller than the defaults (16,384 and
4,096) so that a stream short enough to run in seconds still overflows both banks and makes them reduce."""

PLANTS: tuple[tuple[str, str, float], ...] = (
    ("visual-1", "visual", 0.20),
    ("visual-2", "visual", 0.50),
    ("visual-3", "visual", 0.85),
    ("audio-1", "audio", 0.68),
)
"""(label, modality, position in the stream as a fraction of its length) of each planted vector."""

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Plant:
    """A distinct vector written once, at a known time, among near-duplicates."""

    label: str
    modality: str
    t0: float
    t1: float
    token_id: int
    """Its id in its modality: StreamMemory numbers each modality's tokens 0, 1, ... in write order."""
    vector: torch.Tensor


@dataclass(frozen=True)
class Probe:
    """What the reader returned for one planted vector used as the prompt."""

    plant: Plant
    moments: list[Moment]
    rank: int | None
    """1-based rank of the first moment that covers the planted token; None if none of the top k does."""


@dataclass(frozen=True)
class SmokeResult:
    """The memory that was built, what was streamed into it, and the probes' outcome."""

    config: MemoryConfig
    visual_tokens: int
    audio_tokens: int
    stream_seconds: float
    slots_used: int
    write_seconds: float
    probes: list[Probe]


def demo_config(base: MemoryConfig) -> MemoryConfig:
    """``base`` with the demo's smaller bank budgets, except where the settings set a budget explicitly."""
    explicit = base.model_dump(exclude_unset=True)
    return MemoryConfig.model_validate({**DEMO_BUDGETS, **explicit})


def run_smoke(config: MemoryConfig, progress: ProgressFn | None = None, seed: int = 0) -> SmokeResult:
    """Stream the synthetic tokens into a fresh memory, then probe it with every planted vector."""
    gen = torch.Generator().manual_seed(seed)
    frames = VISUAL_TOKENS // TOKENS_PER_FRAME
    stream_seconds = frames / FPS
    plants = _make_plants(config.dim, stream_seconds, gen)
    visual = _drifting_tokens(frames * TOKENS_PER_FRAME, config.dim, gen, group=TOKENS_PER_FRAME)
    audio_count = int(stream_seconds // AUDIO_SEGMENT_S)
    audio = _drifting_tokens(audio_count, config.dim, gen, group=1)
    for plant in plants:
        (visual if plant.modality == "visual" else audio)[plant.token_id] = plant.vector

    memory = StreamMemory(config)
    log.info("streaming %d visual + %d audio tokens (%.0f s)", len(visual), audio_count, stream_seconds)
    started = time.perf_counter()
    _stream(memory, visual, audio, frames, progress)
    memory.flush()
    write_seconds = time.perf_counter() - started
    log.info("wrote the stream in %.1f s; %d slots in use", write_seconds, len(memory))

    probes = [_probe(memory, plant) for plant in plants]
    return SmokeResult(
        config=config,
        visual_tokens=len(visual),
        audio_tokens=audio_count,
        stream_seconds=stream_seconds,
        slots_used=len(memory),
        write_seconds=write_seconds,
        probes=probes,
    )


def _drifting_tokens(n: int, dim: int, gen: torch.Generator, group: int) -> torch.Tensor:
    """``n`` unit vectors around a slowly drifting scene vector; each run of ``group`` shares one scene.

    The scene takes a random-walk step of norm about 0.05 per group (neighbours have cosine ≈ 0.999) and each
    token adds noise of norm about 0.1: a static camera whose frames differ only by a little noise.
    """
    steps = torch.randn(n // group, dim, generator=gen) * (0.05 / math.sqrt(dim))
    steps[0] = torch.nn.functional.normalize(torch.randn(dim, generator=gen), dim=0)
    scene = torch.cumsum(steps, dim=0).repeat_interleave(group, dim=0)
    noise = torch.randn(n, dim, generator=gen) * (0.1 / math.sqrt(dim))
    return torch.nn.functional.normalize(scene + noise, dim=1)


def _make_plants(dim: int, stream_seconds: float, gen: torch.Generator) -> list[Plant]:
    """Random unit vectors: in hundreds of dimensions, nearly orthogonal to the scene and to each other."""
    plants = []
    for label, modality, fraction in PLANTS:
        span, per_span = (1 / FPS, TOKENS_PER_FRAME) if modality == "visual" else (AUDIO_SEGMENT_S, 1)
        index = math.floor(fraction * stream_seconds / span)  # the frame or audio segment planted into
        vector = torch.nn.functional.normalize(torch.randn(dim, generator=gen), dim=0)
        plants.append(Plant(label, modality, index * span, (index + 1) * span, index * per_span, vector))
    return plants


def _stream(
    memory: StreamMemory,
    visual: torch.Tensor,
    audio: torch.Tensor,
    frames: int,
    progress: ProgressFn | None,
) -> None:
    """Write the stream a minute at a time, visual and audio interleaved as a live encoder would."""
    audio_start = torch.arange(len(audio), dtype=torch.float64) * AUDIO_SEGMENT_S
    total = len(visual) + len(audio)
    done = 0
    for first in range(0, frames, CHUNK_FRAMES):
        last = min(first + CHUNK_FRAMES, frames)
        t0 = torch.arange(first, last, dtype=torch.float64).repeat_interleave(TOKENS_PER_FRAME) / FPS
        chunk = visual[first * TOKENS_PER_FRAME : last * TOKENS_PER_FRAME]
        memory.write(chunk, t0, t0 + 1 / FPS, modality="visual")
        in_chunk = (audio_start >= first / FPS) & (audio_start < last / FPS)
        if in_chunk.any():
            a0 = audio_start[in_chunk]
            memory.write(audio[in_chunk], a0, a0 + AUDIO_SEGMENT_S, modality="audio")
        done += len(chunk) + int(in_chunk.sum())
        if progress is not None:
            progress(done, total)


def _probe(memory: StreamMemory, plant: Plant) -> Probe:
    """Read with the planted vector as the prompt and find the first moment covering the planted token.

    Matching by token id rather than by time: a neighbouring slot of the same frame shares the planted
    token's time span, so a time match could count a near-duplicate as a hit.
    """
    moments = memory.read(plant.vector[None, :], k=TOP_K)
    rank = next((i + 1 for i, m in enumerate(moments) if _covers(m, plant)), None)
    return Probe(plant, moments, rank)


def _covers(moment: Moment, plant: Plant) -> bool:
    first, last = moment.token_ids
    return moment.modality == plant.modality and first <= plant.token_id <= last
