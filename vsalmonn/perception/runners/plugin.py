"""A plugin's kind of source (hook `register_sources`): a scheme and a factory, run as a live source.

A stream whose source starts with ``scheme:`` is opened with ``factory(source, config, data_dir)``, which
returns an iterable of decoded items in stream time and may have a ``close()``. It runs through the same live
loop as a URL (receiver thread, newest items win, a last checkpoint on stop) and its streams are recorded as
"url" streams in the catalog, as they always were.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vsalmonn.errors import one_line

from .base import RunContext
from .live import LiveFeed, LiveKind

__all__ = ["PluginKind", "PluginSource", "SourceFactory"]

log = logging.getLogger(__name__)

SourceFactory = Callable[..., Iterable[Any]]
"""``factory(source, config, data_dir)``: an iterable of `Frame` / `AudioChunk` items (`register_sources`)."""


class PluginKind(LiveKind):
    """The kind a plugin registered for `scheme`."""

    checkpoints_without_epoch = True  # a plugin's items carry their own stream time: always commit them

    def __init__(self, scheme: str, factory: SourceFactory) -> None:
        self.scheme = scheme
        self.factory = factory
        self.name = scheme
        self.label = f"{scheme} (plugin)"

    @property
    def catalog_kind(self) -> str:
        return "url"

    def matches(self, source: str) -> bool:
        return source.partition("://")[0] == self.scheme if "://" in source else False

    def open_feed(self, ctx: RunContext, epoch: float | None) -> LiveFeed:
        items = self.factory(ctx.spec.source, ctx.perception, ctx.store.data_dir)
        return PluginSource(items, stream=ctx.spec.name)


class PluginSource:
    """A plugin's iterable of items seen through the attributes the live loop reads (`LiveFeed`)."""

    def __init__(self, items: Iterable[Any], *, stream: str) -> None:
        self._source = items
        self._items = iter(items)
        self.stream = stream
        self.connected, self.reconnects, self.attempts = True, 0, 1
        self.last_error: str | None = None
        self.epoch: float | None = None
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            if self._closed.is_set():
                return
            yield item
        self.connected = False

    def close(self) -> None:
        """Stop iterating and close the plugin's source; a fault in its `close` is logged, not raised.

        The stream is ending either way, and what it received is still to be committed: a plugin that
        fails to close must not cost that, but its author must be able to see that it failed.
        """
        self._closed.set()
        # The factory's object is what the hook says may have a close(); its iterator, for a generator.
        close = getattr(self._source, "close", None) or getattr(self._items, "close", None)
        if not callable(close):
            return
        try:
            close()
        except Exception as exc:
            reason = one_line(f"{type(exc).__name__}: {exc}")
            log.warning("stream %s: the plugin's source failed to close: %s", self.stream, reason)
