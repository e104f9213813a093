"""Audio on a fixed grid: decoded audio frames turned into 16 kHz mono chunks in stream time (DESIGN §2).

Why it is built this way:

- **Integer positions.** Positions are sample indices at the target rate (position p is time p / rate), so
  chunk borders fall on multiples of `chunk_s` exactly and never drift: a resumed decode cuts the same chunks
  as a full decode from there on.
- **Gaps followed, not hidden.** A gap of up to `gap_fill_s` becomes silence (chunks stay contiguous); a
  longer gap or a jump backwards starts a new run at the new time. Resampling starts on a source sample that
  lies on the output grid, so sample k is exactly at k / rate and a resumed decode yields the same samples.
"""

from __future__ import annotations

import logging
import math

import av
import numpy as np

__all__ = ["AudioAssembler"]

log = logging.getLogger(__name__)

_GAP_TOLERANCE_S = 0.05  # audio timestamp jitter that is not treated as a gap


class AudioAssembler:
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
