"""What an encoder is: the three kinds the pipeline uses, as typing protocols, and what they return.

Tokens of every modality live in one text-aligned space (DESIGN §2), so every encoder reports the dimension
of that space and returns unit vectors: a prompt's text embedding can then be compared with any token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class FrameTokens:
    """The tokens of one frame and the evidence a person can read."""

    tokens: np.ndarray  # (n, d) float32, unit rows: the global token first, then the regional ones
    kinds: tuple[str, ...]  # per token: "global", "region 0 0", "region 0 1", …
    labels: tuple[tuple[str, float], ...] = ()  # top (label, probability) of the frame, best first


@dataclass(frozen=True)
class Word:
    text: str
    t0: float  # seconds of stream time
    t1: float
    probability: float | None = None


@dataclass(frozen=True)
class Segment:
    """A stretch of recognised speech, in stream time."""

    t0: float
    t1: float
    text: str
    words: tuple[Word, ...] = field(default_factory=tuple)
    language: str | None = None


@runtime_checkable
class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 unit rows, one per text."""
        ...


@runtime_checkable
class VisionEncoder(Protocol):
    name: str
    dim: int

    def encode(self, frames: Sequence[np.ndarray]) -> list[FrameTokens]:
        """One FrameTokens per RGB uint8 frame (H, W, 3)."""
        ...


@runtime_checkable
class SpeechEncoder(Protocol):
    name: str

    def transcribe(self, audio: np.ndarray, t_offset: float = 0.0) -> list[Segment]:
        """Segments of mono float32 audio at the configured sample rate; times are t_offset + seconds."""
        ...
