"""Persistent memories: Zarr checkpoints committed by catalog rows (DESIGN §4, "Commit protocol").

A checkpoint is written completely (on disk: under a temporary name, made durable and renamed; in an object
store: under a fresh key never used before, `objects.py`), and only then committed by inserting its row in
one transaction. So at every instant the store is in one of two states that a reader can tell apart: a
group without a row (garbage, removed by the next writer or `collect_garbage`) or a group with a row
(whole). A process killed at any instant loses at most the work since its last commit.

One process at a time writes a stream (an OS file lock, released by the kernel when the process dies);
any number of processes read it, and readers never delete anything.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select

from .catalog import Catalog
from .checkpoint import COMMIT_ATTR, CheckpointError, fsync_dir
from .config import DataRetention, MemoryConfig, RetentionPolicy, StoreConfig, saved_config
from .memory import StreamMemory
from .models import Checkpoint, Stream
from .names import validate_stream_name
from .objects import (
    GROUP_SUFFIX,
    MEMORY_DIR,
    TMP_PREFIX,
    GroupStore,
    LocalGroups,
    ObjectStoreError,
    open_groups,
)
from .on_disk import StoreError, _aware, _groups_on_disk, _span, _write_json, refuse_lost_catalog

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"
STREAM_FILE = "stream.json"  # beside a stream's groups: its name, source and kind, for `store rebuild`
LOCK_FILE = ".writer.lock"
__all__ = ["GROUP_SUFFIX", "MEMORY_DIR", "TMP_PREFIX", "ObjectStoreError"]  # re-exported for older imports


class StreamBusyError(RuntimeError):
    """Another process holds the stream's writer lock."""


def source_epoch(source_state: dict[str, Any] | None) -> float | None:
    """The Unix time of stream time 0 that a live source keeps in its checkpoints' source state (its first
    start: a live stream's time is wall-clock time since then); None for a file, whose time is its own."""
    epoch = (source_state or {}).get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int | float) or not math.isfinite(epoch):
        return None
    return float(epoch)


@dataclass(frozen=True)
class CheckpointInfo:
    """A committed checkpoint as the catalog describes it."""

    stream: str
    stream_id: str
    seq: int
    path: Path  # absolute path of the Zarr group; in an object store, its key below the checkpoints URL
    location: str  # where the catalog row says the group is: a path relative to the data dir, or a URL
    t_start: float | None
    t_end: float | None
    source_offset: float | None
    source_state: dict[str, Any] | None
    tokens_visual: int
    tokens_audio: int
    checksum: str
    bytes_raw: int
    bytes_stored: int
    created_at: datetime

    @property
    def epoch(self) -> float | None:
        """Unix time of stream time 0 for a live stream (`source_epoch`); None for a file."""
        return source_epoch(self.source_state)


