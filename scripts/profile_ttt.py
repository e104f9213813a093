"""Profile one TTT mini-batch per optimiser at `vsalmonn bench ttt`'s sizes (issue 17's speed part).

Run: `GOMP_SPINCOUNT=10000 PYTHONPATH=$PWD .venv/bin/python scripts/profile_ttt.py [--threads N] [--rows 25]`.
Prints, per optimiser, torch.profiler's CPU table grouped by op kind (calls and self time) for a few
mini-batches after warm-up, the number of ATen ops and the matmul FLOPs per mini-batch, and, outside the
profiler, wall ms, minor page faults and system CPU ms per mini-batch. The machine's load skews the times;
the op and FLOP counts do not depend on it. malloc is tuned as the CLI tunes it (`allocator.tune`) unless
`--malloc-defaults`: compare the two to see what page faults cost on a CPU (docs/benchmarks.md, "Issue 17:
page faults").
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer
from vsalmonn.perception import allocator

DIM, HEADS, MINI_BATCH, CG_MAX_ITER = 384, 8, 1024, 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--optimizers", default="gd,hf_cg,hf_cg_newton")
    parser.add_argument(
        "--malloc-defaults", action="store_true", help="leave glibc's malloc thresholds as they are"
    )
    args = parser.parse_args()
    tuned = False if args.malloc_defaults else allocator.tune()
    print(f"malloc: {'tuned' if tuned else 'defaults'}")
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    for opt in args.optimizers.split(","):
        layer = TTTLayer(
            TTTConfig(dim=DIM, heads=HEADS, mini_batch=MINI_BATCH, optimizer=opt, cg_max_iter=CG_MAX_ITER)
        )
        state = layer.init_state(batch=1)
        xs = [
            torch.nn.functional.normalize(torch.randn(1, MINI_BATCH, DIM, generator=gen), dim=-1)
            for _ in range(3 + args.steps)
        ]
        iters = []
        with torch.no_grad():
            for x in xs[:3]:
                _, state = layer(x, state)
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for x in xs[3:]:
                _, state = layer(x, state)
            wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
            flops = FlopCounterMode(display=False)
            with flops:
                layer(xs[-1], state)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for x in xs[3:]:
                    _, state = layer(x, state)
                    if state.last_cg is not None:
                        iters.append(state.last_cg.iterations)
        events = prof.key_averages()
        ops = sum(e.count for e in events if e.key.startswith("aten::"))
        total_us = sum(e.self_cpu_time_total for e in events)
        print(f"=== {opt}: threads {torch.get_num_threads()}, CG iterations {iters}")
        print(
            f"aten ops per mini-batch {ops / args.steps:.0f}, self CPU per mini-batch "
            f"{total_us / args.steps / 1e3:.2f} ms, matmul {flops.get_total_flops() / 1e6:,.0f} MFLOP"
        )
        print(
            f"unprofiled, per mini-batch: {1e3 * wall / args.steps:.2f} ms wall, "
            f"{(after.ru_minflt - before.ru_minflt) / args.steps:,.0f} minor page faults, "
            f"{1e3 * (after.ru_stime - before.ru_stime) / args.steps:.2f} ms system CPU"
        )
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
