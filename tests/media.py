"""Test media built with PyAV itself (no ffmpeg CLI): clips whose content says what time it is.

Every video frame built here shows a code: the top band holds the second it belongs to (8 bars, a bit each),
the middle band the frame's index within that second, and the bottom band three pure red, green and blue
blocks (to check channel order). A decoder that picks the wrong frame, or labels it with the wrong time, reads
back the wrong code. Audio tracks are built from arrays, and the real speech prompts of ../shared/media/speech
can be mixed in at known times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODE_BITS = 8
SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


# -- the frame code ------------------------------------------------------------------------------------------


def _bands(height: int) -> tuple[slice, slice, slice]:
    a, b = int(height * 0.4), int(height * 0.8)
    return slice(0, a), slice(a, b), slice(b, height)


def code_image(second: int, sub: int, width: int = 320, height: int = 240) -> np.ndarray:
    """An RGB frame showing `second` and `sub` as white-on-black bars, above red, green and blue blocks."""
    image = np.zeros((height, width, 3), np.uint8)
    top, middle, bottom = _bands(height)
    bar = width // CODE_BITS
    for bit in range(CODE_BITS):
        cols = slice(bit * bar, (bit + 1) * bar)
        if (second >> bit) & 1:
            image[top, cols] = 255
        if (sub >> bit) & 1:
            image[middle, cols] = 255
    third = width // 3
    for channel in range(3):
        image[bottom, channel * third : (channel + 1) * third, channel] = 255
    return image


def read_code(image: np.ndarray) -> tuple[int, int]:
    """(second, sub) shown by a frame of `code_image`, at whatever size it was scaled to."""
    height, width = image.shape[:2]
    top, middle, _ = _bands(height)
    bar = width / CODE_BITS
    values = []
    for band in (top, middle):
        rows = slice(band.start + (band.stop - band.start) // 4, band.stop - (band.stop - band.start) // 4)
        value = 0
        for bit in range(CODE_BITS):
            cols = slice(
                int(bit * bar + bar / 4), max(int(bit * bar + bar / 4) + 1, int((bit + 1) * bar - bar / 4))
            )
            if image[rows, cols].mean() > 128:
                value |= 1 << bit
        values.append(value)
    return values[0], values[1]


def colour_blocks(image: np.ndarray) -> np.ndarray:
    """Mean RGB of the red, green and blue blocks, as a (3, 3) array (block, channel)."""
    height, width = image.shape[:2]
    _, _, bottom = _bands(height)
    rows = slice(
        bottom.start + (bottom.stop - bottom.start) // 4, bottom.stop - (bottom.stop - bottom.start) // 4
    )
    third = width // 3
    return np.array(
        [
            image[rows, c * third + third // 4 : (c + 1) * third - third // 4].reshape(-1, 3).mean(0)
            for c in range(3)
        ]
    )


def code_yuv420(second: int, sub: int, width: int, height: int) -> np.ndarray:
    """The code (without the colour blocks) straight in yuv420p: huge frames never exist as RGB."""
    luma = np.full((height, width), 16, np.uint8)
    top, middle, _ = _bands(height)
    bar = width // CODE_BITS
    for bit in range(CODE_BITS):
        cols = slice(bit * bar, (bit + 1) * bar)
        if (second >> bit) & 1:
            luma[top, cols] = 235
        if (sub >> bit) & 1:
            luma[middle, cols] = 235
    chroma = np.full((height // 2, width), 128, np.uint8)  # U then V, each (h/2, w/2), stacked as PyAV wants
    return np.concatenate([luma, chroma])


def frame_codes(times: Sequence[float]) -> list[tuple[int, int]]:
    """(second, index within that second) of each frame time: what `code_image` draws for it."""
    codes = []
    previous, sub = None, 0
    for t in times:
        second = math.floor(t + 1e-9)
        sub = sub + 1 if second == previous else 0
        previous = second
        codes.append((second, sub))
    return codes


# -- audio ---------------------------------------------------------------------------------------------------


def load_wav(path: Path, rate: int) -> np.ndarray:
    """A sound file as mono float32 at `rate` (the speech prompts are 8 kHz)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    parts = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(parts).astype(np.float32)


