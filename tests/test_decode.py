"""Decoding with PyAV (vsalmonn.perception.decode): sampling by presentation time, audio, resume, bad input.

Clips are built by tests/media.py with PyAV; each frame shows its own second and index, so a test reads back
which frame the decoder picked. Real clips of ../shared/media are used where present (skipped otherwise).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests import media
from tests.media import SHARED_MEDIA, read_code
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.decode import (
    AudioChunk,
    DecodeError,
    Frame,
    MediaDecoder,
    decode,
    probe,
    target_size,
)

REPO = Path(__file__).resolve().parents[1]
SPEECH = SHARED_MEDIA / "speech"


def shared(name: str) -> Path:
    path = SHARED_MEDIA / name
    if not path.exists():
        pytest.skip(
            f"{path} is absent (the shared real media folder ../shared/media is not checked out here)"
        )
    return path


def frames_of(items: list[Frame | AudioChunk]) -> list[Frame]:
    return [item for item in items if isinstance(item, Frame)]


def chunks_of(items: list[Frame | AudioChunk]) -> list[AudioChunk]:
    return [item for item in items if isinstance(item, AudioChunk)]


def decode_all(source: Path | str, config: PerceptionConfig | None = None, **kwargs: object) -> list:
    with decode(source, config, **kwargs) as decoder:
        return list(decoder)


# -- built media (once per session) -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def pattern_mp4(built: Path) -> Path:
    """12 s of H.264 (B-frames) at 10 fps in MP4, video only."""
    return media.write_media(built / "pattern.mp4", video_times=media.uniform_times(12, 10))


@pytest.fixture(scope="session")
def speech_prompts() -> list[tuple[Path, float]]:
    prompts = [(SPEECH / "conf-muted.wav", 2.0), (SPEECH / "conf-kicked.wav", 6.5)]
    for path, _ in prompts:
        if not path.exists():
            pytest.skip(
                f"{path} is absent (the shared real media folder ../shared/media is not checked out here)"
            )
    return prompts


@pytest.fixture(scope="session")
def speech_mp4(built: Path, speech_prompts: list[tuple[Path, float]]) -> tuple[Path, list[float], float]:
    """10 s: coded video at 10 fps and a 48 kHz stereo AAC track with two speech prompts at known times."""
    seconds = 10.0
    track, onsets = media.speech_track(speech_prompts, seconds, 48_000)
    path = media.write_media(
        built / "speech.mp4", video_times=media.uniform_times(seconds, 10), audio=np.stack([track, track])
    )
    return path, onsets, seconds


@pytest.fixture(scope="session")
def av_mp4(built: Path) -> Path:
    """10 s: coded video at 10 fps and a 48 kHz stereo AAC tone."""
    return media.write_media(
        built / "av.mp4", video_times=media.uniform_times(10, 10), audio=media.tone(10, 48_000)
    )


@pytest.fixture(scope="session")
def resume_mp4(built: Path) -> Path:
    """40 s of video and a sweep; keyframes every 3.7 s: a resume at 30 s must decode from an earlier one."""
    track = media.chirp(40, 48_000)
    return media.write_media(
        built / "resume.mp4",
        video_times=media.uniform_times(40, 10),
        audio=np.stack([track, 0.5 * track]),
        gop=37,
    )


# -- real clips --------------------------------------------------------------------------------------------


def test_vtest_is_sampled_at_1fps_and_360p() -> None:
    path = shared("vtest.avi")
    info = probe(path)
    assert (info.has_video, info.has_audio) == (True, False)
    assert (info.width, info.height, info.fps, info.video_codec) == (768, 576, 10.0, "msmpeg4")
    assert info.duration == pytest.approx(79.5, abs=0.05)

    items = decode_all(path)
    assert not chunks_of(items), "vtest.avi has no audio"
    frames = frames_of(items)
    assert len(frames) == 80  # instants 0, 1, …, 79 of a 79.5 s clip
    assert [f.t for f in frames] == pytest.approx(list(range(80)), abs=1e-6)
    for frame in frames:
        assert frame.image.shape == (360, 480, 3) and frame.image.dtype == np.uint8
        assert frame.image.flags["C_CONTIGUOUS"] and frame.wallclock is None
    assert len({frames[0].image.tobytes(), frames[40].image.tobytes()}) == 2  # the street changes


@pytest.mark.parametrize(
    ("name", "count", "shape"),
    [("anim-1.mov", 4, (256, 256, 3)), ("alea.mpg", 6, (240, 320, 3))],  # small frames: never upscaled
)
def test_shared_clips_decode(name: str, count: int, shape: tuple[int, int, int]) -> None:
    frames = frames_of(decode_all(shared(name)))
    assert len(frames) == count
    assert [f.t for f in frames] == pytest.approx(list(range(count)), abs=0.02)
    assert all(f.image.shape == shape for f in frames)


def test_raw_stream_duration_is_unknown_not_guessed() -> None:
    """alea.mpg is a bare MPEG-1 stream: FFmpeg's bit-rate guess (0.02 s) must not pass for its duration."""
    info = probe(shared("alea.mpg"))
    assert info.duration is None and info.has_video and info.width == 320


