"""Sources of streams (DESIGN §2, §5): live network sources that reconnect, and a queue that keeps them live.

Why it is built this way:

- **A live source is a connection that will break.** Cameras reboot, encoders restart, networks drop.
  `LiveSource` wraps `MediaDecoder(url, live=True)` in a loop that reopens the URL when the connection fails
  or the stream ends, with exponential backoff and jitter (many streams that lost one server do not come back
  in step), and gives up only as the `ReconnectPolicy` says: after `max_attempts` failed attempts in a row or
  `give_up_after_s` without data. By default it never gives up. An attempt that delivered data resets the
  count, so a source that runs for hours and then hiccups starts its backoff afresh.
- **Stream time of a live source is wall-clock time since it was first opened.** The pts of a live stream
  restart (or jump) whenever the sender or the connection restarts, so they cannot be the memory's time axis.
  Each item's `wallclock` (the decoder's receive time, or the sender's clock where RTSP gives one) minus the
  source's `epoch` (Unix time of the first successful open, or one passed in to continue a stream after a
  daemon restart) is its stream time. It never resets after a reconnect; an item that would go backwards (a
  reconnect while the previous connection's buffered items ran ahead of the clock) is moved just after the
  previous one of its kind, so frame times strictly increase and audio chunks never overlap.
- **Why not tenacity.** It is installed (through langchain-core) and its wait strategies are fine, but it
  retries a call, and the retried unit here is a generator that yields items for hours between failures: its
  `AttemptManager` swallows every BaseException raised in the attempt block (so a `GeneratorExit` at a
  suspended `yield` would be recorded as a failed attempt), its attempt numbers and `stop_after_delay` count
  from the first attempt rather than from the last data, and its jitter draws from the module-level `random`.
  The loop below is thirty lines with all of that explicit and every clock injectable.
- **Live sources never fall behind.** Between decoding and encoding sits a `LatestQueue`: `put` never blocks,
  and when the queue is full the oldest item is dropped and counted, so when encoding cannot keep up the
  newest frames win (DESIGN §5). A blocking queue would instead make the decoder fall behind the sender, and
  the lag would grow without bound.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from vsalmonn.errors import one_line
from vsalmonn.memory_store.redact import redact, redact_url

from .config import PerceptionConfig
from .decode import MediaDecoder
from .media import AudioChunk, DecodeError, Frame

__all__ = [
    "Closed",
    "LatestQueue",
    "LiveSource",
    "ReconnectPolicy",
    "SourceGaveUp",
    "SourceKind",
    "check_file_source",
    "classify",
    "refuse_non_media",
]

log = logging.getLogger(__name__)

SourceKind = Literal["file", "url", "folder", "device"]
Item = Frame | AudioChunk
T = TypeVar("T")

_MIN_STEP_S = 1e-3  # how far after the previous frame a frame that would go backwards in time is put


def classify(source: str) -> SourceKind:
    """What kind of stream a source string names: the name of the built-in kind that takes it.

    The rule lives on the kinds (`vsalmonn.perception.runners`): a capture device is `/dev/videoN` or a
    `v4l2:` prefix (checked first: it is neither a URL nor a regular file); anything with a scheme (`rtsp://`,
    `http(s)://`, `udp://`, `srt://`, an HLS playlist URL) is a URL, except `file://`, which is a file; an
    existing directory is a watched folder; everything else is a file (whether it exists is the decoder's to
    say, with its own clear error).
    """
    from .runners.registry import SOURCE_KINDS  # the runners import this module

    return SOURCE_KINDS.classify(source).name  # type: ignore[return-value]


# FFmpeg formats that read any bytes as something to show: "tty" renders a text file as one video frame of
# ANSI art, and the image readers treat a lone picture as a one-frame video.
_NOT_MEDIA_FORMATS = {"tty": "a text file, not a media file"}


def check_file_source(source: str) -> None:
    """DecodeError with the right reason for a path that is no regular file (before FFmpeg says otherwise).

    A symlink loop reads as "no such file" to `Path.exists`, and a character device such as /dev/zero as an
    empty file (its size is 0) or as endless data; a FIFO would block. Paths that do not exist are left to
    the decoder's "no such file".
    """
    import errno
    import os
    import stat

    path = source.removeprefix("file://")
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DecodeError(f"{source}: a symbolic link loop (too many levels of links)") from None
        if exc.errno == errno.ENAMETOOLONG:
            raise DecodeError(f"{source}: the file name is too long") from None
        return
    if stat.S_ISDIR(st.st_mode):
        return  # the decoder says "is a directory"
    if not stat.S_ISREG(st.st_mode):
        what = (
            "a character device" if stat.S_ISCHR(st.st_mode)
            else "a block device" if stat.S_ISBLK(st.st_mode)
            else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )  # fmt: skip
        hint = "; capture devices are /dev/videoN" if stat.S_ISCHR(st.st_mode) else ""
        raise DecodeError(f"{source}: {what}, not a media file{hint}")


def refuse_non_media(info: Any) -> None:
    """DecodeError for what FFmpeg opens but is no media (a .txt file it would show as one frame of text)."""
    reason = _NOT_MEDIA_FORMATS.get(str(getattr(info, "format", "")))
    if reason is not None:
        raise DecodeError(f"{info.source}: {reason}")


class SourceGaveUp(DecodeError):
    """A live source stopped retrying, by its policy; the message is one line naming the URL and why.

    A subclass of DecodeError so that the daemon's handling of a broken source (log, mark the stream failed,
    carry on with the others) applies unchanged.
    """


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """When and how often a live source reconnects.

    The n-th failed attempt in a row is followed by a wait of `initial_s * factor**(n-1)`, capped at
    `max_delay_s`, then varied by up to ±`jitter` of itself (and capped again). An attempt that delivered data
    resets n; the wait after it is `initial_s` (never zero, so a sender that accepts and hangs up at once
    cannot make the loop spin). `max_attempts` and `give_up_after_s` (seconds without data, counted from the
    last item or from the start) are the give-up rules; None means never.
    """

    initial_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 30.0
    jitter: float = 0.25
    max_attempts: int | None = None
    give_up_after_s: float | None = None

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.max_delay_s < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("need initial_s >= 0, max_delay_s >= 0, factor >= 1 and 0 <= jitter <= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None for never)")
        if self.give_up_after_s is not None and self.give_up_after_s <= 0:
            raise ValueError("give_up_after_s must be positive (or None for never)")

    @classmethod
    def from_config(cls, config: PerceptionConfig) -> ReconnectPolicy:
        return cls(
            initial_s=config.reconnect_initial_s,
            factor=config.reconnect_factor,
            max_delay_s=config.reconnect_max_s,
            jitter=config.reconnect_jitter,
            max_attempts=config.reconnect_max_attempts,
            give_up_after_s=config.reconnect_give_up_s,
        )

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after `failures` failed attempts in a row (0 after a productive attempt).

        `rand` returns a float in [0, 1); 0.5 gives the undisturbed exponential delay.
        """
        n = max(1, failures)
        # the exponent is bounded so that a source retried for days does not overflow the float
        base = min(self.max_delay_s, self.initial_s * self.factor ** min(n - 1, 1000))
        if math.isinf(base):  # pragma: no cover - only with max_delay_s = inf
            return base
        varied = base * (1.0 + self.jitter * (2.0 * rand() - 1.0))
        return min(self.max_delay_s, max(0.0, varied))


