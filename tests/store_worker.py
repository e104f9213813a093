"""Worker processes for the crash and concurrency checks of the store (tests and `vsalmonn bench crash`).

Run as a script: `python tests/store_worker.py write DATA --chunks N ...` streams deterministic synthetic
tokens into a stream's memory with a checkpoint every `--interval` seconds, resuming from the newest
committed checkpoint; `python tests/store_worker.py read DATA --seconds S` loads the newest checkpoint in a
loop and verifies it. Both print one JSON line when they finish; a failure exits 1 with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vsalmonn.memory_store import MemoryConfig, StreamMemory
from vsalmonn.memory_store.store import MemoryStore

STREAM = "crash-test"
DIM = 64
CHUNK = 96  # visual tokens per chunk; every third chunk also brings audio


def config() -> MemoryConfig:
    return MemoryConfig(
        dim=DIM,
        heads=4,
        mlp_ratio=2,
        visual_slots=512,
        audio_slots=128,
        mini_batch=128,
        long_span_lag=128,
        reader_visual_slots=8,
        reader_audio_slots=4,
    )


def feed(memory: StreamMemory, chunk: int, seed: int) -> None:
    """Write chunk number `chunk`: the same tokens for the same (chunk, seed), whatever came before."""
    gen = torch.Generator().manual_seed(seed * 100_003 + chunk)
    x = torch.nn.functional.normalize(torch.randn(CHUNK, DIM, generator=gen), dim=-1)
    t = chunk * 12.0 + torch.arange(CHUNK, dtype=torch.float64) / 8
    memory.write(x, t, t + 0.125)
    if chunk % 3 == 0:
        a = torch.nn.functional.normalize(torch.randn(8, DIM, generator=gen), dim=-1)
        ta = chunk * 12.0 + torch.arange(8, dtype=torch.float64)
        memory.write(a, ta, ta + 1.0, modality="audio")


def reference_state(chunks: int, seed: int) -> dict[str, Any]:
    memory = StreamMemory(config())
    for i in range(chunks):
        feed(memory, i, seed)
    return memory.state_dict()


def run_writer(data: Path, *, chunks: int, seed: int, interval: float, delay: float) -> dict[str, Any]:
    """Resume the stream from its newest checkpoint and write the remaining chunks, checkpointing often."""
    store = MemoryStore(data)
    try:
        with store.writer(STREAM, config=config()) as writer:
            memory, info = store.open_memory(STREAM, config())
            start = int(info.source_offset or 0) if info else 0
            last = time.monotonic()
            pauses = []
            for i in range(start, chunks):
                feed(memory, i, seed)
                if delay:
                    time.sleep(delay)
                if time.monotonic() - last >= interval:
                    writer.submit(memory, source_offset=float(i + 1))
                    pauses.append(writer.last_pause_s)
                    last = time.monotonic()
            writer.wait()
            final = writer.commit(memory.state_dict(copy=False), source_offset=float(chunks))
        return {"resumed_at": start, "final_seq": final.seq, "max_pause_ms": 1e3 * max(pauses, default=0.0)}
    finally:
        store.close()


def run_reader(data: Path, *, seconds: float) -> dict[str, Any]:
    """Load and verify the newest checkpoint over and over; any torn state raises."""
    store = MemoryStore(data)
    loads = 0
    seqs: set[int] = set()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            loaded = store.load_latest(STREAM)
            if loaded is None:
                time.sleep(0.05)
                continue
            state, info = loaded
            memory = StreamMemory(config())
            memory.load_state_dict(state)  # a torn state would not load or would fail its checksum first
            loads += 1
            seqs.add(info.seq)
        return {"loads": loads, "distinct_checkpoints": len(seqs)}
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["write", "read"])
    parser.add_argument("data", type=Path)
    parser.add_argument("--chunks", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        if args.mode == "write":
            result = run_writer(
                args.data, chunks=args.chunks, seed=args.seed, interval=args.interval, delay=args.delay
            )
        else:
            result = run_reader(args.data, seconds=args.seconds)
    except Exception as exc:
        print(f"{args.mode} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
