"""How far one step of each inner optimiser moves the fast weights, at default sizes: the step scale of
``hf_cg_paper`` (issue 17, docs/memory.md).

Untrained slow weights with random views θ_Q, θ_K, θ_V, float64, d 384, 8 heads, mini-batches of 1,024 tokens, cg_max_iter 4. The stream is
scenes of 64 near-duplicate tokens (a unit anchor plus noise), so that one mini-batch has structure to fit.
For each optimiser (and each step scale s of ``hf_cg_paper``) it reports, per mini-batch loss L_b (the
η-weighted loss the step minimises, summed over heads):

- ``fit``: L_1 after the step on mini-batch 1, as a fraction of L_1 before it;
- ``next``: L_2 after the step on mini-batch 2, as a fraction of L_2 before it;
- ``kept``: how much of the first step's gain on L_1 is still there after the step on mini-batch 2
  (1: all kept, 0: back where it started, < 0: worse than before any step): how much one step overwrites;
- ``|ΔW|/|ΔW_gd|``: the first step's length against gd's;
- ``CG it``, ``stopped``: the first solve's CG iterations and the share of (sample, head) pairs stopped.

Run: ``.venv/bin/python -m bench.hf_cg_paper_step`` (a few seconds).
"""

from __future__ import annotations

import math

import torch

from vsalmonn.memory_store.inner import fw_add, fw_dot
from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer

DIM, HEADS, MINI_BATCH, SCENE = 384, 8, 1024, 64
SCALES = (1.0, 256.0, 1024.0, 4096.0, 8192.0, 16384.0, 65536.0)


def scene_stream(n: int, *, seed: int = 0, noise: float = 0.3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    anchors = torch.randn(n // SCENE, DIM, generator=gen, dtype=torch.float64)
    x = anchors.repeat_interleave(SCENE, dim=0)
    x = x + noise * torch.randn(n, DIM, generator=gen, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=-1)[None]  # (1, n, d)


def measure(optimizer: str, scale: float = 1.0) -> dict[str, float]:
    cfg = TTTConfig(dim=DIM, heads=HEADS, mini_batch=MINI_BATCH, optimizer=optimizer, cg_step_scale=scale)
    layer = TTTLayer(cfg).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random views: with the identity ones v = k and the target is trivial
        layer.qkv.copy_(torch.randn(3 * DIM, DIM, generator=gen, dtype=torch.float64) / math.sqrt(DIM))
    x = scene_stream(2 * MINI_BATCH)
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

        l1_0, l1_1, l1_2 = loss(p1, w0), loss(p1, w1), loss(p1, w2)
        l2_1, l2_2 = loss(p2, w1), loss(p2, w2)
        step = fw_add(w1, w0, -1.0)
        step_norm = math.sqrt(fw_dot(step, step).sum().item())
    gain = l1_0 - l1_1
    return {
        "fit": l1_1 / l1_0,
        "next": l2_2 / l2_1,
        "kept": (l1_0 - l1_2) / gain if gain else float("nan"),
        "step": step_norm,
        "cg": float(info.iterations) if info else float("nan"),
        "stopped": info.stopped_fraction if info else float("nan"),
    }


def main() -> None:
    torch.manual_seed(0)
    rows = [("gd", 0.0, measure("gd")), ("hf_cg", 0.0, measure("hf_cg"))]
    rows += [("hf_cg_paper", s, measure("hf_cg_paper", s)) for s in SCALES]
    gd_step = rows[0][2]["step"]
    print(
        f"{'optimizer':<12} {'s':>8} {'fit':>9} {'next':>9} {'kept':>8} {'|ΔW|/|ΔW_gd|':>13} {'CG it':>6} {'stopped':>8}"
    )
    for name, s, r in rows:
        scale = f"{s:g}" if s else "-"
        print(
            f"{name:<12} {scale:>8} {r['fit']:>9.6f} {r['next']:>9.6f} {r['kept']:>8.3f} {r['step'] / gd_step:>13.3g}"
            f" {r['cg']:>6.0f} {r['stopped']:>8.2f}"
        )


if __name__ == "__main__":
    main()
