"""Ingesting a media file into a stream memory: decode → encode → write → checkpoints (DESIGN §2, §5).

The file is processed in windows of `window_s` seconds of stream time, aligned to multiples of it. A window's
frames go through the vision encoder and into the visual memory; its audio is transcribed, the segments go
to the catalog and, as text embeddings, into the audio memory. Only at a window's end is everything before
it written, so that is where checkpoints are taken, with the window's end as the source offset: a restart
resumes the file there (the decoder reproduces a full decode's items exactly from any start), transcript
rows at or after the offset are removed first, and the result equals an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete

from vsalmonn.memory_store import MemoryConfig, StreamMemory
from vsalmonn.memory_store.models import TranscriptSegment
from vsalmonn.memory_store.store import MemoryStore

from .config import PerceptionConfig
from .decode import decode, probe
from .encoders import FrameTokens, Segment, SpeechEncoder, TextEncoder, VisionEncoder, create_encoder
from .media import AudioChunk, Frame

log = logging.getLogger(__name__)

Progress = Callable[[float, float | None], None]  # (stream seconds done, duration or None)


@dataclass
class Encoders:
    """The encoders a pipeline uses; built once, shared by every file of a run."""

    vision: VisionEncoder
    text: TextEncoder
    speech: SpeechEncoder | None

    @classmethod
    def from_config(cls, config: PerceptionConfig, data_dir: Path) -> Encoders:
        text = create_encoder("text", config.text_encoder, config, data_dir)
        vision = create_encoder("vision", config.vision_encoder, config, data_dir, text_encoder=text)
        speech = None
        if config.speech_encoder != "none":
            speech = create_encoder("speech", config.speech_encoder, config, data_dir)
        return cls(vision=vision, text=text, speech=speech)


@dataclass
class IngestResult:
    stream: str
    source: str
    resumed_at: float
    position: float
    frames: int = 0
    segments: int = 0
    checkpoints: int = 0
    wall_s: float = 0.0
    labels: list[tuple[float, tuple[tuple[str, float], ...]]] = field(default_factory=list)

    @property
    def speed(self) -> float:
        """Seconds of stream ingested per second of wall time in this run."""
        return (self.position - self.resumed_at) / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class _Window:
    frames: list[Frame] = field(default_factory=list)
    audio: list[AudioChunk] = field(default_factory=list)


def ingest_file(
    source: Path,
    stream: str,
    *,
    store: MemoryStore,
    encoders: Encoders,
    perception: PerceptionConfig,
    memory_config: MemoryConfig,
    window_s: float = 30.0,
    checkpoint_every_s: float = 60.0,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest `source` into `stream`, resuming from its last committed offset; returns what was done."""
    started = time.perf_counter()
    info = probe(source)
    with store.writer(stream, config=memory_config, source=str(source), kind="file") as writer:
        memory, last = store.open_memory(stream, memory_config)
        resume = float(last.source_offset or 0.0) if last else 0.0
        result = IngestResult(stream=stream, source=str(source), resumed_at=resume, position=resume)
        if last and last.source_state and last.source_state.get("done"):
            log.info("stream %s: %s was ingested completely already", stream, source)
            return result
        stream_id = writer.stream_id
        _forget_transcript_from(store, stream_id, resume)
        if progress:
            progress(resume, info.duration)
        last_checkpoint = resume
        window = _Window()
        window_end = (int(resume // window_s) + 1) * window_s
        with decode(source, perception, start=resume, audio=encoders.speech is not None) as items:
            for item in items:
                t = item.t if isinstance(item, Frame) else item.t0
                while t >= window_end:
                    _process(window, memory, encoders, perception, store, stream_id, result)
                    window = _Window()
                    result.position = window_end
                    if window_end - last_checkpoint >= checkpoint_every_s:
                        writer.submit(memory, source_offset=window_end)
                        result.checkpoints += 1
                        last_checkpoint = window_end
                    window_end += window_s
                    if progress:
                        progress(result.position, info.duration)
                (window.frames if isinstance(item, Frame) else window.audio).append(item)  # type: ignore[arg-type]
            _process(window, memory, encoders, perception, store, stream_id, result)
            result.position = max(result.position, items.position, *(f.t for f in window.frames[-1:]))
        memory.flush()
        writer.wait()
        writer.commit(
            memory.state_dict(copy=False), source_offset=result.position, source_state={"done": True}
        )
        result.checkpoints += 1
        if progress:
            progress(result.position, info.duration)
    result.wall_s = time.perf_counter() - started
    log.info(
        "stream %s: ingested %s to %.1f s (%d frames, %d segments, %.1fx real time)",
        stream,
        source,
        result.position,
        result.frames,
        result.segments,
        result.speed,
    )
    return result


def _process(
    window: _Window,
    memory: StreamMemory,
    encoders: Encoders,
    perception: PerceptionConfig,
    store: MemoryStore,
    stream_id: str,
    result: IngestResult,
) -> None:
    """Encode one window and write it: frames into the visual memory, speech into the catalog and memory."""
    period = 1.0 / perception.fps
    for start in range(0, len(window.frames), perception.batch_frames):
        batch = window.frames[start : start + perception.batch_frames]
        encoded = encoders.vision.encode([f.image for f in batch])
        tokens, t0, t1 = _frame_tokens(batch, encoded, period)
        memory.write(tokens, t0, t1, modality="visual")
        result.frames += len(batch)
        result.labels.extend((f.t, e.labels) for f, e in zip(batch, encoded, strict=True))
    if encoders.speech is None or not window.audio:
        return
    audio = np.concatenate([c.samples for c in window.audio])  # (n,) contiguous within a window
    segments = encoders.speech.transcribe(audio, t_offset=window.audio[0].t0)
    segments = sorted((s for s in segments if s.text.strip()), key=lambda s: s.t0)
    if not segments:
        return
    embeddings = encoders.text.encode([s.text.strip() for s in segments])  # (k, d)
    memory.write(
        embeddings,
        [s.t0 for s in segments],
        [max(s.t1, s.t0) for s in segments],
        modality="audio",
    )
    with store.catalog.transaction() as session:
        session.add_all(_rows(stream_id, segments))
    result.segments += len(segments)


def _frame_tokens(
    frames: list[Frame], encoded: list[FrameTokens], period: float
) -> tuple[np.ndarray, list[float], list[float]]:
    """All tokens of a batch of frames with each token's span: the frame's time to the next sample."""
    tokens = np.concatenate([e.tokens for e in encoded])  # (Σ n_i, d)
    t0 = [f.t for f, e in zip(frames, encoded, strict=True) for _ in range(e.tokens.shape[0])]
    return tokens, t0, [t + period for t in t0]


def _rows(stream_id: str, segments: list[Segment]) -> list[TranscriptSegment]:
    return [
        TranscriptSegment(
            stream_id=stream_id,
            t0=s.t0,
            t1=s.t1,
            text=s.text.strip(),
            language=s.language,
            words=_words(s),
        )
        for s in segments
    ]


def _words(segment: Segment) -> dict[str, Any] | None:
    if not segment.words:
        return None
    return {"words": [{"w": w.text, "t0": w.t0, "t1": w.t1, "p": w.probability} for w in segment.words]}


def _forget_transcript_from(store: MemoryStore, stream_id: str, offset: float) -> None:
    """Remove transcript rows a killed run wrote after its last checkpoint: they will be written again."""
    with store.catalog.transaction() as session:
        gone = session.execute(
            delete(TranscriptSegment).where(
                TranscriptSegment.stream_id == stream_id, TranscriptSegment.t0 >= offset
            )
        ).rowcount
    if gone:
        log.info(
            "stream %s: dropped %d transcript rows past the resume offset %.1f s", stream_id, gone, offset
        )
