"""A watched folder: its files appended to one stream in name order, each file's state in `ingest_files`.

Why it is built this way:

- **Resume from the checkpoint, which wins.** A folder's stream continues the file its last checkpoint names,
  at that file's offset, then takes the folder's next files. The catalog's `ingest_files` rows record each
  file's state; where a row and the checkpoint disagree (a kill between the two writes) the checkpoint wins.
- **One bad file costs only itself.** A file that cannot be read is marked failed (or skipped) in its row and
  costs no stream time; a file that breaks midway keeps what was decoded before the break.
- **A finished file is looked at again.** When the watcher sees a finished file, its identity (size and head
  hash) tells whether it is the same, grew (read on from where it was left, at the stream's end) or was
  replaced by another (ingested anew, with an event).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vsalmonn.errors import one_line
from vsalmonn.memory_store.models import IngestFile
from vsalmonn.memory_store.rows.ingest import reconcile_ingest_files, upsert_ingest_file

from ..decode import MediaDecoder, decode
from ..folder import FolderWatcher
from ..identity import FileIdentity, relation
from ..ingest import prefetch
from ..media import DecodeError, NothingToDecode
from ..pipeline import StreamSink, forget_from
from .base import KindRunner, RunContext, stem_name

if TYPE_CHECKING:
    from vsalmonn.memory_store.store import StreamWriter

    from ..pipeline import StreamStats

__all__ = ["FolderKind"]

log = logging.getLogger(__name__)


class FolderKind(KindRunner):
    """An existing directory: its settled files, in natural name order, one after another in stream time."""

    name = "folder"
    label = "folder"
    watches = True

    def matches(self, source: str) -> bool:
        return Path(source).is_dir()

    def default_stream_name(self, source: str) -> str | None:
        return stem_name(source)

    def run(self, ctx: RunContext) -> None:
        _FolderRun(ctx).run()

    def progress_parts(self, stats: StreamStats) -> list[str]:
        parts = super().progress_parts(stats)
        if "file" in stats.detail:
            parts.append(str(stats.detail["file"]))
        return parts


class _FolderRun:
    """One run of a folder's stream: what it has finished, and which finished files grew or were replaced."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.spec, self.store, self.stats, self.stream_id = ctx.spec, ctx.store, ctx.stats, ctx.stream_id
        self.finished: set[str] = set()
        self.stream_end = 0.0
        self._done_rows: dict[str, IngestFile] = {}
        # Finished files found grown (path -> seconds already read) or replaced since.
        self._grown: dict[str, float] = {}
        self._replaced: set[str] = set()

    def run(self) -> None:
        ctx, store, stats = self.ctx, self.store, self.stats
        folder = Path(self.spec.source)
        with store.writer(self.spec.name, config=ctx.memory, source=str(folder), kind="folder") as w:
            sink = self._resume(w)
            with FolderWatcher(
                folder, settle_s=ctx.daemon.settle_s, poll_s=ctx.daemon.poll_s, skip=self._skip
            ) as watcher:
                while not ctx.stop.is_set():
                    files = watcher.ready(timeout=min(0.5, ctx.daemon.poll_s))
                    self._take(sink, files)
                    stats.detail["pending"] = len(watcher.pending)
                    if ctx.once and not files and not watcher.pending:
                        break

    def _resume(self, w: StreamWriter) -> StreamSink:
        """The sink at the last checkpoint's offset, after finishing the file that checkpoint was inside."""
        ctx, store, stats = self.ctx, self.store, self.stats
        memory, last = store.open_memory(self.spec.name, ctx.memory)
        state = dict(last.source_state or {}) if last else {}
        offset = float(last.source_offset or 0.0) if last else 0.0
        forget_from(store, w.stream_id, offset)
        self._done_rows = self._reconcile_files(w.stream_id, state)
        self.finished = set(self._done_rows)
        sink = StreamSink(
            store=store, writer=w, memory=memory, encoders=ctx.encoders, perception=ctx.perception,
            window_s=ctx.daemon.window_s, stats=stats, start=offset, plugins=ctx.plugins,
        )  # fmt: skip
        stats.advance(offset)
        stats.state = "running"
        self.stream_end = float(state.get("stream_end", offset))
        if state.get("file") and not state.get("file_done"):
            path = Path(state["file"])
            stream_offset, file_offset = float(state["stream_offset"]), float(state["file_offset"])
            self.stream_end = self._file(sink, path, stream_offset, file_offset)
            self.finished.add(str(path))
        return sink

    def _skip(self, path: Path) -> bool:
        return str(path) in self.finished and self._unchanged(self._done_rows.get(str(path)), path)

    def _take(self, sink: StreamSink, files: list[Path]) -> None:
        for path in files:
            if self.ctx.stop.is_set():
                return
            file_offset = self._grown.pop(str(path), 0.0)
            if str(path) in self._replaced:
                self._replaced.discard(str(path))
                message = f"{path.name} was replaced by a different file; ingesting it anew"
                log.warning("stream %s: %s", self.spec.name, message)
                self.ctx.event("file.replaced", message, file=str(path))
            # A file that grew goes on at the stream's end from where it was left.
            self.stream_end = self._file(sink, path, self.stream_end - file_offset, file_offset)
            self.finished.add(str(path))

    def _file(self, sink: StreamSink, path: Path, stream_offset: float, file_offset: float) -> float:
        """Ingest one file of the folder from `file_offset`; returns the stream time where the next begins."""
        ctx, stats = self.ctx, self.stats
        key = str(path)
        self._file_row(key, status="ingesting", stream_offset=stream_offset, offset=file_offset, path=path)
        sink.time_offset = stream_offset
        sink.committed = max(sink.committed, stream_offset + file_offset)
        stats.detail["file"] = path.name
        try:
            audio = ctx.encoders.speech is not None
            with decode(path, ctx.perception, start=file_offset, audio=audio) as dec:
                stats.duration = dec.duration
                stopped_at = self._read(sink, dec, key, stream_offset)
        except NothingToDecode as exc:
            self._file_failed(key, str(exc), "skipped")
            return stream_offset
        except DecodeError as exc:
            self._file_failed(key, str(exc), "failed")
            return stream_offset
        if stopped_at is not None:
            return stopped_at
        end = sink.committed
        sink.checkpoint({"file": key, "file_done": True, "stream_end": end}, wait=True)
        self._file_row(key, status="done", offset=end - stream_offset, error=None)
        stats.detail["files_done"] = stats.detail.get("files_done", 0) + 1
        log.info(
            "stream %s: %s ingested (stream time %.1f-%.1f s)", self.spec.name, path.name, stream_offset, end
        )
        return end

    def _read(self, sink: StreamSink, decoder: MediaDecoder, key: str, stream_offset: float) -> float | None:
        """Feed the file into the sink: None once read to its end; else where it stopped (a break, a stop).

        A file that breaks midway keeps what was decoded before the break and is marked failed with the
        reason; on a stop, what is whole is committed and the row keeps the offset to go on from.
        """
        ctx = self.ctx
        last_checkpoint = sink.committed
        try:
            for item in prefetch(decoder, ctx.daemon.queue_items, ctx.stop):
                if sink.add(item) and sink.committed - last_checkpoint >= ctx.daemon.checkpoint_every_s:
                    sink.checkpoint(self._file_state(key, sink, stream_offset))
                    last_checkpoint = sink.committed
                if ctx.stop.is_set():
                    break
        except DecodeError as exc:
            sink.finish()
            end = sink.committed
            sink.checkpoint({"file": key, "file_done": True, "stream_end": end}, wait=True)
            self._file_failed(key, str(exc), "failed", offset=end - stream_offset)
            return end
        if ctx.stop.is_set():
            if sink.committed > last_checkpoint:
                sink.checkpoint(self._file_state(key, sink, stream_offset), wait=True)
            self._file_row(key, offset=sink.committed - stream_offset)
            return sink.committed
        sink.finish(decoder.position)
        return None

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
        self.ctx.event(f"file.{status}", reason, file=key)

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
