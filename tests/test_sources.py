"""Live sources on loopback (a paced MPEG-TS stream, reconnecting, giving up), backoff, and the latest-queue.

Every loop here has a deadline, and every live source a give-up policy, so a broken source fails a test
instead of hanging it. The stream is served by tests/stream_server.py on 127.0.0.1 at real time.
"""

from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.media import AudioChunk, DecodeError, Frame
from vsalmonn.perception.sources import (
    Closed,
    LatestQueue,
    LiveSource,
    ReconnectPolicy,
    SourceGaveUp,
    classify,
)

from .media import read_code, tone, uniform_times, write_media
from .stream_server import StreamServer

log = logging.getLogger(__name__)

# A small probe: FFmpeg's default waits for up to 5 MB or 5 s of a stream before the first frame.
FAST = {"probesize": "32768", "analyzeduration": "500000"}
# Quick retries, and a give-up time that bounds every test even if the server never answers.
QUICK = ReconnectPolicy(initial_s=0.1, factor=2.0, max_delay_s=0.4, jitter=0.1, give_up_after_s=10.0)


@pytest.fixture(scope="module")
def live_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 s of H.264 (10 fps, a keyframe every second) and AAC in MPEG-TS: a camera's stream."""
    path = tmp_path_factory.mktemp("live") / "live.ts"
    return write_media(
        path,
        video_times=uniform_times(40, 10),
        size=(160, 120),
        gop=10,
        audio=tone(40, 48_000),
        container_format="mpegts",
    )


@pytest.fixture
def server(live_ts: Path) -> Iterator[StreamServer]:
    with StreamServer(live_ts) as srv:
        yield srv


def live(url: str, **kwargs: object) -> LiveSource:
    kwargs.setdefault("policy", QUICK)
    kwargs["decoder_kwargs"] = {"chunk_s": 1.0, **kwargs.get("decoder_kwargs", {})}  # type: ignore[dict-item]
    return LiveSource(url, PerceptionConfig(), timeout_s=5.0, options=FAST, **kwargs)  # type: ignore[arg-type]


def take_frames(source: LiveSource, count: int, within_s: float, into: list[Frame]) -> None:
    """Append frames from `source` to `into` until `count` more arrived; fail after `within_s` seconds."""
    target, deadline = len(into) + count, time.monotonic() + within_s
    for item in source:
        if isinstance(item, Frame):
            into.append(item)
        if len(into) >= target:
            return
        assert time.monotonic() < deadline, f"only {len(into)} of {target} frames within {within_s} s"


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- live sources on loopback --------------------------------------------------------------------------------


def test_live_source_yields_frames_about_once_a_second(server: StreamServer) -> None:
    frames: list[Frame] = []
    chunks: list[AudioChunk] = []
    source = live(server.url)
    started = time.monotonic()
    deadline = started + 10.0
    for item in source:
        (frames if isinstance(item, Frame) else chunks).append(item)  # type: ignore[arg-type]
        if len(frames) >= 4:
            break
        assert time.monotonic() < deadline, f"{len(frames)} frames within 10 s"
    assert source.connected
    source.close()
    assert not source.connected
    log.info("4 frames in %.2f s", time.monotonic() - started)

    times = [f.t for f in frames]
    assert all(b > a for a, b in itertools.pairwise(times)), times
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.6 < s < 1.4 for s in steps), steps  # 1 FPS sampling, on a wall-clock axis
    assert 0.0 <= times[0] < 2.0
    assert all(
        f.wallclock is not None and abs(f.wallclock - (source.epoch or 0) - f.t) < 1e-6 for f in frames
    )
    codes = [read_code(f.image) for f in frames]
    assert [c[0] for c in codes] == list(range(codes[0][0], codes[0][0] + 4)), codes  # consecutive seconds
    assert all(min(f.size) == 120 for f in frames)  # not upscaled to 360
    for a, b in itertools.pairwise(chunks):
        assert b.t0 >= a.t1 - 1e-6
    assert source.items == len(frames) + len(chunks)
    assert source.reconnects == 0 and source.attempts == 1 and source.last_error is None


def test_live_source_reconnects_when_the_server_comes_back(server: StreamServer) -> None:
    frames: list[Frame] = []
    source = live(server.url, decoder_kwargs={"audio": False})
    try:
        take_frames(source, 2, within_s=10.0, into=frames)
        before = len(frames)
        server.stop()
        stopped = time.monotonic()
        restart = threading.Timer(2.0, server.start)
        restart.start()
        try:
            take_frames(source, 3, within_s=15.0, into=frames)
        finally:
            restart.cancel()
            restart.join()
        gap = time.monotonic() - stopped
    finally:
        source.close()

    assert source.reconnects >= 1
    assert server.connections >= 2
    assert source.last_error is not None and source.last_error.startswith(server.url)
    times = [f.t for f in frames]
    assert all(b > a for a, b in itertools.pairwise(times)), times
    # the time axis kept running through the outage: the first frame after it is about 2 s later
    outage = times[before] - times[before - 1]
    assert 1.5 < outage < gap + 1.5, (outage, gap, times)
    log.info("outage of %.2f s in stream time; frames %s", outage, [round(t, 2) for t in times])


