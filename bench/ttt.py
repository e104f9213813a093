"""``vsalmonn bench ttt``: the cost of the memory's write and read paths at the paper's sizes.

Measured side by side in one run, so that ratios survive a noisy machine:

- tokens/s of one TTT update + read-out with ``gd``, ``hf_cg`` (the paper's solver, the default) and
  ``hf_cg_newton`` (the earlier one), cg_max_iter 4, dim 384, 8 heads, mini-batches of 1,024 tokens; the
  optimisers alternate mini-batch by mini-batch; on two token streams: "scenes" (runs of 64 near-duplicate
  tokens, the targets' stream) and "random" (independent unit tokens, reported beside it);
- ms to append 1,024 tokens to a full 16,384-slot bank, reduction included, for each policy;
- ms per prompt of the reader over 16,384 visual slots.

Why scenes: hf_cg's cost depends on its input through the φ rule. On encoded video (the needle streams'
tokens, shipped θ or untrained) and on scenes it never fires and CG runs all 4 iterations; on random unit
tokens it stops every head at iteration 2, which halves hf_cg's Gauss–Newton work and made this bench
report hf_cg about 1.35x faster than a camera's stream gets it (docs/benchmarks.md, "Issue 17: page faults,
and the arithmetic behind gd / hf_cg").

Targets (issues 2 and 17, a 2-core CPU): hf_cg ≥ 10,000 tokens/s, gd ≥ 2x hf_cg (on scenes), bank ≤ 20 ms,
reader ≤ 10 ms; hf_cg_newton is reported beside them.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from typing import Any

import torch

from vsalmonn.cli.output import format_table
from vsalmonn.memory_store.bank import Bank
from vsalmonn.memory_store.reader import Candidates, read
from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer

from ._harness import (
    environment,
    median,
    render_environment,
    render_targets,
    render_verdict,
    target,
    time_calls,
    token_stream,
)

DIM, HEADS, MINI_BATCH, CG_MAX_ITER = 384, 8, 1024, 4
SLOTS, INCOMING = 16_384, 1_024
OPTIMIZERS = ("gd", "hf_cg", "hf_cg_newton")
CG_OPTIMIZERS = ("hf_cg", "hf_cg_newton")
POLICIES = ("merge", "discard", "fifo", "uniform")
STREAMS = ("scenes", "random")  # the targets are read on the first
READ_K, READ_BUDGETS = 5, {"visual": 32, "audio": 16}

TARGET_HF_CG_TOKENS_PER_S = 10_000.0
TARGET_GD_OVER_HF_CG = 2.0
TARGET_BANK_MS = 20.0
TARGET_READER_MS = 10.0


def _repeats(quick: bool) -> dict[str, int]:
    """(warm-up, timed) counts; --quick trades precision for a run of a few seconds."""
    if quick:
        return {"ttt_warmup": 1, "ttt_timed": 3, "bank_timed": 5, "reader_timed": 10}
    return {"ttt_warmup": 3, "ttt_timed": 30, "bank_timed": 50, "reader_timed": 200}


def run(quick: bool) -> dict[str, Any]:
    reps = _repeats(quick)
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    ttt_by_stream = {
        stream: _ttt_throughput(reps["ttt_warmup"], reps["ttt_timed"], stream) for stream in STREAMS
    }
    ttt = ttt_by_stream[STREAMS[0]]
    bank_ms = {policy: _bank_append_ms(policy, reps["bank_timed"], gen) for policy in POLICIES}
    reader_ms = _reader_ms(reps["reader_timed"], gen)
    hf_cg, gd = ttt["hf_cg"]["tokens_per_s"], ttt["gd"]["tokens_per_s"]
    targets = [
        target("hf_cg tokens/s", hf_cg, TARGET_HF_CG_TOKENS_PER_S, "tokens/s", at_least=True),
        target("gd / hf_cg", gd / hf_cg, TARGET_GD_OVER_HF_CG, "x", at_least=True),
        *(target(f"bank {p} ms", ms, TARGET_BANK_MS, "ms", at_least=False) for p, ms in bank_ms.items()),
        target("reader ms/prompt", reader_ms, TARGET_READER_MS, "ms", at_least=False),
    ]
    return {
        "benchmark": "ttt",
        "quick": quick,
        "environment": environment(),
        "sizes": {
            "dim": DIM,
            "heads": HEADS,
            "mini_batch": MINI_BATCH,
            "cg_max_iter": CG_MAX_ITER,
            "slots": SLOTS,
            "incoming": INCOMING,
        },
        "repeats": reps,
        "ttt": ttt,  # on scenes, the targets' stream
        "ttt_by_stream": ttt_by_stream,
        "bank_append_ms": bank_ms,
        "reader_ms_per_prompt": reader_ms,
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "seconds": time.perf_counter() - started,
    }


def _unit(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, DIM, generator=gen), dim=1)


def _ttt_throughput(warmup: int, timed: int, stream: str) -> dict[str, dict[str, float]]:
    """Median time of one mini-batch of `stream` tokens per optimiser; the optimisers alternate so that all
    see the same load."""
    layers = {
        opt: TTTLayer(
            TTTConfig(dim=DIM, heads=HEADS, mini_batch=MINI_BATCH, optimizer=opt, cg_max_iter=CG_MAX_ITER)
        )
        for opt in OPTIMIZERS
    }
    states = {opt: layer.init_state(batch=1) for opt, layer in layers.items()}
    times: dict[str, list[float]] = {opt: [] for opt in OPTIMIZERS}
    page_faults: dict[str, list[int]] = {opt: [] for opt in OPTIMIZERS}  # minor faults (allocator.tune)
    cg_iterations: dict[str, list[int]] = {opt: [] for opt in CG_OPTIMIZERS}
    with torch.no_grad():
        for step in range(warmup + timed):
            x = token_stream(stream, MINI_BATCH, DIM, seed=step, dtype=torch.float32)  # (1, n, d)
            for opt in OPTIMIZERS:
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                started = time.perf_counter()
                _, states[opt] = layers[opt](x, states[opt])
                elapsed = time.perf_counter() - started
                if step >= warmup:
                    times[opt].append(elapsed)
                    page_faults[opt].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
                    if states[opt].last_cg is not None:
                        cg_iterations[opt].append(states[opt].last_cg.iterations)
    result = {
        opt: {
            "tokens_per_s": MINI_BATCH / median(t),
            "ms_per_mini_batch": 1e3 * median(t),
            "page_faults_per_mini_batch": median(page_faults[opt]),
        }
        for opt, t in times.items()
    }
    for opt, its in cg_iterations.items():
        result[opt]["cg_iterations_mean"] = sum(its) / max(len(its), 1)
    return result


def _batches(gen: torch.Generator, first_id: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless batches of INCOMING new tokens (values, keys, t0, t1, ids): 1 FPS, 8 tokens a frame."""
    next_id = first_id
    while True:
        values = _unit(INCOMING, gen)
        ids = torch.arange(next_id, next_id + INCOMING, dtype=torch.int64)
        t0 = (ids // 8).to(torch.float64)
        yield values, values, t0, t0 + 1.0, ids
        next_id += INCOMING


def _bank_append_ms(policy: str, timed: int, gen: torch.Generator) -> float:
    """Median ms to append INCOMING tokens to a bank holding SLOTS slots, so that every append reduces."""
    bank = Bank(SLOTS, DIM, policy)  # type: ignore[arg-type]
    values = _unit(SLOTS, gen)
    ids = torch.arange(SLOTS, dtype=torch.int64)
    t0 = (ids // 8).to(torch.float64)
    bank.append(values, values, t0, t0 + 1.0, ids)
    # Generate every batch before timing: random numbers are not the bank's cost.
    batches = _batches(gen, first_id=SLOTS)
    pending = iter([next(batches) for _ in range(timed + 1)])
    times = time_calls(lambda: bank.append(*next(pending)), repeats=timed, warmup=1)
    return 1e3 * median(times)


def _reader_ms(timed: int, gen: torch.Generator) -> float:
    """Median ms of one single-vector prompt over SLOTS visual slots."""
    keys = _unit(SLOTS, gen)
    ids = torch.arange(SLOTS, dtype=torch.int64)
    t0 = (ids // 8).to(torch.float64)
    candidates = [Candidates(modality="visual", keys=keys, t0=t0, t1=t0 + 1.0, id0=ids, id1=ids)]
    prompts = iter(_unit(timed + 2, gen)[:, None, :])  # one (1, d) prompt per call
    times = time_calls(
        lambda: read(next(prompts), candidates, k=READ_K, budgets=READ_BUDGETS), repeats=timed, warmup=2
    )
    return 1e3 * median(times)


def render(result: dict[str, Any]) -> str:
    sizes = result["sizes"]
    by_stream = result["ttt_by_stream"]
    rows = [
        [
            f"TTT update, {opt}, {stream}",
            f"{ttt[opt]['tokens_per_s']:,.0f}",
            "tokens/s",
            f"{ttt[opt]['ms_per_mini_batch']:.1f}",
            f"{ttt[opt]['page_faults_per_mini_batch']:,.0f}",
        ]
        for stream, ttt in by_stream.items()
        for opt in OPTIMIZERS
    ]
    rows += [
        [f"bank append + reduce, {policy}", f"{ms:.2f}", "ms", "", ""]
        for policy, ms in result["bank_append_ms"].items()
    ]
    rows.append(["reader, one prompt", f"{result['reader_ms_per_prompt']:.2f}", "ms", "", ""])
    return "\n".join(
        [
            f"bench ttt{' (quick)' if result['quick'] else ''}: dim {sizes['dim']}, {sizes['heads']} heads, "
            f"mini-batch {sizes['mini_batch']:,}, cg_max_iter {sizes['cg_max_iter']}, "
            f"bank {sizes['slots']:,} slots + {sizes['incoming']:,} incoming",
            render_environment(result["environment"]),
            "",
            format_table(["measure", "median", "unit", "ms/mini-batch", "page faults/mini-batch"], rows),
            "CG iterations per mini-batch on average: "
            + "; ".join(
                f"{stream}: "
                + ", ".join(
                    f"{opt} {ttt[opt]['cg_iterations_mean']:.1f}" for opt in CG_OPTIMIZERS if opt in ttt
                )
                for stream, ttt in by_stream.items()
            )
            + f" (targets on {STREAMS[0]})",
            "",
            render_targets(result["targets"]),
            "",
            render_verdict(result),
        ]
    )
