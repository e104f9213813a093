"""Optional speech encoder: any Whisper checkpoint in transformers format, from a local folder.

Why: the default encoder (speech.py) runs the shipped Whisper-base through CTranslate2, which needs a
converted model. Fine-tuned or larger Whisper checkpoints usually exist as transformers folders; this encoder
reads such a folder (`perception.hf_whisper_model`, `local_files_only=True`, nothing is downloaded) with
WhisperForConditionalGeneration and WhisperProcessor, at the cost of speed: float32 PyTorch on CPU, no VAD
gate, no word times.

Segments come from Whisper's own timestamp tokens (`return_timestamps=True, return_segments=True`), which is
also transformers' sequential long-form algorithm, so a chunk longer than 30 s is transcribed whole. The
decoding follows the settings transformers documents for long-form: greedy with temperature fallback,
compression-ratio, log-probability and no-speech thresholds (the last is what keeps silence from becoming
text, in place of the default encoder's VAD), and no conditioning on earlier text within a call (a bad
stretch would repeat itself). A folder whose generation_config.json has no `no_timestamps_token_id` is
refused: transformers cannot generate with it at all, with or without timestamps.

Times: Whisper reports seconds within the array it was given (the audio padded to 30 s windows); a segment
that starts after the audio ends is dropped and an end past it is clipped (Whisper can emit such times on
short chunks), then `t_offset` is added, so the caller gets stream time back.

Language: `perception.language` when set (checked against the model's languages at load); otherwise a
multilingual Whisper detects it and the segment reports the language token it decoded with (an English-only
model reports 'en').

Threads: no process-wide torch setting is changed here (see text.py); the pipeline applies
`PerceptionConfig.threads` once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vsalmonn.errors import one_line

from ..config import PerceptionConfig
from . import EncoderError
from .base import Segment

log = logging.getLogger(__name__)

SETTING = "perception.hf_whisper_model"
WHISPER_RATE = 16_000
WINDOW_FRAMES = 3000  # mel frames of one 30 s window: shorter input is padded to it
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # greedy first, sampling only when a window fails the checks
COMPRESSION_RATIO_THRESHOLD = 1.35  # transformers' value (its ratio is over tokens, not characters)
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6


class HFWhisperEncoder:
    """Transcribes mono float32 audio into segments in stream seconds with a transformers Whisper model.

    One instance may be shared by several threads: calls are serialised (parallel calls would only compete
    for the same cores).
    """

    name = "hf-whisper"

    def __init__(
        self,
        model_dir: Path,
        *,
        sample_rate: int = WHISPER_RATE,
        language: str | None = None,
        threads: int = 2,
        temperatures: tuple[float, ...] = TEMPERATURES,
        compression_ratio_threshold: float | None = COMPRESSION_RATIO_THRESHOLD,
        logprob_threshold: float | None = LOGPROB_THRESHOLD,
        no_speech_threshold: float | None = NO_SPEECH_THRESHOLD,
    ) -> None:
        model_dir = Path(model_dir).expanduser()
        if not model_dir.is_dir():
            raise EncoderError(f"Whisper folder {model_dir} ({SETTING}) does not exist")
        if not (model_dir / "config.json").is_file():
            raise EncoderError(
                f"Whisper folder {model_dir} ({SETTING}) has no config.json (not a transformers model)"
            )
        # Imported here so that importing the encoder registry stays cheap.
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        started = time.perf_counter()
        try:
            self.processor: Any = WhisperProcessor.from_pretrained(str(model_dir), local_files_only=True)
            model = WhisperForConditionalGeneration.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as exc:  # transformers raises many kinds (OSError, ValueError, safetensors errors)
            raise EncoderError(f"cannot load the Whisper model in {model_dir}: {one_line(exc)}") from exc
        self.model: Any = model.float().eval()
        generation = self.model.generation_config
        if getattr(generation, "no_timestamps_token_id", None) is None:
            raise EncoderError(
                f"Whisper folder {model_dir}: generation_config.json lacks no_timestamps_token_id "
                "(outdated; save it again with a current transformers)"
            )
        self.timestamp_begin = int(generation.no_timestamps_token_id) + 1  # ids from here on are times
        lang_to_id = dict(getattr(generation, "lang_to_id", None) or {})
        self.multilingual = bool(getattr(generation, "is_multilingual", False)) and bool(lang_to_id)
        self._id_to_language = {int(i): tok.strip("<|>") for tok, i in lang_to_id.items()}
        self.language = _check_language(language, lang_to_id, self.multilingual, model_dir)
        self._known_language = self.language or (None if self.multilingual else "en")
        self.model_dir = model_dir
        self.sample_rate = int(sample_rate)
        self.model_rate = int(getattr(self.processor.feature_extractor, "sampling_rate", WHISPER_RATE))
        self.threads = threads
        self._options: dict[str, Any] = {
            "temperature": tuple(temperatures),
            "compression_ratio_threshold": compression_ratio_threshold,
            "logprob_threshold": logprob_threshold,
            "no_speech_threshold": no_speech_threshold,
            "condition_on_prev_tokens": False,
        }
        if self.multilingual:  # English-only models refuse a language or task argument
            self._options["task"] = "transcribe"
            if self.language is not None:
                self._options["language"] = self.language
        self._lock = threading.Lock()
        log.info("loaded Whisper (transformers) from %s in %.2f s", model_dir, time.perf_counter() - started)

    @classmethod
    def from_config(cls, config: PerceptionConfig, data_dir: Path) -> HFWhisperEncoder:
        """The registry's factory: the folder in `perception.hf_whisper_model`; `data_dir` is unused."""
        if config.hf_whisper_model is None:
            raise EncoderError(
                f"speech encoder 'hf-whisper' needs {SETTING}: a local Whisper folder (transformers format)"
            )
        return cls(
            config.hf_whisper_model,
            sample_rate=config.sample_rate,
            language=config.language,
            threads=config.threads,
        )

    def transcribe(self, audio: np.ndarray, t_offset: float = 0.0) -> list[Segment]:
        """Segments of `audio` (1-D float32 at the configured rate) with times `t_offset` + seconds.

        Empty audio gives []. Wrong input raises ValueError.
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
        if self.sample_rate != self.model_rate:
            from .speech import _resample

            audio = _resample(audio, self.sample_rate, self.model_rate)
        duration = audio.size / self.model_rate
        with self._lock:
            started = time.perf_counter()
            with torch.inference_mode():
                pieces = self._generate(audio)
            segments = [s for s in (self._segment(p, duration, t_offset) for p in pieces) if s is not None]
            elapsed = time.perf_counter() - started
        log.debug("transcribed %.1f s in %.2f s: %d segments", duration, elapsed, len(segments))
        return segments

    def _generate(self, audio: np.ndarray) -> list[Mapping[str, Any]]:
        """Whisper's segments (dicts: start, end, tokens, result) of one mono array at the model's rate."""
        extractor = self.processor.feature_extractor
        # Unpadded and untruncated, as long-form generation wants; up to 30 s is padded to one window.
        features = extractor(
            audio,
            sampling_rate=self.model_rate,
            return_tensors="pt",
            truncation=False,
            padding="longest",
            return_attention_mask=True,
        )
        if features["input_features"].shape[-1] < WINDOW_FRAMES:
            features = extractor(
                audio, sampling_rate=self.model_rate, return_tensors="pt", return_attention_mask=True
            )
        out = self.model.generate(
            features["input_features"],
            attention_mask=features["attention_mask"],
            return_timestamps=True,
            return_segments=True,
            **self._options,
        )
        return list(out["segments"][0])

    def _segment(self, piece: Mapping[str, Any], duration: float, t_offset: float) -> Segment | None:
        """Our Segment from one of Whisper's, in stream time; None if empty or wholly past the audio's end."""
        t0 = float(piece["start"])
        if t0 >= duration:
            return None
        t1 = min(max(float(piece["end"]), t0), duration)
        ids = [int(i) for i in torch.as_tensor(piece["tokens"]).reshape(-1).tolist()]
        text = self.processor.tokenizer.decode(
            [i for i in ids if i < self.timestamp_begin], skip_special_tokens=True
        ).strip()
        if not text:
            return None
        language = self._known_language or self._decoded_language(piece.get("result"))
        return Segment(t0=t_offset + t0, t1=t_offset + t1, text=text, language=language)

    def _decoded_language(self, result: Any) -> str | None:
        """The language token among the first decoder tokens (start of transcript, language, task)."""
        sequences = result.get("sequences") if isinstance(result, Mapping) else result
        if not isinstance(sequences, torch.Tensor):
            return None
        for token in sequences.reshape(-1)[:4].tolist():
            if int(token) in self._id_to_language:
                return self._id_to_language[int(token)]
        return None


def _check_language(
    language: str | None, lang_to_id: Mapping[str, int], multilingual: bool, model_dir: Path
) -> str | None:
    """The language code Whisper will be told ('en'), or None to let it detect; EncoderError if unknown."""
    if language is None:
        return None
    wanted = language.strip().lower()
    names: Mapping[str, str] = {}  # "german" -> "de"
    try:
        from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

        names = TO_LANGUAGE_CODE
    except ImportError:  # a transformers without the table: codes only
        pass
    code = names.get(wanted, wanted).strip("<|>")
    if not multilingual:
        if code != "en":
            raise EncoderError(f"Whisper in {model_dir} is English-only; perception.language is {language!r}")
        return "en"
    if f"<|{code}|>" not in lang_to_id:
        raise EncoderError(f"Whisper in {model_dir} does not know perception.language {language!r}")
    return code


__all__ = ["HFWhisperEncoder"]