# -- time alignment ------------------------------------------------------------------------------------------


def test_sampled_frame_at_k_shows_second_k(pattern_mp4: Path) -> None:
    frames = frames_of(decode_all(pattern_mp4))
    assert [f.t for f in frames] == pytest.approx(list(range(12)), abs=1e-6)
    assert [read_code(f.image) for f in frames] == [(k, 0) for k in range(12)]
    red, green, blue = media.colour_blocks(frames[3].image)  # channel order is RGB
    assert red[0] > 200 and red[1:].max() < 60
    assert green[1] > 200 and green[[0, 2]].max() < 60
    assert blue[2] > 200 and blue[:2].max() < 60


def test_sampling_rate_is_a_setting(pattern_mp4: Path) -> None:
    frames = frames_of(decode_all(pattern_mp4, PerceptionConfig(fps=2.0, short_side=120)))
    assert [f.t for f in frames] == pytest.approx([k / 2 for k in range(24)], abs=1e-6)
    assert [read_code(f.image) for f in frames] == [(k // 2, 5 * (k % 2)) for k in range(24)]
    assert frames[0].image.shape == (120, 160, 3)


def test_variable_frame_rate_picks_the_first_frame_reaching_each_instant(built: Path) -> None:
    times = media.vfr_times(12)
    path = media.write_media(
        built / "vfr.mkv", video_times=times, time_base=Fraction(1, 1000), container_format="matroska"
    )
    frames = frames_of(decode_all(path))
    expected = [next(t for t in times if t >= k) for k in range(12)]
    assert [f.t for f in frames] == pytest.approx(expected, abs=1e-6)
    assert [read_code(f.image) for f in frames] == [(k, 0) for k in range(12)]


def test_times_are_relative_to_the_container_start(built: Path) -> None:
    """MPEG-TS clocks do not start at 0 (and its AAC keeps the encoder priming): the first frame is at ~0."""
    path = media.write_media(
        built / "clip.ts",
        video_times=media.uniform_times(5, 10),
        audio=media.tone(5, 48_000),
        container_format="mpegts",
    )
    assert probe(path).start_time > 0
    items = decode_all(path)
    frames = frames_of(items)
    assert [f.t for f in frames] == pytest.approx(list(range(5)), abs=0.05)
    assert [read_code(f.image) for f in frames] == [(k, 0) for k in range(5)]
    assert chunks_of(items)[0].t0 == pytest.approx(0.0, abs=0.05)


def test_gap_in_video_yields_one_frame_not_copies(built: Path) -> None:
    times = [*media.uniform_times(2, 10), *[3.55 + i / 10 for i in range(10)]]  # nothing in [2, 3.55)
    path = media.write_media(
        built / "gap.mkv", video_times=times, time_base=Fraction(1, 1000), container_format="matroska"
    )
    frames = frames_of(decode_all(path))
    assert [f.t for f in frames] == pytest.approx([0.0, 1.0, 3.55, 4.05], abs=1e-6)


def test_missing_pts_fall_back_to_frame_index_over_rate(built: Path) -> None:
    """A raw H.264 stream has no timestamps at all: times come from the frame count and the stream's rate."""
    path = media.write_media(
        built / "raw.h264", video_times=media.uniform_times(6, 10), container_format="h264"
    )
    assert probe(path).duration is None
    frames = frames_of(decode_all(path))
    assert [f.t for f in frames] == pytest.approx(list(range(6)), abs=1e-6)
    assert [read_code(f.image) for f in frames] == [(k, 0) for k in range(6)]
    # such a stream cannot seek: resuming decodes from the start and discards
    frames = frames_of(decode_all(path, start=3))
    assert [(f.t, read_code(f.image)) for f in frames] == [(3.0, (3, 0)), (4.0, (4, 0)), (5.0, (5, 0))]


def test_rotated_video_is_turned_upright(built: Path) -> None:
    import av

    path = built / "rotated.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.set_display_rotation(90)  # counter-clockwise, as a phone held upright records
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(media.code_image(i // 10, i % 10), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    frames = frames_of(decode_all(path))
    assert [f.image.shape for f in frames] == [(320, 240, 3)] * 2
    assert [read_code(np.rot90(f.image, k=-1)) for f in frames] == [(0, 0), (1, 0)]


def test_target_size_keeps_aspect_and_never_upscales_by_default() -> None:
    assert target_size(768, 576, 360) == (480, 360)
    assert target_size(576, 768, 360) == (360, 480)
    assert target_size(7680, 4320, 360) == (640, 360)
    assert target_size(256, 256, 360) == (256, 256)
    assert target_size(256, 256, 360, upscale=True) == (360, 360)
    assert target_size(720, 480, 360, sar=Fraction(32, 27)) == (640, 360)  # anamorphic 16:9 DVD


# -- audio ---------------------------------------------------------------------------------------------------


def test_audio_is_16k_mono_contiguous_and_speech_lands_at_its_time(
    speech_mp4: tuple[Path, list[float], float],
) -> None:
    path, onsets, seconds = speech_mp4
    info = probe(path)
    assert (info.has_audio, info.sample_rate, info.channels, info.audio_codec) == (True, 48_000, 2, "aac")

    chunks = chunks_of(decode_all(path, video=False, chunk_s=1.0))
    for chunk in chunks:
        assert chunk.sample_rate == 16_000 and chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1
    assert chunks[0].t0 == pytest.approx(0.0, abs=1e-3)
    for before, after in itertools.pairwise(chunks):
        assert after.t0 == pytest.approx(before.t1, abs=1e-9)
    assert all(len(c.samples) == 16_000 for c in chunks[:-1])  # one-second chunks on the grid
    audio = np.concatenate([c.samples for c in chunks])
    assert len(audio) / 16_000 == pytest.approx(seconds, rel=0.01)
    for expected in onsets:
        found = media.onset(audio, 16_000, after=expected - 1.0)
        assert found is not None and abs(found - expected) <= 0.1, (found, expected)
        quiet = audio[int((expected - 0.5) * 16_000) : int((expected - 0.2) * 16_000)]
        loud = audio[int(expected * 16_000) : int((expected + 0.3) * 16_000)]
        assert np.sqrt((loud**2).mean()) > 10 * np.sqrt((quiet**2).mean())


def test_audio_gaps_become_silence_or_start_a_new_run(built: Path) -> None:
    path = media.write_media(
        built / "hole.mkv", audio=media.tone(6.0, 48_000), container_format="matroska", audio_skip=(2.0, 3.0)
    )
    chunks = chunks_of(decode_all(path, chunk_s=1.0))
    assert all(b.t0 == pytest.approx(a.t1, abs=1e-9) for a, b in itertools.pairwise(chunks))
    rms = [float(np.sqrt((c.samples**2).mean())) for c in chunks[:6]]
    assert rms[2] < 0.05 and all(abs(r - 0.3) < 0.02 for r in rms[:2] + rms[3:]), rms
    assert sum(len(c.samples) for c in chunks) / 16_000 == pytest.approx(6.0, rel=0.01)

    chunks = chunks_of(decode_all(path, chunk_s=1.0, gap_fill_s=0.5))  # too long to fill: a new run
    jumps = [b.t0 - a.t1 for a, b in itertools.pairwise(chunks)]
    assert len([j for j in jumps if j > 0.9]) == 1 and all(
        j == pytest.approx(0, abs=1e-9) or j > 0.9 for j in jumps
    )


def test_video_and_audio_come_in_presentation_order(av_mp4: Path) -> None:
    path, seconds = av_mp4, 10.0
    items = decode_all(path)
    keys = [item.t if isinstance(item, Frame) else item.t0 for item in items]
    assert keys == sorted(keys)
    assert len(frames_of(items)) == 10 and len(chunks_of(items)) == math.ceil(seconds / 2.0) + 1
    assert not chunks_of(decode_all(path, audio=False))
    assert not frames_of(decode_all(path, video=False))


def test_audio_only_and_video_only_files(built: Path, pattern_mp4: Path) -> None:
    m4a = media.write_media(built / "tone.m4a", audio=media.tone(3.0, 44_100, channels=1), audio_rate=44_100)
    info = probe(m4a)
    assert (info.has_video, info.has_audio, info.sample_rate) == (False, True, 44_100)
    items = decode_all(m4a)
    assert not frames_of(items)
    assert sum(len(c.samples) for c in chunks_of(items)) / 16_000 == pytest.approx(3.0, rel=0.01)
    with pytest.raises(DecodeError, match="no video stream"):
        decode(m4a, audio=False)

    assert not chunks_of(decode_all(pattern_mp4))
    with pytest.raises(DecodeError, match="no audio stream"):
        decode(pattern_mp4, video=False)
    with pytest.raises(ValueError):
        decode(pattern_mp4, video=False, audio=False)


# -- resume --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [30.0, 30.5])
def test_resume_equals_the_tail_of_a_full_decode(resume_mp4: Path, start: float) -> None:
    full, tail = decode_all(resume_mp4), decode_all(resume_mp4, start=start)
    expected = [f for f in frames_of(full) if f.t >= start - 1e-3]
    got = frames_of(tail)
    assert [f.t for f in got] == [f.t for f in expected] and got[0].t == math.ceil(start)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, expected, strict=True))

    full_audio = np.concatenate([c.samples for c in chunks_of(full)])
    assert np.sqrt((full_audio**2).mean()) > 0.1  # a real signal, not silence compared with silence
    tail_chunks = chunks_of(tail)
    assert tail_chunks[0].t0 == pytest.approx(start)  # starts where asked, then follows the 2 s grid
    assert [c.t0 for c in tail_chunks[1:]] == [c.t0 for c in chunks_of(full) if c.t0 > start]
    for chunk in tail_chunks:
        # the same samples: the resampler restarts on the same phase of the source (see _AudioAssembler)
        begin = round(chunk.t0 * 16_000)
        assert np.abs(chunk.samples - full_audio[begin : begin + len(chunk.samples)]).max() <= 1e-4


@pytest.fixture(scope="session", params=["mpegts", "matroska", "mp4"])
def distant_keyframes(built: Path, request: pytest.FixtureRequest) -> Path:
    """40 s with keyframes only at 0 and 25 s, in each container a resume must handle alike."""
    track = media.chirp(40, 48_000)
    suffix = {"mpegts": ".ts", "matroska": ".mkv", "mp4": ".mp4"}[request.param]
    return media.write_media(
        built / f"distant{suffix}",
        video_times=media.uniform_times(40, 10),
        audio=np.stack([track, 0.5 * track]),
        gop=250,
        container_format=request.param,
    )


@pytest.mark.parametrize("start", [20.0, 27.3])
def test_resume_between_distant_keyframes_loses_nothing(distant_keyframes: Path, start: float) -> None:
    """MPEG-TS seeks by bytes and lands mid-GOP; the decoder then drops frames up to the next keyframe."""
    full, tail = decode_all(distant_keyframes), decode_all(distant_keyframes, start=start)
    expected = [f for f in frames_of(full) if f.t >= start - 1e-3]
    got = frames_of(tail)
    assert [f.t for f in got] == [f.t for f in expected] and len(got) == 40 - math.ceil(start)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, expected, strict=True))
    full_audio = np.concatenate([c.samples for c in chunks_of(full)])
    tail_chunks = chunks_of(tail)
    assert tail_chunks[0].t0 == pytest.approx(start)
    assert [c.t0 for c in tail_chunks[1:]] == [c.t0 for c in chunks_of(full) if c.t0 > start]
    for chunk in tail_chunks:
        begin = round(chunk.t0 * 16_000)
        assert np.abs(chunk.samples - full_audio[begin : begin + len(chunk.samples)]).max() <= 1e-4


