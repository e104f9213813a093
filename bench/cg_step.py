"""How far one step of each inner optimiser moves the fast weights, at default sizes: the step scale of
``hf_cg``, the paper's solver (issue 17, docs/memory.md); ``hf_cg_newton`` beside it.

Float64, d 384, 8 heads, mini-batches of 1,024 tokens, cg_max_iter 4 (and 8 in one row). Two sets of slow
weights: untrained with random views θ_Q, θ_K, θ_V (with the identity views v = k and the target is
trivial), and the shipped θ (trained with gd). Two streams: scenes of 64 near-duplicate tokens (a random unit
anchor plus noise), so that one mini-batch has structure to fit, and independent random unit tokens (the
inputs of ``bench ttt``), the case on which the φ rule of ``hf_cg`` fires.
For each optimiser (and each step scale s of ``hf_cg``) it reports, per mini-batch loss L_b (the
η-weighted loss the step minimises, summed over heads):

- ``fit``: L_1 after the step on mini-batch 1, as a fraction of L_1 before it;
- ``next``: L_2 after the step on mini-batch 2, as a fraction of L_2 before it;
- ``|ΔW|/|ΔW_gd|``: the first step's length against gd's;
- ``CG it``, ``stopped``: the first solve's CG iterations (``hf_cg/8``: cg_max_iter 8) and the share
  of (sample, head) pairs stopped.

Run: ``vsalmonn bench cg_step`` (under a minute on 2 cores; ``--quick``: the scenes with random θ only).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vsalmonn.cli.output import format_table
from vsalmonn.memory_store.inner import fw_add, fw_dot
from vsalmonn.memory_store.slow_weights import load_slow_weights, shipped_path
from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer

from ._harness import token_stream

DIM, HEADS, MINI_BATCH = 384, 8, 1024
SCALES = (1.0, 256.0, 1024.0, 4096.0, 8192.0, 16384.0, 65536.0)


def measure(
    optimizer: str, scale: float = 1.0, *, slow: str, stream: str = "scenes", max_iter: int = 4
) -> dict[str, float]:
    cfg = TTTConfig(
        dim=DIM,
        heads=HEADS,
        mini_batch=MINI_BATCH,
        optimizer=optimizer,  # type: ignore[arg-type]
        cg_step_scale=scale,
        cg_max_iter=max_iter,
    )
    layer = TTTLayer(cfg).double()
    if slow == "shipped":
        state, _ = load_slow_weights(shipped_path())
        layer.load_state_dict(state)
        layer.double()
    else:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            layer.qkv.copy_(torch.randn(3 * DIM, DIM, generator=gen, dtype=torch.float64) / math.sqrt(DIM))
    x = token_stream(stream, 2 * MINI_BATCH, DIM)
    with torch.no_grad():
        state = layer.init_state()
        p1 = layer.inner_problem(x[:, :MINI_BATCH], state)
        w0 = state.fast
        w1, info = layer.update(p1, w0)
        state.seen = MINI_BATCH
        state.carry = p1.carry
        p2 = layer.inner_problem(x[:, MINI_BATCH:], state)
        w2, _ = layer.update(p2, w1)

        def loss(problem, w):  # type: ignore[no-untyped-def]
            return problem.loss(w, layer.ln_weight, layer.ln_bias).sum().item()

        l1_0, l1_1 = loss(p1, w0), loss(p1, w1)
        l2_1, l2_2 = loss(p2, w1), loss(p2, w2)
        step = fw_add(w1, w0, -1.0)
        step_norm = math.sqrt(fw_dot(step, step).sum().item())
    return {
        "fit": l1_1 / l1_0,
        "next": l2_2 / l2_1,
        "step": step_norm,
        "cg": float(info.iterations) if info else float("nan"),
        "stopped": info.stopped_fraction if info else float("nan"),
    }


def run(quick: bool) -> dict[str, Any]:
    cases = (
        (("scenes", "random"),)
        if quick
        else (("scenes", "random"), ("scenes", "shipped"), ("random", "shipped"))
    )
    rows: list[dict[str, Any]] = []
    for stream, slow in cases:
        kw: dict[str, Any] = {"slow": slow, "stream": stream}
        scales = SCALES if stream == "scenes" else (1.0, 4096.0)
        measured = [("gd", None, 4, measure("gd", **kw))]
        measured.append(("hf_cg_newton", None, 4, measure("hf_cg_newton", **kw)))
        measured += [("hf_cg", s, 4, measure("hf_cg", s, **kw)) for s in scales]
        measured.append(("hf_cg", 4096.0, 8, measure("hf_cg", 4096.0, max_iter=8, **kw)))
        gd_step = measured[0][3]["step"]
        for name, scale, max_iter, r in measured:
            rows.append({
                "stream": stream, "slow_weights": slow, "optimizer": name, "step_scale": scale,
                "cg_max_iter": max_iter, "fit": r["fit"], "next": r["next"],
                "step_vs_gd": r["step"] / gd_step, "cg_iterations": r["cg"], "stopped": r["stopped"],
            })  # fmt: skip
    return {"dim": DIM, "heads": HEADS, "mini_batch": MINI_BATCH, "rows": rows}


def render(result: dict[str, Any]) -> str:
    headers = [
        "stream",
        "θ",
        "optimizer",
        "s",
        "cg_max_iter",
        "fit",
        "next",
        "|ΔW|/|ΔW_gd|",
        "CG it",
        "stopped",
    ]
    table = [
        [
            r["stream"], r["slow_weights"], r["optimizer"],
            f"{r['step_scale']:g}" if r["step_scale"] else "-",
            str(r["cg_max_iter"]) if r["optimizer"] != "gd" else "-", f"{r['fit']:.6f}", f"{r['next']:.6f}",
            f"{r['step_vs_gd']:.3g}", "-" if math.isnan(r["cg_iterations"]) else f"{r['cg_iterations']:.0f}",
            "-" if math.isnan(r["stopped"]) else f"{r['stopped']:.2f}",
        ]
        for r in result["rows"]
    ]  # fmt: skip
    head = (
        f"one inner step at d {result['dim']}, {result['heads']} heads, mini-batch {result['mini_batch']} "
        "(float64); fit/next: loss after/before on mini-batch 1 and 2"
    )
    return head + "\n" + format_table(headers, table)
