"""Opening and describing containers with PyAV: files, URLs and capture devices (DESIGN §2).

Why it is built this way:

- **Apart from decoding.** URL sources (reconnects, protocol options such as `rtsp_transport`), capture
  devices (`format="v4l2"`) and `probe` (headers only, no decoding) open containers without decoding them.
- **One error type, one line.** Every failure to open becomes `DecodeError` with a short, human reason naming
  the source (`source_message`), and every such message passes the URL-credential redaction.
- **Stream choice and time origin in one place.** Which stream of a kind is decoded (FFmpeg's best, never
  cover art), its frame rate, the container's time origin and a duration that is not a bit-rate guess are
  what both `probe` and `MediaDecoder` need to agree on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import av
import av.error
from av.container import InputContainer
from av.stream import Disposition

from vsalmonn.memory_store.redact import redact
from vsalmonn.perception.media import DecodeError, MediaInfo

__all__ = [
    "av_reason",
    "container_origin",
    "is_url",
    "media_info",
    "open_container",
    "pick_stream",
    "probe",
    "source_message",
    "stream_rate",
    "trusted_duration",
]

_AVFMT_NOTIMESTAMPS = 0x80  # raw elementary streams: FFmpeg only guesses their duration from the bit rate


def is_url(source: str) -> bool:
    """True for network sources (rtsp://, http(s)://, udp://, srt://, …): they are not checked as paths."""
    return "://" in source


def source_message(source: str, reason: str) -> str:
    """`source: reason` on one line, redacted."""
    # Every message naming a source passes here: a URL's credentials (and FFmpeg's echo of them) stop here.
    return redact(f"{source}: {' '.join(str(reason).split())}")


def av_reason(exc: BaseException, timeout_s: float | None = None) -> str:
    """A short, human reason for a PyAV/OS error, without PyAV's errno prefix or repeated file name."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError) and not isinstance(exc, av.error.FFmpegError):
        return "permission denied"
    if isinstance(exc, av.error.InvalidDataError):
        return "not a readable media file (invalid data: corrupt, truncated or not media)"
    if isinstance(exc, av.error.DecoderNotFoundError):
        return "unsupported codec (no decoder in this FFmpeg build)"
    if isinstance(exc, av.error.ExitError | TimeoutError) and timeout_s is not None:
        return f"timed out after {timeout_s:g} s"
    strerror = getattr(exc, "strerror", None)
    return str(strerror or exc or type(exc).__name__)


def open_container(
    source: str | Path,
    *,
    timeout_s: float | None = 10.0,
    format: str | None = None,
    options: dict[str, str] | None = None,
) -> InputContainer:
    """Open a file, URL or capture device for reading, or raise DecodeError.

    Kept apart from decoding so that URL sources (reconnects, protocol options such as `rtsp_transport`) and
    capture devices (`format="v4l2"`) reuse it. `timeout_s` bounds both opening and each later read (PyAV's
    interrupt callback), so a dead network source fails instead of hanging the daemon; for files it is
    harmless.
    """
    src = str(source)
    if not is_url(src) and format is None:
        path = Path(src)
        if not path.exists():
            raise DecodeError(source_message(src, "no such file"))
        if path.is_dir():
            raise DecodeError(source_message(src, "is a directory"))
        if path.stat().st_size == 0:
            raise DecodeError(source_message(src, "empty file"))
    try:
        container = av.open(
            src,
            mode="r",
            format=format,
            options=dict(options or {}),
            timeout=timeout_s,
            metadata_errors="ignore",
        )
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(source_message(src, av_reason(exc, timeout_s))) from exc
    if not isinstance(container, InputContainer):  # pragma: no cover - mode="r" always gives one
        container.close()
        raise DecodeError(source_message(src, "not an input container"))
    return container


def pick_stream(container: InputContainer, kind: str) -> Any | None:
    """The stream of `kind` to decode: FFmpeg's best one, skipping cover art and preferring decodable ones."""
    streams = container.streams.video if kind == "video" else container.streams.audio
    candidates = [s for s in streams if not (s.disposition & Disposition.attached_pic)]
    if not candidates:
        return None
    decodable = [s for s in candidates if s.codec_context is not None]
    try:
        best = container.streams.best(kind)
    except (av.error.FFmpegError, ValueError):
        best = None
    if best is not None and best in decodable:
        return best
    return decodable[0] if decodable else candidates[0]


def stream_rate(stream: Any) -> float | None:
    """Frames per second of a video stream as FFmpeg best guesses it, or None."""
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if math.isfinite(value) and value > 0:
                return value
    return None


def container_origin(container: InputContainer) -> float:
    """Seconds of the container's start time: stream time 0 (so the first frame is at about 0)."""
    if container.start_time is not None:
        return container.start_time / av.time_base
    starts = [
        float(s.start_time * s.time_base)
        for s in container.streams
        if s.start_time is not None and s.time_base is not None
    ]
    return min(starts) if starts else 0.0


def trusted_duration(container: InputContainer) -> float | None:
    """The container's duration in seconds, or None where it is only a bit-rate guess or absent."""
    if container.format.flags & _AVFMT_NOTIMESTAMPS:  # even the streams' durations are bit-rate guesses
        return None
    stream_durations = [
        float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base is not None
    ]
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return max(stream_durations) if stream_durations else None


def media_info(source: str, container: InputContainer) -> MediaInfo:
    """What the headers of an open container say (the streams `MediaDecoder` would choose)."""
    video = pick_stream(container, "video")
    audio = pick_stream(container, "audio")
    vctx = video.codec_context if video is not None else None
    actx = audio.codec_context if audio is not None else None
    return MediaInfo(
        source=source,
        format=container.format.name,
        duration=trusted_duration(container),
        start_time=container_origin(container),
        has_video=vctx is not None,
        has_audio=actx is not None,
        width=vctx.width if vctx is not None else None,
        height=vctx.height if vctx is not None else None,
        fps=stream_rate(video) if vctx is not None else None,
        video_codec=vctx.name if vctx is not None else None,
        audio_codec=actx.name if actx is not None else None,
        sample_rate=actx.sample_rate if actx is not None else None,
        channels=actx.channels if actx is not None else None,
    )


def probe(source: str | Path, *, timeout_s: float | None = 10.0) -> MediaInfo:
    """Describe a source from its headers (no decoding). `has_video`/`has_audio` count decodable streams only.

    Raises DecodeError where the container itself cannot be read; a readable file with nothing decodable is
    described (both flags False), and it is `MediaDecoder` that refuses it.
    """
    container = open_container(source, timeout_s=timeout_s)
    try:
        return media_info(str(source), container)
    finally:
        container.close()
