"""``vsalmonn bench crash``: writer processes killed with SIGKILL at random instants, then recovered.

Each trial starts ``tests/store_worker.py write DATA`` (a process that streams deterministic synthetic
tokens into a small memory with a background checkpoint every ``INTERVAL`` seconds) and SIGKILLs it at an
instant drawn from a seeded RNG. The instants are spread over the whole run of an uninterrupted worker,
timed first in the same run (one instant drawn inside each of N equal slices of it, in shuffled order), so
they land during the imports, while the catalog is created, between checkpoints and during checkpoint
writes. After the kill, in this process:

1. the store is opened as a writer, which runs recovery (timed);
2. the newest committed checkpoint must load, verify its checksum, and restore into a `StreamMemory`;
3. the catalog must hold no duplicate sequence number, and no temporary or uncommitted group may remain;
4. ``store_worker.run_writer`` resumes the stream from that checkpoint to the end, and the final committed
   state must equal ``store_worker.reference_state`` (an uninterrupted run in memory) bit for bit.

The work a kill loses is the work since the newest commit: reported in seconds (the kill's time minus the
newest catalog row's ``created_at``; minus the writer's start when nothing was committed) and, from that,
in chunks at the rate the worker was writing (see ``_work_lost``; an estimate, because the worker
does not report its progress).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from sqlalchemy import func, select

from vsalmonn.cli.output import UsageError, format_table
from vsalmonn.memory_store import StreamMemory
from vsalmonn.memory_store.models import Checkpoint
from vsalmonn.memory_store.store import GROUP_SUFFIX, MEMORY_DIR, TMP_PREFIX, CheckpointInfo, MemoryStore

from ._harness import environment, median, render_environment, render_targets, target

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "store_worker.py"
CHUNKS, SEED = 60, 7  # the stream each worker writes: 60 chunks of 96 visual tokens (+ audio every third)
INTERVAL, DELAY = 0.25, 0.05  # a checkpoint every 0.25 s; 50 ms of "decoding" per chunk
RNG_SEED = 2026


def _trial_count(quick: bool) -> int:
    return 5 if quick else 30


def run(quick: bool) -> dict[str, Any]:
    worker = _load_worker()
    started = time.perf_counter()
    expected = worker.reference_state(CHUNKS, SEED)
    base = Path(tempfile.mkdtemp(prefix="vsalmonn-bench-crash-"))
    store_log = logging.getLogger("vsalmonn.memory_store.store")
    quiet = not store_log.isEnabledFor(logging.INFO)  # -v shows recovery's warnings; they are counted anyway
    level = store_log.level
    if quiet:
        store_log.setLevel(logging.ERROR)
    try:
        calibration = _calibrate(worker, base / "calibration", expected)
        n = _trial_count(quick)
        rng = random.Random(RNG_SEED)
        kill_at = [(i + rng.random()) / n * calibration["seconds"] for i in range(n)]
        rng.shuffle(kill_at)
        trials = [
            _trial(worker, base / f"trial{i:02d}", at, expected, calibration["chunks_per_s"])
            for i, at in enumerate(kill_at)
        ]
    finally:
        store_log.setLevel(level)
        shutil.rmtree(base, ignore_errors=True)
    return _summarise(quick, calibration, trials, time.perf_counter() - started)


# ----- the worker ---------------------------------------------------------------------------------------
def _load_worker() -> ModuleType:
    """tests/store_worker.py, imported by path (it lives in the source checkout, not in the package)."""
    if not WORKER.is_file():
        raise UsageError(f"bench crash needs the source checkout's tests/store_worker.py; none at {WORKER}")
    spec = importlib.util.spec_from_file_location("vsalmonn_bench_store_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spawn(data: Path, stderr: Path) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        str(WORKER),
        "write",
        str(data),
        f"--chunks={CHUNKS}",
        f"--seed={SEED}",
        f"--interval={INTERVAL}",
        f"--delay={DELAY}",
    ]
    with open(stderr, "wb") as err:
        return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)


def _lock_exists(data: Path) -> bool:
    """Whether the worker has become the stream's writer (its lock file appears right before it feeds)."""
    return any((data / MEMORY_DIR).glob("*/.writer.lock"))


