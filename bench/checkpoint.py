"""``vsalmonn bench checkpoint``: writing and loading a full default memory, and a checkpoint's pause.

A `StreamMemory` with the `MemoryConfig()` defaults (dim 384, 16,384 visual + 4,096 audio slots, TTT with
``hf_cg``) is filled until both banks are full, with TTT on so that the fast weights and the carry-over in
the state are the trained ones. Then, round by round in one run, so that a busy machine slows every measure
alike, in a temporary data directory with the default retention (the last 3 checkpoints):

- write: ``StreamWriter.commit(memory.state_dict(copy=False))``, i.e. the Zarr group written, fsynced and
  renamed, and its catalog row inserted; plus, beside it, the group written alone without fsync, which
  shows what the durability and the catalog cost;
- load: ``MemoryStore.load_latest`` (read + checksum verify) and ``StreamMemory.load_state_dict`` of it;
- pause: ``StreamWriter.submit(memory)`` returns once it has captured a snapshot; ``writer.last_pause_s``
  is that time, taken with ``writer.wait()`` between submits so that each is the snapshot alone.

Targets (issue 3, a 2-core CPU): write ≤ 300 ms, load ≤ 200 ms, pause ≤ 5 ms.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from vsalmonn.cli.output import format_table
from vsalmonn.memory_store import MemoryConfig, StreamMemory
from vsalmonn.memory_store.checkpoint import write_group
from vsalmonn.memory_store.store import MemoryStore

from ._harness import environment, median, render_environment, render_targets, render_verdict, target

STREAM = "bench-checkpoint"
FILL_BATCH = 1_024
FILL_VISUAL_BATCHES, FILL_AUDIO_BATCHES = 20, 5  # 20,480 visual and 5,120 audio tokens: both banks overflow

_MEASURES = ("commit", "bare", "load", "restore", "pause", "submit", "ingest_busy", "ingest_idle")

TARGET_WRITE_MS = 300.0
TARGET_LOAD_MS = 200.0
TARGET_PAUSE_MS = 5.0


def _repeats(quick: bool) -> dict[str, int]:
    """(warm-up, timed) rounds; each round writes twice (commit, bare group) and loads and submits once."""
    if quick:
        return {"warmup": 1, "timed": 5}
    return {"warmup": 2, "timed": 30}


def run(quick: bool) -> dict[str, Any]:
    reps = _repeats(quick)
    started = time.perf_counter()
    config = MemoryConfig()
    fill_started = time.perf_counter()
    memory = _full_memory(config)
    tokens = _Tokens(config.dim, first=FILL_VISUAL_BATCHES * FILL_BATCH)
    fill_s = time.perf_counter() - fill_started
    times: dict[str, list[float]] = {k: [] for k in _MEASURES}
    data = Path(tempfile.mkdtemp(prefix="vsalmonn-bench-checkpoint-"))
    try:
        with MemoryStore(data) as store, store.writer(STREAM, config=config) as writer:
            target_memory = StreamMemory(config)  # the memory a restart would load into
            info = None
            for rnd in range(reps["warmup"] + reps["timed"]):
                t0 = time.perf_counter()
                info = writer.commit(memory.state_dict(copy=False))
                t1 = time.perf_counter()
                loaded = store.load_latest(STREAM)
                t2 = time.perf_counter()
                assert loaded is not None and loaded[1].seq == info.seq
                target_memory.load_state_dict(loaded[0])
                t3 = time.perf_counter()
                bare_path = data / f"bare-{rnd}.zarr"
                write_group(bare_path, memory.state_dict(copy=False), fsync=False)
                t4 = time.perf_counter()
                shutil.rmtree(bare_path)
                t5 = time.perf_counter()
                writer.submit(memory)
                t6 = time.perf_counter()
                _ingest(memory, tokens)  # while the checkpoint is written in the background
                t7 = time.perf_counter()
                writer.wait()
                t8 = time.perf_counter()
                _ingest(memory, tokens)  # the same with no write in flight
                t9 = time.perf_counter()
                if rnd < reps["warmup"]:
                    continue
                times["commit"].append(t1 - t0)
                times["load"].append(t2 - t1)
                times["restore"].append(t3 - t2)
                times["bare"].append(t4 - t3)
                times["pause"].append(writer.last_pause_s)
                times["submit"].append(t6 - t5)
                times["ingest_busy"].append(t7 - t6)
                times["ingest_idle"].append(t9 - t8)
            assert info is not None
            kept = len(store.checkpoints(STREAM))
            sizes = {
                "bytes_raw": info.bytes_raw,
                "bytes_stored": info.bytes_stored,
                "ratio": info.bytes_raw / info.bytes_stored,
            }
    finally:
        shutil.rmtree(data, ignore_errors=True)
    ms = {k: [1e3 * v for v in vs] for k, vs in times.items()}
    load_total = [a + b for a, b in zip(ms["load"], ms["restore"], strict=True)]
    summary = {
        "write_ms": median(ms["commit"]),
        "write_ms_max": max(ms["commit"]),
        "group_no_fsync_ms": median(ms["bare"]),
        "load_latest_ms": median(ms["load"]),
        "load_state_dict_ms": median(ms["restore"]),
        "load_ms": median(load_total),
        "load_ms_max": max(load_total),
        "pause_ms": median(ms["pause"]),
        "pause_ms_max": max(ms["pause"]),
        "submit_call_ms": median(ms["submit"]),
        "submit_call_ms_max": max(ms["submit"]),
        "ingest_idle_ms": median(ms["ingest_idle"]),
        "ingest_during_write_ms": median(ms["ingest_busy"]),
    }
    targets = [
        target("write ms (commit)", summary["write_ms"], TARGET_WRITE_MS, "ms", at_least=False),
        target("load ms (read + verify + restore)", summary["load_ms"], TARGET_LOAD_MS, "ms", at_least=False),
        target("pause ms (median)", summary["pause_ms"], TARGET_PAUSE_MS, "ms", at_least=False),
        target("pause ms (max)", summary["pause_ms_max"], TARGET_PAUSE_MS, "ms", at_least=False),
    ]
    return {
        "benchmark": "checkpoint",
        "quick": quick,
        "environment": environment(),
        "config": {
            "dim": config.dim,
            "visual_slots": config.visual_slots,
            "audio_slots": config.audio_slots,
            "ttt": config.ttt,
            "optimizer": config.optimizer,
            "filled_visual": FILL_VISUAL_BATCHES * FILL_BATCH,
            "filled_audio": FILL_AUDIO_BATCHES * FILL_BATCH,
        },
        "repeats": reps,
        "fill_seconds": fill_s,
        "checkpoints_kept": kept,
        "sizes": sizes,
        "summary": summary,
        "samples_ms": ms,
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "seconds": time.perf_counter() - started,
    }


def _full_memory(config: MemoryConfig) -> StreamMemory:
    """A memory whose banks are both full: random unit tokens at 1 FPS, 8 visual tokens a frame."""
    gen = torch.Generator().manual_seed(0)
    memory = StreamMemory(config)
    for modality, batches, per_second in (
        ("visual", FILL_VISUAL_BATCHES, 8.0),
        ("audio", FILL_AUDIO_BATCHES, 1.0),
    ):
        for b in range(batches):
            x = torch.nn.functional.normalize(torch.randn(FILL_BATCH, config.dim, generator=gen), dim=1)
            t = torch.arange(b * FILL_BATCH, (b + 1) * FILL_BATCH, dtype=torch.float64) / per_second
            memory.write(x, t, t + 1.0 / per_second, modality=modality)  # type: ignore[arg-type]
    memory.flush()
    full = {m: (len(bank), bank.capacity) for m, bank in memory.banks.items()}
    if any(n != cap for n, cap in full.values()):
        raise RuntimeError(f"the banks did not fill: {full}")
    return memory


class _Tokens:
    """Visual mini-batches for the ingestion measure, made up front: random numbers are not ingestion."""

    def __init__(self, dim: int, first: int) -> None:
        gen = torch.Generator().manual_seed(1)
        self.pool = torch.nn.functional.normalize(torch.randn(4, FILL_BATCH, dim, generator=gen), dim=2)
        self.next = first  # token index, 8 a second, carrying on after the fill
        self.calls = 0

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool[self.calls % len(self.pool)]
        t = torch.arange(self.next, self.next + FILL_BATCH, dtype=torch.float64) / 8.0
        self.next += FILL_BATCH
        self.calls += 1
        return x, t


def _ingest(memory: StreamMemory, tokens: _Tokens) -> None:
    """One TTT mini-batch of visual tokens into the full memory: TTT update, then bank append + reduction."""
    x, t = tokens.batch()
    memory.write(x, t, t + 0.125)


def render(result: dict[str, Any]) -> str:
    cfg, s, sizes = result["config"], result["summary"], result["sizes"]
    rows = [
        ["write: commit (group + fsync + rename + row)", f"{s['write_ms']:.1f}", f"{s['write_ms_max']:.1f}"],
        ["  beside it: group alone, no fsync, no row", f"{s['group_no_fsync_ms']:.1f}", ""],
        ["load: load_latest (read + checksum)", f"{s['load_latest_ms']:.1f}", ""],
        ["load: load_state_dict", f"{s['load_state_dict_ms']:.1f}", ""],
        ["load: total", f"{s['load_ms']:.1f}", f"{s['load_ms_max']:.1f}"],
        ["pause: submit's snapshot (last_pause_s)", f"{s['pause_ms']:.3f}", f"{s['pause_ms_max']:.3f}"],
        [
            "  the whole submit() call (+ thread start)",
            f"{s['submit_call_ms']:.3f}",
            f"{s['submit_call_ms_max']:.3f}",
        ],
        ["ingest 1,024 visual tokens, no write in flight", f"{s['ingest_idle_ms']:.1f}", ""],
        ["  the same while a checkpoint is written", f"{s['ingest_during_write_ms']:.1f}", ""],
    ]
    mb = 1e6
    return "\n".join(
        [
            f"bench checkpoint{' (quick)' if result['quick'] else ''}: dim {cfg['dim']}, "
            f"{cfg['visual_slots']:,} visual + {cfg['audio_slots']:,} audio slots (full), "
            f"TTT {cfg['optimizer'] if cfg['ttt'] else 'off'}; {result['repeats']['timed']} rounds "
            f"after {result['repeats']['warmup']} warm-up",
            render_environment(result["environment"]),
            "",
            format_table(["measure (ms)", "median", "max"], rows),
            f"checkpoint size: {sizes['bytes_raw'] / mb:.2f} MB raw, {sizes['bytes_stored'] / mb:.2f} MB "
            f"stored, ratio {sizes['ratio']:.3f}; {result['checkpoints_kept']} kept by retention",
            "",
            render_targets(result["targets"]),
            "",
            f"{render_verdict(result)} (filling the memory: {result['fill_seconds']:.1f} s)",
        ]
    )