def onset(samples: np.ndarray, rate: int, threshold: float = 0.02, after: float = 0.0) -> float | None:
    """Time of the first 10 ms window at or after `after` whose RMS exceeds `threshold`."""
    win = rate // 100
    first = int(after * rate) // win
    n = len(samples) // win
    if n <= first:
        return None
    rms = np.sqrt((samples[: n * win].reshape(n, win)[first:] ** 2).mean(1))
    hits = np.flatnonzero(rms > threshold)
    return None if not len(hits) else (first + int(hits[0])) * win / rate


def speech_track(
    placements: Sequence[tuple[Path, float]], seconds: float, rate: int, noise: float = 1e-3, seed: int = 0
) -> tuple[np.ndarray, list[float]]:
    """A mono track of `seconds` with each prompt added at its time; also each prompt's speech onset time."""
    rng = np.random.default_rng(seed)
    track = (rng.standard_normal(round(seconds * rate)) * noise).astype(np.float32)
    onsets = []
    for path, at in placements:
        speech = load_wav(path, rate)
        start = round(at * rate)
        end = min(len(track), start + len(speech))
        track[start:end] += speech[: end - start]
        inner = onset(speech, rate)
        assert inner is not None, f"{path} has no speech above the threshold"
        onsets.append(at + inner)
    return track, onsets


def tone(
    seconds: float, rate: int, freq: float = 440.0, channels: int = 2, amplitude: float = 0.3
) -> np.ndarray:
    """A sine tone as a (channels, n) float32 array."""
    t = np.arange(round(seconds * rate)) / rate
    wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[None, :], channels, axis=0)


def chirp(
    seconds: float, rate: int, f0: float = 200.0, f1: float = 3000.0, noise: float = 0.01
) -> np.ndarray:
    """A mono sweep from f0 to f1 Hz plus seeded noise: audio that differs everywhere, high notes included."""
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    rng = np.random.default_rng(2)
    return (0.3 * np.sin(phase) + noise * rng.standard_normal(len(t))).astype(np.float32)


# -- writing files -------------------------------------------------------------------------------------------


def uniform_times(seconds: float, fps: float) -> list[float]:
    return [i / fps for i in range(round(seconds * fps))]


def vfr_times(seconds: float, seed: int = 1, low: float = 0.02, high: float = 0.4) -> list[float]:
    """Frame times with random gaps in [low, high): a variable frame rate stream (rounded to 1 ms)."""
    rng = np.random.default_rng(seed)
    times, t = [], 0.0
    while t < seconds:
        times.append(round(t, 3))
        t += float(rng.uniform(low, high))
    return times


