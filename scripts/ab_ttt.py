"""Tokens/s of one TTT mini-batch per optimiser, as `vsalmonn bench ttt` measures it, for A/B runs.

`bench ttt` times gd and hf_cg only; this times gd, hf_cg and hf_cg_newton the same way (one `TTTLayer` call
per mini-batch under no_grad, dim 384, 8 heads, 1,024 tokens, cg_max_iter 4, the optimisers alternating
mini-batch by mini-batch, warm-up, then the median) and prints one JSON line: tokens/s from wall time,
and the median process CPU time per mini-batch, which with `--threads 1` is the work itself and depends
little on what else the machine runs. Point PYTHONPATH at the
checkout to measure and alternate checkouts run by run (docs/benchmarks.md, "Issue 17: solver speed"):

    GOMP_SPINCOUNT=10000 PYTHONPATH=/path/to/checkout .venv/bin/python scripts/ab_ttt.py --label new
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time

import torch

from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer

DIM, HEADS, MINI_BATCH, CG_MAX_ITER = 384, 8, 1024, 4
OPTIMIZERS = ("gd", "hf_cg", "hf_cg_newton")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", default="")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timed", type=int, default=30)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    layers = {
        opt: TTTLayer(
            TTTConfig(dim=DIM, heads=HEADS, mini_batch=MINI_BATCH, optimizer=opt, cg_max_iter=CG_MAX_ITER)
        )
        for opt in OPTIMIZERS
    }
    states = {opt: layer.init_state(batch=1) for opt, layer in layers.items()}
    times: dict[str, list[float]] = {opt: [] for opt in OPTIMIZERS}
    cpu: dict[str, list[float]] = {opt: [] for opt in OPTIMIZERS}
    iterations: dict[str, list[int]] = {opt: [] for opt in OPTIMIZERS}
    with torch.no_grad():
        for step in range(args.warmup + args.timed):
            x = torch.nn.functional.normalize(torch.randn(1, MINI_BATCH, DIM, generator=gen), dim=-1)
            for opt in OPTIMIZERS:
                started, cpu_started = time.perf_counter(), time.process_time()
                _, states[opt] = layers[opt](x, states[opt])
                elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
                if step >= args.warmup:
                    times[opt].append(elapsed)
                    cpu[opt].append(cpu_s)
                    if states[opt].last_cg is not None:
                        iterations[opt].append(states[opt].last_cg.iterations)
    code = os.environ.get("PYTHONPATH", ".").split(os.pathsep)[0]
    commit = subprocess.run(
        ["git", "-C", code, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    out = {
        "label": args.label,
        "commit": commit,
        "threads": torch.get_num_threads(),
        "load1": os.getloadavg()[0],
        **{f"{opt}_tok_s": round(MINI_BATCH / statistics.median(t)) for opt, t in times.items()},
        **{f"{opt}_cpu_ms": round(1e3 * statistics.median(t), 2) for opt, t in cpu.items()},
        **{f"{opt}_cg_iter": statistics.mean(i) for opt, i in iterations.items() if i},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
