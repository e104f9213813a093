"""The default speech encoder on real recorded speech, with the real shipped Whisper-base.

The track is built from ../shared/media/speech prompts (8 kHz telephony recordings) resampled to 16 kHz and
placed at known times; the transcript must hold each prompt's key words near where the prompt was put.
The model is joined from its packages into a temporary data directory with the network disabled, so a
run that tried to reach a hub would fail here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.encoders import EncoderError, Segment, SpeechEncoder, create_encoder
from vsalmonn.perception.encoders.speech import WhisperEncoder
from vsalmonn.perception.models import MANIFEST, whisper_base_dir

from .words import normalise

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "media" / "speech"
RATE = 16_000
# (prompt file, where it starts in the track in seconds, words it must yield): words chosen that Whisper-base
# gets right on these recordings; "eaten" in tt-weasels, for one, is sometimes heard as "even".
PLACED = [
    ("conf-now-recording", 2.0, {"conference", "recorded"}),
    ("vm-nobodyavail", 9.0, {"nobody", "available"}),
    ("tt-weasels", 16.0, {"weasels", "phone"}),
]
TRACK_SECONDS = 20.5
TOLERANCE = 2.0


def _need_speech() -> None:
    if not SPEECH.is_dir():
        pytest.skip(f"the recorded speech prompts are absent ({SPEECH}); they come with the shared media")


def load_prompt(name: str, rate: int = RATE) -> np.ndarray:
    """A prompt as float32 mono at `rate`, resampled by PyAV (libswresample)."""
    _need_speech()
    out: list[np.ndarray] = []
    with av.open(str(SPEECH / f"{name}.wav")) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(audio=0):
            out += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32)


def quiet_noise(seconds: float, seed: int = 0) -> np.ndarray:
    """A faint noise floor, as a real recording has, rather than exact digital silence."""
    return np.random.default_rng(seed).normal(0.0, 0.003, int(seconds * RATE)).astype(np.float32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("speech-data")
    yield path
    shutil.rmtree(path, ignore_errors=True)  # 145 MB: do not leave it to pytest's retention of old runs


@pytest.fixture(scope="module")
def encoder(data_dir: Path) -> WhisperEncoder:
    """Joined and loaded with HF_HUB_OFFLINE=1 and every socket connection refused."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted while loading the speech encoder")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        enc = create_encoder("speech", "faster-whisper", PerceptionConfig(language="en"), data_dir)
    assert isinstance(enc, WhisperEncoder)
    assert isinstance(enc, SpeechEncoder)
    return enc


def words_of(segments: list[Segment]) -> list[tuple[str, float]]:
    return [(normalise(w.text), w.t0) for s in segments for w in s.words]


def test_prompts_at_known_times_in_stream_time(encoder: WhisperEncoder) -> None:
    track = quiet_noise(TRACK_SECONDS)
    for name, at, _ in PLACED:
        prompt = load_prompt(name)
        track[int(at * RATE) : int(at * RATE) + prompt.size] += prompt
    offset = 1234.5
    segments = encoder.transcribe(track, t_offset=offset)

    words = words_of(segments)
    assert words, "no words recognised"
    for name, at, expected in PLACED:
        for key in expected:
            times = [t for w, t in words if w == key]
            assert times, f"{key!r} of {name} not in transcript {[s.text for s in segments]}"
            assert any(abs(t - (offset + at)) <= TOLERANCE for t in times), (
                f"{key!r} of {name} at {times}, placed at {offset + at}"
            )
    for s in segments:
        assert offset <= s.t0 <= s.t1 <= offset + TRACK_SECONDS + 0.5
        assert s.text and s.language == "en"
        assert all(s.t0 - 0.01 <= w.t0 <= w.t1 <= s.t1 + 0.01 for w in s.words)
        assert "".join(w.text for w in s.words) == s.text.replace(" ", "")


def test_short_clip_at_zero_offset(encoder: WhisperEncoder) -> None:
    clip = quiet_noise(3.0, seed=1)
    prompt = load_prompt("conf-muted")
    clip[RATE : RATE + prompt.size] += prompt
    segments = encoder.transcribe(clip)
    words = words_of(segments)
    assert "muted" in [w for w, _ in words], [s.text for s in segments]
    assert all(0.0 <= t <= 3.0 for _, t in words)
    assert next(t for w, t in words if w == "muted") == pytest.approx(1.0, abs=TOLERANCE)


