"""Watched folders: which segment files dropped into a folder are ready to be read, and in what order.

A camera or recorder that writes to disk drops one file per segment into a folder (`cam-0001.mp4`,
`2024-05-01T10-00-00.ts`, ...), and each new file is appended to the stream. This module only decides which
files are ready and in what order; what is already done (the catalog) and the decoding are the caller's.

Why it is built this way:

- **Events to be quick, polling to be sure.** watchdog's `Observer` (inotify on Linux) wakes the watcher when
  a file is created, written or moved into the folder, but events alone cannot be trusted: inotify drops
  events when its queue overflows, a system can run out of watches, and network filesystems (NFS, SMB, most
  FUSE mounts) give no events at all for writes made by another machine. So the folder is also rescanned every
  `poll_s` whatever happens, an event only makes the next rescan come sooner, and nothing is decided from an
  event alone: every decision comes from listing and stat-ing the folder. Where no watch can be set up, the
  watcher says so once and polls.
- **A file is ready when it has stopped changing.** No portable way tells that another process has finished
  writing a file, so a file is ready once its (size, mtime_ns) has stayed the same for `settle_s` seconds (an
  event reporting a write to it counts as a change too). An empty file is no exception: one that stays empty
  for `settle_s` is released, and the caller, which cannot decode it, marks it failed with a reason. Holding
  it back for ever would hold back every later segment behind it (next point) after a recorder crashed just
  after creating its file; the price is that a recorder which waits longer than `settle_s` between creating
  a file and writing to it needs a longer `settle_s`.
- **Natural name order, head of line.** Segment recorders name files by time or by a counter, so name order
  is stream order; natural order (cam-2 before cam-10, case-insensitively), because counters are often not
  zero-padded. A settled file is not released while a file that sorts before it is still pending: recorders
  open the next segment before closing the previous one, and a slow copy or upload can finish after later,
  smaller ones; releasing the later file first would put its content ahead of the earlier one in the stream.
  So a slowly written file keeps its place, and a file that never stops growing holds back the rest, as a
  segment that never ends would.
- **Nothing lost, nothing doubled.** A file that turns up after a later name was released (a late upload, a
  recorder whose clock stepped back) is still released, with a warning: dropping it would lose data, and the
  caller can place it by its own time. Each file (by resolved path) is released at most once per watcher; one
  replaced or rewritten after its release is logged at debug level and not released again, because the
  stream already holds what was read from it.
- **Threads.** watchdog calls back on its own thread; the callback only records which path was touched, and
  when, under the condition the consumer waits on. Listing, stat-ing, the `skip` callback and every decision
  run in the consumer's thread (inside `ready()` or `scan_once()`), one scan at a time, so neither a slow
  filesystem nor a slow `skip` ever blocks the observer, and nothing runs while nobody consumes. The observer
  is started by the first `ready()`: a one-off `scan_once()` run needs no watch.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CREATED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from vsalmonn.errors import one_line

__all__ = [
    "MEDIA_SUFFIXES",
    "TEMP_SUFFIXES",
    "FolderError",
    "FolderWatcher",
    "natural_key",
]

log = logging.getLogger(__name__)

MEDIA_SUFFIXES: frozenset[str] = frozenset(
    {
        ".mp4",
        ".mkv",
        ".mov",
        ".avi",
        ".webm",
        ".ts",
        ".m4v",
        ".flv",
        ".mpg",
        ".mpeg",
        ".wav",
        ".mp3",
        ".m4a",
        ".aac",
        ".flac",
        ".ogg",
        ".opus",
    }
)
"""Suffixes of the files a watcher releases by default, lower case; names are compared case-insensitively."""

TEMP_SUFFIXES: frozenset[str] = frozenset(
    {".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp"}
)
"""Suffixes of files still being downloaded or copied (renamed when complete); never released."""

# Events worth waking up for. Opens and reads are left out: the caller's own decoder opening a released file
# would otherwise wake the watcher for nothing. Closes after a write and deletions only wake it (a closed file
# may be settled sooner than the next poll; a deleted pending file no longer holds back those after it).
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
_TOUCHING = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED})

_DIGITS = re.compile(r"([0-9]+)")
_MIN_RESCAN_S = 0.05  # rescans woken by events come no closer than this: a writer makes an event per write
_MIN_WAIT_S = 0.01  # the shortest wait before the next rescan, so that no clock oddity makes the loop spin

_Sig = tuple[int, int, int]  # size, mtime_ns, inode
_NameKey = tuple[str | int, ...]
_SortKey = tuple[tuple[_NameKey, ...], str]


class FolderError(ValueError):
    """The folder to watch does not exist, is not a folder, or cannot be read; the message is one line."""


def natural_key(name: str) -> _NameKey:
    """Sort key of a name in natural order: runs of digits compare as numbers, the rest case-insensitively.

    `sorted(names, key=natural_key)` puts cam-2.mp4 before cam-10.mp4. Names that differ only in case or in
    leading zeros have equal keys; the watcher breaks such ties by the name itself.
    """
    return tuple(int(part) if i % 2 else part.casefold() for i, part in enumerate(_DIGITS.split(name)))


def _sort_key(rel: str) -> _SortKey:
    """Natural order of a path relative to the folder, folder by folder, then the path itself as tie-break."""
    return tuple(natural_key(part) for part in rel.split("/")), rel


def _normalise_suffix(suffix: str) -> str:
    suffix = suffix.lower()
    return suffix if suffix.startswith(".") else "." + suffix


@dataclass(slots=True)
class _Pending:
    """A file seen and not yet released: its last (size, mtime_ns, inode) and since when that is unchanged."""

    path: Path
    rel: str
    key: _SortKey
    real: Path
    sig: _Sig
    since: float


class _Handler(FileSystemEventHandler):
    def __init__(self, on_event: Callable[[FileSystemEvent], None]) -> None:
        self._on_event = on_event

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._on_event(event)


class FolderWatcher:
    """The media files of a folder, released one by one as they are completely written, in natural name order.

    `path` must be an existing folder (FolderError otherwise); released paths are absolute, under its
    resolved path. A file is released once its (size, mtime_ns) has been unchanged for `settle_s` seconds,
    and not while a file that sorts before it is still pending (module docstring: why, and why empty files
    are released too). The folder is rescanned every `poll_s` seconds, and sooner when watchdog reports a
    change.

    - `suffixes`: the suffixes released (default `MEDIA_SUFFIXES`), compared case-insensitively. Hidden files
      and folders (leading dot), names ending in `~` and names with a `TEMP_SUFFIXES` suffix (`.part`,
      `.tmp`, `.crdownload`, ...) are never released, whatever `suffixes` says.
    - `recursive`: also watch subfolders (symbolic links to folders are not followed); names then compare
      folder by folder.
    - `skip`: called once per file, with its path, when the file is first seen; a file for which it returns
      True is never released and does not hold back later ones (the caller passes "already done in the
      catalog"). It runs in the consumer's thread, inside `ready()` or `scan_once()`.
    - `clock` (monotonic seconds) times settling, and is injectable for tests; the timeouts of `ready()` are
      real time.

    `ready(timeout)` waits for released files; iterating yields them until `close()`; `scan_once()` releases
    what is settled now without waiting; `pending` names the files waiting to settle. A folder that disappears
    while watched is reported once, with a warning, and polled until it returns or the watcher is closed.

    Thread-safe: any thread may call `close()` (which wakes a blocked `ready()`) or read `pending`, and
    several consumers may call `ready()` at once (each file goes to one of them).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        settle_s: float = 2.0,
        poll_s: float = 1.0,
        suffixes: frozenset[str] = MEDIA_SUFFIXES,
        recursive: bool = False,
        skip: Callable[[Path], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settle_s >= 0 or not poll_s > 0 or math.isinf(poll_s):
            raise ValueError("need settle_s >= 0 and a finite poll_s > 0")
        folder = Path(path).expanduser()
        if not folder.exists():
            raise FolderError(one_line(f"watched folder {folder} does not exist"))
        if not folder.is_dir():
            raise FolderError(one_line(f"watched folder {folder} is not a folder"))
        if not os.access(folder, os.R_OK | os.X_OK):
            raise FolderError(one_line(f"watched folder {folder} cannot be read (permission denied)"))
        self.path = folder.resolve()
        self.settle_s = float(settle_s)
        self.poll_s = float(poll_s)
        self.suffixes = frozenset(_normalise_suffix(s) for s in suffixes)
        self.recursive = recursive
        self._skip = skip
        self._clock = clock

        # Shared with the observer's thread, under _cond.
        self._cond = threading.Condition()
        self._closed = False
        self._dirty = False  # an event came since the last scan
        self._touched: dict[Path, float] = {}  # path -> clock time of the last event that wrote to it
        self._last_scan = -math.inf  # time.monotonic() at the end of the last scan
        self._due = math.inf  # clock seconds until the first pending file may have settled
        self._pending_names: list[str] = []

        # The scanner's state: only touched by the thread holding _scan_lock.
        self._scan_lock = threading.Lock()
        self._pending: dict[Path, _Pending] = {}
        self._released: dict[Path, _Sig] = {}  # path -> (size, mtime_ns, inode) at release, or as last logged
        self._released_real: set[Path] = set()
        self._skipped: set[Path] = set()
        self._high: _SortKey | None = None  # the last name in order released so far
        self._gone = False
        self._observer: BaseObserver | None = None
        self._watch: ObservedWatch | None = None
        self._events_off = False  # no watch could be set up: polling only
        self._handler = _Handler(self._on_event)

    def __repr__(self) -> str:
        return f"FolderWatcher({str(self.path)!r}, settle_s={self.settle_s}, poll_s={self.poll_s})"

    def __enter__(self) -> FolderWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Path]:
        """Released files, in order, for ever: ends only after `close()`.

        Files released together are all yielded, even when `close()` comes while the consumer handles one of
        them: a released file is never released again, so dropping it would lose it.
        """
        while files := self.ready(None):
            yield from files

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> list[str]:
        """Names (relative to the folder, in order) of the files seen and not released, as of the last scan.

        The first is waiting to settle; those after it are waiting to settle or for the first to go.
        """
        with self._cond:
            return list(self._pending_names)

    def ready(self, timeout: float | None = None) -> list[Path]:
        """Wait up to `timeout` seconds (None: for ever) for files to be released; all released now, in order.

        Returns [] on timeout and once the watcher is closed (`close()` wakes a waiting call at once). The
        first call starts the file-system watch.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            released = self._scan(watch=True)
            if released:
                return released
            with self._cond:
                while True:
                    if self._closed:
                        return []
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        return []
                    wake = self._last_scan + min(self.poll_s, max(self._due, _MIN_WAIT_S))
                    if self._dirty:
                        wake = min(wake, self._last_scan + _MIN_RESCAN_S)
                    if now >= wake:
                        break
                    self._cond.wait((wake if deadline is None else min(wake, deadline)) - now)

    def scan_once(self) -> list[Path]:
        """Release, without waiting, the files present and settled now, by the same rules as `ready()`.

        For one-off (`--once`) runs. Settling counts from the first time this watcher saw each file, so the
        first call releases nothing unless `settle_s` is 0; a later call releases what has settled since.
        Starts no file-system watch. Returns [] once the watcher is closed.
        """
        return self._scan(watch=False)

    def close(self) -> None:
        """Stop watching and wake every waiting `ready()`; nothing is released afterwards. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with self._scan_lock:  # a scan in progress finishes first, so it cannot start a watch after this
            observer, self._observer, self._watch = self._observer, None, None
        if observer is not None:
            observer.stop()
            if observer is not threading.current_thread():
                observer.join(timeout=5.0)

    # ----------------------------------------------------------------------------------------------------
    # the observer's thread

    def _on_event(self, event: FileSystemEvent) -> None:
        touched: Path | None = None
        if not event.is_directory and event.event_type in _TOUCHING:
            raw = event.dest_path if event.event_type == EVENT_TYPE_MOVED else event.src_path
            if raw:
                touched = Path(os.fsdecode(raw))
        now = self._clock()
        with self._cond:
            if self._closed:
                return
            if touched is not None:
                self._touched[touched] = now
            self._dirty = True
            self._cond.notify_all()

    # ----------------------------------------------------------------------------------------------------
    # scanning: one thread at a time, under _scan_lock

    def _scan(self, *, watch: bool) -> list[Path]:
        """List the folder, update what is pending, and release what may go; the paths released, in order."""
        with self._scan_lock:
            with self._cond:
                if self._closed:
                    return []
                touched, self._touched = self._touched, {}
                self._dirty = False
            if watch:  # before listing, so that no change slips in between
                self._ensure_watch()
            listing, problem = self._list()
            now = self._clock()
            if listing is None:
                self._folder_unavailable(problem)
                released: list[Path] = []
            else:
                if self._gone:
                    self._gone = False
                    log.info("%s: the folder is back", self.path)
                released = self._update(listing, touched, now)
            order = sorted(self._pending.values(), key=attrgetter("key"))
            due = order[0].since + self.settle_s - now if order else math.inf
            with self._cond:
                self._last_scan = time.monotonic()
                self._due = due
                self._pending_names = [entry.rel for entry in order]
            return released

    def _wanted(self, name: str) -> bool:
        if name.startswith(".") or name.endswith("~"):
            return False
        suffix = os.path.splitext(name)[1].lower()
        return suffix in self.suffixes and suffix not in TEMP_SUFFIXES

    def _list(self) -> tuple[dict[Path, tuple[str, _Sig]] | None, str]:
        """The wanted files: path -> (name relative to the folder, signature); or None and why not."""
        found: dict[Path, tuple[str, _Sig]] = {}
        stack: list[tuple[Path, str]] = [(self.path, "")]
        while stack:
            folder, prefix = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except FileNotFoundError:
                if folder == self.path:
                    return None, "the folder disappeared"
                continue  # a subfolder removed while listing
            except NotADirectoryError:
                if folder == self.path:
                    return None, "it is no longer a folder"
                continue
            except OSError as exc:
                if folder == self.path:
                    return None, one_line(f"cannot list the folder: {exc.strerror or exc}")
                log.debug("%s: cannot list %s: %s", self.path, folder, exc)
                continue
            for entry in entries:
                name = entry.name
                try:
                    if self.recursive and entry.is_dir(follow_symlinks=False):
                        if not name.startswith("."):
                            stack.append((Path(entry.path), f"{prefix}{name}/"))
                        continue
                    if not self._wanted(name) or not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:  # removed between listing and stat, or a dangling link
                    continue
                found[Path(entry.path)] = (prefix + name, (st.st_size, st.st_mtime_ns, st.st_ino))
        return found, ""

    def _folder_unavailable(self, problem: str) -> None:
        if self._gone:
            return
        self._gone = True
        log.warning("%s: %s; polling every %.3g s until it returns", self.path, problem, self.poll_s)
        for entry in self._pending.values():
            log.debug("%s: gone with the folder before it settled", entry.rel)
        self._pending.clear()
        if self._watch is not None and self._observer is not None:  # the watch died with the folder
            watch, self._watch = self._watch, None
            try:
                self._observer.unschedule(watch)
            except (KeyError, OSError) as exc:  # pragma: no cover - already gone
                log.debug("%s: unscheduling the watch: %s", self.path, exc)

    def _ensure_watch(self) -> None:
        """Start the observer and watch the folder, if not done yet and possible."""
        if self._watch is not None or self._events_off:
            return
        try:
            if self._observer is None:
                observer = Observer()
                observer.start()
                self._observer = observer
            self._watch = self._observer.schedule(
                self._handler, str(self.path), recursive=self.recursive, event_filter=_EVENTS
            )
        except FileNotFoundError:  # the folder is gone: the listing says so, and a later scan tries again
            return
        except (OSError, RuntimeError) as exc:  # e.g. out of inotify watches or instances
            self._events_off = True
            log.warning(
                "%s: no file-system events (%s); polling every %.3g s only",
                self.path,
                one_line(exc),
                self.poll_s,
            )

    def _update(
        self, listing: dict[Path, tuple[str, _Sig]], touched: dict[Path, float], now: float
    ) -> list[Path]:
        """Record what changed in `listing` since the last scan; release what may go, in order."""
        for path in [p for p in self._pending if p not in listing]:
            log.debug("%s: removed before it settled", self._pending.pop(path).rel)

        for path, (rel, sig) in listing.items():
            if path in self._released:
                self._check_replaced(path, rel, sig)
                continue
            if path in self._skipped:
                continue
            entry = self._pending.get(path)
            if entry is None:
                real = path.resolve()
                if real in self._released_real:
                    self._released[path] = sig
                    log.debug("%s: the same file as one already released (%s); not releasing it", rel, real)
                    continue
                if self._skip is not None and self._skip(path):
                    self._skipped.add(path)
                    log.debug("%s: skipped", rel)
                    continue
                entry = _Pending(path, rel, _sort_key(rel), real, sig, now)
                self._pending[path] = entry
            elif entry.sig != sig:
                entry.sig = sig
                entry.since = now
            event_time = touched.get(path)
            if event_time is not None and event_time > entry.since:
                entry.since = event_time

        released: list[_Pending] = []
        for entry in sorted(self._pending.values(), key=attrgetter("key")):
            if now - entry.since < self.settle_s:
                break  # head of line: nothing after a pending file goes before it
            released.append(entry)
        for entry in released:
            del self._pending[entry.path]
            self._released[entry.path] = entry.sig
            self._released_real.add(entry.real)
            if self._high is not None and entry.key < self._high:
                log.warning(
                    "%s: arrived after %s was released; releasing it out of name order",
                    entry.rel,
                    self._high[1],
                )
            else:
                self._high = entry.key
            log.debug("%s: released (%d bytes)", entry.rel, entry.sig[0])
        return [entry.path for entry in released]

    def _check_replaced(self, path: Path, rel: str, sig: _Sig) -> None:
        before = self._released[path]
        if sig == before:
            return
        self._released[path] = sig  # log each change once
        how = "replaced" if sig[2] != before[2] else "rewritten"
        log.debug("%s: %s after it was released; not releasing it again", rel, how)