def test_a_corrupt_middle_costs_only_the_damaged_part(built: Path, tmp_path: Path) -> None:
    """40 KB of garbage mid-file: what lies before and after it still decodes, with no error."""
    track = media.chirp(40, 48_000)
    clean = media.write_media(
        built / "before-damage.mp4", video_times=media.uniform_times(40, 10), audio=np.stack([track, track])
    )
    damaged = tmp_path / "damaged.mp4"
    data = bytearray(clean.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 40_000] = np.random.default_rng(1).integers(0, 256, 40_000, np.uint8).tobytes()
    damaged.write_bytes(bytes(data))

    full = frames_of(decode_all(clean))
    with decode(damaged) as decoder:
        items = list(decoder)  # no DecodeError: damage is skipped packet by packet
        assert decoder.bad_packets > 0
    got = {f.t: f for f in frames_of(items)}
    assert max(got) >= 39.0 and min(got) == 0.0, sorted(got)
    lost = [f.t for f in full if f.t not in got]
    assert len(lost) <= 10, lost  # a few seconds around the damage at most
    same = [f for f in full if f.t in got and f.t < 10.0]
    assert same and all(np.array_equal(f.image, got[f.t].image) for f in same)
    assert len(chunks_of(items)) >= 15


def test_resume_vtest_matches_full_decode() -> None:
    path = shared("vtest.avi")
    full = [f for f in frames_of(decode_all(path)) if f.t >= 30]
    tail = frames_of(decode_all(path, start=30))
    assert [f.t for f in tail] == [f.t for f in full] == pytest.approx(list(range(30, 80)))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(tail, full, strict=True))


