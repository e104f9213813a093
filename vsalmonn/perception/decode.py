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

From the package only `vsalmonn.perception.config`, the types (`media`) and decoding's own parts are imported:
opening and describing containers (`container`), audio on its grid (`audio_grid`) and where a resume's seek
landed (`seek`). Decoding sits at the bottom of perception.
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

from vsalmonn.perception.audio_grid import AudioAssembler
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.container import (
    av_reason,
    container_origin,
    is_url,
    media_info,
    open_container,
    pick_stream,
    probe,
    source_message,
    stream_rate,
)
from vsalmonn.perception.media import AudioChunk, DecodeError, Frame, MediaInfo, NothingToDecode
from vsalmonn.perception.seek import TIME_EPS, read_ahead

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


_DEFAULT_RATE = 25.0  # frame period for missing pts when a stream declares no rate at all
_MAX_PENDING = 32  # reorder buffer bound (items); a 360p frame is about 0.5 MB
_MAX_BAD_PACKETS = (
    50  # consecutive undecodable packets before a live source is declared broken (it reconnects)
)


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
        return source_message(self.source, reason)

    def _open(self) -> None:
        """Open the container, choose the streams (again after a failed seek, which can leave it unusable)."""
        container_format, options, video, audio, threads = self._open_args
        self._unsupported = []
        self._container = open_container(
            self.source, timeout_s=self.timeout_s, format=container_format, options=options
        )
        try:
            self.info = media_info(self.source, self._container)
            self._vstream = self._select("video", video, threads)
            self._astream = self._select("audio", audio, threads)
            if self._vstream is None and self._astream is None:
                if self._unsupported:
                    reason = f"unsupported {' and '.join(self._unsupported)} codec (no decoder in this build)"
                else:
                    wanted = "video or audio" if video and audio else "video" if video else "audio"
                    reason = f"no {wanted} stream"
                raise NothingToDecode(self._msg(reason))
            self._origin = container_origin(self._container)
            self._setup_time()
        except BaseException:
            self._container.close()
            raise

    def _select(self, kind: str, wanted: bool, threads: int) -> Any | None:
        if not wanted:
            return None
        stream = pick_stream(self._container, kind)
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
        self._period = 1.0 / (stream_rate(vs) or _DEFAULT_RATE) if vs is not None else 0.0
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

        A seek is only a request (see `seek`): where `read_ahead` finds it landed after `start`, the seek is
        retried from further back (1, 2, 4 ... s) and finally replaced by decoding from the beginning. The
        packets read ahead are decoded, not dropped.
        """
        if self.start <= 0:
            return self._container.demux(streams)
        back = 0.0
        while self.start - back > 0:
            target = self._origin + self.start - back
            try:
                self._container.seek(int(target * av.time_base), backward=True, any_frame=False)
            except (av.error.FFmpegError, OSError) as exc:
                reason = f"cannot seek ({av_reason(exc)}); decoding from the start up to {self.start:g} s"
                log.info("%s", self._msg(reason))
                break
            self._seeked = True
            packets = self._container.demux(streams)
            ahead, landed = read_ahead(packets, streams, self._vstream, self.start, self._origin)
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

    def _run(self) -> Generator[Frame | AudioChunk, None, None]:
        """The decode loop: demux, decode, sample, order; errors become DecodeError after what was decoded."""
        fps = self.config.fps
        next_k = math.ceil(self.start * fps - TIME_EPS * fps)  # next sampling instant is next_k / fps
        v_last: float | None = None  # time of the last decoded video frame
        v_done = self._vstream is None
        assembler = (
            AudioAssembler(self.config.sample_rate, self.chunk_s, self.start, self.gap_fill_s)
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
                failure = f"read error after {self.position:.1f} s: {av_reason(exc, self.timeout_s)}"
                break
            try:
                frames = packet.decode()
                bad_run = 0
            except av.error.FFmpegError as exc:
                self.bad_packets += 1
                bad_run += 1
                log.debug("%s", self._msg(f"undecodable packet skipped: {av_reason(exc)}"))
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
                    log.debug("%s", self._msg(f"unconvertible frame skipped: {av_reason(exc)}"))
            yield from ready()
        v_done = True
        if assembler is not None:
            try:
                chunk_items(assembler.finish())
            except (av.error.FFmpegError, ValueError) as exc:  # pragma: no cover - flushing a resampler
                failure = failure or f"audio resampling failed: {av_reason(exc)}"
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

    def _truncation(self, v_last: float | None, assembler: AudioAssembler | None) -> str | None:
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
