"""The default speech encoder: Silero VAD, then Whisper-base (CTranslate2, int8) through faster-whisper.

Speech is found first and only speech is transcribed. That is what keeps a mostly silent stream cheap, and
what stops Whisper from inventing text in silence or noise.

Why faster-whisper's own VAD (`vad_filter=True`) rather than a separate call to the `silero-vad` package:
faster-whisper ships the same Silero VAD (v6, ONNX, inside its wheel, loaded from disk), glues the speech
regions together before decoding and maps every segment and word time back to the original audio. Our own
Silero call would have to either hand the regions over as `clip_timestamps`, which costs one 30-second
encoder window per region (about 2.6 times slower on a track of three prompts), or glue them and remap word
times ourselves, duplicating that code. We still run that same VAD once on its own as a gate: audio without
speech returns at once instead of paying for Whisper's language detection on nothing (about 1 s per call).

Times: faster-whisper reports seconds within the array it was given; `transcribe` adds `t_offset`, so the
caller passes the stream time of the chunk's first sample and gets stream time back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vsalmonn.errors import one_line

from ..config import PerceptionConfig
from ..models import ModelFilesError, whisper_base_dir
from . import EncoderError
from .base import Segment, Word

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

WHISPER_RATE = 16_000  # Whisper and Silero both work at 16 kHz
_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


class WhisperEncoder:
    """Transcribes mono float32 audio into segments with word times in stream seconds.

    One instance may be shared by several threads: calls are serialised, because the CTranslate2 model is
    built with one worker and parallel calls would only compete for the same `threads` cores.
    """

    name = "faster-whisper"

    def __init__(
        self,
        model_dir: Path,
        *,
        sample_rate: int = WHISPER_RATE,
        language: str | None = None,
        threads: int = 2,
        beam_size: int = 1,
        compute_type: str = "int8",
        device: str = "cpu",
        vad_options: dict[str, Any] | None = None,
    ) -> None:
        """Load the model in `model_dir` (a CTranslate2 Whisper folder); raises EncoderError if it cannot.

        `beam_size` 1 (greedy, with faster-whisper's temperature fallback) is the default: on a minute of the
        recorded prompts it gave the same words as beams of 2 and 5 and ran 1.4 and 1.8 times as fast.
        """
        model_dir = Path(model_dir).expanduser()
        _check_model_dir(model_dir)
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model
        except ImportError as exc:
            raise EncoderError(f"faster-whisper is not installed: {exc}") from None
        started = time.perf_counter()
        try:
            self._model: WhisperModel = WhisperModel(
                str(model_dir),
                device=device,
                compute_type=compute_type,
                cpu_threads=threads,
                num_workers=1,
                local_files_only=True,  # a folder path never downloads; this makes sure of it
            )
            get_vad_model()  # load Silero now, so that a broken install fails here and not mid-stream
        except Exception as exc:
            raise EncoderError(f"cannot load the Whisper model in {model_dir}: {one_line(exc)}") from None
        log.info("loaded Whisper from %s in %.2f s", model_dir, time.perf_counter() - started)
        self.model_dir = model_dir
        self.sample_rate = int(sample_rate)
        self.language = language
        self.beam_size = int(beam_size)
        self._vad_options = VadOptions(**(vad_options or {}))
        self._speech_timestamps = get_speech_timestamps
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: PerceptionConfig, data_dir: Path) -> WhisperEncoder:
        """The registry's factory: `config.whisper_model` if set, else the shipped Whisper-base joined once
        into ``<data_dir>/models/whisper-base``."""
        if config.whisper_model is not None:
            model_dir = Path(config.whisper_model).expanduser()
        else:
            try:
                model_dir = whisper_base_dir(Path(data_dir))
            except (ModelFilesError, OSError) as exc:
                raise EncoderError(f"cannot prepare the shipped Whisper-base: {one_line(exc)}") from None
        return cls(
            model_dir,
            sample_rate=config.sample_rate,
            language=config.language,
            threads=config.threads,
        )

    def transcribe(self, audio: np.ndarray, t_offset: float = 0.0) -> list[Segment]:
        """Segments of `audio` (1-D float32 at the configured rate) with times `t_offset` + seconds.

        Empty audio and audio without speech give []. Wrong input raises ValueError.
        """
        if not isinstance(audio, np.ndarray) or audio.dtype != np.float32 or audio.ndim != 1:
            got = f"{audio.dtype} {audio.shape}" if isinstance(audio, np.ndarray) else type(audio).__name__
            raise ValueError(f"audio must be a 1-D float32 array (mono), got {got}")
        if not math.isfinite(t_offset):
            raise ValueError(f"t_offset must be a finite number of seconds, got {t_offset}")
        if audio.size == 0:
            return []
        if not np.isfinite(audio).all():
            raise ValueError("audio holds NaN or infinite samples")
        if self.sample_rate != WHISPER_RATE:
            audio = _resample(audio, self.sample_rate, WHISPER_RATE)
        with self._lock:
            started = time.perf_counter()
            if not self._speech_timestamps(audio, self._vad_options, sampling_rate=WHISPER_RATE):
                return []
            pieces, info = self._model.transcribe(
                audio,
                language=self.language,
                beam_size=self.beam_size,
                # One sample per fallback temperature instead of five: speech that really repeats itself
                # (a menu read twice) trips the compression-ratio check and falls back; with five samples
                # per retry a minute of such speech took 21 s, with one 13.5 s (bench throughput notes).
                best_of=1,
                word_timestamps=True,
                vad_filter=True,
                vad_parameters=self._vad_options,
                # Each call is one chunk of a stream: conditioning on earlier text within it buys little and
                # is what lets a bad stretch repeat itself.
                condition_on_previous_text=False,
            )
            segments = [s for s in (_segment(p, t_offset, info.language) for p in pieces) if s is not None]
            elapsed = time.perf_counter() - started
        duration = audio.size / WHISPER_RATE
        log.debug(
            "transcribed %.1f s (%.1f s speech) in %.2f s: %d segments, language %s",
            duration,
            info.duration_after_vad,
            elapsed,
            len(segments),
            info.language,
        )
        return segments


def _segment(piece: Any, t_offset: float, language: str | None) -> Segment | None:
    """Our Segment from faster-whisper's, in stream time; None for a segment with no text."""
    text = piece.text.strip()
    if not text:
        return None
    words = tuple(
        Word(
            text=w.word.strip(),
            t0=t_offset + float(w.start),
            t1=t_offset + float(w.end),
            probability=float(w.probability),
        )
        for w in piece.words or ()
        if w.word.strip()
    )
    return Segment(
        t0=t_offset + float(piece.start),
        t1=t_offset + float(piece.end),
        text=text,
        words=words,
        language=language,
    )


def _check_model_dir(model_dir: Path) -> None:
    """Refuse a folder faster-whisper would fail on, or would complete from the hub (tokenizer.json)."""
    if not model_dir.is_dir():
        raise EncoderError(f"Whisper model folder {model_dir} does not exist")
    missing = [name for name in _REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise EncoderError(
            f"Whisper model folder {model_dir} lacks {', '.join(missing)}; it must be a CTranslate2 Whisper"
        )


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling with PyAV (libswresample), for a pipeline configured at another rate."""
    import av

    frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    out = [f.to_ndarray().reshape(-1) for f in (*resampler.resample(frame), *resampler.resample(None))]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, np.float32)