def test_resume_at_the_end_yields_nothing_and_no_error(pattern_mp4: Path) -> None:
    assert decode_all(pattern_mp4, start=11.95) == []


# -- live sources --------------------------------------------------------------------------------------------


def test_live_items_carry_wall_clock_time(pattern_mp4: Path) -> None:
    """Wall-clock time follows stream time from the first item, but never runs ahead of the clock by > 2 s.

    A file decoded as if live runs faster than real time, which a live source cannot: from the frame at 3 s
    on, the mapping is re-anchored to now.
    """
    before = time.time()
    frames = frames_of(decode_all(pattern_mp4, live=True, start=5.0))  # a live source cannot seek: ignored
    after = time.time()
    assert frames[0].t == 0.0 and len(frames) == 12
    walls = [f.wallclock for f in frames]
    assert all(w is not None and before - 1 <= w <= after + 2 for w in walls)
    assert [w - walls[0] for w in walls[:3]] == pytest.approx([0.0, 1.0, 2.0], abs=1e-6)
    assert all(f.wallclock is None for f in frames_of(decode_all(pattern_mp4)))


# -- bad input -----------------------------------------------------------------------------------------------


def _bad_inputs(root: Path, good_mp4: Path) -> dict[str, tuple[Path, str]]:
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    text = root / "notes.mp4"
    text.write_text("this is a shopping list, not a video\n" * 50)
    return {
        "missing": (root / "missing.mp4", "no such file"),
        "directory": (root, "is a directory"),
        "empty": (empty, "empty file"),
        "text named .mp4": (text, "not a readable media file"),
        "truncated mp4": (media.truncate(good_mp4, root / "cut.mp4", 0.5), "not a readable media file"),
        "unsupported codec": (media.write_unsupported_codec(root / "qzqz.avi"), "unsupported video codec"),
        "no video or audio": (media.write_subtitles_only(root / "subtitles.mkv"), "no video or audio stream"),
    }