def write_media(
    path: Path,
    *,
    video_times: Sequence[float] | None = None,
    size: tuple[int, int] = (320, 240),
    video_codec: str = "libx264",
    rate: int = 10,
    time_base: Fraction | None = None,
    gop: int = 25,
    audio: np.ndarray | None = None,
    audio_rate: int = 48_000,
    audio_codec: str = "aac",
    container_format: str | None = None,
    yuv: Callable[[int, int, int, int], np.ndarray] | None = None,
    audio_skip: tuple[float, float] | None = None,
) -> Path:
    """Write a clip: video frames at `video_times` showing their codes, and/or an audio track.

    `audio` is (channels, n) or (n,) float32 at `audio_rate`. `time_base` (e.g. 1/1000) allows frame times
    off the `rate` grid, i.e. variable frame rate; by default it is 1/rate. `yuv` draws frames in yuv420p
    instead of RGB (for huge frames); B-frames are on for libx264 so decode order differs from display order.
    `audio_skip` = (a, b) leaves out the audio blocks starting in [a, b): a hole in the audio timestamps.
    """
    path = Path(path)
    out = av.open(str(path), "w", format=container_format)
    events: list[tuple[float, int, object]] = []
    vstream = astream = None
    if video_times is not None:
        vstream = out.add_stream(video_codec, rate=rate)
        vstream.width, vstream.height = size
        vstream.pix_fmt = "yuvj420p" if video_codec == "mjpeg" else "yuv420p"
        if video_codec == "libx264":
            vstream.options = {"preset": "ultrafast", "bf": "2", "g": str(gop), "keyint_min": str(gop)}
            vstream.codec_context.max_b_frames = 2
        elif video_codec not in ("mjpeg",):
            vstream.codec_context.gop_size = gop
        vtb = time_base or Fraction(1, rate)
        vstream.codec_context.time_base = vtb
        for t, code in zip(video_times, frame_codes(video_times), strict=True):
            events.append((t, 0, (vtb, round(t / vtb), code)))
    if audio is not None:
        samples = audio if audio.ndim == 2 else audio[None, :]
        astream = out.add_stream(audio_codec, rate=audio_rate)
        astream.layout = "stereo" if samples.shape[0] == 2 else "mono"
        step = 1024
        for i in range(0, samples.shape[1], step):
            if audio_skip is not None and audio_skip[0] <= i / audio_rate < audio_skip[1]:
                continue
            events.append((i / audio_rate, 1, (i, samples[:, i : i + step])))
    events.sort(key=lambda e: (e[0], e[1]))
    afmt = None
    for _, kind, payload in events:
        if kind == 0:
            assert vstream is not None
            vtb, pts, (second, sub) = payload  # type: ignore[misc]
            if yuv is not None:
                frame = av.VideoFrame.from_ndarray(yuv(second, sub, *size), format="yuv420p")
            else:
                frame = av.VideoFrame.from_ndarray(code_image(second, sub, *size), format="rgb24")
            frame.pts, frame.time_base = pts, vtb
            for packet in vstream.encode(frame):
                out.mux(packet)
        else:
            assert astream is not None
            i, block = payload  # type: ignore[misc]
            if afmt is None:
                afmt = astream.codec_context.format.name if astream.codec_context.format else "fltp"
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(block, dtype=np.float32), format="fltp", layout=astream.layout.name
            )
            frame.sample_rate = audio_rate
            frame.pts, frame.time_base = i, Fraction(1, audio_rate)
            for packet in astream.encode(frame):
                out.mux(packet)
    for stream in (vstream, astream):
        if stream is not None:
            for packet in stream.encode(None):
                out.mux(packet)
    out.close()
    return path


def write_unsupported_codec(path: Path) -> Path:
    """An AVI whose video fourcc no decoder knows: a real file FFmpeg can open but not decode."""
    tmp = path.with_suffix(".tmp.avi")
    write_media(tmp, video_times=uniform_times(1, 10), video_codec="mjpeg", container_format="avi")
    data = tmp.read_bytes()
    assert b"MJPG" in data
    path.write_bytes(data.replace(b"MJPG", b"QZQZ"))
    tmp.unlink()
    return path


def write_subtitles_only(path: Path) -> Path:
    """A readable media file with a subtitle stream, neither video nor audio (an .srt under another name)."""
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n\n2\n00:00:03,000 --> 00:00:04,000\nworld\n")
    return path


def truncate(source: Path, target: Path, fraction: float) -> Path:
    """The first `fraction` of a file's bytes: a download or a recording cut off."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


# -- on-screen text ------------------------------------------------------------------------------------------


def text_slide(
    text: str, background: tuple[int, int, int], size: tuple[int, int] = (640, 360), font_size: int = 40
) -> np.ndarray:
    """An RGB frame of `size` (width, height): `text` in white, centred, on a plain `background`."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((size[0] - (right - left)) / 2, (size[1] - (bottom - top)) / 2), text, fill="white", font=font)
    return np.asarray(image)


def write_images(path: Path, images: Sequence[np.ndarray], rate: int = 2) -> Path:
    """Write RGB frames (all one size) as H.264 at `rate` frames a second, the i-th at i / rate."""
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=rate)
    stream.height, stream.width = images[0].shape[:2]
    stream.pix_fmt = "yuv420p"
    stream.options = {"preset": "ultrafast"}
    for i, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    return Path(path)