def test_silence_and_empty_give_nothing(encoder: WhisperEncoder) -> None:
    started = time.perf_counter()
    assert encoder.transcribe(quiet_noise(8.0), t_offset=50.0) == []
    assert encoder.transcribe(np.zeros(3 * RATE, np.float32)) == []
    assert encoder.transcribe(np.zeros(0, np.float32), t_offset=7.0) == []
    assert time.perf_counter() - started < 5.0, "silence should be rejected by the VAD before Whisper runs"


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(RATE, np.float64),
        np.zeros((RATE, 1), np.float32),
        np.zeros((2, RATE), np.float32),
        [0.0] * 10,
    ],
    ids=["float64", "column", "stereo", "list"],
)
def test_wrong_input_is_refused(encoder: WhisperEncoder, bad: object) -> None:
    with pytest.raises(ValueError) as info:
        encoder.transcribe(bad)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_other_sample_rate_and_override_folder(encoder: WhisperEncoder) -> None:
    """A pipeline at 8 kHz gets the same words; the override loads an existing CTranslate2 folder."""
    config = PerceptionConfig(sample_rate=8000, whisper_model=encoder.model_dir, language="en")
    enc8 = WhisperEncoder.from_config(config, Path("/nonexistent-data-dir"))
    assert enc8.model_dir == encoder.model_dir
    segments = enc8.transcribe(load_prompt("vm-goodbye", rate=8000), t_offset=3.0)
    assert "goodbye" in [w for w, _ in words_of(segments)], segments
    assert 3.0 <= segments[0].t0 < 4.5


def test_joined_folder_is_reused(encoder: WhisperEncoder, data_dir: Path) -> None:
    model_bin = encoder.model_dir / "model.bin"
    assert encoder.model_dir == data_dir / "models" / "whisper-base"
    before = model_bin.stat()
    started = time.perf_counter()
    assert whisper_base_dir(data_dir) == encoder.model_dir
    assert time.perf_counter() - started < 1.0
    started = time.perf_counter()
    again = WhisperEncoder.from_config(PerceptionConfig(), data_dir)
    load_seconds = time.perf_counter() - started
    after = model_bin.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert load_seconds < 10.0, f"second start took {load_seconds:.1f} s"
    assert again.model_dir == encoder.model_dir
    assert not [p for p in (data_dir / "models").iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_concurrent_joins_and_repair(tmp_path: Path) -> None:
    """Two processes joining at once both get one whole folder; a damaged folder is joined again."""
    code = (
        "import sys, pathlib, vsalmonn.perception.models as m; "
        "print(m.whisper_base_dir(pathlib.Path(sys.argv[1])))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    folder = tmp_path / "models" / "whisper-base"
    assert outputs == [str(folder)] * 2
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["files"]["model.bin"]["size"] == (folder / "model.bin").stat().st_size
    digest = hashlib.sha256((folder / "model.bin").read_bytes()).hexdigest()
    assert digest == manifest["files"]["model.bin"]["sha256"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".whisper-base.lock", "whisper-base"]

    with (folder / "model.bin").open("r+b") as f:  # a disk that lost the end of the file
        f.truncate(1000)
    (tmp_path / "models" / ".whisper-base.tmp-999-dead").mkdir()  # a join that was killed midway
    assert whisper_base_dir(tmp_path) == folder
    assert (folder / "model.bin").stat().st_size == manifest["files"]["model.bin"]["size"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".whisper-base.lock", "whisper-base"]
    shutil.rmtree(tmp_path / "models")


def test_bad_override_folders(tmp_path: Path, encoder: WhisperEncoder) -> None:
    def refused(folder: Path, needle: str) -> None:
        with pytest.raises(EncoderError) as info:
            WhisperEncoder.from_config(PerceptionConfig(whisper_model=folder), tmp_path)
        message = str(info.value)
        assert "\n" not in message and needle in message, message

    refused(tmp_path / "nowhere", "does not exist")
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    shutil.copy(encoder.model_dir / "config.json", no_tokenizer / "config.json")
    (no_tokenizer / "model.bin").write_bytes(b"checked before any load")
    refused(no_tokenizer, "tokenizer.json")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(encoder.model_dir / name, corrupt / name)
    with (encoder.model_dir / "model.bin").open("rb") as src:
        (corrupt / "model.bin").write_bytes(src.read(1_000_000))  # a real header, then the file stops
    refused(corrupt, "cannot load")
