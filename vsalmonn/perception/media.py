"""What decoding hands to the rest of perception: sampled frames, audio chunks, a media probe and its error.

These types live apart from `decode` so that encoders, the daemon and plugins can name them without importing
PyAV. Times are seconds of *stream time* (DESIGN §2): measured from the start of the source, so a file that is
resumed at 30 s reports the same times as a full pass, and a moment found in memory can be cited and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DecodeError(Exception):
    """A source that cannot be decoded (or stopped being decodable), with a one-line reason naming it.

    The daemon logs the message and marks the stream failed or skipped; it never needs to understand PyAV's
    exception hierarchy, which is why every PyAV error is translated into this one type.
    """


class NothingToDecode(DecodeError):
    """A source that opens but holds nothing this build decodes: no video or audio stream, or only codecs
    without a decoder. The daemon marks such a stream (or a watched folder's file) skipped rather than failed:
    retrying cannot help, and nothing is wrong with the source as such."""


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One sampled video frame.

    `t` is the frame's own presentation time (not the sampling instant it was chosen for), so the time a
    citation points to is a time at which this exact picture was shown. `wallclock` is the Unix time at which
    the frame was shown, for live sources only; files have no meaningful wall clock and carry None.
    """

    t: float
    image: np.ndarray  # (H, W, 3) uint8 RGB, C-contiguous; short side = config.short_side unless smaller
    wallclock: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class AudioChunk:
    """A stretch of mono float32 audio at `sample_rate`, starting at stream time `t0`.

    Chunks of one decode are contiguous (the next chunk's t0 is this chunk's t1) except across a gap in the
    source longer than the decoder is willing to fill with silence; see `MediaDecoder`.
    """

    t0: float
    samples: np.ndarray  # (n,) float32 in [-1, 1]
    sample_rate: int
    wallclock: float | None = None

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def t1(self) -> float:
        return self.t0 + self.duration


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What a probe learns from the container headers, without decoding.

    `duration` is None where the container has no trustworthy duration: live sources and raw elementary
    streams (e.g. an .h264 or .mpg video stream without a container), for which FFmpeg only guesses from the
    bit rate. `width`/`height` are the coded size of the chosen video stream; `fps` its guessed frame rate.
    """

    source: str
    format: str
    duration: float | None
    start_time: float
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
