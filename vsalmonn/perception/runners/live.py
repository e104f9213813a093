"""Live sources (a URL, a capture device, a plugin's source): received on their own thread, never behind.

Why it is built this way:

- **Receiving and encoding are apart.** A receiver thread puts every item into a `LatestQueue` whose `put`
  never blocks; the stream's thread takes items out and encodes them. When encoding cannot keep up, the
  queue drops the oldest and counts the drop (DESIGN §5): the newest frames win.
- **Resume at now.** A live stream's time is wall-clock time since its first start (the epoch, kept in each
  checkpoint), so a restart continues the same time axis and the time it was down shows as a gap.
- **A stop commits what was received.** On a stop the source is closed, the receiver joined, the items held
  are written and one last checkpoint commits them.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from abc import abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..container import is_url
from ..pipeline import StreamSink
from ..sources import Closed, LatestQueue, LiveSource
from .base import KindRunner, RunContext

if TYPE_CHECKING:
    from ..pipeline import StreamStats

__all__ = ["DeviceKind", "LiveFeed", "LiveKind", "UrlKind", "is_device"]

_DEVICE = re.compile(r"^/dev/video\d+$")


class LiveFeed(Protocol):
    """What the live loop reads of a source: its items, its connection counters, its epoch, and `close`."""

    connected: bool
    reconnects: int
    attempts: int
    last_error: str | None
    epoch: float | None

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


class LiveKind(KindRunner):
    """The loop shared by every live kind; a subclass says how its source is opened (`open_feed`)."""

    live = True
    # Whether the last checkpoint is written even when the source never connected (it has no epoch then).
    checkpoints_without_epoch = False

    @abstractmethod
    def open_feed(self, ctx: RunContext, epoch: float | None) -> LiveFeed:
        """The stream's source, continuing the time axis of `epoch` (None: a stream's first start)."""

    def run(self, ctx: RunContext) -> None:
        spec, stats, store = ctx.spec, ctx.stats, ctx.store
        with store.writer(spec.name, config=ctx.memory, source=spec.source, kind=self.catalog_kind) as w:
            memory, last = store.open_memory(spec.name, ctx.memory)
            epoch = last.epoch if last else None
            feed = self.open_feed(ctx, epoch)
            sink = StreamSink(
                store=store, writer=w, memory=memory, encoders=ctx.encoders, perception=ctx.perception,
                window_s=ctx.daemon.live_window_s, exact=False, stats=stats,
                start=float(last.source_offset or 0.0) if last else 0.0, plugins=ctx.plugins,
            )  # fmt: skip
            items: LatestQueue[Any] = LatestQueue(ctx.perception.live_queue)
            failure: list[BaseException] = []
            receiver = _receive(feed, items, failure, spec.name)
            stats.state = "reconnecting"
            try:
                self._pump(ctx, feed, items, sink)
            finally:
                feed.close()
                receiver.join(timeout=2.0)
                stats.drops = items.drops
                sink.finish()
                if feed.epoch is not None or self.checkpoints_without_epoch:
                    sink.checkpoint({"epoch": feed.epoch}, wait=True)
            if failure:  # LiveSource gave up (SourceGaveUp), or a plugin's source broke
                raise failure[0]

    @staticmethod
    def _pump(ctx: RunContext, feed: LiveFeed, items: LatestQueue[Any], sink: StreamSink) -> None:
        """Encode what arrives till a stop or the source's end; checkpoint every `live_checkpoint_every_s`."""
        stats = ctx.stats
        last_checkpoint = time.monotonic()
        while not ctx.stop.is_set():
            try:
                item = items.get(timeout=0.25)
            except queue.Empty:
                sink.idle()
            except Closed:
                return
            else:
                sink.add(item)
                if not len(items):
                    sink.idle()
            stats.drops = items.drops
            stats.state = "running" if feed.connected else "reconnecting"
            stats.detail.update(reconnects=feed.reconnects, attempts=feed.attempts)
            if feed.last_error:
                stats.last_error = feed.last_error
            if time.monotonic() - last_checkpoint >= ctx.daemon.live_checkpoint_every_s:
                sink.checkpoint({"epoch": feed.epoch})
                last_checkpoint = time.monotonic()

    def progress_parts(self, stats: StreamStats) -> list[str]:
        lag = f"lag {stats.lag_s or 0.0:.1f} s"
        return [*super().progress_parts(stats), stats.state, lag, f"{stats.drops} dropped"]


def _receive(
    feed: LiveFeed, items: LatestQueue[Any], failure: list[BaseException], name: str
) -> threading.Thread:
    """Start the thread that moves the feed's items into `items` (closed at the end; a failure kept)."""

    def receive() -> None:
        try:
            for item in feed:
                items.put(item)
        except BaseException as exc:
            failure.append(exc)
        finally:
            items.close()

    receiver = threading.Thread(target=receive, name=f"receive-{name}", daemon=True)
    receiver.start()
    return receiver


def is_device(source: str) -> bool:
    """A capture device: `/dev/videoN` or a `v4l2:` prefix (neither a URL nor a regular file)."""
    return source.startswith("v4l2:") or _DEVICE.match(source) is not None


class UrlKind(LiveKind):
    """A network stream (rtsp://, http(s)://, udp://, srt://, HLS), reconnected with backoff."""

    name = "url"
    label = "url"

    def matches(self, source: str) -> bool:
        return is_url(source) and not source.startswith("file://")

    def open_feed(self, ctx: RunContext, epoch: float | None) -> LiveFeed:
        return self._live_source(ctx, ctx.spec.source, None, epoch)

    @staticmethod
    def _live_source(
        ctx: RunContext, url: str, container_format: str | None, epoch: float | None
    ) -> LiveSource:
        return LiveSource(
            url,
            ctx.perception,
            options=dict(ctx.spec.options),
            container_format=container_format,
            decoder_kwargs={"audio": ctx.encoders.speech is not None},
            epoch=epoch,
        )


class DeviceKind(UrlKind):
    """A capture device, opened through FFmpeg's v4l2 input (and reconnected like a URL)."""

    name = "device"
    label = "device"

    def matches(self, source: str) -> bool:
        return is_device(source)

    def open_feed(self, ctx: RunContext, epoch: float | None) -> LiveFeed:
        return self._live_source(ctx, ctx.spec.source.removeprefix("v4l2:"), "v4l2", epoch)
