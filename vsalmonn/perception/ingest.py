"""A media file into a stream's memory, resumable at its last checkpoint (DESIGN §5).

Decoding runs in its own thread ahead of encoding, through a bounded queue: PyAV releases the GIL while it
decodes, so the two overlap on two cores, and the bound keeps a fast decoder from filling memory with frames
the encoder has not reached (back-pressure). Checkpoints fall on window ends (see `pipeline`), so a restart
seeks the file to the last committed offset and continues as if never stopped. A stop request (SIGTERM in
the daemon) abandons the window in progress and commits what is whole: the work lost is at most one window.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.rows.ingest import remember_source_identity
from vsalmonn.memory_store.store import MemoryStore

from .config import PerceptionConfig
from .decode import decode, probe
from .identity import FileIdentity, Relation, SourceMismatch, relation
from .media import DecodeError
from .pipeline import Encoders, Item, StreamSink, StreamStats, forget_from

if TYPE_CHECKING:
    from vsalmonn.plugins import PluginManager

log = logging.getLogger(__name__)

Progress = Callable[[float, float | None], None]  # (stream seconds done, duration or None)

__all__ = ["Encoders", "IngestResult", "Progress", "check_source", "ingest_file", "prefetch"]


@dataclass
class IngestResult:
    stream: str
    source: str
    resumed_at: float
    position: float
    frames: int = 0
    segments: int = 0
    checkpoints: int = 0
    wall_s: float = 0.0
    stopped: bool = False  # a stop request ended the run before the file did

    @property
    def speed(self) -> float:
        """Seconds of stream ingested per second of wall time in this run."""
        return (self.position - self.resumed_at) / self.wall_s if self.wall_s > 0 else 0.0


class _End:
    """Marks the end of a prefetched iteration, carrying the error that ended it, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetch(items: Iterator[Item], maxsize: int, stop: threading.Event) -> Iterator[Item]:
    """Iterate `items` in a thread, up to `maxsize` ahead; its error is raised here, at the same place.

    Stops early when `stop` is set or when this generator is closed; the thread never outlives that by more
    than one decoded item.
    """
    buffer: queue.Queue[Item | _End] = queue.Queue(maxsize)
    halt = threading.Event()

    def produce() -> None:
        end = _End()
        try:
            for item in items:
                while not (halt.is_set() or stop.is_set()):
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                else:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it where the item would be
            end = _End(exc)
        while not halt.is_set():
            try:
                buffer.put(end, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            try:
                got = buffer.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if isinstance(got, _End):
                if got.error is not None:
                    raise got.error
                return
            yield got
    finally:
        halt.set()
        thread.join(timeout=5.0)


def check_source(store: MemoryStore, stream: str, source: Path) -> tuple[Relation | None, FileIdentity]:
    """What `source` is to the file `stream` was fed (None: nothing committed yet); SourceMismatch if another.

    Reads the catalog only, so that a refusal leaves the store exactly as it was.
    """
    current = FileIdentity.of(source)
    row = store.catalog.stream(stream)
    if row is None or not store.checkpoints(stream):
        return None, current
    hint = f"give this file its own stream with --stream NAME (stream {stream} is left as it was)"
    if row.kind not in (None, "file"):
        raise SourceMismatch(f"stream {stream} is a {row.kind} stream, not a file's; {hint}")
    stored = FileIdentity.load(row.source_identity)
    if stored is None:  # made before revision 0004: trust the path it was given, nothing more
        recorded = Path(row.source.removeprefix("file://")).resolve() if row.source else None
        if recorded == Path(current.path):
            return "same", current
        raise SourceMismatch(f"stream {stream} already holds {row.source}, not {current.path}; {hint}")
    how = relation(stored, Path(current.path), current.size)
    if how == "different":
        raise SourceMismatch(
            f"stream {stream} already holds {stored.describe()}; {current.describe()} is a different file; "
            f"{hint}"
        )
    return how, current


def _remember(store: MemoryStore, stream_id: str, identity: FileIdentity) -> None:
    remember_source_identity(store.catalog, stream_id, identity.model_dump())


def ingest_file(
    source: Path,
    stream: str,
    *,
    store: MemoryStore,
    encoders: Encoders,
    perception: PerceptionConfig,
    memory_config: MemoryConfig,
    window_s: float = 30.0,
    checkpoint_every_s: float = 60.0,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    stats: StreamStats | None = None,
    queue_items: int = 64,
    plugins: PluginManager | None = None,
) -> IngestResult:
    """Ingest `source` into `stream`, resuming from its last committed offset; returns what was done.

    DecodeError (one line) when the file cannot be read; StreamBusyError when another process writes the
    stream; SourceMismatch when the stream holds another file (see `identity`). A file that grew since it
    was ingested, even completely, is read on from the committed offset. `stop`, when set, ends the run at
    the next item with a checkpoint of what is whole.
    """
    started = time.perf_counter()
    stop = stop or threading.Event()
    stats = stats or StreamStats()
    info = probe(source)
    stats.duration = info.duration
    how, identity = check_source(store, stream, source)
    with store.writer(stream, config=memory_config, source=str(source), kind="file") as writer:
        memory, last = store.open_memory(stream, memory_config)
        how, identity = check_source(store, stream, source)  # again, now that no other process can write
        if how is None:
            _remember(store, writer.stream_id, identity)  # before the first checkpoint: this file, from 0
        resume = float(last.source_offset or 0.0) if last else 0.0
        result = IngestResult(stream=stream, source=str(source), resumed_at=resume, position=resume)
        stats.advance(resume)
        frames0, segments0, checkpoints0 = stats.frames, stats.segments, stats.checkpoints
        if how == "grew":
            log.info("stream %s: %s grew since it was read; reading on from %.1f s", stream, source, resume)
        elif last and last.source_state and last.source_state.get("done"):
            error = last.source_state.get("error")
            how = f"as far as it could be read ({error})" if error else "completely"
            log.info("stream %s: %s was ingested %s already", stream, source, how)
            stats.state = "done"
            return result
        forget_from(store, writer.stream_id, resume)
        sink = StreamSink(
            store=store, writer=writer, memory=memory, encoders=encoders, perception=perception,
            window_s=window_s, stats=stats, start=resume, plugins=plugins,
        )  # fmt: skip
        stats.state = "running"
        if progress:
            progress(resume, info.duration)
        last_checkpoint = resume
        with decode(source, perception, start=resume, audio=encoders.speech is not None) as decoder:
            try:
                for item in prefetch(decoder, queue_items, stop):
                    if sink.add(item):
                        if sink.committed - last_checkpoint >= checkpoint_every_s:
                            sink.checkpoint()
                            last_checkpoint = sink.committed
                        if progress:
                            progress(sink.committed, info.duration)
                    if stop.is_set():
                        break
            except DecodeError as exc:
                # A file that breaks midway (truncated, corrupt) keeps what was decoded before the break,
                # committed as final, so that a rerun does not fail at the same place again.
                sink.finish()
                sink.checkpoint({"done": True, "error": str(exc)}, wait=True, flush=True)
                _remember(store, writer.stream_id, identity)
                stats.state = "failed"
                raise
            if stop.is_set():
                result.stopped = True
                if sink.committed > last_checkpoint:
                    sink.checkpoint(wait=True)
            else:
                sink.finish(decoder.position)
                sink.checkpoint({"done": True}, wait=True, flush=True)
                # Only now: had the file grown and this run died before here, the next must read on.
                _remember(store, writer.stream_id, identity)
        result.position = sink.committed
        result.frames, result.segments = stats.frames - frames0, stats.segments - segments0
        result.checkpoints = stats.checkpoints - checkpoints0
        if progress:
            progress(result.position, info.duration)
    result.wall_s = time.perf_counter() - started
    stats.state = "stopped" if result.stopped else "done"
    log.info(
        "stream %s: %s %s to %.1f s (%d frames, %d segments, %.1fx real time)",
        stream,
        "stopped" if result.stopped else "ingested",
        source,
        result.position,
        result.frames,
        result.segments,
        result.speed,
    )
    return result
