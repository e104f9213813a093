"""The ``[plugins.settings.surveillance]`` table: motion, people, standing queries (package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_QUERY_THRESHOLD = 0.30  # calibrated: the package docstring


class MotionSettings(BaseModel):
    """``[plugins.settings.surveillance.motion]``: frame differencing (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    threshold: float = Field(0.01, gt=0, le=1, description="fraction of the frame that must change")
    min_area: float = Field(
        0.002, ge=0, le=1, description="fraction of the frame the largest changed region must cover"
    )
    pixel_threshold: int = Field(25, ge=1, le=255, description="grey levels a pixel must change by")
    width: int = Field(160, ge=16, le=1920, description="width of the grey image compared (px)")
    max_gap_s: float = Field(5.0, gt=0, description="a longer gap between frames resets the reference")
    cooldown_s: float | None = Field(None, ge=0, description="overrides cooldown_s for motion alerts")


class PeopleSettings(BaseModel):
    """``[plugins.settings.surveillance.people]``: OpenCV's HOG people detector (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="needs opencv-python-headless (vsalmonn[people]); off without")
    every_n_frames: int = Field(2, ge=1, description="detect on every n-th sampled frame of a stream")
    min_confidence: float = Field(0.5, description="detections with a lower SVM margin are ignored")
    min_count: int = Field(1, ge=1, description="people in view that raise an alert")
    short_side: int = Field(
        540, ge=128, le=2160, description="frames are rescaled to this short side before detection (px)"
    )
    win_stride: int = Field(8, ge=1, le=64, description="HOG window stride (px): larger is faster")
    scale: float = Field(1.05, gt=1.0, le=2.0, description="HOG pyramid scale step: larger is faster")
    max_pending: int = Field(8, ge=1, description="frames per stream waiting for detection; oldest dropped")
    drain_s: float = Field(30.0, ge=0, description="at stream end or shutdown, wait this long for the queue")
    cooldown_s: float | None = Field(None, ge=0, description="overrides cooldown_s for people alerts")


class QuerySettings(BaseModel):
    """One standing query; a plain string in the settings is a query with the default threshold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1, max_length=500)
    threshold: float | None = Field(None, ge=-1, le=1, description="None: query_threshold")
    cooldown_s: float | None = Field(None, ge=0, description="None: cooldown_s")

    @field_validator("text")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("a query must not be blank")
        return value


class SurveillanceSettings(BaseModel):
    """The ``[plugins.settings.surveillance]`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    motion: MotionSettings = Field(default_factory=MotionSettings)
    people: PeopleSettings = Field(default_factory=PeopleSettings)
    queries: list[QuerySettings] = Field(
        default_factory=list, description='standing queries: "text" or {text, threshold, cooldown_s}'
    )
    query_threshold: float = Field(
        DEFAULT_QUERY_THRESHOLD, ge=-1, le=1, description="default query threshold (cosine; calibrated)"
    )
    query_min_frames: int = Field(2, ge=1, description="frames in a row at the threshold that raise an alert")
    cooldown_s: float = Field(30.0, ge=0, description="stream seconds between two alerts of one kind")
    thumbs: bool = Field(True, description="write a JPEG thumbnail per alert under <data>/thumbs")
    thumb_size: int = Field(320, ge=32, le=4096, description="long side of a thumbnail (px)")
    text_encoder: str = Field("minilm", description="text encoder of the queries: the pipeline's")
    text_model: Path | None = Field(None, description="its model folder (perception.text_model)")

    @field_validator("queries", mode="before")
    @classmethod
    def _plain_strings(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [{"text": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique_queries(self) -> SurveillanceSettings:
        seen: set[str] = set()
        for query in self.queries:
            if query.text.lower() in seen:
                raise ValueError(f"query {query.text!r} is given twice")
            seen.add(query.text.lower())
        return self