def _calibrate(worker: ModuleType, data: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """One uninterrupted worker run: how long a run takes, its writing rate, and that it ends as expected."""
    stderr = data.with_suffix(".stderr")
    proc = _spawn(data, stderr)
    started = time.perf_counter()
    opened = None
    while proc.poll() is None:
        if opened is None and _lock_exists(data):
            opened = time.perf_counter() - started
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the uninterrupted worker failed: {stderr.read_text().strip()[-500:]}")
    with MemoryStore(data) as store:
        loaded = store.load_latest(worker.STREAM)
        assert loaded is not None
        diffs = differences(expected, loaded[0])
        checkpoints = loaded[1].seq
    if diffs:
        raise RuntimeError(f"the uninterrupted worker's final state differs from the reference: {diffs[:3]}")
    writing = seconds - (opened or 0.0)
    return {
        "seconds": seconds,
        "writer_open_s": opened,
        "checkpoints": checkpoints,
        "chunks_per_s": CHUNKS / writing,
    }


# ----- one trial ----------------------------------------------------------------------------------------
@dataclass
class _Trial:
    kill_at_s: float  # planned instant, seconds after the spawn
    killed_at_s: float = 0.0  # actual instant
    finished_first: bool = False  # the worker had exited before the instant came
    writer_open_s: float | None = None  # when its writer lock appeared (the store is open, feeding starts)
    store_existed: bool = False  # the worker had created the catalog before the kill
    committed: int = 0  # catalog rows of the stream at the kill
    newest_seq: int | None = None
    offset: int = 0  # chunks covered by the newest commit (its source_offset)
    tmp_groups: int = 0  # temporary groups the kill left (killed while a group was being written)
    orphan_groups: int = 0  # groups without a row (killed between the rename and the row, or in retention)
    seconds_lost: float = 0.0
    chunks_lost: float = 0.0
    open_ms: float = 0.0  # MemoryStore(...) + writer(...), which runs recovery
    newest_verified: bool = False
    duplicate_rows: int = 0
    leftovers: list[str] = field(default_factory=list)
    resumed_at: int | None = None
    final_offset: float | None = None
    differences: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def exact(self) -> bool:
        return (
            self.error is None
            and self.newest_verified
            and self.resumed_at == self.offset
            and self.final_offset == CHUNKS
            and not self.differences
        )


def _trial(
    worker: ModuleType, data: Path, kill_at: float, expected: dict[str, Any], calibrated_rate: float
) -> _Trial:
    trial = _Trial(kill_at_s=kill_at)
    stderr = data.with_suffix(".stderr")
    proc = _spawn(data, stderr)
    started = time.perf_counter()
    try:
        while (now := time.perf_counter() - started) < kill_at and proc.poll() is None:
            if trial.writer_open_s is None and _lock_exists(data):
                trial.writer_open_s = now
            time.sleep(min(0.005, kill_at - now))
    except BaseException:  # Ctrl-C: leave no worker behind
        proc.kill()
        proc.wait()
        raise
    trial.killed_at_s = time.perf_counter() - started
    killed_wall = datetime.now(UTC)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    else:
        trial.finished_first = True
    proc.wait()
    if trial.finished_first and proc.returncode != 0:
        trial.error = f"worker failed: {stderr.read_text().strip()[-300:]}"
        return trial
    try:
        _recover(worker, data, trial, killed_wall, calibrated_rate)
        result = worker.run_writer(data, chunks=CHUNKS, seed=SEED, interval=INTERVAL, delay=0.0)
        trial.resumed_at = int(result["resumed_at"])
        with MemoryStore(data) as store:
            loaded = store.load_latest(worker.STREAM)
            assert loaded is not None, "no checkpoint after the resumed run"
            trial.final_offset = loaded[1].source_offset
            trial.differences = differences(expected, loaded[0])
            trial.duplicate_rows = max(trial.duplicate_rows, _duplicate_rows(store))
            trial.leftovers += _garbage(store, worker.STREAM)
    except Exception as exc:  # a failed recovery is a result of the benchmark, not its crash
        trial.error = f"{type(exc).__name__}: {exc}"
    return trial


def _recover(
    worker: ModuleType, data: Path, trial: _Trial, killed_wall: datetime, calibrated_rate: float
) -> None:
    """Inspect what the kill left, open the store as a writer (recovery), check the newest checkpoint."""
    trial.store_existed = (data / "catalog.sqlite").is_file()
    t0 = time.perf_counter()
    store = MemoryStore(data)
    t1 = time.perf_counter()
    try:
        rows = store.checkpoints(worker.STREAM)  # newest first; recovery never touches rows
        committed = {info.path.name for info in rows}
        for folder in (data / MEMORY_DIR).glob("*"):
            for entry in folder.iterdir():
                if entry.name.startswith(TMP_PREFIX):
                    trial.tmp_groups += 1
                elif entry.name.endswith(GROUP_SUFFIX) and entry.name not in committed:
                    trial.orphan_groups += 1
        t2 = time.perf_counter()
        with store.writer(worker.STREAM, config=worker.config()):
            trial.open_ms = 1e3 * ((t1 - t0) + (time.perf_counter() - t2))
            trial.committed = len(rows)
            trial.leftovers += _garbage(store, worker.STREAM)
            trial.duplicate_rows = _duplicate_rows(store)
            loaded = store.load_latest(worker.STREAM)
            if rows:
                assert loaded is not None, "committed checkpoints exist but none loads"
                StreamMemory(worker.config()).load_state_dict(loaded[0])
                newest = loaded[1]
                trial.newest_seq, trial.offset = newest.seq, int(newest.source_offset or 0)
                trial.newest_verified = newest.seq == rows[0].seq  # load_latest skips what fails to verify
            else:
                trial.newest_verified = loaded is None
        _work_lost(trial, rows, killed_wall, calibrated_rate)
    finally:
        store.close()


def _work_lost(trial: _Trial, rows: list[CheckpointInfo], killed: datetime, calibrated_rate: float) -> None:
    """Seconds and (estimated) chunks of work between the newest commit and the kill.

    The rate is the worker's own over its last two commits when it made two (so a slow machine is taken
    into account), else the uninterrupted run's. The estimate leaves out the chunks fed while the newest
    group was being written, so it runs up to (write time x rate) low.
    """
    if trial.finished_first:
        return
    if rows:
        trial.seconds_lost = max((killed - rows[0].created_at).total_seconds(), 0.0)
    elif trial.writer_open_s is not None:
        trial.seconds_lost = max(trial.killed_at_s - trial.writer_open_s, 0.0)
    rate = calibrated_rate
    if len(rows) >= 2 and rows[0].source_offset is not None and rows[1].source_offset is not None:
        dt = (rows[0].created_at - rows[1].created_at).total_seconds()
        if dt > 0:
            rate = (rows[0].source_offset - rows[1].source_offset) / dt
    trial.chunks_lost = min(trial.seconds_lost * rate, CHUNKS - trial.offset)


def _duplicate_rows(store: MemoryStore) -> int:
    with store.catalog.session() as s:
        rows = s.scalar(select(func.count()).select_from(Checkpoint)) or 0
        distinct = s.scalar(select(func.count(func.distinct(Checkpoint.seq)))) or 0
    return rows - distinct


def _garbage(store: MemoryStore, stream: str) -> list[str]:
    """Temporary groups, and groups that no row commits, left in the store (there must be none)."""
    committed = {info.path.name for info in store.checkpoints(stream)}
    return [
        entry.name
        for entry in store.root.glob(f"*/*{GROUP_SUFFIX}")
        if entry.name.startswith(TMP_PREFIX) or entry.name not in committed
    ]


def differences(a: Any, b: Any, path: str = "state") -> list[str]:
    """Paths at which two nested dicts of tensors and plain values differ (tensors: dtype, shape, bits)."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return [f"{path}: keys differ"]
        return [d for key in a for d in differences(a[key], b[key], f"{path}/{key}")]
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [path]
    nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return [] if nan or a == b else [f"{path}: {a!r} != {b!r}"]


# ----- summary ------------------------------------------------------------------------------------------
def _summarise(
    quick: bool, calibration: dict[str, Any], trials: list[_Trial], seconds: float
) -> dict[str, Any]:
    n = len(trials)
    exact = sum(t.exact for t in trials)
    after = [t for t in trials if t.committed and not t.finished_first]
    working = [t for t in trials if not t.finished_first and (t.committed or t.writer_open_s is not None)]
    lost = [t.chunks_lost for t in working]
    counts = {
        "trials": n,
        "recovered_exactly": exact,
        "before_writer_open": sum(not t.committed and t.writer_open_s is None for t in trials),
        "before_first_commit": sum(not t.committed and not t.finished_first for t in trials),
        "after_first_commit": len(after),
        "worker_finished_first": sum(t.finished_first for t in trials),
        "left_tmp_group": sum(t.tmp_groups > 0 for t in trials),
        "left_orphan_group": sum(t.orphan_groups > 0 for t in trials),
        "newest_verified": sum(t.newest_verified for t in trials),
        "duplicate_rows": sum(t.duplicate_rows for t in trials),
        "leftover_groups": sum(len(t.leftovers) for t in trials),
        "errors": sum(t.error is not None for t in trials),
    }
    stats = {
        "chunks_lost": _spread(lost),
        "chunks_lost_after_first_commit": _spread([t.chunks_lost for t in after]),
        "seconds_lost_after_first_commit": _spread([t.seconds_lost for t in after]),
        "open_ms": _spread([t.open_ms for t in trials if t.error is None and t.store_existed]),
        "open_ms_new_store": _spread([t.open_ms for t in trials if t.error is None and not t.store_existed]),
        "chunks_lost_histogram": _histogram(lost),
    }
    targets = [
        target("recovered exactly", exact, n, "trials", at_least=True),
        target("newest checkpoint verified", counts["newest_verified"], n, "trials", at_least=True),
        target("duplicate rows", counts["duplicate_rows"], 0, "rows", at_least=False),
        target("temporary / uncommitted groups left", counts["leftover_groups"], 0, "groups", at_least=False),
    ]
    return {
        "benchmark": "crash",
        "quick": quick,
        "environment": environment(),
        "worker": {"chunks": CHUNKS, "seed": SEED, "interval_s": INTERVAL, "delay_s": DELAY},
        "calibration": calibration,
        "counts": counts,
        "stats": stats,
        "trials": [asdict(t) | {"exact": t.exact} for t in trials],
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "seconds": seconds,
    }


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": median(values), "max": max(values)}


def _histogram(chunks: list[float]) -> dict[str, int]:
    """How many kills lost 0, 1-2, 3-5, 6-10 and more than 10 chunks (rounded)."""
    bins = {"0": (0, 0), "1-2": (1, 2), "3-5": (3, 5), "6-10": (6, 10), ">10": (11, CHUNKS)}
    return {name: sum(lo <= round(c) <= hi for c in chunks) for name, (lo, hi) in bins.items()}


def render(result: dict[str, Any]) -> str:
    w, cal, c, st = result["worker"], result["calibration"], result["counts"], result["stats"]
    rows = [
        ["trials", c["trials"]],
        ["  killed before the first commit", c["before_first_commit"]],
        ["    of which before the worker opened its store (imports)", c["before_writer_open"]],
        ["  killed after it", c["after_first_commit"]],
        ["  worker had already finished", c["worker_finished_first"]],
        ["  kill left a temporary group (mid-write)", c["left_tmp_group"]],
        ["  kill left a group without a row", c["left_orphan_group"]],
        ["recovered exactly (final state bit for bit)", c["recovered_exactly"]],
        ["newest committed checkpoint loaded and verified", c["newest_verified"]],
        ["duplicate rows", c["duplicate_rows"]],
        ["temporary / uncommitted groups left after recovery", c["leftover_groups"]],
        ["errors", c["errors"]],
    ]
    spreads = [
        ["chunks lost (≈), kills once the worker was writing", st["chunks_lost"]],
        ["chunks lost (≈), kills after the first commit", st["chunks_lost_after_first_commit"]],
        ["seconds lost, kills after the first commit", st["seconds_lost_after_first_commit"]],
        ["recovery open (store + writer), ms", st["open_ms"]],
        ["  the same where the open created the store", st["open_ms_new_store"]],
    ]
    spread_rows = [
        [name, *(f"{s[k]:.2f}" if s else "-" for k in ("min", "median", "max"))] for name, s in spreads
    ]
    hist = ", ".join(f"{k}: {v}" for k, v in st["chunks_lost_histogram"].items())
    hist_label = "chunks lost (≈) by kill once the worker was writing"
    failures = [t for t in result["trials"] if not t["exact"] or t["duplicate_rows"] or t["leftovers"]]
    lines = [
        f"bench crash{' (quick)' if result['quick'] else ''}: worker writes {w['chunks']} chunks "
        f"(seed {w['seed']}), a checkpoint every {w['interval_s']} s, {w['delay_s'] * 1e3:.0f} ms a chunk; "
        f"kills spread over an uninterrupted run of {cal['seconds']:.1f} s "
        f"({cal['checkpoints']} checkpoints, writer open at {cal['writer_open_s'] or 0:.1f} s)",
        render_environment(result["environment"]),
        "",
        format_table(["count", "trials"], [[name, str(v)] for name, v in rows]),
        "",
        format_table(["distribution", "min", "median", "max"], spread_rows),
        f"{hist_label}: {hist}",
        "",
        render_targets(result["targets"]),
    ]
    for t in failures[:5]:
        lines.append(
            f"FAILED trial (kill at {t['killed_at_s']:.2f} s, offset {t['offset']}): "
            f"{t['error'] or ''} {t['differences'][:3]} {t['leftovers'][:3]}".rstrip()
        )
    lines += [
        "",
        f"{'all trials recovered exactly' if result['all_pass'] else 'some trials FAILED'}; "
        f"ran in {result['seconds']:.0f} s",
    ]
    return "\n".join(lines)