def test_bad_inputs_raise_one_line_decode_errors_at_open(tmp_path: Path, pattern_mp4: Path) -> None:
    for case, (path, reason) in _bad_inputs(tmp_path, pattern_mp4).items():
        with pytest.raises(DecodeError) as caught:
            MediaDecoder(path)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and reason in message, (case, message)


def test_probe_raises_decode_error_for_unreadable_files(tmp_path: Path, pattern_mp4: Path) -> None:
    bad = _bad_inputs(tmp_path, pattern_mp4)
    for case in ("missing", "empty", "text named .mp4", "truncated mp4"):
        with pytest.raises(DecodeError):
            probe(bad[case][0])
    info = probe(bad["no video or audio"][0])  # readable, just nothing to decode
    assert (info.has_video, info.has_audio) == (False, False)


def test_refused_url_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="refused") as caught:
        decode("http://127.0.0.1:9/live.ts", timeout_s=5)
    assert str(caught.value).startswith("http://127.0.0.1:9/live.ts: ")


@pytest.mark.parametrize("fmt", ["matroska", "avi"])
def test_truncated_mid_stream_yields_what_it_can_then_raises(
    tmp_path: Path, fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    codec = "mpeg4" if fmt == "avi" else "libx264"
    whole = media.write_media(
        tmp_path / f"whole.{fmt}",
        video_times=media.uniform_times(20, 10),
        video_codec=codec,
        container_format=fmt,
    )
    cut = media.truncate(whole, tmp_path / f"cut.{fmt}", 0.5)
    got: list[Frame] = []
    with caplog.at_level(logging.WARNING), pytest.raises(DecodeError, match="truncated") as caught:
        for item in decode(cut):
            got.append(item)
    assert 5 <= len(got) <= 12 and [read_code(f.image)[0] for f in got] == list(range(len(got)))
    assert "\n" not in str(caught.value) and str(cut) in str(caught.value)
    assert any("truncated" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert len(frames_of(decode_all(whole))) == 20  # the whole file is not mistaken for a truncated one


def test_8k_frames_are_scaled_down_one_at_a_time(built: Path) -> None:
    path = media.write_media(
        built / "8k.avi",
        video_times=[0.0, 0.5, 1.0],
        size=(7680, 4320),
        video_codec="mjpeg",
        container_format="avi",
        yuv=media.code_yuv420,
    )
    info = probe(path)
    assert (info.width, info.height) == (7680, 4320)
    # peak memory of a fresh process that only decodes: a 7680x4320 frame is 50 MB in YUV, 100 MB in RGB
    script = (
        "import json, sys\n"
        "from vsalmonn.perception.decode import decode\n"
        "frames = [(f.t, f.image.shape) for f in decode(sys.argv[1])]\n"
        # VmHWM, not ru_maxrss: the latter survives exec on Linux and would report pytest's own peak
        "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
        "print(json.dumps({'frames': frames, 'peak_mb': int(hwm.split()[1]) / 1024}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["frames"] == [[0.0, [360, 640, 3]], [1.0, [360, 640, 3]]]
    assert report["peak_mb"] < 600, report
    frames = frames_of(decode_all(path))
    assert [read_code(f.image) for f in frames] == [(0, 0), (1, 0)]