def test_refused_url_gives_up_after_the_attempts_allowed() -> None:
    url = f"http://127.0.0.1:{closed_port()}/live.ts"
    sleeps: list[float] = []
    policy = ReconnectPolicy(initial_s=0.01, factor=2.0, max_delay_s=0.05, jitter=0.0, max_attempts=3)
    source = live(url, policy=policy, sleep=sleeps.append)
    started = time.monotonic()
    with pytest.raises(SourceGaveUp) as caught:
        next(source)
    message = str(caught.value)
    assert isinstance(caught.value, DecodeError)
    assert "\n" not in message and message.startswith(f"{url}: gave up after 3 failed attempts in a row")
    assert "refused" in message.lower(), message
    assert source.attempts == 3 and source.failures == 3 and source.reconnects == 0
    assert sleeps == [0.01, 0.02]  # between the three attempts, growing
    assert not source.connected and source.items == 0
    assert time.monotonic() - started < 5.0


# -- the reconnect loop with a scripted decoder --------------------------------------------------------------


class Script:
    """Decoders that follow a script: each entry is an exception to raise on open, or a list of items."""

    def __init__(self, entries: list[Exception | list[Frame]]) -> None:
        self.entries = list(entries)
        self.opened = 0

    def __call__(self) -> Iterator[Frame]:
        self.opened += 1
        entry = self.entries.pop(0) if self.entries else DecodeError("x://cam: connection refused")
        if isinstance(entry, Exception):
            raise entry
        return FakeDecoder(entry)


class FakeDecoder:
    def __init__(self, items: list[Frame]) -> None:
        self._items = iter(items)
        self.closed = False

    def __iter__(self) -> FakeDecoder:
        return self

    def __next__(self) -> Frame:
        return next(self._items)

    def close(self) -> None:
        self.closed = True