class MemoryStore:
    """The memories of all streams under one data directory, with their catalog."""

    def __init__(
        self,
        data_dir: Path,
        catalog: Catalog | None = None,
        retention: RetentionPolicy | None = None,
        data_retention: DataRetention | None = None,
        groups: GroupStore | None = None,
        gc_grace_s: float = 3600.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / MEMORY_DIR  # writer locks and stream sidecars, wherever groups live
        self.groups = groups or LocalGroups(self.root, self.data_dir)
        self.gc_grace_s = gc_grace_s
        self.catalog = catalog or Catalog.for_data_dir(self.data_dir)
        self.retention = retention or RetentionPolicy()
        self.data_retention = data_retention or DataRetention()  # rows and files: memory_store.retention
        # What reading found, per stream id: the newest checkpoint that verified, and those that failed.
        # Retention uses both: a checkpoint known to be damaged never counts as one of those kept, and the
        # newest verified one is never deleted (with the newest two damaged it is the only way back).
        self.verified: dict[str, int] = {}
        self.failed: dict[str, set[int]] = {}

    @classmethod
    def open(
        cls, data_dir: Path, config: StoreConfig | None = None, *, read_only: bool = False
    ) -> MemoryStore:
        """The store under `data_dir` as the settings describe it (catalog URL, busy timeout, retention).

        `read_only` opens the catalog for reading only (see `Catalog`): for readers, which then work on a
        store they cannot write. A writing open refuses a catalog that is missing, empty or lost its streams
        while checkpoint groups remain on disk: starting a new one would orphan them (`vsalmonn store rebuild`
        re-catalogs them instead).
        """
        config = config or StoreConfig()
        data_dir = Path(data_dir)
        groups = open_groups(config, data_dir)
        groups.probe()  # a dead object store: one line now, not a failed checkpoint an hour into a stream
        if not read_only and config.catalog_url is None:
            refuse_lost_catalog(data_dir, data_dir / CATALOG_FILE, groups=groups)
        catalog = Catalog.for_data_dir(
            data_dir, config.catalog_target(), busy_timeout_s=config.busy_timeout_s, read_only=read_only
        )
        if not read_only:
            try:
                refuse_lost_catalog(data_dir, None, catalog, groups=groups)
            except BaseException:
                catalog.close()
                raise
        return cls(data_dir, catalog, config.retention, config.data_retention, groups, config.gc_grace_s)

    def stream_groups(self) -> dict[str, list[Path]]:
        """Checkpoint groups found on disk, by stream id (folder name), oldest first; temporaries left out."""
        return _groups_on_disk(self.root)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- reading ---------------------------------------------------------------------------------
    def checkpoints(self, name: str) -> list[CheckpointInfo]:
        """The committed checkpoints of a stream, newest first; [] for an unknown stream."""
        with self.catalog.session() as s:
            stream = s.scalar(select(Stream).where(Stream.name == name))
            if stream is None:
                return []
            rows = s.scalars(
                select(Checkpoint).where(Checkpoint.stream_id == stream.id).order_by(Checkpoint.seq.desc())
            ).all()
            return [self._info(stream, row) for row in rows]

    def load_latest(self, name: str) -> tuple[dict[str, Any], CheckpointInfo] | None:
        """The newest committed state of a stream that verifies, or None when it has none.

        A damaged or missing group is skipped with a warning and the one before it is tried. A group that
        disappears because a writer's retention removed it while we read is not damage: the scan starts
        again from the then newest row.
        """
        for _attempt in range(5):
            restart = False
            for info in self.checkpoints(name):
                try:
                    state, _ = self.read_checkpoint(info)
                    self.verified[info.stream_id] = max(info.seq, self.verified.get(info.stream_id, 0))
                    return state, info
                except CheckpointError as exc:
                    if not self._row_exists(info):
                        restart = True  # retention removed it meanwhile
                        break
                    self.failed.setdefault(info.stream_id, set()).add(info.seq)
                    log.warning("stream %s: skipping checkpoint %d: %s", name, info.seq, exc)
            if not restart:
                return None
        raise CheckpointError(f"stream {name}: checkpoints kept disappearing while being read")

    def open_memory(
        self, name: str, config: MemoryConfig | None = None
    ) -> tuple[StreamMemory, CheckpointInfo | None]:
        """A StreamMemory at the stream's newest committed state (fresh when it has none).

        Without `config` the stream's own (stored in the checkpoint, else in the catalog) is used.
        """
        loaded = self.load_latest(name)
        if config is None:
            if loaded is not None:
                config = saved_config(loaded[0]["config"])
            else:
                stream = self.catalog.stream(name)
                config = saved_config(stream.config) if stream and stream.config else MemoryConfig()
        memory = StreamMemory(config)
        if loaded is None:
            return memory, None
        memory.load_state_dict(loaded[0])
        return memory, loaded[1]

    def read_checkpoint(self, info: CheckpointInfo) -> tuple[dict[str, Any], str]:
        """The state of a committed checkpoint, verified against its row's checksum.

        CheckpointError: the group is missing or damaged. StoreError: the row names a place outside the
        configured checkpoints store (a setting, not damage: nothing is marked failed for it).
        ObjectStoreError: the object store cannot be reached (not damage either).
        """
        key = self.groups.key_of(info.location)
        if key is None:
            raise StoreError(
                f"stream {info.stream}: checkpoint {info.seq} is at {info.location}, outside the checkpoints "
                f"store {self.groups.url}; set [store] checkpoints_url to where its groups are"
            )
        return self.groups.read(key, info.checksum)

    def _row_exists(self, info: CheckpointInfo) -> bool:
        with self.catalog.session() as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(Checkpoint)
                    .where(Checkpoint.stream_id == info.stream_id, Checkpoint.seq == info.seq)
                )
                or 0
            ) > 0

    def _info(self, stream: Stream, row: Checkpoint) -> CheckpointInfo:
        key = self.groups.key_of(row.path)
        return CheckpointInfo(
            stream=stream.name,
            stream_id=stream.id,
            seq=row.seq,
            path=self.groups.location(key) if key is not None else self.data_dir / row.path,
            location=row.path,
            t_start=row.t_start,
            t_end=row.t_end,
            source_offset=row.source_offset,
            source_state=row.source_state,
            tokens_visual=row.tokens_visual,
            tokens_audio=row.tokens_audio,
            checksum=row.checksum,
            bytes_raw=row.bytes_raw,
            bytes_stored=row.bytes_stored,
            created_at=row.created_at,
        )

    # ----- writing ---------------------------------------------------------------------------------
    def writer(
        self,
        name: str,
        *,
        config: MemoryConfig | None = None,
        source: str | None = None,
        kind: str | None = None,
    ) -> StreamWriter:
        """Become the one writer of a stream (created if new); StreamBusyError if another process is."""
        validate_stream_name(name)
        stream = self.catalog.ensure_stream(
            name, source=source, kind=kind, config=config.model_dump() if config else None
        )
        writer = StreamWriter(self, stream.name, stream.id)
        _write_json(
            writer.dir / STREAM_FILE,
            {"id": stream.id, "name": stream.name, "source": stream.source, "kind": stream.kind,
             "config": stream.config},
        )  # fmt: skip
        return writer

    def stream_dir(self, stream_id: str) -> Path:
        """The stream's local folder: its writer lock and sidecar (and its groups, unless they live in an
        object store)."""
        return self.root / stream_id

    # ----- garbage ---------------------------------------------------------------------------------
    def collect_garbage(
        self,
        stream_id: str | None = None,
        *,
        min_age_s: float = 0.0,
        skip_busy: bool = True,
        dry_run: bool = False,
    ) -> list[str]:
        """Delete the groups that no catalog row names (of one stream, or of all); their locations.

        The groups are listed first and the rows read after: a group committed in between is then among
        the rows, never deleted. A group still being written has no row yet either; only its own writer
        (which holds the lock, `StreamWriter.recover`) may take `min_age_s` = 0. Everyone else passes the
        store's grace (`gc_grace_s`): a group whose newest part is younger is left alone, and a writer never
        commits a group that took half the grace to write (`StreamWriter.commit`). Streams whose writer
        lock is held on this machine are skipped when `skip_busy`; `dry_run` only lists.
        """
        listed = self.groups.groups(stream_id)
        query = select(Checkpoint.path)
        if stream_id is not None:
            query = query.where(Checkpoint.stream_id == stream_id)
        with self.catalog.session() as s:
            committed = {self.groups.key_of(p) for p in s.scalars(query)}
        now = datetime.now(UTC)
        busy: dict[str, bool] = {}
        removed = []
        for entry in listed:
            if entry.key in committed or (now - _aware(entry.modified)).total_seconds() < min_age_s:
                continue
            if skip_busy and busy.setdefault(entry.stream_id, stream_busy(self.stream_dir(entry.stream_id))):
                continue
            if not dry_run:
                self.groups.delete(entry.key)
            removed.append(self.groups.describe(entry.key))
        if removed and self.groups.local and not dry_run:
            for folder in {self.root / e.split("/")[-2] for e in removed}:
                if folder.is_dir():
                    fsync_dir(folder)
        return removed


