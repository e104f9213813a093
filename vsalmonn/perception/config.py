"""Settings of perception: how streams are sampled and which encoders turn them into tokens (DESIGN §2)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class PerceptionConfig(BaseModel):
    """Sampling, encoder choice and model locations; every model path can be overridden here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fps: float = Field(1.0, gt=0, description="video frames sampled per second of presentation time")
    short_side: int = Field(360, gt=0, description="frames are scaled so that their short side has this size")
    sample_rate: int = Field(16_000, gt=0, description="audio is resampled to this rate, mono")
    vision_encoder: str = Field("efficientnet-lite0", description="name in the encoder registry")
    speech_encoder: str = Field(
        "faster-whisper", description="name in the encoder registry; 'none' turns it off"
    )
    text_encoder: str = Field("minilm", description="name in the encoder registry")
    regions: int = Field(2, ge=1, description="regional tokens per frame on a regions x regions grid")
    top_labels: int = Field(5, ge=0, description="labels kept per frame as evidence")
    whisper_model: Path | None = Field(
        None, description="a CTranslate2 Whisper folder; default: the shipped base"
    )
    text_model: Path | None = Field(
        None, description="a sentence-transformers folder; default: the shipped MiniLM"
    )
    vision_weights: Path | None = Field(
        None, description="EfficientNet-Lite0 state dict; default: the shipped one"
    )
    language: str | None = Field(None, description="speech language; None lets Whisper detect it")
    threads: int = Field(2, ge=1, description="intra-op threads of the encoders")
    batch_frames: int = Field(16, ge=1, description="frames per vision batch")
