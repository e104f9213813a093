"""How far one step of each inner optimiser moves the fast weights, at default sizes: the step scale of
``hf_cg_paper`` (issue 17, docs/memory.md).

Float64, d 384, 8 heads, mini-batches of 1,024 tokens, cg_max_iter 4 (and 8 in one row). Two sets of slow
weights: untrained with random views θ_Q, θ_K, θ_V (with the identity views v = k and the target is
trivial), and the shipped θ (trained with gd). Two streams: scenes of 64 near-duplicate tokens (a random unit
anchor plus noise), so that one mini-batch has structure to fit, and independent random unit tokens (the
inputs of ``bench ttt``), the case on which the φ rule of ``hf_cg_paper`` fires.
For each optimiser (and each step scale s of ``hf_cg_paper``) it reports, per mini-batch loss L_b (the
η-weighted loss the step minimises, summed over heads):

- ``fit``: L_1 after the step on mini-batch 1, as a fraction of L_1 before it;
- ``next``: L_2 after the step on mini-batch 2, as a fraction of L_2 before it;
- ``|ΔW|/|ΔW_gd|``: the first step's length against gd's;
- ``CG it``, ``stopped``: the first solve's CG iterations (``hf_cg_paper/8``: cg_max_iter 8) and the share
  of (sample, head) pairs stopped.

Run: ``.venv/bin/python -m bench.hf_cg_paper_step`` (under a minute on 2 cores).
"""

from __future__ import annotations

import math

import torch

from vsalmonn.memory_store.inner import fw_add, fw_dot
from vsalmonn.memory_store.slow_weights import load_slow_weights, shipped_path
from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer

DIM, HEADS, MINI_BATCH, SCENE = 384, 8, 1024, 64
SCALES = (1.0, 256.0, 1024.0, 4096.0, 8192.0, 16384.0, 65536.0)


def make_stream(kind: str, n: int, *, seed: int = 0, noise: float = 0.3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.nn.functional.normalize(
            torch.randn(1, n, DIM, generator=gen, dtype=torch.float64), dim=-1
        )
    anchors = torch.randn(n // SCENE, DIM, generator=gen, dtype=torch.float64)
    x = anchors.repeat_interleave(SCENE, dim=0)
    x = x + noise * torch.randn(n, DIM, generator=gen, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=-1)[None]  # (1, n, d)


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
    x = make_stream(stream, 2 * MINI_BATCH)
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


def main() -> None:
    header = ("stream", "θ", "optimizer", "s", "fit", "next", "|ΔW|/|ΔW_gd|", "CG it", "stopped")
    print("{:<7} {:<8} {:<14} {:>8} {:>9} {:>9} {:>13} {:>6} {:>8}".format(*header))
    for stream, slow in (("scenes", "random"), ("scenes", "shipped"), ("random", "shipped")):
        kw = {"slow": slow, "stream": stream}
        scales = SCALES if stream == "scenes" else (1.0, 4096.0)
        rows = [("gd", 0.0, measure("gd", **kw)), ("hf_cg", 0.0, measure("hf_cg", **kw))]
        rows += [("hf_cg_paper", s, measure("hf_cg_paper", s, **kw)) for s in scales]
        rows.append(("hf_cg_paper/8", 4096.0, measure("hf_cg_paper", 4096.0, max_iter=8, **kw)))
        gd_step = rows[0][2]["step"]
        for name, s, r in rows:
            scale = f"{s:g}" if s else "-"
            step = r["step"] / gd_step
            print(
                f"{stream:<7} {slow:<8} {name:<14} {scale:>8} {r['fit']:>9.6f} {r['next']:>9.6f}"
                f" {step:>13.3g} {r['cg']:>6.0f} {r['stopped']:>8.2f}"
            )


if __name__ == "__main__":
    main()
