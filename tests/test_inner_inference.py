"""Issue 17's inference path changes no number: what the layer computes when no gradient is recorded.

Without a recorded gradient the update takes ATen's LayerNorm kernel and its backward for the cotangent at
the pre-LN output, writes gelu'(Z1) ⊙ g and the read-out's GELU in place, and `inner_problem` writes [q, 1]
and [k, 1] straight from the l2 division (docs/benchmarks.md, "Issue 17: gd's own cost"). The recorded
path keeps the differentiable formulas that `test_inner_speed.py` and `test_ttt_shared_path.py` hold against
the old ones; here both paths run in float64 on the same inputs and must agree to 1e-12.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from vsalmonn.memory_store import inner
from vsalmonn.memory_store.inner import FastWeights, gd_update, hf_cg_update, newton_cg_update
from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer

F64 = torch.float64
B, H, N, P, M = 2, 3, 20, 8, 16


def problem(seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=gen, dtype=F64)

    return {
        "u": F.normalize(rnd(B, H, N, P), dim=-1),
        "target": rnd(B, H, N, P),
        "weight": torch.rand(B, H, N, generator=gen, dtype=F64) * 0.05,
        "w": FastWeights(
            rnd(B, H, P, M), rnd(B, H, 1, M, scale=0.3), rnd(B, H, M, P, scale=0.3), rnd(B, H, 1, P)
        ),
        "ln_w": 1.0 + rnd(H, 1, P, scale=0.3),
        "ln_b": rnd(H, 1, P, scale=0.3),
    }


def close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("gelu", ["none", "tanh"])
def test_cotangent_and_cache_equal_the_recorded_formulas(gelu: str) -> None:
    pr = problem(1)
    args = (pr["u"], pr["target"], pr["weight"], pr["w"], pr["ln_w"], pr["ln_b"])
    fast_g, fast_cache = inner._preln_cotangent(*args, gelu=gelu)  # type: ignore[arg-type]
    recorded = pr["ln_w"].clone().requires_grad_(True)
    want_g, want_cache = inner._preln_cotangent(*args[:4], recorded, pr["ln_b"], gelu=gelu)  # type: ignore[arg-type]
    assert want_g.requires_grad and not fast_g.requires_grad, "both calls took the same path"
    assert want_g.abs().max() > 1e-4, "a vanishing cotangent would make the comparison empty"
    close(fast_g, want_g.detach(), "g_z2")
    for name in ("z1", "act", "xhat", "inv_std", "u_aug"):
        close(getattr(fast_cache, name), getattr(want_cache, name).detach(), name)
    # [u, 1] handed in (as `inner_problem` makes it) gives the same numbers as the concatenation
    u_aug = torch.cat([pr["u"], torch.ones(B, H, N, 1, dtype=F64)], dim=-1)
    given, _ = inner._preln_cotangent(*args, gelu=gelu, u_aug=u_aug)  # type: ignore[arg-type]
    close(given, fast_g, "g_z2 with [u, 1] given")


@pytest.mark.parametrize("gelu", ["none", "tanh"])
@pytest.mark.parametrize("solver", ["gd", "hf_cg", "hf_cg_newton"])
def test_updates_equal_the_recorded_formulas(solver: str, gelu: str) -> None:
    pr = problem(2)

    def run(ln_w: torch.Tensor) -> FastWeights:
        args = (pr["u"], pr["target"], pr["weight"], pr["w"], ln_w, pr["ln_b"])
        if solver == "gd":
            return gd_update(*args, gelu=gelu)  # type: ignore[arg-type]
        if solver == "hf_cg":
            return hf_cg_update(*args, max_iter=3, stop_fraction=1.0, step_scale=50.0, gelu=gelu)[0]  # type: ignore[arg-type]
        return newton_cg_update(*args, max_iter=3, tol=1e-4, stop_fraction=1.0, gelu=gelu)[0]  # type: ignore[arg-type]

    got = run(pr["ln_w"])
    want = run(pr["ln_w"].clone().requires_grad_(True))
    assert want.w1.requires_grad and not got.w1.requires_grad, "both calls took the same path"
    moved = max((a - b).abs().max().item() for a, b in zip(want, pr["w"], strict=True))
    assert moved > 1e-4, "the update did not move W: the comparison would be empty"
    for name, g, w in zip(FastWeights._fields, got, want, strict=True):
        close(g, w.detach(), name)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("options", [{}, {"rope": True, "target_ln_affine": True, "inner_gelu": "tanh"}])
@pytest.mark.parametrize("solver", ["gd", "hf_cg"])
def test_layer_under_no_grad_equals_the_recorded_layer(
    solver: str, options: dict[str, Any], batch: int
) -> None:
    cfg = TTTConfig(dim=24, heads=3, mini_batch=10, long_span_lag=4, optimizer=solver, seed=4, **options)
    layer = TTTLayer(cfg).to(F64)
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=F64))
    x = F.normalize(torch.randn(batch, 25, 24, generator=gen, dtype=F64), dim=-1)
    times = torch.cumsum(torch.rand(batch, 25, generator=gen, dtype=F64), dim=1)
    with torch.no_grad():
        problem = layer.inner_problem(x[:, :10], layer.init_state(batch), times[:, :10])
        got, got_state = layer(x, layer.init_state(batch), times)
    # rope rotates q and k after the division, so only the rotation-free layer writes [q, 1], [k, 1] directly
    assert (problem.keys_aug is None) == bool(options.get("rope")), "the inference path was not taken"
    if problem.keys_aug is not None:
        close(problem.keys_aug[..., :-1], problem.keys, "[k, 1]'s rows")
        assert bool((problem.keys_aug[..., -1] == 1).all()) and bool(
            (problem.queries_aug[..., -1] == 1).all()
        )
    want, want_state = layer(x, layer.init_state(batch), times)
    assert want.requires_grad
    assert (want - x).abs().max() > 1e-3, "the read-out changed nothing: the comparison would be empty"
    close(got, want.detach(), "outputs")
    for name, g, w in zip(FastWeights._fields, got_state.fast, want_state.fast, strict=True):
        close(g, w.detach(), f"fast weight {name}")
    close(got_state.carry, want_state.carry.detach(), "carry-over")
