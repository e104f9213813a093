"""What an encoder is: the three kinds the pipeline uses, as typing protocols, and what they return.

Tokens of every modality live in one text-aligned space (DESIGN §2), so every encoder reports the dimension
of that space and returns unit vectors: a prompt's text embedding can then be compared with any token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch


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


def encode_texts(
    texts: Sequence[str], dim: int, batch_size: int, embed: Callable[[list[str]], torch.Tensor]
) -> np.ndarray:
    """(n, dim) float32 rows of `embed` over `texts`, in the order given, batched by similar length.

    Sorting by length first keeps padding small in each batch; a lone string is refused, as it would
    otherwise be encoded character by character.
    """
    import torch  # here, so that importing the encoder registry stays cheap

    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of strings, not one string")
    out = np.zeros((len(texts), dim), dtype=np.float32)  # (n, dim)
    if not texts:
        return out
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = embed([texts[i] for i in idx]).numpy()  # (b, dim)
    return out
