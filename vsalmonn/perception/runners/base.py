"""The one interface every kind of source implements, and what a run of a stream is given (DESIGN §5).

Why it is built this way:

- **A kind owns everything that differs by kind.** How a stream of it is told from its source string, how it
  runs and resumes (a file from the offset of its last checkpoint, a folder from the file its checkpoint
  names, a live source at *now* on its epoch's time axis), and how its progress reads to a person. Everything
  that is the same for every kind (the thread, the failure handling, the events, the status rows) stays in
  the daemon's `StreamRunner`, which asks the registry for the kind and calls `run`.
- **Kinds are stateless.** One object serves every stream of its kind in a daemon; what a run must remember
  (a watched folder's grown and replaced files) lives in the run's own objects, made by `run`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vsalmonn.memory_store import MemoryConfig
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.plugins import PluginManager

    from ..config import DaemonConfig, PerceptionConfig, StreamSpec
    from ..ingest import IngestResult
    from ..pipeline import Encoders, StreamStats

__all__ = ["KindRunner", "RunContext"]


@dataclass(frozen=True, slots=True)
class RunContext:
    """What one run of one stream works with: its spec, the shared store and encoders, its settings.

    `event(kind, message, **payload)` stores and delivers an event about this stream (through the plugins'
    bus when there is one); `stream_id` is the catalog id of the stream, made before the run starts.
    """

    spec: StreamSpec
    stream_id: str
    store: MemoryStore
    encoders: Encoders
    perception: PerceptionConfig
    memory: MemoryConfig
    daemon: DaemonConfig
    stop: threading.Event
    stats: StreamStats
    event: Callable[..., None]
    once: bool = False
    plugins: PluginManager | None = None


class KindRunner(ABC):
    """A kind of source: how its streams are recognised, run and resumed, and how their progress reads.

    `name` is the registry key and what `StreamSpec.kind` names; `catalog_kind` is what the catalog and the
    status rows record for its streams (a plugin's kind records "url"); `label` is the text a person reads
    for it. `live` kinds run until stopped and never fall behind; `watches` kinds (a folder) accept `--once`.
    """

    name: str = ""
    label: str = ""
    live: bool = False
    watches: bool = False

    @property
    def catalog_kind(self) -> str:
        return self.name

    # ----- recognising a source ---------------------------------------------------------------------------

    @abstractmethod
    def matches(self, source: str) -> bool:
        """Whether `source` names a source of this kind (the registry asks the kinds in their order)."""

    def default_stream_name(self, source: str) -> str | None:
        """The stream name used when none is given (None: the caller must ask for one)."""
        return None

    def check(self, source: str) -> None:
        """Raise DecodeError with the reason for a source that cannot work, before any encoder is loaded."""
        return None

    def check_resume(self, store: MemoryStore, stream: str, source: str) -> str | None:
        """What `source` is to what `stream` already holds ("same", "grew"; None: nothing, or not told).

        Reads the catalog only, so that a refusal (an exception with a one-line reason, such as
        `SourceMismatch`) leaves the store exactly as it was.
        """
        return None

    # ----- running ----------------------------------------------------------------------------------------

    @abstractmethod
    def run(self, ctx: RunContext) -> IngestResult | None:
        """Run the stream from where its last checkpoint left it until its source ends or `ctx.stop` is set.

        Counters go into `ctx.stats` as it goes; errors propagate (the daemon's `StreamRunner` reports
        them). A result is returned by the kinds that have one to tell (a file).
        """

    # ----- what it reports --------------------------------------------------------------------------------

    def progress_total(self, stats: StreamStats) -> float | None:
        """Stream seconds the progress bar fills up to (None: no end is known, so no bar)."""
        return None

    def progress_title(self, stats: StreamStats) -> str:
        """What the progress line starts with."""
        return str(stats.source)

    def progress_parts(self, stats: StreamStats) -> list[str]:
        """The progress line's parts after the position: the rate, then what is particular to the kind."""
        rate = stats.rate
        return [f"{rate:.1f}x real time"] if rate else []

    def describe_progress(self, stats: StreamStats) -> str:
        """The progress line's tail, e.g. "3.2x real time, running, lag 0.4 s, 0 dropped"."""
        return ", ".join(self.progress_parts(stats))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def stem_name(source: str) -> str:
    """The stem of a path's last part: the default stream name of a file or a folder."""
    return Path(source.rstrip("/")).stem
