"""Keeping a long-running process's heap from creeping: glibc's malloc, limited and trimmed (DESIGN §5).

Why this exists: a daemon that ingests for hours must not grow with stream length, and on glibc it did,
although nothing it keeps did. Measured on `vsalmonn ingest` of a 1-hour stream (bench/memory.py's clip,
a bank of 8,192 visual slots, full after 27 minutes; glibc 2.36, `mallinfo2` every 2 s, 40 minutes of
stream): the bytes malloc had handed out stayed flat at 340-360 MB and the Python objects at 474,000,
while the arenas' *free* bytes grew from 425 to 616 MB, and the median VmRSS with them, from 1,282 to
1,489 MB, still rising after the bank was full. The pipeline allocates and frees large temporaries on
several threads (the decode prefetch thread, the encode thread, each checkpoint's writer thread): the
bank-sized tensors of every merge and checkpoint (25 MB for a full 16,384-slot bank), a window's frames
and audio, the encoders' activations. Each thread mallocs from its own arena (up to 8 per core), and
once glibc's dynamic mmap threshold has risen (it follows the largest block freed, up to 32 MB), blocks
of that size come from an arena instead of a fresh mapping. Freed, they return to the arena, not to the
kernel: an arena gives back only what lies at its top, so free holes stay resident, differently in each
arena, and their sum creeps. With this module (both measures below) the same run held the free bytes at
354-380 MB and the median VmRSS at 1,139-1,180 MB throughout.

What it does, on glibc only (elsewhere every function here is a no-op that returns False):

- `limit_arenas` caps the arenas at `ARENAS` (2) before the daemon starts its threads, so that free
  memory pools in two arenas instead of up to sixteen. An explicit ``MALLOC_ARENA_MAX`` in the
  environment wins (glibc has read it already).
- `trim` calls ``malloc_trim(0)``, which hands every arena's free pages back to the kernel (``madvise``
  of the free holes, not only the top). `trim_after_commit` is a `StreamWriter.on_commit` listener that
  trims after each committed checkpoint, at most once every `MIN_INTERVAL_S` across all streams: a
  checkpoint falls every minute of stream time, right after the largest temporaries were freed.

Cost, measured in that run: a trim took 26 ms (median; 90 % under 50 ms, at most 141 ms while the two
cores were shared by ten busy threads), on the checkpoint's thread, once per 60 s of stream time: at 7x
real time about 0.3 % of wall time. It holds each arena's lock while it scans it, so another thread's
malloc may wait that long once a minute.

- `hold_freed_blocks` fixes the mmap threshold at `MMAP_THRESHOLD_MB` and the trim threshold at
  `TRIM_THRESHOLD_MB`: the state glibc's dynamic thresholds reach by themselves once a 32 MB block has been
  freed, set from the start. Why: with the thresholds where the memory's own temporaries leave them (a
  6 MB (H, n, m) activation raises the mmap threshold to 6 MB and the trim threshold to 12 MB), every
  larger temporary of a TTT update is a fresh mapping and every free at the heap's top gives pages back,
  so each mini-batch faults its working set in again: `hf_cg` took 2,962-11,646 minor page faults per
  mini-batch, 11-19 ms of system time, and ran 28-35 % slower than with both set (docs/benchmarks.md,
  "Issue 17: page faults"). Setting one alone made it worse (the other then stays at glibc's static
  default), so both are set or neither. The heap it lets arenas keep is what the dynamic state already
  lets them keep, and the trim after each checkpoint still hands it back.
- `tune` is what a process that runs the memory calls first: `limit_arenas` and `hold_freed_blocks`.

Nothing here ever raises: memory tuning must not fail ingestion.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "ARENAS",
    "MIN_INTERVAL_S",
    "MMAP_THRESHOLD_MB",
    "TRIM_THRESHOLD_MB",
    "hold_freed_blocks",
    "holds_freed_blocks",
    "is_glibc",
    "limit_arenas",
    "trim",
    "trim_after_commit",
    "tune",
]

ARENAS = 2
"""malloc arenas at most (glibc's default: 8 per core)."""
MIN_INTERVAL_S = 5.0
"""`trim_after_commit` trims at most this often (wall seconds), however many streams commit."""

MMAP_THRESHOLD_MB = 32
"""Blocks at least this large get a mapping of their own (glibc's dynamic threshold tops out here too)."""
TRIM_THRESHOLD_MB = 64
"""Free memory at an arena's top beyond this goes back to the kernel at once (2x the mmap threshold, as
glibc's dynamic rule sets it)."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # mallopt parameters, <malloc.h>
_THRESHOLD_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_lock = threading.Lock()
_libc: Any = None
_looked_up = False
_last_trim = -float("inf")
_held = False


def _glibc() -> Any:
    """The process's glibc through ctypes with mallopt and malloc_trim typed, or None (other libc, no
    ctypes, an error): looked up once."""
    global _libc, _looked_up
    with _lock:
        if _looked_up:
            return _libc
        _looked_up = True
        try:
            version = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
            if not version or not version.startswith("glibc"):
                return None
            lib = ctypes.CDLL(None)  # the C library the process already runs on
            lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
            lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _libc = lib
        except (OSError, AttributeError, ValueError) as exc:
            log.debug("glibc malloc tuning unavailable: %s", exc)
        return _libc


def is_glibc() -> bool:
    """Whether this process's malloc is glibc's (the tuning here applies)."""
    return _glibc() is not None


def limit_arenas(count: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at `count` (call before starting threads); True if it was set.

    Not set when ``MALLOC_ARENA_MAX`` is in the environment (the operator's choice) or off glibc.
    """
    lib = _glibc()
    if lib is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        return bool(lib.mallopt(_M_ARENA_MAX, int(count)))
    except Exception as exc:  # never fail the caller over tuning
        log.debug("mallopt(M_ARENA_MAX) failed: %s", exc)
        return False