class StreamWriter:
    """Commits checkpoints of one stream, synchronously or in the background; holds the writer lock."""

    def __init__(self, store: MemoryStore, name: str, stream_id: str) -> None:
        self.store = store
        self.name = name
        self.stream_id = stream_id
        self.dir = store.stream_dir(stream_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.dir / LOCK_FILE, name)
        self._cond = threading.Condition()
        self._busy = False
        self._error: BaseException | None = None
        self.last_pause_s = 0.0  # how long the last submit() held the caller up
        self.last_commit: CheckpointInfo | None = None
        # Called with each committed checkpoint, on the committing thread (plugins' on_checkpoint); a
        # listener's error is logged, never raised: the checkpoint is committed whatever it does.
        self.on_commit: list[Callable[[CheckpointInfo], None]] = []
        try:
            self.recover()
        except BaseException:
            self.close()
            raise

    # ----- recovery --------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Remove what a killed writer left: temporary groups, and groups that no row commits.

        This writer holds the stream's lock, so no group of the stream is being written: no grace needed."""
        removed = [
            loc.rsplit("/", 1)[-1]
            for loc in self.store.collect_garbage(self.stream_id, min_age_s=0.0, skip_busy=False)
        ]
        if removed:
            log.warning(
                "stream %s: removed %d uncommitted checkpoint group(s): %s", self.name, len(removed), removed
            )
        return removed

    # ----- committing ------------------------------------------------------------------------------
    def commit(
        self,
        state: dict[str, Any],
        *,
        source_offset: float | None = None,
        source_state: dict[str, Any] | None = None,
    ) -> CheckpointInfo:
        """Write `state` as the stream's next checkpoint and commit it; returns once it is durable."""
        self._check_open()
        with self.store.catalog.session() as s:
            last = s.scalar(select(func.max(Checkpoint.seq)).where(Checkpoint.stream_id == self.stream_id))
        seq = (last or 0) + 1
        groups = self.store.groups
        key = groups.new_key(self.stream_id, seq)
        started = time.perf_counter()
        commit_attrs = {
            "stream": self.name, "stream_id": self.stream_id, "seq": seq,
            "source_offset": source_offset, "source_state": source_state,
        }  # fmt: skip
        try:
            info = groups.write(key, state, extra_attrs={COMMIT_ATTR: commit_attrs})
        except BaseException as exc:
            if not groups.local:  # a folder's write cleans up its own temporary; its final name is untouched
                self._discard(key, quiet=isinstance(exc, ObjectStoreError))
            raise
        took = time.perf_counter() - started
        if not groups.local and took > self.store.gc_grace_s / 2:
            self._discard(key)  # garbage collection elsewhere may already count it as abandoned
            raise StoreError(
                f"stream {self.name}: checkpoint {seq} took {took:.0f} s to write, more than half of "
                f"gc_grace_s ({self.store.gc_grace_s:.0f} s); not committed"
            )
        t_start, t_end = _span(state)
        next_id = state.get("next_id", {})
        row = Checkpoint(
            stream_id=self.stream_id,
            seq=seq,
            path=groups.row_path(key),
            t_start=t_start,
            t_end=t_end,
            source_offset=source_offset,
            source_state=source_state,
            tokens_visual=int(next_id.get("visual", 0)),
            tokens_audio=int(next_id.get("audio", 0)),
            checksum=info.checksum,
            bytes_raw=info.bytes_raw,
            bytes_stored=info.bytes_stored,
        )
        try:
            with self.store.catalog.transaction() as s:
                s.add(row)
                s.flush()
                stream = s.get(Stream, self.stream_id)
                assert stream is not None
                committed = self.store._info(stream, row)
        except BaseException:
            self._discard(key)  # no row: the group is garbage either way
            raise
        log.info(
            "stream %s: checkpoint %d committed (%.1f MB, %.0f ms)",
            self.name,
            seq,
            info.bytes_stored / 1e6,
            1e3 * (time.perf_counter() - started),
        )
        self.last_commit = committed
        self.store.verified[self.stream_id] = seq  # written and fsynced from this very state
        self.store.failed.get(self.stream_id, set()).discard(seq)  # a seq freed by retention, used again
        self.apply_retention()
        for listener in list(self.on_commit):
            try:
                listener(committed)
            except Exception as exc:
                log.warning("stream %s: a checkpoint listener failed: %s", self.name, exc)
        return committed

    def _discard(self, key: str, quiet: bool = False) -> None:
        """Delete a group that will get no row; one that cannot be deleted now is left to `recover` (`quiet`:
        the object store failed the write already, which the caller reports; a failed delete is no news)."""
        try:
            self.store.groups.delete(key)
        except ObjectStoreError as exc:
            level = logging.INFO if quiet else logging.WARNING
            log.log(level, "stream %s: uncommitted group left for garbage collection: %s", self.name, exc)

    def submit(
        self,
        memory: StreamMemory,
        *,
        source_offset: float | None = None,
        source_state: dict[str, Any] | None = None,
    ) -> None:
        """Checkpoint `memory` in the background; returns as soon as its state is captured.

        At most one write is in flight: if the previous one is still running, this waits for it first
        (back-pressure), so a writer that cannot keep up slows ingestion instead of piling up copies. An
        error of the previous background write is raised here.
        """
        started = time.perf_counter()
        self.wait()
        snapshot = memory.state_dict(copy=False)  # no tensor of a memory is changed in place
        with self._cond:
            self._busy = True
        self.last_pause_s = time.perf_counter() - started
        worker = threading.Thread(
            target=self._background,
            args=(snapshot, source_offset, source_state),
            name=f"checkpoint-{self.name}",
            daemon=True,
        )
        worker.start()

    def _background(
        self, state: dict[str, Any], offset: float | None, source_state: dict[str, Any] | None
    ) -> None:
        try:
            self.commit(state, source_offset=offset, source_state=source_state)
        except BaseException as exc:
            if not isinstance(exc, ObjectStoreError):  # that one is the caller's to report (the next wait)
                log.error("stream %s: background checkpoint failed: %s", self.name, exc)
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def wait(self) -> None:
        """Block until no background write is in flight; raise the error of a failed one."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            error, self._error = self._error, None
        if error is not None:
            raise error

    # ----- retention -------------------------------------------------------------------------------
    def apply_retention(self) -> list[int]:
        """Delete checkpoints the policy no longer keeps: rows first (the commit point), then groups.

        Checkpoints that failed verification when read are not counted among those kept (they are dropped),
        and the newest checkpoint known to verify is kept whatever the policy says.
        """
        policy = self.store.retention
        now = datetime.now(UTC)
        with self.store.catalog.session() as s:
            rows = s.execute(
                select(Checkpoint.seq, Checkpoint.path, Checkpoint.bytes_stored, Checkpoint.created_at)
                .where(Checkpoint.stream_id == self.stream_id)
                .order_by(Checkpoint.seq.desc())
            ).all()
        failed = self.store.failed.get(self.stream_id, set())
        verified = self.store.verified.get(self.stream_id)
        usable = [r for r in rows if r.seq not in failed]
        keep, drop = list(usable[: policy.keep_last]), list(usable[policy.keep_last :])
        drop += [r for r in rows if r.seq in failed and r.seq != verified]  # known damaged: no way back
        if policy.max_age_s is not None:
            limit = now - timedelta(seconds=policy.max_age_s)
            old = [r for r in keep[1:] if _aware(r.created_at) < limit]
            keep = [r for r in keep if r not in old]
            drop += old
        if policy.max_bytes is not None:
            while len(keep) > 1 and sum(r.bytes_stored for r in keep) > policy.max_bytes:
                drop.append(keep.pop())
        drop = [r for r in drop if r.seq != verified]  # never the newest checkpoint known to verify
        if not drop:
            return []
        seqs = sorted(r.seq for r in drop)
        with self.store.catalog.transaction() as s:
            s.execute(
                delete(Checkpoint).where(Checkpoint.stream_id == self.stream_id, Checkpoint.seq.in_(seqs))
            )
        self.store.failed.get(self.stream_id, set()).difference_update(seqs)
        for r in drop:  # the rows are gone: a group not deleted now is garbage, collected later
            key = self.store.groups.key_of(r.path)
            try:
                if key is not None:
                    self.store.groups.delete(key)
            except ObjectStoreError as exc:
                log.warning("stream %s: retention left a group for garbage collection: %s", self.name, exc)
        log.debug("stream %s: retention removed checkpoints %s", self.name, seqs)
        return seqs

    # ----- life ------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"the writer of stream {self.name} is closed")

    def close(self) -> None:
        """Wait for a background write, then give up the writer lock."""
        try:
            if self._lock_fd is not None:
                self.wait()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_busy(stream_dir: Path) -> bool:
    """True when a process holds the writer lock of the stream whose folder is `stream_dir` (no side effect
    beyond opening the lock file, which is only read)."""
    try:
        fd = os.open(stream_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _acquire_lock(path: Path, name: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StreamBusyError(f"stream {name} is being written by another process") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
