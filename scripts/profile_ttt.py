"""Profile one TTT mini-batch per optimiser at `vsalmonn bench ttt`'s sizes (issue 17's speed part).

Run: `GOMP_SPINCOUNT=10000 PYTHONPATH=$PWD .venv/bin/python scripts/profile_ttt.py [--threads N] [--rows 25]`.
Prints, per optimiser, torch.profiler's CPU table grouped by op kind (calls and self time) for a few
mini-batches after warm-up, and the number of ATen ops per mini-batch. The machine's load skews the times;
the op counts do not depend on it.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer

DIM, HEADS, MINI_BATCH, CG_MAX_ITER = 384, 8, 1024, 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--optimizers", default="gd,hf_cg,hf_cg_newton")
    args = parser.parse_args()
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
            f"{total_us / args.steps / 1e3:.2f} ms"
        )
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
