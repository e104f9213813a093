"""The encoder registry: encoders are chosen by name in the settings, and plugins may add their own.

Built-in encoders are registered by module path and imported only when chosen, so that choosing the vision
encoder does not load the speech model's libraries, and a missing optional library only matters to the
encoder that needs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ..config import PerceptionConfig
from .base import FrameTokens, Segment, SpeechEncoder, TextEncoder, VisionEncoder, Word

Kind = Literal["text", "vision", "speech"]
Factory = Callable[..., Any]  # (settings, data dir, **shared) -> encoder; vision gets text_encoder=

_BUILTIN: dict[tuple[str, str], str] = {
    ("text", "minilm"): "vsalmonn.perception.encoders.text:MiniLMEncoder.from_config",
    (
        "vision",
        "efficientnet-lite0",
    ): "vsalmonn.perception.encoders.vision:EfficientNetLite0Encoder.from_config",
    ("speech", "faster-whisper"): "vsalmonn.perception.encoders.speech:WhisperEncoder.from_config",
    # optional: models in a local transformers folder named in the settings, nothing shipped
    ("text", "clip"): "vsalmonn.perception.encoders.clip:ClipTextEncoder.from_config",
    ("vision", "clip"): "vsalmonn.perception.encoders.clip:ClipVisionEncoder.from_config",
    ("speech", "hf-whisper"): "vsalmonn.perception.encoders.hf_whisper:HFWhisperEncoder.from_config",
}
_registered: dict[tuple[str, str], Factory] = {}


class EncoderError(RuntimeError):
    """An encoder that cannot be made: unknown name, missing model files or library. One-line message."""


def register_encoder(kind: Kind, name: str, factory: Factory) -> None:
    """Make `name` choosable for `kind`; a later registration of the same name replaces the earlier one."""
    _registered[(kind, name)] = factory


def available_encoders(kind: Kind) -> list[str]:
    return sorted({n for k, n in [*_BUILTIN, *_registered] if k == kind})


def create_encoder(kind: Kind, name: str, config: PerceptionConfig, data_dir: Path, **shared: Any) -> Any:
    """Build the encoder registered as (kind, name).

    `shared` passes encoders already built to factories that can reuse them: a vision encoder that grounds
    its labels in text space receives `text_encoder=` so that one text model serves both.
    """
    factory = _registered.get((kind, name))
    if factory is None and (kind, name) in _BUILTIN:
        module, _, attr = _BUILTIN[(kind, name)].partition(":")
        target: Any = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
        factory = target
    if factory is None:
        known = ", ".join(available_encoders(kind)) or "none"
        raise EncoderError(f"unknown {kind} encoder {name!r}; available: {known}")
    return factory(config, data_dir, **shared)


__all__ = [
    "EncoderError",
    "FrameTokens",
    "Segment",
    "SpeechEncoder",
    "TextEncoder",
    "VisionEncoder",
    "Word",
    "available_encoders",
    "create_encoder",
    "register_encoder",
]
