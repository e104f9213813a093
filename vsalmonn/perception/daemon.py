"""The perception daemon: many streams in one process, each from its source into its memory (DESIGN §5).

Why it is built this way:

- **One thread per stream, one failure per stream.** Each stream runs in its own `StreamRunner` thread and
  everything it raises ends there: logged with its reason, recorded as an event, shown in the stream's status
  (failed, or skipped for a source with nothing decodable); the other streams carry on. The encoders are
  shared (loaded once) and serialised by one lock (see `pipeline`).
- **Resume by kind**, each kind a runner of `runners/` found in one registry (plugins' kinds included). A file
  seeks to the offset of its last checkpoint. A watched folder continues the file its last checkpoint names,
  at that file's offset, then takes the folder's next files; the catalog's `ingest_files` rows record each
  file's state, and where a row and the checkpoint disagree (a kill between the two writes) the checkpoint
  wins. A live source (URL, capture device) resumes at *now*: its stream time is wall-clock time since its
  first start (the epoch, kept in each checkpoint), so the gap shows as a gap.
- **A stop request is served within seconds.** SIGTERM/SIGINT set one event; a file or folder abandons the
  window in progress and commits what is whole, a live source writes what it has received and commits. The
  worst case is one window being encoded when the signal comes.
- **Status lives in the catalog.** A reporter thread writes every stream's counters into `stream_status`
  every `status_every_s`, so `vsalmonn status` works from any process, and a stale `updated_at` shows a daemon
  that died without saying so.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vsalmonn.errors import one_line
from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.names import validate_stream_name
from vsalmonn.memory_store.objects import ObjectStoreError
from vsalmonn.memory_store.redact import redact
from vsalmonn.memory_store.rows.status import StatusReport, stream_overviews, upsert_statuses
from vsalmonn.memory_store.store import MemoryStore, StreamBusyError, source_epoch
from vsalmonn.plugins.events import EventBus

from . import allocator
from .config import DaemonConfig, PerceptionConfig, StreamSpec
from .folder import FolderError
from .ingest import IngestResult
from .media import DecodeError, NothingToDecode
from .pipeline import Encoders, StreamStats
from .runners.base import KindRunner, RunContext
from .runners.registry import SOURCE_KINDS, KindRegistry, builtin_kinds

if TYPE_CHECKING:
    from vsalmonn.plugins import PluginManager

log = logging.getLogger(__name__)

__all__ = ["Daemon", "StreamRunner", "daemon_kinds", "read_status", "write_status"]

ENDED = frozenset({"done", "stopped", "failed", "skipped"})


class StreamRunner(threading.Thread):
    """Runs one stream from its source into its memory until the source ends, fails, or `stop` is set.

    What differs by kind of source (how it runs, resumes and reads as progress) is its `source_kind`, found
    in `kinds` (the daemon's registry, plugins' kinds included; default: the built-in ones).
    """

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
        kinds: KindRegistry | None = None,
    ) -> None:
        super().__init__(name=f"stream-{spec.name}", daemon=True)
        self.plugins = plugins
        self.events = plugins.events if plugins is not None else EventBus(store)
        self.spec = spec
        self.source_kind: KindRunner = (kinds or SOURCE_KINDS).resolve(spec)
        self.kind = self.source_kind.catalog_kind
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
        self.busy = False  # refused: another process is the stream's writer (a Ray actor may wait and retry)

    def run(self) -> None:
        name = self.spec.name
        try:
            validate_stream_name(name)
            self.stream_id = self.store.catalog.ensure_stream(
                name, source=self.spec.source, kind=self.kind, config=self.memory_config.model_dump()
            ).id
            self.result = self.source_kind.run(self._context(self.stream_id))
            if self.stats.state not in ENDED:
                self.stats.state = "stopped" if self.stop.is_set() else "done"
        except NothingToDecode as exc:
            self._ended_badly(str(exc), "skipped")
        except StreamBusyError as exc:
            # Another process is this stream's writer and owns its status row and events: report the refusal
            # here only, never as a stream.failed event or a status row over the running writer's.
            self.stream_id = None
            self.busy = True
            self.stats.fail(str(exc), "failed")
            log.error("stream %s refused: %s", name, self.stats.last_error)
        except (DecodeError, FolderError, ValueError, ObjectStoreError) as exc:
            # ObjectStoreError: the checkpoint store failed a write the stream could not go on without (its
            # last one) or a read at its start; its last committed checkpoint stays, and a rerun resumes there
            self._ended_badly(str(exc), "failed")
        except Exception as exc:
            log.exception("stream %s: unexpected error", name)
            self._ended_badly(f"{type(exc).__name__}: {exc}", "failed")
        finally:
            if self.plugins is not None and self.stream_id is not None:
                self.plugins.call("on_stream_end", stream=name, state=self.stats.state)

    def _context(self, stream_id: str) -> RunContext:
        return RunContext(
            spec=self.spec, stream_id=stream_id, store=self.store, encoders=self.encoders,
            perception=self.perception, memory=self.memory_config, daemon=self.config, stop=self.stop,
            stats=self.stats, event=self._event, once=self.once, plugins=self.plugins,
        )  # fmt: skip

    def _event(self, kind: str, message: str, **payload: Any) -> None:
        """Store and deliver an event (through the plugins' bus when there is one: it runs their sinks)."""
        self.events.event(kind, message, source="daemon", stream=self.spec.name, **payload)

    def _ended_badly(self, reason: str, state: str) -> None:
        reason = redact(one_line(reason))
        log.error("stream %s %s: %s", self.spec.name, state, reason)
        self.stats.fail(reason, state)
        self._event(f"stream.{state}", reason)


def daemon_kinds(plugins: PluginManager | None) -> KindRegistry:
    """One registry for the built-in kinds and the plugins' (hook `register_sources`, same lookup): what a
    daemon, and each stream's actor under the Ray backend, resolves its streams' kinds in."""
    kinds = builtin_kinds()
    if plugins is not None:
        plugins.call("register_sources", register=kinds.register)
    return kinds


class Daemon:
    """Runs `specs` until every stream has ended or `stop` is set; reports status into the catalog.

    `reconcile` (what SIGHUP does to `vsalmonn daemon`) makes the running set another list of streams: a new
    one starts, a removed one is stopped as on SIGTERM (its checkpoint committed), a changed one is stopped
    and started again, the others run on untouched. Each stream has its own stop event for that; `stop`
    (the daemon's) is set with all of them.
    """

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
        _unique(specs)
        self.specs = list(specs)
        self.store = store
        self.perception = perception
        self.memory = memory
        self.config = config
        self.once = once
        self.plugins = plugins
        self.kinds: KindRegistry = daemon_kinds(plugins)
        self.stop = threading.Event()
        self._encoders = encoders
        self._data_dir = data_dir or store.data_dir
        self.runners: list[StreamRunner] = []  # every stream run, removed ones too (the summary's)
        self.active: dict[str, StreamRunner] = {}  # the current set by name, ended or not
        self.started_at = datetime.now(UTC)
        self._reporter: threading.Thread | None = None

    @property
    def encoders(self) -> Encoders:
        if self._encoders is None:  # the text encoder the plugins share, when the composition root gave one
            shared = self.plugins.context.text_encoder if self.plugins is not None else None
            self._encoders = Encoders.from_config(self.perception, self._data_dir, text=shared)
        return self._encoders

    def start(self) -> None:
        """Load the encoders and start every stream's thread and the status reporter."""
        allocator.tune()  # before the threads: their arenas are taken on their first malloc
        for spec in self.specs:
            self._launch(spec)
        self._ensure_reporter()

    def _launch(self, spec: StreamSpec) -> None:
        runner = StreamRunner(
            spec, store=self.store, encoders=self.encoders, perception=self.perception, memory=self.memory,
            daemon=self.config, stop=threading.Event(), once=self.once, plugins=self.plugins,
            kinds=self.kinds,
        )  # fmt: skip
        self.runners.append(runner)
        self.active[spec.name] = runner
        runner.start()

    def _ensure_reporter(self) -> None:
        if self._reporter is None or not self._reporter.is_alive():
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

    def _stop(self, runners: Sequence[StreamRunner]) -> bool:
        """Ask these streams to stop and wait up to `stop_timeout_s`; True if all ended."""
        for runner in runners:
            runner.stop.set()
        deadline = time.monotonic() + self.config.stop_timeout_s
        for runner in runners:
            runner.join(max(0.0, deadline - time.monotonic()))
        busy = [r.spec.name for r in runners if r.is_alive()]
        if busy:
            log.warning("streams still busy after %.0f s: %s", self.config.stop_timeout_s, ", ".join(busy))
        return not busy

    def shutdown(self) -> bool:
        """Ask every stream to stop, wait up to `stop_timeout_s`, write the final status; True if all ended.

        A stream still busy then (its thread is a daemon thread) dies with the process; its store stays
        whole, as after any kill (DESIGN §4), and it resumes from its last commit.
        """
        self.stop.set()
        ended = self._stop(self.runners)
        self.report()
        return ended

    def reconcile(self, specs: Sequence[StreamSpec]) -> None:
        """Make the current set `specs` (class docstring). Checked whole first: ValueError (one line) for a
        list that cannot run, and then nothing has changed."""
        _unique(specs)
        for spec in specs:
            validate_stream_name(spec.name)
            self.kinds.resolve(spec)
        wanted = {s.name: s for s in specs}
        gone = [n for n, r in self.active.items() if n not in wanted or r.spec != wanted[n]]
        if gone:
            log.warning("reconcile: stopping %s", ", ".join(gone))
            stopped = [self.active.pop(n) for n in gone]
            self._stop(stopped)
            self._report(stopped)  # their last rows ("stopped"); the reporter writes the current set only
        new = [s for n, s in wanted.items() if n not in self.active]
        for spec in new:
            self._launch(spec)
        self.specs = list(specs)
        self._ensure_reporter()
        log.warning("reconcile: %d stream(s), %d started, %d stopped", len(wanted), len(new), len(gone))

    def run(
        self,
        should_stop: threading.Event | None = None,
        reload: threading.Event | None = None,
        read_specs: Callable[[], Sequence[StreamSpec]] | None = None,
    ) -> int:
        """Start, run until all streams end or `should_stop` is set, shut down. 0, or 1 if a stream failed.

        `reload` set (SIGHUP) calls `read_specs` (the settings read again) and reconciles with its streams; a
        `read_specs` that raises (a bad edit) is one line in the log, and the streams run on unchanged.
        """
        self.start()
        outside = should_stop or threading.Event()
        while self.running and not outside.wait(0.2):
            if reload is not None and reload.is_set() and read_specs is not None:
                reload.clear()
                try:
                    self.reconcile(read_specs())
                except Exception as exc:
                    log.error("SIGHUP: settings not reloaded, streams unchanged: %s", one_line(str(exc)))
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
        """Write the status row of every stream of the current set now."""
        self._report(list(self.active.values()))

    def _report(self, runners: Sequence[StreamRunner]) -> None:
        rows = {r.stream_id: r.stats for r in runners if r.stream_id is not None}
        if rows:
            write_status(self.store, rows.items(), self.started_at)


def _unique(specs: Sequence[StreamSpec]) -> None:
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"stream names must be unique; repeated: {', '.join(duplicates)}")


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
            epoch = source_epoch(checkpoint.source_state)
            if epoch is not None:  # a live stream: stream time 0 on the wall clock
                entry["epoch"] = datetime.fromtimestamp(epoch, UTC).isoformat()
        out.append(entry)
    return out