class _Decoder(Protocol):
    """What `LiveSource` needs of a decoder: items, then the end or a DecodeError; and `close`."""

    def __iter__(self) -> Iterator[Item]: ...

    def __next__(self) -> Item: ...

    def close(self) -> None: ...


class LiveSource:
    """Iterator of `Frame` and `AudioChunk` items of a network stream, reconnecting till its policy says stop.

    `url` is anything FFmpeg opens as a live stream: http(s)://, rtsp://, udp://, srt://, an HLS .m3u8. Items
    are those of `MediaDecoder(url, config, live=True, timeout_s=...)` with their time re-based onto the
    source's stream time (module docstring); `wallclock` is kept. Iteration ends only by `close()`, or with
    `SourceGaveUp`.

    - `timeout_s` (default `config.live_timeout_s`) bounds opening and every read, so a silent connection is
      dropped and reconnected after it; it is also how long `close()` may take to be noticed mid-read.
    - `options` go to FFmpeg (e.g. {"probesize": "32768"} to start faster, {"rtsp_transport": "udp"}); rtsp://
      defaults to TCP transport, which survives NAT and packet loss that UDP does not.
    - `decoder_kwargs`: further `MediaDecoder` arguments (`chunk_s`, `audio`, `threads`, ...).
    - `epoch`: Unix time of stream time 0, to continue a stream's time axis after a daemon restart; default:
      the first successful open.
    - `clock` (monotonic, for backoff and give-up), `wall` (Unix time), `sleep`, `rand` and `open_decoder`
      are injectable for tests. The default sleep wakes early on `close()`.

    Counters for status reports (read from any thread): `connected`, `items`, `attempts` (opens tried),
    `reconnects` (successful opens after the first), `failures` (failed attempts in a row), `last_error`.
    """

    def __init__(
        self,
        url: str,
        config: PerceptionConfig | None = None,
        *,
        policy: ReconnectPolicy | None = None,
        timeout_s: float | None = None,
        options: dict[str, str] | None = None,
        container_format: str | None = None,
        decoder_kwargs: dict[str, Any] | None = None,
        epoch: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] | None = None,
        rand: Callable[[], float] = random.random,
        open_decoder: Callable[[], _Decoder] | None = None,
    ) -> None:
        self.url = url
        self.shown = redact_url(url)  # what logs and errors name: the URL without its credentials
        self.config = config or PerceptionConfig()
        self.policy = policy or ReconnectPolicy.from_config(self.config)
        self.timeout_s = self.config.live_timeout_s if timeout_s is None else timeout_s
        self.options = dict(options or {})
        if url.startswith("rtsp://"):
            self.options.setdefault("rtsp_transport", "tcp")
        self.container_format = container_format
        self.decoder_kwargs = dict(decoder_kwargs or {})
        self.epoch = epoch
        self._clock = clock
        self._wall = wall
        self._closing = threading.Event()
        self._sleep = sleep or self._closing.wait
        self._rand = rand
        self._open_decoder = open_decoder or self._default_decoder

        self.connected = False
        self.items = 0
        self.attempts = 0
        self.reconnects = 0
        self.failures = 0
        self.last_error: str | None = None
        self._opened_once = False
        self._last_frame_t: float | None = None
        self._audio_end: float | None = None
        self._gen: Generator[Item, None, None] | None = None

    def __iter__(self) -> LiveSource:
        return self

    def __next__(self) -> Item:
        if self._gen is None:
            self._gen = self._run()
        return next(self._gen)

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop: iteration ends at the next item or wait (within `timeout_s` when blocked in a read).

        Safe from another thread: it only sets a flag unless the iteration is suspended, in which case the
        connection is released now.
        """
        self._closing.set()
        if self._gen is not None:
            with contextlib.suppress(ValueError):  # running in another thread now: it sees the flag instead
                self._gen.close()

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    def _default_decoder(self) -> _Decoder:
        return MediaDecoder(
            self.url,
            self.config,
            live=True,
            timeout_s=self.timeout_s,
            options=self.options,
            container_format=self.container_format,
            **self.decoder_kwargs,
        )

    def _run(self) -> Generator[Item, None, None]:
        last_data = self._clock()
        while not self._closing.is_set():
            self.attempts += 1
            delivered = 0
            try:
                decoder = self._open_decoder()
            except DecodeError as exc:
                error = str(exc)
            else:
                if self._opened_once:
                    self.reconnects += 1
                    log.info("%s: reconnected (attempt %d)", self.shown, self.attempts)
                self._opened_once = True
                if self.epoch is None:
                    self.epoch = self._wall()
                self.connected = True
                try:
                    for item in decoder:
                        delivered += 1
                        self.items += 1
                        self.failures = 0
                        last_data = self._clock()
                        yield self._retime(item)
                        if self._closing.is_set():
                            return
                    error = f"{self.shown}: stream ended"
                except DecodeError as exc:
                    error = str(exc)
                finally:
                    self.connected = False
                    decoder.close()
            self.last_error = redact(one_line(error))  # FFmpeg's errors echo the URL, credentials too
            if not delivered:
                self.failures += 1
            self._give_up_if_due(last_data)
            wait = self.policy.delay(self.failures, self._rand)
            if self.policy.give_up_after_s is not None:  # no point sleeping past the give-up time
                wait = min(wait, max(0.0, last_data + self.policy.give_up_after_s - self._clock()))
            log.warning("%s; reconnecting in %.2f s", self.last_error, wait)
            self._sleep(wait)

    def _give_up_if_due(self, last_data: float) -> None:
        reason = self.last_error or ""
        prefix = f"{self.shown}: "
        if reason.startswith(prefix):
            reason = reason[len(prefix) :]
        policy = self.policy
        why: str | None = None
        if policy.max_attempts is not None and self.failures >= policy.max_attempts:
            why = f"{self.failures} failed attempts in a row"
        else:
            idle = self._clock() - last_data
            if policy.give_up_after_s is not None and idle >= policy.give_up_after_s:
                why = f"no data for {idle:.1f} s"
        if why is not None:
            message = one_line(f"{self.shown}: gave up after {why}; last error: {reason}")
            log.error("%s", message)
            raise SourceGaveUp(message)

    def _retime(self, item: Item) -> Item:
        """The item at stream time `wallclock - epoch`, never before the previous item of its kind."""
        assert self.epoch is not None
        wallclock = item.wallclock if item.wallclock is not None else self._wall()
        t = max(0.0, wallclock - self.epoch)
        if isinstance(item, Frame):
            if self._last_frame_t is not None:
                t = max(t, self._last_frame_t + _MIN_STEP_S)
            self._last_frame_t = t
            return Frame(t, item.image, wallclock)
        if self._audio_end is not None:
            t = max(t, self._audio_end)
        self._audio_end = t + item.duration
        return AudioChunk(t, item.samples, item.sample_rate, wallclock)


class Closed(Exception):
    """The queue was closed and holds nothing more: the producer is gone."""


class LatestQueue(Generic[T]):
    """A bounded thread-safe queue whose `put` never blocks: when full the oldest item is dropped and counted.

    This is the stage between decoding and encoding of a live source: the decoder must keep pace with the
    sender, so it cannot wait for a slow encoder; the newest frames are the ones worth encoding, and `drops`
    is what the daemon reports. After `close()`, getters receive what is still queued, then `Closed`; a getter
    blocked on an empty queue is woken at once.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.puts = 0
        self.drops = 0

    def put(self, item: T) -> bool:
        """Add `item`, dropping the oldest if full; True if one was dropped. Closed after `close()`."""
        with self._cond:
            if self._closed:
                raise Closed("put on a closed queue")
            dropped = len(self._items) >= self.maxsize
            if dropped:
                self._items.popleft()
                self.drops += 1
            self._items.append(item)
            self.puts += 1
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T:
        """The oldest item, waiting up to `timeout` (None: for ever); queue.Empty on timeout; Closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise Closed("queue closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._cond.wait(remaining)
            return self._items.popleft()

    def close(self) -> None:
        """No more puts; wake every getter (they drain what is left, then get Closed)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
