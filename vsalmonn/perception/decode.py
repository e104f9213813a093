"""Decoding with PyAV: sampled RGB frames and 16 kHz mono audio chunks in stream time (DESIGN §2).

Why it is built this way:

- **Sampling by presentation time.** The memory is indexed by time, so a frame is chosen for sampling instant
  k/fps as the first frame whose presentation time reaches that instant (within `TIME_EPS`, the rounding of
  millisecond container clocks). This is correct for variable frame rate and for gaps: a gap that covers
  several instants yields one frame (the first one after it), never copies of a stale picture. Frames whose
  pts is missing (raw elementary streams) are counted in frame periods from the last known time.
- **Cheap frames.** Every frame must be decoded (inter-frame codecs), but only sampled ones are converted,
  and each conversion is a single `reformat` to the target size and rgb24: at 1 FPS from 25 fps video the
  colour conversion, the largest per-frame cost after decoding, runs on 4 % of the frames. Frames are decoded
  one at a time, so an 8K source costs a few of its own frames in memory, not a buffer of them.
- **Stream time.** Times are seconds from the container's start time, so the first frame is at about 0 and a
  resumed decode (`start`) reports the same times as a full one; that is what lets the daemon resume a file
  from its committed offset and lets citations point into the file.
- **Audio in chunks on a fixed grid.** Chunks end on multiples of `chunk_s` of stream time, so a resumed
  decode cuts the same chunks as a full decode from there on. Within a decode they are contiguous; short gaps
  in the source are filled with silence so that sample counts and timestamps stay in step. Resampling starts
  on a source sample that lies on the output grid, so sample k is exactly at k / rate and a resumed decode
  produces the same samples as a full one.
- **Presentation order across streams.** Video frames and audio chunks come out ordered by their start time.
  A small reorder buffer holds items until every other stream has moved past them; it is bounded, so a badly
  interleaved file costs order, never memory.
- **One error type.** Every failure reaches the caller as `DecodeError` with a one-line reason naming the
  source; a file that breaks mid-way first yields everything that could be decoded, then raises.

From the package only `vsalmonn.perception.config` and this module's own types (`vsalmonn.perception.media`)
are imported: decoding sits at the bottom of perception.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections.abc import Generator, Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import av.error
import numpy as np
from av.container import InputContainer
from av.stream import Disposition

from vsalmonn.memory_store.redact import redact
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.media import AudioChunk, DecodeError, Frame, MediaInfo, NothingToDecode

__all__ = [
    "AudioChunk",
    "DecodeError",
    "Frame",
    "MediaDecoder",
    "MediaInfo",
    "decode",
    "is_url",
    "open_container",
    "probe",
]

log = logging.getLogger(__name__)

TIME_EPS = 1e-3
"""Seconds by which a frame may fall short of a sampling instant and still count as reaching it: containers
with a 1 ms clock round 30 fps frame times down to e.g. 0.999 s, and that frame is the one shown at 1 s."""

_AVFMT_NOTIMESTAMPS = 0x80  # raw elementary streams: FFmpeg only guesses their duration from the bit rate
_DEFAULT_RATE = 25.0  # frame period for missing pts when a stream declares no rate at all
_MAX_PENDING = 32  # reorder buffer bound (items); a 360p frame is about 0.5 MB
# After a resume's seek: how far past `start` a non-key video packet may be before the seek counts as landed
# mid-GOP (B-frame reordering puts a few packets slightly past it), and how far packets are read ahead.
_LANDING_SLACK_S = 1.0
_LANDING_HORIZON_S = 30.0
_MAX_BAD_PACKETS = (
    50  # consecutive undecodable packets before a live source is declared broken (it reconnects)
)
_GAP_TOLERANCE_S = 0.05  # audio timestamp jitter that is not treated as a gap


def is_url(source: str) -> bool:
    """True for network sources (rtsp://, http(s)://, udp://, srt://, …): they are not checked as paths."""
    return "://" in source


def _one_line(source: str, reason: str) -> str:
    # Every message naming a source passes here: a URL's credentials (and FFmpeg's echo of them) stop here.
    return redact(f"{source}: {' '.join(str(reason).split())}")


def _reason(exc: BaseException, timeout_s: float | None = None) -> str:
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
            raise DecodeError(_one_line(src, "no such file"))
        if path.is_dir():
            raise DecodeError(_one_line(src, "is a directory"))
        if path.stat().st_size == 0:
            raise DecodeError(_one_line(src, "empty file"))
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
        raise DecodeError(_one_line(src, _reason(exc, timeout_s))) from exc
    if not isinstance(container, InputContainer):  # pragma: no cover - mode="r" always gives one
        container.close()
        raise DecodeError(_one_line(src, "not an input container"))
    return container


def _pick_stream(container: InputContainer, kind: str) -> Any | None:
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


def _stream_rate(stream: Any) -> float | None:
    """Frames per second of a video stream as FFmpeg best guesses it, or None."""
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if math.isfinite(value) and value > 0:
                return value
    return None


def _origin(container: InputContainer) -> float:
    """Seconds of the container's start time: stream time 0 (so the first frame is at about 0)."""
    if container.start_time is not None:
        return container.start_time / av.time_base
    starts = [
        float(s.start_time * s.time_base)
        for s in container.streams
        if s.start_time is not None and s.time_base is not None
    ]
    return min(starts) if starts else 0.0


def _trusted_duration(container: InputContainer) -> float | None:
    """The container's duration in seconds, or None where it is only a bit-rate guess or absent."""
    if container.format.flags & _AVFMT_NOTIMESTAMPS:  # even the streams' durations are bit-rate guesses
        return None
    stream_durations = [
        float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base is not None
    ]
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return max(stream_durations) if stream_durations else None


def _info(source: str, container: InputContainer) -> MediaInfo:
    video = _pick_stream(container, "video")
    audio = _pick_stream(container, "audio")
    vctx = video.codec_context if video is not None else None
    actx = audio.codec_context if audio is not None else None
    return MediaInfo(
        source=source,
        format=container.format.name,
        duration=_trusted_duration(container),
        start_time=_origin(container),
        has_video=vctx is not None,
        has_audio=actx is not None,
        width=vctx.width if vctx is not None else None,
        height=vctx.height if vctx is not None else None,
        fps=_stream_rate(video) if vctx is not None else None,
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
        return _info(str(source), container)
    finally:
        container.close()


def target_size(
    width: int, height: int, short_side: int, *, sar: Fraction | None = None, upscale: bool = False
) -> tuple[int, int]:
    """(width, height) of the RGB image for a coded frame of width x height.

    The display aspect is kept (a non-square sample aspect ratio is applied, as a player would), and the short
    side becomes `short_side`. Small frames are not upscaled unless asked: that would add pixels and cost
    without adding information, and encoders resize to their own input anyway.
    """
    display_w = width * float(sar) if sar is not None and sar > 0 else float(width)
    scale = short_side / min(display_w, float(height))
    if scale > 1.0 and not upscale:
        scale = 1.0
    return max(1, round(display_w * scale)), max(1, round(height * scale))


class _AudioAssembler:
    """Turns decoded audio frames into mono chunks at the target rate on a fixed grid of stream time.

    Positions are integer sample indices at the target rate (position p is time p / rate), so chunk borders
    are exact and do not drift. The input timestamps are followed: a gap of up to `gap_fill_s` becomes
    silence (chunks stay contiguous), a longer gap or a jump backwards starts a new run at the new time.
    """

    def __init__(self, rate: int, chunk_s: float, start: float, gap_fill_s: float) -> None:
        self.rate = rate
        self.chunk_n = max(1, round(chunk_s * rate))
        self.start_pos = round(start * rate)
        self.gap_fill_s = gap_fill_s
        self.resampler: av.AudioResampler | None = None  # None between runs of input
        self._in_key: tuple[str, str, int] | None = None
        self.pos: int | None = None  # position of the next resampled sample; None before the first run
        self.in_t: float | None = None  # expected time of the next input frame
        self.buf: list[np.ndarray] = []
        self.buf_len = 0
        self.buf_pos = 0  # position of the first buffered sample
        self.end_pos: int | None = None  # position after the last sample taken in, for the truncation check
        self.dropped_flushes = 0  # resampler flushes that failed (a corrupt frame upset it)

    @property
    def frontier(self) -> float:
        """Stream time before which this assembler will emit nothing more."""
        if self.pos is None:
            return -math.inf
        return (self.buf_pos if self.buf_len else self.pos) / self.rate

    def push(self, frame: av.AudioFrame, t_in: float | None) -> list[tuple[int, np.ndarray]]:
        out: list[tuple[int, np.ndarray]] = []
        if t_in is None:
            t_in = self.in_t if self.in_t is not None else 0.0
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self.pos is not None and self.in_t is not None:
            gap = t_in - self.in_t
            if gap > self.gap_fill_s or gap < -1.0:
                log.info("audio timestamps jump by %.3f s at %.3f s; starting a new run", gap, t_in)
                self._drain_resampler()
                out.extend(self.take(final=True))
                self.pos = None
            elif gap > _GAP_TOLERANCE_S or key != self._in_key:
                self._drain_resampler()  # a new input run: the samples before the gap come out first
        self.in_t = t_in + frame.samples / frame.sample_rate
        if self.resampler is None:
            aligned = self._align(frame, t_in)
            if aligned is None:
                return out  # the whole frame lies before the first grid-aligned input sample
            frame, first = aligned
            if self.pos is None:
                self.pos = self.buf_pos = first
            elif first > self.pos:
                self._append(np.zeros(first - self.pos, np.float32))  # a gap becomes silence
            self._in_key = key
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        try:
            resampled_frames = self.resampler.resample(frame)
        except (av.error.FFmpegError, ValueError):
            self.resampler = None  # a frame it cannot take may leave it unusable: the next frame starts a run
            raise
        for resampled in resampled_frames:
            self._append(resampled.to_ndarray().reshape(-1))
        out.extend(self.take())
        return out

    def finish(self) -> list[tuple[int, np.ndarray]]:
        self._drain_resampler()
        return self.take(final=True)

    def _align(self, frame: av.AudioFrame, t_in: float) -> tuple[av.AudioFrame, int] | None:
        """The frame without the input samples before the output grid, and the output position it starts at.

        A run of input is resampled from an input sample that falls exactly on an output sample (every third
        sample of 48 kHz, every 441st of 44.1 kHz for 16 kHz output: at most 20 ms are dropped). Without this,
        output sample k would lie up to a fraction of a sample off the time k / rate it is labelled with, and
        a resumed decode would start at a different phase and produce slightly different samples.
        """
        in_rate = frame.sample_rate
        period = in_rate // math.gcd(in_rate, self.rate)
        index = round(t_in * in_rate)
        skip = (-index) % period
        first = (index + skip) * self.rate // in_rate
        if skip == 0:
            return frame, first
        if skip >= frame.samples:
            return None
        data = frame.to_ndarray()
        data = data[:, skip:] if frame.format.is_planar else data[:, skip * frame.layout.nb_channels :]
        cut = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(data), format=frame.format.name, layout=frame.layout
        )
        cut.sample_rate = in_rate
        cut.time_base = frame.time_base
        if frame.pts is not None:
            cut.pts = frame.pts + round(skip / in_rate / frame.time_base) if frame.time_base else None
        return cut, first

    def _drain_resampler(self) -> None:
        """Flush the resampler's last samples; a flush that fails (after a corrupt frame) costs only those."""
        resampler, self.resampler = self.resampler, None
        if resampler is None:
            return
        try:
            for resampled in resampler.resample(None):
                self._append(resampled.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as exc:
            self.dropped_flushes += 1
            log.debug("audio resampler flush failed (%s); its last few ms are lost", exc)
        self._in_key = None

    def _append(self, samples: np.ndarray) -> None:
        assert self.pos is not None
        if self.pos < self.start_pos:  # before the resume point: drop
            cut = min(len(samples), self.start_pos - self.pos)
            samples = samples[cut:]
            self.pos += cut
        if not len(samples):
            return
        if not self.buf_len:
            self.buf_pos = self.pos
        self.buf.append(samples)
        self.buf_len += len(samples)
        self.pos += len(samples)
        self.end_pos = self.pos

    def take(self, final: bool = False) -> list[tuple[int, np.ndarray]]:
        """Complete chunks (and, if final, the partial last one) as (position, samples)."""
        if not self.buf_len:
            return []
        boundary = (self.buf_pos // self.chunk_n + 1) * self.chunk_n
        if self.buf_pos + self.buf_len < boundary and not final:
            return []
        data = np.concatenate(self.buf).astype(np.float32, copy=False)
        chunks: list[tuple[int, np.ndarray]] = []
        offset = 0
        while self.buf_pos + self.buf_len >= boundary:
            n = boundary - self.buf_pos
            chunks.append((self.buf_pos, data[offset : offset + n]))
            offset += n
            self.buf_pos = boundary
            self.buf_len -= n
            boundary += self.chunk_n
        if final and self.buf_len:
            chunks.append((self.buf_pos, data[offset:]))
            self.buf_pos += self.buf_len
            self.buf_len = 0
        self.buf = [data[offset:]] if self.buf_len else []
        return chunks


class MediaDecoder:
    """Iterator of `Frame` and `AudioChunk` items of one source, in presentation order.

    Opening happens in the constructor, so a bad source raises DecodeError right away, before iteration.
    Use as a context manager (or call `close`) to release the container promptly.

    Parameters beyond the config:
    - `start`: stream time to resume from. The container is seeked to the keyframe before it and everything
      earlier is decoded but discarded, so the items equal the tail of a full decode. Sources that cannot
      seek (raw streams) are decoded from the beginning and discarded up to `start`.
    - `video`, `audio`: which streams to decode. A requested kind the source lacks is simply absent, unless
      nothing requested is present, which is a DecodeError.
    - `chunk_s`: audio chunk length in seconds (chunks end on multiples of it).
    - `live`: a live source: items carry `wallclock`, `start` is ignored and no truncation check is made.
    - `threads`: decoder threads (0 lets FFmpeg choose); many streams in one daemon may want 1 each.
    - `upscale`: scale frames smaller than `short_side` up (off by default).
    - `gap_fill_s`: audio gaps up to this long become silence; longer ones start a new run of chunks.
    - `timeout_s`, `container_format`, `options`: passed to `open_container` (network timeouts, a capture
      device's format such as "v4l2", protocol options such as {"rtsp_transport": "tcp"}).

    Counters for status reports: `position` (stream time reached), `frames_decoded`, `frames_sampled`,
    `chunks`, `bad_packets` (undecodable packets or frames skipped).
    """

    def __init__(
        self,
        source: str | Path,
        config: PerceptionConfig | None = None,
        *,
        start: float = 0.0,
        video: bool = True,
        audio: bool = True,
        chunk_s: float = 2.0,
        live: bool = False,
        timeout_s: float | None = 10.0,
        threads: int = 0,
        upscale: bool = False,
        gap_fill_s: float = 10.0,
        container_format: str | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        if not (video or audio):
            raise ValueError("decode at least one of video and audio")
        if chunk_s <= 0 or start < 0:
            raise ValueError("chunk_s must be positive and start non-negative")
        self.source = str(source)
        self.config = config or PerceptionConfig()
        self.start = 0.0 if live else float(start)
        self.chunk_s = float(chunk_s)
        self.live = live
        self.upscale = upscale
        self.timeout_s = timeout_s
        self.gap_fill_s = float(gap_fill_s)
        self._unsupported: list[str] = []
        self._container: InputContainer

        self.frames_decoded = 0
        self.frames_sampled = 0
        self.chunks = 0
        self.bad_packets = 0
        self.position = self.start  # stream time reached so far: for progress reports

        self._open_args = (container_format, dict(options or {}), video, audio, threads)
        self._open()
        for kind in self._unsupported:
            log.warning("%s", self._msg(f"unsupported {kind} codec; decoding without that stream"))
        self._seeked = False  # whether a seek moved the container (then missing pts count from `start`)
        self._pts_anchor: tuple[float, int] | None = None  # last known frame time, frames counted since
        self._items: Generator[Frame | AudioChunk, None, None] | None = None

    # -- setup ---------------------------------------------------------------------------------------------

    def _msg(self, reason: str) -> str:
        return _one_line(self.source, reason)

    def _open(self) -> None:
        """Open the container, choose the streams (again after a failed seek, which can leave it unusable)."""
        container_format, options, video, audio, threads = self._open_args
        self._unsupported = []
        self._container = open_container(
            self.source, timeout_s=self.timeout_s, format=container_format, options=options
        )
        try:
            self.info = _info(self.source, self._container)
            self._vstream = self._select("video", video, threads)
            self._astream = self._select("audio", audio, threads)
            if self._vstream is None and self._astream is None:
                if self._unsupported:
                    reason = f"unsupported {' and '.join(self._unsupported)} codec (no decoder in this build)"
                else:
                    wanted = "video or audio" if video and audio else "video" if video else "audio"
                    reason = f"no {wanted} stream"
                raise NothingToDecode(self._msg(reason))
            self._origin = _origin(self._container)
            self._setup_time()
        except BaseException:
            self._container.close()
            raise

    def _select(self, kind: str, wanted: bool, threads: int) -> Any | None:
        if not wanted:
            return None
        stream = _pick_stream(self._container, kind)
        if stream is None:
            return None
        if stream.codec_context is None:  # FFmpeg knows no decoder for it (e.g. an unknown fourcc)
            self._unsupported.append(kind)
            return None
        ctx = stream.codec_context
        ctx.thread_type = "AUTO"
        ctx.thread_count = threads
        return stream

    def _setup_time(self) -> None:
        vs = self._vstream
        self._period = 1.0 / (_stream_rate(vs) or _DEFAULT_RATE) if vs is not None else 0.0
        self._sar: Fraction | None = None
        if vs is not None:
            sar = vs.sample_aspect_ratio or vs.codec_context.sample_aspect_ratio
            self._sar = Fraction(sar) if sar else None
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}
        self._wall_offset: float | None = None
        realtime = getattr(self._container, "start_time_realtime", None)
        # RTSP with sender reports gives the source's own clock: better than our receive time
        if self.live and realtime is not None and realtime > 0:
            self._wall_offset = realtime / 1e6

    # -- iteration -------------------------------------------------------------------------------------------

    def __iter__(self) -> MediaDecoder:
        return self

    def __next__(self) -> Frame | AudioChunk:
        if self._items is None:
            self._items = self._run()
        return next(self._items)

    def __enter__(self) -> MediaDecoder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the container; an unfinished iteration stops."""
        if self._items is not None:
            self._items.close()
        self._container.close()

    @property
    def duration(self) -> float | None:
        return self.info.duration

    def _wallclock(self, t: float) -> float | None:
        """Unix time at which stream time t was shown, for live sources: anchored on the first item."""
        if not self.live:
            return None
        now = time.time()
        if self._wall_offset is None or t + self._wall_offset > now + 2.0:
            # first item, or the source's clock jumped ahead of ours (it cannot really be in the future)
            self._wall_offset = now - t
        return t + self._wall_offset

    def _seek(self, streams: list[Any]) -> Iterator[av.Packet]:
        """The packets to decode: from the keyframe before `start`, checked, else from the beginning.

        A seek is only a request: MP4 and Matroska land on the keyframe before the target, but MPEG-TS seeks
        by byte position and can land after it, mid-GOP, where the decoder drops every frame up to the next
        keyframe (seconds of the resumed stream lost without a word). So the packets after the seek are read
        ahead until each stream shows where decoding will really start (video: its first keyframe; audio:
        its first packet) and, if that is after `start`, the seek is retried from further back (1, 2, 4 ... s)
        and finally replaced by decoding from the beginning. The packets read ahead are decoded, not dropped.
        """
        if self.start <= 0:
            return self._container.demux(streams)
        back = 0.0
        while self.start - back > 0:
            target = self._origin + self.start - back
            try:
                self._container.seek(int(target * av.time_base), backward=True, any_frame=False)
            except (av.error.FFmpegError, OSError) as exc:
                reason = f"cannot seek ({_reason(exc)}); decoding from the start up to {self.start:g} s"
                log.info("%s", self._msg(reason))
                break
            self._seeked = True
            packets = self._container.demux(streams)
            ahead, landed = self._read_ahead(packets, streams)
            if landed:
                return itertools.chain(ahead, packets)
            log.debug("%s", self._msg(f"seek to {self.start - back:g} s landed after {self.start:g} s"))
            back = max(1.0, 2 * back)
        if self._seeked:
            reason = f"no keyframe before {self.start:g} s found by seeking; decoding from 0"
            log.info("%s", self._msg(reason))
        self._seeked = False
        self._container.close()  # a failed seek can leave the demuxer at its end
        self._open()
        return self._container.demux([s for s in (self._vstream, self._astream) if s is not None])

    def _read_ahead(self, packets: Iterator[av.Packet], streams: list[Any]) -> tuple[list[av.Packet], bool]:
        """Packets read after a seek, and whether decoding them starts at or before `start` in every stream.

        Video starts at its first keyframe (the decoder drops what comes before one); audio at its first
        packet. A video packet more than `_LANDING_SLACK_S` past `start` before any keyframe, or a keyframe or
        first audio packet past `start`, means the seek landed too late. A stream with no packet within the
        horizon (it ended before `start`) has nothing to lose.
        """
        ahead: list[av.Packet] = []
        pending = {id(s) for s in streams}
        limit = self.start + TIME_EPS
        while pending:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError):
                break  # the decode loop meets the error again and reports it
            ahead.append(packet)
            t = self._packet_time(packet)
            key = id(packet.stream)
            if key not in pending or t is None:
                if t is not None and t > self.start + _LANDING_HORIZON_S:
                    break
                continue
            if packet.stream is self._vstream:
                if packet.is_keyframe:
                    if t > limit:
                        return ahead, False
                    pending.discard(key)
                elif t > self.start + _LANDING_SLACK_S:
                    return ahead, False
            else:
                if t > limit:
                    return ahead, False
                pending.discard(key)
        return ahead, True

    def _packet_time(self, packet: av.Packet) -> float | None:
        stamp = packet.pts if packet.pts is not None else packet.dts
        tb = packet.time_base or packet.stream.time_base
        if stamp is None or tb is None:
            return None
        return float(stamp * tb) - self._origin

    def _run(self) -> Generator[Frame | AudioChunk, None, None]:
        """The decode loop: demux, decode, sample, order; errors become DecodeError after what was decoded."""
        fps = self.config.fps
        next_k = math.ceil(self.start * fps - TIME_EPS * fps)  # next sampling instant is next_k / fps
        v_last: float | None = None  # time of the last decoded video frame
        v_done = self._vstream is None
        assembler = (
            _AudioAssembler(self.config.sample_rate, self.chunk_s, self.start, self.gap_fill_s)
            if self._astream is not None
            else None
        )
        pending: list[tuple[float, int, Frame | AudioChunk]] = []
        seq = itertools.count()
        newest = -math.inf
        failure: str | None = None

        def queue(key: float, item: Frame | AudioChunk) -> None:
            nonlocal newest
            heapq.heappush(pending, (key, next(seq), item))
            newest = max(newest, key)

        def ready(final: bool = False) -> Iterator[Frame | AudioChunk]:
            limits = [math.inf]
            if not v_done:
                limits.append(v_last if v_last is not None else -math.inf)
            if assembler is not None and not final:
                limits.append(assembler.frontier)
            limit = math.inf if final else min(limits)
            hold_s = 2 * self.chunk_s + 2.0
            while pending and (
                pending[0][0] <= limit or len(pending) > _MAX_PENDING or newest - pending[0][0] > hold_s
            ):
                yield heapq.heappop(pending)[2]

        def chunk_items(chunks: list[tuple[int, np.ndarray]]) -> None:
            assert assembler is not None
            for pos, samples in chunks:
                t0 = pos / assembler.rate
                queue(t0, AudioChunk(t0, samples, assembler.rate, self._wallclock(t0)))
                self.chunks += 1

        packets = self._seek([s for s in (self._vstream, self._astream) if s is not None])
        bad_run = 0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as exc:
                failure = f"read error after {self.position:.1f} s: {_reason(exc, self.timeout_s)}"
                break
            try:
                frames = packet.decode()
                bad_run = 0
            except av.error.FFmpegError as exc:
                self.bad_packets += 1
                bad_run += 1
                log.debug("%s", self._msg(f"undecodable packet skipped: {_reason(exc)}"))
                if self.live and bad_run >= _MAX_BAD_PACKETS:  # a file is read to its end, past any damage
                    failure = f"{bad_run} undecodable packets in a row at {self.position:.1f} s"
                    break
                continue
            for frame in frames:
                try:
                    if packet.stream is self._vstream:
                        t = self._frame_time(frame)
                        v_last = t
                        self.frames_decoded += 1
                        self.position = max(self.position, t)
                        if t + TIME_EPS < next_k / fps:
                            continue  # not sampled: never converted
                        next_k = math.floor((t + TIME_EPS) * fps) + 1
                        self.frames_sampled += 1
                        queue(t, Frame(t, self._image(frame), self._wallclock(t)))
                    elif assembler is not None:
                        chunk_items(assembler.push(frame, self._audio_time(frame)))
                        self.position = max(self.position, assembler.frontier)
                except (av.error.FFmpegError, ValueError) as exc:  # a frame PyAV cannot convert: skip it
                    self.bad_packets += 1
                    log.debug("%s", self._msg(f"unconvertible frame skipped: {_reason(exc)}"))
            yield from ready()
        v_done = True
        if assembler is not None:
            try:
                chunk_items(assembler.finish())
            except (av.error.FFmpegError, ValueError) as exc:  # pragma: no cover - flushing a resampler
                failure = failure or f"audio resampling failed: {_reason(exc)}"
        yield from ready(final=True)

        if failure is None and not self.live:
            failure = self._truncation(v_last, assembler)
        if self.bad_packets:
            log.warning("%s", self._msg(f"{self.bad_packets} undecodable packets skipped"))
        if failure is not None:
            log.warning("%s", self._msg(failure))
            raise DecodeError(self._msg(failure))

    def _frame_time(self, frame: av.VideoFrame) -> float:
        """Stream time of a video frame from its pts, else counted in frame periods from the last known time.

        Counting (anchor + n * period) rather than adding a period per frame keeps long runs without pts
        free of accumulated rounding: frame 30 of a 10 fps raw stream is at exactly 3.0 s.
        """
        if frame.pts is not None:
            tb = frame.time_base or self._vstream.time_base
            if tb is not None:
                t = float(frame.pts * tb) - self._origin
                self._pts_anchor = (t, 0)
                return t
        if self._pts_anchor is None:  # no time known yet: the start of what is being decoded
            self._pts_anchor = (self.start if self._seeked else 0.0, -1)
        anchor, count = self._pts_anchor
        self._pts_anchor = (anchor, count + 1)
        return anchor + (count + 1) * self._period

    def _audio_time(self, frame: av.AudioFrame) -> float | None:
        if frame.pts is None:
            return None
        tb = frame.time_base or self._astream.time_base
        return float(frame.pts * tb) - self._origin if tb is not None else None

    def _image(self, frame: av.VideoFrame) -> np.ndarray:
        """One reformat to the target size and rgb24 (then a lossless rotation if the stream asks for one)."""
        key = (frame.width, frame.height)
        size = self._sizes.get(key)
        if size is None:
            size = target_size(
                frame.width, frame.height, self.config.short_side, sar=self._sar, upscale=self.upscale
            )
            self._sizes[key] = size
        image = frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
        rotation = frame.rotation
        if rotation and rotation % 90 == 0:
            image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
        return image

    def _truncation(self, v_last: float | None, assembler: _AudioAssembler | None) -> str | None:
        """A reason if the decoded streams ended well before the headers say they should, else None.

        Expected ends, most specific first: a stream's own duration; for video, its frame count from the
        header at its average rate (AVI and MP4 headers keep counting frames that a cut file no longer has);
        otherwise the container's duration, against the longest decoded stream only (one stream may
        legitimately end before the container does). The margin (1 s + 2 %) absorbs rounding and padding.
        """

        def short(expected: float, end: float) -> bool:
            return expected - end > 1.0 + 0.02 * expected

        ends: list[tuple[Any, float]] = []
        if self._vstream is not None and v_last is not None:
            ends.append((self._vstream, v_last + self._period))
        if assembler is not None and assembler.end_pos is not None:
            ends.append((self._astream, assembler.end_pos / assembler.rate))
        if not ends:
            if self.info.duration is not None and short(self.info.duration, self.start):
                return f"truncated: nothing decodable after {self.start:.1f} s of {self.info.duration:.1f} s"
            return None if self.start > 0 else "no frames or samples could be decoded"
        for stream, end in ends:
            expected: float | None = None
            if stream.duration and stream.time_base is not None:
                stream_start = float((stream.start_time or 0) * stream.time_base) - self._origin
                expected = stream_start + float(stream.duration * stream.time_base)
            if stream is self._vstream and stream.frames and stream.average_rate:
                by_count = stream.frames / float(stream.average_rate)
                expected = by_count if expected is None else max(expected, by_count)
            if expected is not None and short(expected, end):
                return f"truncated or corrupt: decoding ended at {end:.1f} s of {expected:.1f} s"
        end = max(e for _, e in ends)
        if self.info.duration is not None and short(self.info.duration, end):
            return f"truncated or corrupt: decoding ended at {end:.1f} s of {self.info.duration:.1f} s"
        return None


def decode(source: str | Path, config: PerceptionConfig | None = None, **kwargs: Any) -> MediaDecoder:
    """Open `source` and return its decoder (see `MediaDecoder` for the keyword arguments)."""
    return MediaDecoder(source, config, **kwargs)
