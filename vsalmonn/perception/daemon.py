"""The perception daemon: many streams in one process, each from its source into its memory (DESIGN §5).

Why it is built this way:

- **One thread per stream, one failure per stream.** Each stream runs in its own `StreamRunner` thread and
  everything it raises ends there: logged with its reason, recorded as an event, shown in the stream's status
  (failed, or skipped for a source with nothing decodable); the other streams carry on. The encoders are
  shared (loaded once) and serialised by one lock (see `pipeline`).
- **Resume by kind.** A file seeks to the offset of its last checkpoint. A watched folder continues the file
  its last checkpoint names, at that file's offset, then takes the folder's next files; the catalog's
  `ingest_files` rows record each file's state, and where a row and the checkpoint disagree (a kill between
  the two writes) the checkpoint wins. A live source (URL, capture device) resumes at *now*: its stream time
  is wall-clock time since its first start (the epoch, kept in each checkpoint), so the gap shows as a gap.
- **A stop request is served within seconds.** SIGTERM/SIGINT set one event; a file or folder abandons the
  window in progress and commits what is whole, a live source writes what it has received and commits. The
  worst case is one window being encoded when the signal comes.
- **Status lives in the catalog.** A reporter thread writes every stream's counters into `stream_status`
  every `status_every_s`, so `vsalmonn status` works from any process, and a stale `updated_at` shows a daemon
  that died without saying so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.models import IngestFile
from vsalmonn.memory_store.names import validate_stream_name
from vsalmonn.memory_store.redact import redact
from vsalmonn.memory_store.rows.ingest import reconcile_ingest_files, upsert_ingest_file
from vsalmonn.memory_store.rows.status import StatusReport, stream_overviews, upsert_statuses
from vsalmonn.memory_store.store import MemoryStore, StreamBusyError
from vsalmonn.plugins.events import EventBus

from . import allocator
from .config import DaemonConfig, PerceptionConfig, StreamSpec
from .decode import decode
from .folder import FolderError, FolderWatcher
from .identity import FileIdentity, relation
from .ingest import IngestResult, ingest_file, prefetch
from .media import DecodeError, NothingToDecode, one_line
from .pipeline import Encoders, StreamSink, StreamStats, forget_from
from .sources import Closed, LatestQueue, LiveSource, classify

if TYPE_CHECKING:
    from vsalmonn.plugins import PluginManager

log = logging.getLogger(__name__)

__all__ = ["Daemon", "StreamRunner", "read_status"]

ENDED = frozenset({"done", "stopped", "failed", "skipped"})


class StreamRunner(threading.Thread):
    """Runs one stream from its source into its memory until the source ends, fails, or `stop` is set."""

    def __init__(
        self,
        spec: StreamSpec,
        *,
        store: MemoryStore,
        encoders: Encoders,
        perception: PerceptionConfig,
        memory: MemoryConfig,
        daemon: DaemonConfig,
        stop: threading.Event,
        once: bool = False,
        plugins: PluginManager | None = None,
        plugin_sources: dict[str, Callable[..., Iterable[Any]]] | None = None,
    ) -> None:
        super().__init__(name=f"stream-{spec.name}", daemon=True)
        self.plugins = plugins
        self.events = plugins.events if plugins is not None else EventBus(store)
        self.plugin_sources = plugin_sources or {}
        self.spec = spec
        scheme = spec.source.partition("://")[0] if "://" in spec.source else None
        self.plugin_source = self.plugin_sources.get(scheme) if scheme else None
        self.kind = "url" if self.plugin_source else (spec.kind or classify(spec.source))
        self.store = store
        self.encoders = encoders
        self.perception = perception
        self.memory_config = memory
        self.config = daemon
        self.stop = stop
        self.once = once
        self.stats = StreamStats(source=spec.source)
        self.stats.detail["kind"] = self.kind
        self.stream_id: str | None = None
        self.result: IngestResult | None = None
        # Watched folders: finished files found grown (path -> seconds already read) or replaced since.
        self._grown: dict[str, float] = {}
        self._replaced: set[str] = set()

    # ----- the thread -------------------------------------------------------------------------------------

    def run(self) -> None:
        name = self.spec.name
        try:
            validate_stream_name(name)
            self.stream_id = self.store.catalog.ensure_stream(
                name, source=self.spec.source, kind=self.kind, config=self.memory_config.model_dump()
            ).id
            if self.kind == "file":
                self._run_file()
            elif self.kind == "folder":
                self._run_folder()
            else:
                self._run_live()
            if self.stats.state not in ENDED:
                self.stats.state = "stopped" if self.stop.is_set() else "done"
        except NothingToDecode as exc:
            self._ended_badly(str(exc), "skipped")
        except StreamBusyError as exc:
            # Another process is this stream's writer and owns its status row and events: report the refusal
            # here only, never as a stream.failed event or a status row over the running writer's.
            self.stream_id = None
            self.stats.fail(str(exc), "failed")
            log.error("stream %s refused: %s", name, self.stats.last_error)
        except (DecodeError, FolderError, ValueError) as exc:
            self._ended_badly(str(exc), "failed")
        except Exception as exc:
            log.exception("stream %s: unexpected error", name)
            self._ended_badly(f"{type(exc).__name__}: {exc}", "failed")
        finally:
            if self.plugins is not None and self.stream_id is not None:
                self.plugins.call("on_stream_end", stream=name, state=self.stats.state)

    def _event(self, kind: str, message: str, **payload: Any) -> None:
        """Store and deliver an event (through the plugins' bus when there is one: it runs their sinks)."""
        self.events.event(kind, message, source="daemon", stream=self.spec.name, **payload)

    def _ended_badly(self, reason: str, state: str) -> None:
        reason = redact(one_line(reason))
        log.error("stream %s %s: %s", self.spec.name, state, reason)
        self.stats.fail(reason, state)
        self._event(f"stream.{state}", reason)

    # ----- a file -----------------------------------------------------------------------------------------

    def _run_file(self) -> None:
        source = Path(self.spec.source.removeprefix("file://"))
        self.result = ingest_file(
            source,
            self.spec.name,
            store=self.store,
            encoders=self.encoders,
            perception=self.perception,
            memory_config=self.memory_config,
            window_s=self.config.window_s,
            checkpoint_every_s=self.config.checkpoint_every_s,
            stop=self.stop,
            stats=self.stats,
            queue_items=self.config.queue_items,
            plugins=self.plugins,
        )

    # ----- a watched folder -------------------------------------------------------------------------------

    def _run_folder(self) -> None:
        folder = Path(self.spec.source)
        store, stats = self.store, self.stats
        with store.writer(self.spec.name, config=self.memory_config, source=str(folder), kind="folder") as w:
            memory, last = store.open_memory(self.spec.name, self.memory_config)
            state = dict(last.source_state or {}) if last else {}
            offset = float(last.source_offset or 0.0) if last else 0.0
            forget_from(store, w.stream_id, offset)
            done_rows = self._reconcile_files(w.stream_id, state)
            finished = set(done_rows)
            sink = StreamSink(
                store=store, writer=w, memory=memory, encoders=self.encoders, perception=self.perception,
                window_s=self.config.window_s, stats=stats, start=offset, plugins=self.plugins,
            )  # fmt: skip
            stats.advance(offset)
            stats.state = "running"
            stream_end = float(state.get("stream_end", offset))
            if state.get("file") and not state.get("file_done"):
                path = Path(state["file"])
                stream_end = self._folder_file(
                    sink, path, float(state["stream_offset"]), float(state["file_offset"])
                )
                finished.add(str(path))
            with FolderWatcher(
                folder,
                settle_s=self.config.settle_s,
                poll_s=self.config.poll_s,
                skip=lambda p: str(p) in finished and self._unchanged(done_rows.get(str(p)), p),
            ) as watcher:
                while not self.stop.is_set():
                    files = watcher.ready(timeout=min(0.5, self.config.poll_s))
                    for path in files:
                        if self.stop.is_set():
                            break
                        file_offset = self._grown.pop(str(path), 0.0)
                        if str(path) in self._replaced:
                            self._replaced.discard(str(path))
                            message = f"{path.name} was replaced by a different file; ingesting it anew"
                            log.warning("stream %s: %s", self.spec.name, message)
                            self._event("file.replaced", message, file=str(path))
                        # A file that grew goes on at the stream's end from where it was left.
                        stream_end = self._folder_file(sink, path, stream_end - file_offset, file_offset)
                        finished.add(str(path))
                    stats.detail["pending"] = len(watcher.pending)
                    if self.once and not files and not watcher.pending:
                        break

    def _folder_file(self, sink: StreamSink, path: Path, stream_offset: float, file_offset: float) -> float:
        """Ingest one file of the folder from `file_offset`; returns the stream time where the next begins.

        A file that cannot be read is marked failed (or skipped) in its row and costs no stream time; a file
        that breaks midway keeps what was decoded before the break and is marked failed with the reason.
        """
        stats = self.stats
        key = str(path)
        self._file_row(key, status="ingesting", stream_offset=stream_offset, offset=file_offset, path=path)
        sink.time_offset = stream_offset
        sink.committed = max(sink.committed, stream_offset + file_offset)
        stats.detail["file"] = path.name
        last_checkpoint = sink.committed
        try:
            with decode(
                path, self.perception, start=file_offset, audio=self.encoders.speech is not None
            ) as decoder:
                stats.duration = decoder.duration
                try:
                    for item in prefetch(decoder, self.config.queue_items, self.stop):
                        if (
                            sink.add(item)
                            and sink.committed - last_checkpoint >= self.config.checkpoint_every_s
                        ):
                            sink.checkpoint(self._file_state(key, sink, stream_offset))
                            last_checkpoint = sink.committed
                        if self.stop.is_set():
                            break
                except DecodeError as exc:
                    sink.finish()
                    end = sink.committed
                    sink.checkpoint({"file": key, "file_done": True, "stream_end": end}, wait=True)
                    self._file_failed(key, str(exc), "failed", offset=end - stream_offset)
                    return end
                if self.stop.is_set():
                    if sink.committed > last_checkpoint:
                        sink.checkpoint(self._file_state(key, sink, stream_offset), wait=True)
                    self._file_row(key, offset=sink.committed - stream_offset)
                    return sink.committed
                sink.finish(decoder.position)
        except NothingToDecode as exc:
            self._file_failed(key, str(exc), "skipped")
            return stream_offset
        except DecodeError as exc:
            self._file_failed(key, str(exc), "failed")
            return stream_offset
        end = sink.committed
        sink.checkpoint({"file": key, "file_done": True, "stream_end": end}, wait=True)
        self._file_row(key, status="done", offset=end - stream_offset, error=None)
        stats.detail["files_done"] = stats.detail.get("files_done", 0) + 1
        log.info(
            "stream %s: %s ingested (stream time %.1f-%.1f s)", self.spec.name, path.name, stream_offset, end
        )
        return end

    def _unchanged(self, row: IngestFile | None, path: Path) -> bool:
        """Whether a finished file is still the one its row describes; if not, noted as grown or replaced."""
        if row is None:
            return True
        try:
            size = path.stat().st_size
            if row.head_sha256 is None or row.head_bytes is None:  # a row from before revision 0004
                old = row.size
                how = "same" if old == size else "grew" if old is not None and size > old else "different"
            else:
                stored = FileIdentity(
                    path=row.path, size=row.size or 0, mtime=row.mtime or 0.0, head_sha256=row.head_sha256,
                    head_bytes=row.head_bytes,
                )  # fmt: skip
                how = relation(stored, path, size)
        except OSError:
            return True  # gone or unreadable: nothing new to read from it
        if how == "grew":
            self._grown[row.path] = float(row.offset or 0.0)
            log.info("stream %s: %s grew since it was read; reading on", self.spec.name, path.name)
        elif how == "different":
            self._replaced.add(row.path)
        return how == "same"

    @staticmethod
    def _file_state(key: str, sink: StreamSink, stream_offset: float) -> dict[str, Any]:
        return {"file": key, "stream_offset": stream_offset, "file_offset": sink.committed - stream_offset}

    def _file_failed(self, key: str, reason: str, status: str, offset: float | None = None) -> None:
        reason = one_line(reason)
        log.error("stream %s: file %s %s: %s", self.spec.name, key, status, reason)
        self.stats.fail(reason)
        self.stats.detail[f"files_{status}"] = self.stats.detail.get(f"files_{status}", 0) + 1
        fields: dict[str, Any] = {"status": status, "error": reason}
        if offset is not None:
            fields["offset"] = offset
        self._file_row(key, **fields)
        self._event(f"file.{status}", reason, file=key)

    def _file_row(self, key: str, path: Path | None = None, **fields: Any) -> None:
        """Create or update the `ingest_files` row of one file."""
        assert self.stream_id is not None
        if path is not None:
            try:  # what the file is as it starts being read: tells later whether it grew or was replaced
                identity = FileIdentity.of(path)
                fields = {
                    "size": identity.size, "mtime": identity.mtime, "head_sha256": identity.head_sha256,
                    "head_bytes": identity.head_bytes,
                } | fields  # fmt: skip
            except OSError:
                pass
        upsert_ingest_file(self.store.catalog, self.stream_id, key, **fields)

    def _reconcile_files(self, stream_id: str, state: dict[str, Any]) -> dict[str, IngestFile]:
        """The files already finished, with rows brought in line with the last checkpoint (which wins)."""
        current = state.get("file")
        return reconcile_ingest_files(
            self.store.catalog, stream_id, current, current_done=bool(state.get("file_done"))
        )

    # ----- a live source ----------------------------------------------------------------------------------

    def _run_live(self) -> None:
        spec, stats, store = self.spec, self.stats, self.store
        url, container_format = spec.source, None
        if self.kind == "device":
            url, container_format = spec.source.removeprefix("v4l2:"), "v4l2"
        with store.writer(spec.name, config=self.memory_config, source=spec.source, kind=self.kind) as w:
            memory, last = store.open_memory(spec.name, self.memory_config)
            epoch = (last.source_state or {}).get("epoch") if last else None
            source: Any
            if self.plugin_source is not None:
                source = _PluginSource(self.plugin_source(spec.source, self.perception, self.store.data_dir))
            else:
                source = LiveSource(
                    url,
                    self.perception,
                    options=dict(spec.options),
                    container_format=container_format,
                    decoder_kwargs={"audio": self.encoders.speech is not None},
                    epoch=epoch,
                )
            sink = StreamSink(
                store=store, writer=w, memory=memory, encoders=self.encoders, perception=self.perception,
                window_s=self.config.live_window_s, exact=False, stats=stats,
                start=float(last.source_offset or 0.0) if last else 0.0, plugins=self.plugins,
            )  # fmt: skip
            items: LatestQueue[Any] = LatestQueue(self.perception.live_queue)
            failure: list[BaseException] = []

            def receive() -> None:
                try:
                    for item in source:
                        items.put(item)
                except BaseException as exc:
                    failure.append(exc)
                finally:
                    items.close()

            receiver = threading.Thread(target=receive, name=f"receive-{spec.name}", daemon=True)
            receiver.start()
            stats.state = "reconnecting"
            last_checkpoint = time.monotonic()
            try:
                while not self.stop.is_set():
                    try:
                        item = items.get(timeout=0.25)
                    except queue.Empty:
                        sink.idle()
                    except Closed:
                        break
                    else:
                        sink.add(item)
                        if not len(items):
                            sink.idle()
                    stats.drops = items.drops
                    stats.state = "running" if source.connected else "reconnecting"
                    stats.detail.update(reconnects=source.reconnects, attempts=source.attempts)
                    if source.last_error:
                        stats.last_error = source.last_error
                    if time.monotonic() - last_checkpoint >= self.config.live_checkpoint_every_s:
                        sink.checkpoint({"epoch": source.epoch})
                        last_checkpoint = time.monotonic()
            finally:
                source.close()
                receiver.join(timeout=2.0)
                stats.drops = items.drops
                sink.finish()
                if source.epoch is not None or self.plugin_source is not None:
                    sink.checkpoint({"epoch": source.epoch}, wait=True)
            if failure:  # LiveSource gave up (SourceGaveUp), or a plugin's source broke
                raise failure[0]


class _PluginSource:
    """A plugin's source (hook `register_sources`) seen through the attributes the live loop reads."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._items = iter(items)
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
        self._closed.set()
        close = getattr(self._items, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()


class Daemon:
    """Runs `specs` until every stream has ended or `stop` is set; reports status into the catalog."""

    def __init__(
        self,
        specs: Sequence[StreamSpec],
        *,
        store: MemoryStore,
        perception: PerceptionConfig,
        memory: MemoryConfig,
        config: DaemonConfig,
        encoders: Encoders | None = None,
        data_dir: Path | None = None,
        once: bool = False,
        plugins: PluginManager | None = None,
    ) -> None:
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"stream names must be unique; repeated: {', '.join(duplicates)}")
        self.specs = list(specs)
        self.store = store
        self.perception = perception
        self.memory = memory
        self.config = config
        self.once = once
        self.plugins = plugins
        self.plugin_sources: dict[str, Callable[..., Iterable[Any]]] = {}
        if plugins is not None:
            plugins.call("register_sources", register=self.plugin_sources.__setitem__)
        self.stop = threading.Event()
        self._encoders = encoders
        self._data_dir = data_dir or store.data_dir
        self.runners: list[StreamRunner] = []
        self.started_at = datetime.now(UTC)

    @property
    def encoders(self) -> Encoders:
        if self._encoders is None:
            self._encoders = Encoders.from_config(self.perception, self._data_dir)
        return self._encoders

    def start(self) -> None:
        """Load the encoders and start every stream's thread and the status reporter."""
        allocator.limit_arenas()  # before the threads: their arenas are taken on their first malloc
        encoders = self.encoders
        for spec in self.specs:
            runner = StreamRunner(
                spec, store=self.store, encoders=encoders, perception=self.perception, memory=self.memory,
                daemon=self.config, stop=self.stop, once=self.once, plugins=self.plugins,
                plugin_sources=self.plugin_sources,
            )  # fmt: skip
            self.runners.append(runner)
            runner.start()
        self._reporter = threading.Thread(target=self._report_loop, name="status", daemon=True)
        self._reporter.start()

    @property
    def running(self) -> bool:
        return any(r.is_alive() for r in self.runners)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every stream has ended (True) or `timeout` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for runner in self.runners:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            runner.join(remaining)
        return not self.running

    def shutdown(self) -> bool:
        """Ask every stream to stop, wait up to `stop_timeout_s`, write the final status; True if all ended.

        A stream still busy then (its thread is a daemon thread) dies with the process; its store stays
        whole, as after any kill (DESIGN §4), and it resumes from its last commit.
        """
        self.stop.set()
        ended = self.wait(self.config.stop_timeout_s)
        if not ended:
            log.warning(
                "streams still busy after %.0f s: %s", self.config.stop_timeout_s,
                ", ".join(r.spec.name for r in self.runners if r.is_alive()),
            )  # fmt: skip
        self.report()
        return ended

    def run(self, should_stop: threading.Event | None = None) -> int:
        """Start, run until all streams end or `should_stop` is set, shut down. 0, or 1 if a stream failed."""
        self.start()
        outside = should_stop or threading.Event()
        while self.running and not outside.wait(0.2):
            pass
        self.shutdown()
        failed = [r for r in self.runners if r.stats.state == "failed"]
        return 1 if failed and not outside.is_set() else 0

    # ----- status -----------------------------------------------------------------------------------------

    def _report_loop(self) -> None:
        while not self.stop.wait(self.config.status_every_s):
            self.report()
            if not self.running:
                return

    def report(self) -> None:
        """Write every stream's status row now."""
        rows = [r for r in self.runners if r.stream_id is not None]
        if rows:
            write_status(self.store, [(r.stream_id, r.stats) for r in rows], self.started_at)  # type: ignore[misc]


def write_status(
    store: MemoryStore, entries: Iterable[tuple[str, StreamStats]], started_at: datetime | None = None
) -> None:
    """Upsert the `stream_status` rows of the given streams (never raising: status is best effort)."""
    host, pid, now = socket.gethostname(), os.getpid(), datetime.now(UTC)
    try:
        upsert_statuses(
            store.catalog,
            [
                StatusReport(
                    stream_id=stream_id, state=stats.state, pid=pid, host=host, source=redact(stats.source),
                    position=stats.position, duration=stats.duration, rate=stats.rate, lag_s=stats.lag_s,
                    frames=stats.frames, segments=stats.segments, drops=stats.drops, errors=stats.errors,
                    last_error=redact(stats.last_error), detail=dict(stats.detail), started_at=started_at,
                    updated_at=now,
                )
                for stream_id, stats in entries
            ],
        )  # fmt: skip
    except Exception as exc:
        log.warning("could not write stream status: %s", exc)


def read_status(store: MemoryStore) -> list[dict[str, Any]]:
    """Every stream with its last reported status and newest checkpoint, as plain dicts (by name)."""
    now = datetime.now(UTC)
    out = []
    for overview in stream_overviews(store.catalog):
        stream, status, checkpoint = overview.stream, overview.status, overview.checkpoint
        # Redacted here too: rows written before redaction existed may still hold a credential.
        entry: dict[str, Any] = {
            "stream": stream.name,
            "kind": stream.kind,
            "source": redact(stream.source),
        }
        if status is not None:
            entry.update(
                state=status.state, position=status.position, duration=status.duration, rate=status.rate,
                lag_s=status.lag_s, frames=status.frames, segments=status.segments, drops=status.drops,
                errors=status.errors, last_error=redact(status.last_error), detail=status.detail or {},
                pid=status.pid, host=status.host, updated_at=status.updated_at.isoformat(),
                age_s=(now - status.updated_at).total_seconds(),
            )  # fmt: skip
        else:
            entry.update(state="idle" if checkpoint else "new")
        if checkpoint is not None:
            entry["checkpoint"] = {
                "seq": checkpoint.seq,
                "t_end": checkpoint.t_end,
                "source_offset": checkpoint.source_offset,
                "created_at": checkpoint.created_at.isoformat(),
                "age_s": (now - checkpoint.created_at).total_seconds(),
            }
        out.append(entry)
    return out
