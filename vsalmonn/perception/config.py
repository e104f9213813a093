"""Settings of perception: how streams are sampled and which encoders turn them into tokens (DESIGN §2)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    clip_model: Path | None = Field(
        None, description="a local CLIP or SigLIP folder (transformers format) for the 'clip' encoders"
    )
    hf_whisper_model: Path | None = Field(
        None, description="a local Whisper folder (transformers format) for the 'hf-whisper' speech encoder"
    )
    language: str | None = Field(None, description="speech language; None lets Whisper detect it")
    threads: int = Field(2, ge=1, description="intra-op threads of the encoders")
    batch_frames: int = Field(16, ge=1, description="frames per vision batch")
    # On-screen text (encoders/ocr.py): rapidocr on frames picked at scene changes or every `ocr_every_s`.
    # Off by default: a frame costs ~0.5-1 s of CPU, and the full pipeline with it on falls under 4x real
    # time on 2 cores (docs/benchmarks.md, "ocr"). Needs the `ocr` extra (`pip install 'vsalmonn[ocr]'`).
    ocr: bool = Field(False, description="read on-screen text (slides, signs) into the catalog and memory")
    ocr_every_s: float = Field(
        10.0, gt=0, description="a frame is read at least this often, changed or not (stream seconds)"
    )
    ocr_change: float = Field(
        0.02,
        ge=0,
        le=1,
        description="share of a frame's thumbnail that must differ from the last frame read: a scene change",
    )
    ocr_min_score: float = Field(
        0.6, ge=0, le=1, description="text lines read with a lower score are dropped"
    )
    ocr_max_per_minute: float = Field(
        12.0, gt=0, description="at most this many frames read per minute of stream (caps the cost)"
    )
    # live sources (vsalmonn.perception.sources): how long a silent connection is trusted, how reconnects back
    # off and when they stop. None means never give up: a camera that is down overnight is picked up again.
    live_timeout_s: float = Field(
        10.0, gt=0, description="a live source's open and read timeout; a silent connection is reconnected"
    )
    reconnect_initial_s: float = Field(0.5, ge=0, description="first delay before reconnecting a live source")
    reconnect_factor: float = Field(
        2.0, ge=1, description="each failed reconnect multiplies the delay by this"
    )
    reconnect_max_s: float = Field(30.0, ge=0, description="reconnect delays are capped at this")
    reconnect_jitter: float = Field(
        0.25,
        ge=0,
        le=1,
        description="delays vary by up to this fraction, so many streams do not retry in step",
    )
    reconnect_max_attempts: int | None = Field(
        None, ge=1, description="give up after this many failed attempts in a row; None: never"
    )
    reconnect_give_up_s: float | None = Field(
        None, gt=0, description="give up after this many seconds without data; None: never"
    )
    live_queue: int = Field(
        8,
        ge=1,
        description="items held between decoding and encoding a live source; when full the oldest drop",
    )


class StreamSpec(BaseModel):
    """One stream the daemon runs: a name and a source (a file, URL, watched folder or capture device)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the stream's name: letters, digits, '.', '_' and '-'")
    source: str = Field(description="a file, a URL, a folder to watch, or a device (/dev/videoN, v4l2:...)")
    kind: Literal["file", "url", "folder", "device"] | None = Field(
        None, description="what the source is; default: told from the source string"
    )
    options: dict[str, str] = Field(
        default_factory=dict, description="FFmpeg options for URLs and devices, e.g. rtsp_transport"
    )


class DaemonConfig(BaseModel):
    """How the daemon paces work: windows, checkpoints, status reports, queues and folder watching."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_s: float = Field(
        30.0, gt=0, description="stream seconds encoded together; checkpoints fall on window ends"
    )
    live_window_s: float = Field(
        10.0, gt=0, description="window of live sources: how long speech waits before it is transcribed"
    )
    checkpoint_every_s: float = Field(60.0, gt=0, description="stream seconds between checkpoints")
    live_checkpoint_every_s: float = Field(
        60.0, gt=0, description="wall seconds between checkpoints of a live source"
    )
    status_every_s: float = Field(2.0, gt=0, description="how often each stream's status row is written")
    queue_items: int = Field(
        64, ge=1, description="decoded items held between decoding and encoding a file (back-pressure)"
    )
    settle_s: float = Field(
        2.0, ge=0, description="a watched folder's new file is read once its size has not changed this long"
    )
    poll_s: float = Field(1.0, gt=0, description="a watched folder is rescanned this often besides events")
    stop_timeout_s: float = Field(
        8.0, gt=0, description="on SIGTERM/SIGINT, how long streams get to checkpoint before the exit"
    )
    # Past one machine (DESIGN §8, docs/scale.md): with backend "ray" each stream is a Ray actor, placed by
    # Ray across the nodes of a cluster and restarted by Ray on a crash or a lost node; the catalog must then
    # be one every node reaches (PostgreSQL) and the data directory a shared filesystem.
    backend: Literal["local", "ray"] = Field(
        "local", description="local: every stream a thread of this process; ray: every stream a Ray actor"
    )
    ray_address: str | None = Field(
        None,
        description="the Ray cluster to join (host:port, ray://host:10001 or auto); None: start a local Ray",
    )
    ray_num_cpus: float = Field(1.0, gt=0, description="CPUs each stream's actor reserves on its node")
    ray_num_gpus: float = Field(
        0.25, ge=0, le=1, description="GPU fraction each stream's actor reserves when memory.device is cuda"
    )
    ray_max_restarts: int = Field(
        5, ge=-1, description="times Ray restarts a stream's actor after a crash or a lost node; -1: always"
    )
    ray_scheduling: Literal["spread", "default"] = Field(
        "spread", description="spread: streams spread over the nodes; default: Ray's packing placement"
    )
    ray_lock_wait_s: float = Field(
        30.0,
        ge=0,
        description="how long a restarted actor waits for its lost predecessor to let go of the stream",
    )