def hold_freed_blocks(mmap_mb: int = MMAP_THRESHOLD_MB, trim_mb: int = TRIM_THRESHOLD_MB) -> bool:
    """Fix glibc's mmap and trim thresholds (MB) so that a TTT update's temporaries reuse freed heap
    instead of faulting fresh pages in; True if both were set.

    Not set when either ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` is in the environment (the
    operator's choice, which glibc has read already) or off glibc.
    """
    lib = _glibc()
    if lib is None or any(os.environ.get(name) for name in _THRESHOLD_ENV):
        return False
    try:
        # the trim threshold first: a fixed mmap threshold alone would leave it at the static 128 KB
        global _held
        trimmed = bool(lib.mallopt(_M_TRIM_THRESHOLD, int(trim_mb) << 20))
        _held = trimmed and bool(lib.mallopt(_M_MMAP_THRESHOLD, int(mmap_mb) << 20))
        return _held
    except Exception as exc:  # never fail the caller over tuning
        log.debug("mallopt(M_TRIM_THRESHOLD / M_MMAP_THRESHOLD) failed: %s", exc)
        return False


def holds_freed_blocks() -> bool:
    """Whether `hold_freed_blocks` has set the thresholds in this process (benchmarks record it)."""
    return _held


def tune() -> bool:
    """`limit_arenas` and `hold_freed_blocks`, before the process starts its threads; True if both took."""
    arenas = limit_arenas()
    return hold_freed_blocks() and arenas


def trim() -> bool:
    """Return the free pages of every malloc arena to the kernel now; True if glibc released any."""
    global _last_trim
    lib = _glibc()
    if lib is None:
        return False
    started = time.perf_counter()
    try:
        released = bool(lib.malloc_trim(0))
    except Exception as exc:
        log.debug("malloc_trim failed: %s", exc)
        return False
    _last_trim = time.monotonic()
    log.debug("malloc_trim: %.1f ms, %s", 1e3 * (time.perf_counter() - started), released)
    return released


def trim_after_commit(_info: object = None) -> None:
    """`StreamWriter.on_commit` listener: `trim`, unless another trim ran under `MIN_INTERVAL_S` ago."""
    if time.monotonic() - _last_trim < MIN_INTERVAL_S:
        return
    try:
        trim()
    except Exception as exc:  # pragma: no cover - trim() catches already; a listener must never raise
        log.debug("trim after commit failed: %s", exc)