class FakeTime:
    """A clock that only moves when the source sleeps; wall time is the same clock from a Unix epoch."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def wall(self) -> float:
        return 1_000_000.0 + self.now


def frame(wallclock: float | None) -> Frame:
    import numpy as np

    return Frame(0.0, np.zeros((2, 2, 3), np.uint8), wallclock)


def test_backoff_delays_grow_and_are_capped() -> None:
    policy = ReconnectPolicy(initial_s=1.0, factor=2.0, max_delay_s=10.0, jitter=0.5)
    assert [policy.delay(n, lambda: 0.5) for n in range(1, 8)] == [1, 2, 4, 8, 10, 10, 10]
    assert [policy.delay(n, lambda: 0.0) for n in range(1, 6)] == [0.5, 1, 2, 4, 5]  # jitter: -50 %
    assert [policy.delay(n, lambda: 0.999) for n in range(1, 6)] == pytest.approx(
        [1.499, 2.998, 5.996, 10, 10]
    )
    assert policy.delay(0, lambda: 0.5) == 1.0  # after a productive attempt: the initial delay
    assert policy.delay(10_000, lambda: 0.5) == 10.0  # no overflow after days of retrying
    with pytest.raises(ValueError):
        ReconnectPolicy(factor=0.5)
    config = PerceptionConfig(reconnect_initial_s=2.0, reconnect_max_attempts=4)
    assert ReconnectPolicy.from_config(config) == ReconnectPolicy(initial_s=2.0, max_attempts=4)


def test_failures_in_a_row_back_off_and_data_resets_the_count() -> None:
    clock = FakeTime()
    refused = DecodeError("x://cam: connection refused")
    script = Script([refused, refused, [frame(1_000_000.0 + 0.5), frame(None)], refused, refused, refused])
    policy = ReconnectPolicy(initial_s=1.0, factor=3.0, max_delay_s=5.0, jitter=0.0, max_attempts=3)
    source = LiveSource(
        "x://cam",
        policy=policy,
        clock=lambda: clock.now,
        wall=clock.wall,
        sleep=clock.sleep,
        open_decoder=script,
    )
    got: list[Frame] = []
    with pytest.raises(
        SourceGaveUp, match=r"^x://cam: gave up after 3 failed attempts in a row; last error: "
    ):
        for item in source:
            got.append(item)  # type: ignore[arg-type]
    # refused, refused (1, 3 s), data then the end (1 s), refused x3 (1, 3 s, then give up)
    assert clock.sleeps == [1.0, 3.0, 1.0, 1.0, 3.0]
    assert source.attempts == 6 and source.reconnects == 0 and len(got) == 2
    assert source.epoch == clock.wall() - 5.0  # set at the first successful open, 4 s after the start
    # stream time is wall time since that open; frames strictly increase even where the clock says otherwise
    assert got[0].t == 0.0 and got[1].t == pytest.approx(1e-3)
    assert source.last_error == "x://cam: connection refused"


def test_give_up_after_seconds_without_data() -> None:
    clock = FakeTime()
    policy = ReconnectPolicy(initial_s=1.0, factor=2.0, max_delay_s=100.0, jitter=0.0, give_up_after_s=10.0)
    source = LiveSource(
        "x://cam",
        policy=policy,
        clock=lambda: clock.now,
        wall=clock.wall,
        sleep=clock.sleep,
        open_decoder=Script([]),
    )
    with pytest.raises(SourceGaveUp, match=r"^x://cam: gave up after no data for 10\.0 s; last error: "):
        next(source)
    assert clock.sleeps == [1.0, 2.0, 4.0, 3.0]  # the last wait is cut to the give-up time


def test_reconnect_keeps_stream_time_increasing() -> None:
    clock = FakeTime()
    t0 = 1_000_000.0
    # the first connection's buffered frames ran ahead of the clock; the second starts "earlier" than they end
    script = Script([[frame(t0), frame(t0 + 1), frame(t0 + 2)], [frame(t0 + 1.5), frame(t0 + 3)]])
    source = LiveSource(
        "x://cam",
        policy=ReconnectPolicy(initial_s=0.5, jitter=0.0, max_attempts=1),
        clock=lambda: clock.now,
        wall=clock.wall,
        sleep=clock.sleep,
        open_decoder=script,
    )
    times = []
    with pytest.raises(SourceGaveUp):
        times.extend(item.t for item in source)  # type: ignore[union-attr]
    assert times == pytest.approx([0.0, 1.0, 2.0, 2.001, 3.0])
    assert source.reconnects == 1


def test_close_from_another_thread_stops_a_waiting_source() -> None:
    source = LiveSource(
        "x://cam",
        policy=ReconnectPolicy(initial_s=30.0, jitter=0.0),
        open_decoder=Script([]),
    )
    threading.Timer(0.2, source.close).start()
    started = time.monotonic()
    assert list(source) == []  # the backoff wait ends at close, and so does the iteration
    assert time.monotonic() - started < 5.0
    assert source.closed


# -- LatestQueue ---------------------------------------------------------------------------------------------


def test_latest_queue_drops_the_oldest() -> None:
    q: LatestQueue[int] = LatestQueue(3)
    assert [q.put(i) for i in range(5)] == [False, False, False, True, True]
    assert q.drops == 2 and q.puts == 5 and len(q) == 3
    assert [q.get(), q.get(), q.get()] == [2, 3, 4]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    q.put(5)
    q.close()
    assert q.get() == 5  # what was queued is still delivered
    with pytest.raises(Closed):
        q.get(timeout=1.0)
    with pytest.raises(Closed):
        q.put(6)


def test_latest_queue_fast_producer_slow_consumer() -> None:
    q: LatestQueue[int] = LatestQueue(4)
    received: list[int] = []
    n = 2000

    def consume() -> None:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                received.append(q.get(timeout=1.0))
            except Closed:
                return
            time.sleep(0.002)  # the slow encoder

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(n):
        q.put(i)
        assert len(q) <= 4
        if i % 100 == 0:
            time.sleep(0.001)  # let the consumer in now and then
    q.close()
    consumer.join(timeout=10.0)
    assert not consumer.is_alive()
    assert received == sorted(received) and len(set(received)) == len(received)  # order kept, no duplicates
    assert received[-4:] == list(range(n - 4, n))  # the newest win
    assert q.drops > 0 and q.drops + len(received) == n == q.puts


def test_close_wakes_a_blocked_getter() -> None:
    q: LatestQueue[int] = LatestQueue(2)
    outcome: list[str] = []

    def wait() -> None:
        try:
            q.get()
        except Closed:
            outcome.append("closed")

    getter = threading.Thread(target=wait)
    getter.start()
    time.sleep(0.1)
    assert getter.is_alive()  # blocked on the empty queue
    started = time.monotonic()
    q.close()
    getter.join(timeout=2.0)
    assert not getter.is_alive() and outcome == ["closed"]
    assert time.monotonic() - started < 1.0


# -- classify ------------------------------------------------------------------------------------------------


def test_classify(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert classify(str(tmp_path / "clip.mp4")) == "file"
    assert classify(str(tmp_path / "missing.mp4")) == "file"
    assert classify(str(tmp_path)) == "folder"
    for url in (
        "rtsp://cam.local/stream",
        "http://127.0.0.1:8080/live.ts",
        "https://example.invalid/hls/index.m3u8",
        "udp://127.0.0.1:1234",
        "srt://127.0.0.1:9000",
    ):
        assert classify(url) == "url", url
    assert classify("file:///tmp/clip.mp4") == "file"
    assert classify("/dev/video0") == "device"
    assert classify("v4l2:/dev/video2") == "device"
    assert classify("/dev/videos") == "file"
