"""TTT_HF as the paper defines it (`hf_cg`) against references written here from the equations.

The references loop over (sample, head) pairs in plain Python on flat float64 vectors and take G·v from
autograd, so they share nothing with the batched solver but the equations (docs/memory.md):

    G = Σ_i J_iᵀ J_i (J_i: Jacobian of the pre-LN output Z2_i in W), right-hand side ∇L_b (η-weighted),
    CG from x = 0; φ_k = Σ_{j≤k} α_j p_jᵀg / sqrt(Σ_{j≤k} r_jᵀr_j); from the second iteration a pair whose
    φ does not rise stops and that step is dropped; the solve ends once `stop_fraction` of the pairs have
    stopped or after `max_iter`; W ← W − s·x.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.func import jvp, vjp

from vsalmonn.memory_store import MemoryConfig, StreamMemory
from vsalmonn.memory_store.config import saved_config
from vsalmonn.memory_store.inner import (
    FastWeights,
    gauss_newton_product,
    hf_cg_update,
    mlp_forward,
    paper_conjugate_gradient,
)
from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer

F64 = torch.float64
Vector = torch.Tensor
MatVec = Callable[[Vector], Vector]


def random_fast(b: int, h: int, p: int, m: int, *, gen: torch.Generator, scale: float = 0.3) -> FastWeights:
    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64) * scale

    return FastWeights(r(b, h, p, m), r(b, h, 1, m), r(b, h, m, p), r(b, h, 1, p))


def pre_ln_output(u: torch.Tensor, w: FastWeights) -> torch.Tensor:
    """Z2 = W2·gelu(W1·u + b1) + b2."""
    return torch.nn.functional.gelu(u @ w.w1 + w.b1) @ w.w2 + w.b2


def f_output(u: torch.Tensor, w: FastWeights, ln_w: torch.Tensor, ln_b: torch.Tensor) -> torch.Tensor:
    """f(u; W) = u + LN(Z2) with LN's own scale and shift, written from the equation."""
    z2 = pre_ln_output(u, w)
    zc = z2 - z2.mean(-1, keepdim=True)
    return u + ln_w * zc / torch.sqrt((zc * zc).mean(-1, keepdim=True) + 1e-6) + ln_b


def reference_paper_cg(
    matvecs: list[MatVec], rhs: list[Vector], *, max_iter: int, stop_fraction: float
) -> tuple[list[Vector], list[int | None], int]:
    """The paper's CG, pair by pair; returns x per pair, the iteration at which each pair stopped (None:
    never) and the iterations the whole solve ran."""
    pairs = len(rhs)
    x = [torch.zeros_like(b) for b in rhs]
    r = [b.clone() for b in rhs]
    p = [b.clone() for b in rhs]
    rs = [float(b @ b) for b in rhs]
    xg = [0.0] * pairs
    rsum = [0.0] * pairs
    phi = [0.0] * pairs
    stopped_at: list[int | None] = [None] * pairs
    iterations = 0
    for k in range(1, max_iter + 1):
        iterations = k
        for i in range(pairs):
            if stopped_at[i] is not None:
                continue
            ap = matvecs[i](p[i])
            alpha = rs[i] / float(p[i] @ ap)
            xg_new = xg[i] + alpha * float(p[i] @ rhs[i])
            rsum_new = rsum[i] + rs[i]
            phi_new = xg_new / math.sqrt(rsum_new)
            if k > 1 and not phi_new > phi[i]:
                stopped_at[i] = k
                continue
            x[i] = x[i] + alpha * p[i]
            r[i] = r[i] - alpha * ap
            rs_new = float(r[i] @ r[i])
            p[i] = r[i] + (rs_new / rs[i]) * p[i]
            rs[i], xg[i], rsum[i], phi[i] = rs_new, xg_new, rsum_new, phi_new
        if sum(s is not None for s in stopped_at) >= stop_fraction * pairs:
            break
    return x, stopped_at, iterations


def flat(w: FastWeights, bi: int, hi: int) -> Vector:
    return torch.cat([t[bi, hi].reshape(-1) for t in w])


def unflat(v: Vector, like: FastWeights, bi: int, hi: int) -> FastWeights:
    parts, at = [], 0
    for t in like:
        size = t[bi, hi].numel()
        parts.append(v[at : at + size].view(t[bi, hi].shape))
        at += size
    return FastWeights(*parts)


def autograd_gvp(u: torch.Tensor, w: FastWeights, bi: int, hi: int) -> MatVec:
    """v ↦ Σ_i J_iᵀ J_i v for one (sample, head), through autograd."""
    ui = u[bi, hi]
    wi = tuple(t[bi, hi] for t in w)

    def z2(*ws: torch.Tensor) -> torch.Tensor:
        return pre_ln_output(ui, FastWeights(*ws))

    _, pullback = vjp(z2, *wi)

    def gvp(v: Vector) -> Vector:
        _, jv = jvp(z2, wi, tuple(unflat(v, w, bi, hi)))
        return torch.cat([g.reshape(-1) for g in pullback(jv)])

    return gvp


def reference_step(
    u: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    w: FastWeights,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    *,
    max_iter: int,
    stop_fraction: float,
    step_scale: float,
) -> tuple[FastWeights, list[int | None], int]:
    """One hf_cg step from the equations: autograd gradient of the η-weighted loss, reference CG."""
    leaves = [t.clone().requires_grad_(True) for t in w]
    out = f_output(u, FastWeights(*leaves), ln_w, ln_b)
    loss = (weight * 0.5 * ((out - target) ** 2).sum(-1)).sum()
    grad = FastWeights(*torch.autograd.grad(loss, leaves))
    b, h = u.shape[:2]
    pairs = [(bi, hi) for bi in range(b) for hi in range(h)]
    xs, stopped_at, iterations = reference_paper_cg(
        [autograd_gvp(u, w, bi, hi) for bi, hi in pairs],
        [flat(grad, bi, hi) for bi, hi in pairs],
        max_iter=max_iter,
        stop_fraction=stop_fraction,
    )
    new = [t.clone() for t in w]
    for (bi, hi), x in zip(pairs, xs, strict=True):
        for t, dx in zip(new, unflat(x, w, bi, hi), strict=True):
            t[bi, hi] -= step_scale * dx
    return FastWeights(*new), stopped_at, iterations


def mlp_problem(seed: int, *, b: int = 2, h: int = 3, n: int = 9, p: int = 4, m: int = 6) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return dict(
        u=torch.nn.functional.normalize(torch.randn(b, h, n, p, generator=gen, dtype=F64), dim=-1),
        target=torch.randn(b, h, n, p, generator=gen, dtype=F64),
        weight=(torch.rand(b, h, n, generator=gen, dtype=F64) + 0.1) * 1e-3 / n,
        w=random_fast(b, h, p, m, gen=gen, scale=0.8),
        ln_w=torch.rand(h, 1, p, generator=gen, dtype=F64) + 0.5,
        ln_b=torch.randn(h, 1, p, generator=gen, dtype=F64) * 0.1,
    )


def test_unweighted_gauss_newton_product_equals_jtj_from_autograd() -> None:
    pr = mlp_problem(1)
    u, w = pr["u"], pr["w"]
    v = random_fast(*w.w1.shape[:3], w.w1.shape[-1], gen=torch.Generator().manual_seed(11))
    _, cache = mlp_forward(u, w, pr["ln_w"], pr["ln_b"])
    got = gauss_newton_product(u, w, cache, None, v)
    b, h = u.shape[:2]
    for bi in range(b):
        for hi in range(h):
            expected = autograd_gvp(u, w, bi, hi)(flat(v, bi, hi))
            torch.testing.assert_close(flat(got, bi, hi), expected, rtol=1e-10, atol=1e-12)
    # and it is the unweighted G: weights of one give the same product
    ones = torch.ones(u.shape[:3], dtype=F64)
    for a, c in zip(got, gauss_newton_product(u, w, cache, ones, v), strict=True):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=0.0)


def assert_step_equals_reference(
    pr: dict[str, Any], kw: dict[str, float], expected: FastWeights, ref_iterations: int
) -> FastWeights:
    """One hf_cg step on `pr` with `kw`: the reference's iteration count and weights to 1e-10; the step."""
    names = ("u", "target", "weight", "w", "ln_w", "ln_b")
    got, info = hf_cg_update(*(pr[n] for n in names), **kw)  # type: ignore[arg-type]
    assert info.iterations == ref_iterations
    for name, e, g in zip(FastWeights._fields, expected, got, strict=True):
        assert (e - g).abs().max().item() < 1e-10, f"{name} differs from the reference step"
    return got


@pytest.mark.parametrize(("seed", "max_iter", "stop_fraction"), [(2, 4, 0.75), (3, 6, 1.0), (4, 3, 0.5)])
def test_one_step_equals_the_reference_conjugate_gradient(
    seed: int, max_iter: int, stop_fraction: float
) -> None:
    pr = mlp_problem(seed)
    kw = dict(max_iter=max_iter, stop_fraction=stop_fraction, step_scale=37.0)
    expected, _, ref_iterations = reference_step(**pr, **kw)  # type: ignore[arg-type]
    got = assert_step_equals_reference(pr, kw, expected, ref_iterations)
    moved = max((g - w0).abs().max().item() for g, w0 in zip(got, pr["w"], strict=True))
    assert moved > 1e-4, "the step must move the weights for this comparison to mean anything"


def spd_problem(h: int = 8, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """SPD matrices (1, H, k, k) with spectra over three decades and right-hand sides (1, H, k, 1) leaning
    more and more towards the small eigenvalues from head to head: there CG's step lengths grow, then
    collapse, and the φ rule fires at different iterations for different heads."""
    gen = torch.Generator().manual_seed(12)
    q, _ = torch.linalg.qr(torch.randn(1, h, k, k, generator=gen, dtype=F64))
    eig = 10.0 ** (3 * torch.rand(1, h, k, generator=gen, dtype=F64))
    g_mat = q @ torch.diag_embed(eig) @ q.transpose(-1, -2)
    lean = torch.linspace(0, 0.2, h, dtype=F64)[None, :, None]
    rhs = q @ (torch.randn(1, h, k, generator=gen, dtype=F64) * eig ** (-lean))[..., None]
    return g_mat, rhs


def run_spd(g_mat: torch.Tensor, rhs: torch.Tensor, *, max_iter: int, stop_fraction: float) -> Any:
    zero = torch.zeros(*rhs.shape[:2], 1, 1, dtype=F64)

    def gvp(v: FastWeights) -> FastWeights:
        return FastWeights(g_mat @ v.w1, zero, zero, zero)

    return paper_conjugate_gradient(
        gvp, FastWeights(rhs, zero, zero, zero), max_iter=max_iter, stop_fraction=stop_fraction
    )


def reference_spd(g_mat: torch.Tensor, rhs: torch.Tensor, *, max_iter: int, stop_fraction: float) -> Any:
    h = rhs.shape[1]
    return reference_paper_cg(
        [lambda v, a=g_mat[0, hi]: a @ v for hi in range(h)],
        [rhs[0, hi, :, 0] for hi in range(h)],
        max_iter=max_iter,
        stop_fraction=stop_fraction,
    )


def test_phi_rule_stops_each_pair_where_the_reference_stops() -> None:
    g_mat, rhs = spd_problem()
    max_iter = 6
    x, info = run_spd(g_mat, rhs, max_iter=max_iter, stop_fraction=1.0)
    ref_x, stopped_at, ref_iterations = reference_spd(g_mat, rhs, max_iter=max_iter, stop_fraction=1.0)
    early = {s for s in stopped_at if s is not None and s < max_iter}
    assert len(early) >= 2, (
        f"the φ rule must fire before cg_max_iter, at different iterations (stops: {stopped_at})"
    )
    assert None in stopped_at, "some pairs must run to the end, or the per-pair rule goes untested"
    assert info.iterations == ref_iterations == max_iter
    for hi, e in enumerate(ref_x):
        assert (x.w1[0, hi, :, 0] - e).abs().max().item() < 1e-10, f"head {hi} (stopped at {stopped_at[hi]})"
    # a pair that stopped keeps the iterate of the iteration before: more iterations do not change it
    x_more, _ = run_spd(g_mat, rhs, max_iter=10, stop_fraction=1.0)
    for hi, s in enumerate(stopped_at):
        if s is not None:
            torch.testing.assert_close(x_more.w1[0, hi], x.w1[0, hi], rtol=0.0, atol=0.0)


def test_phi_rule_fires_on_an_mlp_problem_as_in_the_reference() -> None:
    """Small MLP problems on which the φ rule stops some (sample, head) pairs early, as the reference does."""
    pr = mlp_problem(21, b=2, h=4, n=24, p=4, m=8)
    kw = dict(max_iter=8, stop_fraction=1.0, step_scale=1.0)
    expected, stopped_at, ref_iterations = reference_step(**pr, **kw)  # type: ignore[arg-type]
    assert any(s is not None for s in stopped_at), f"the case must make φ fire (stops: {stopped_at})"
    assert_step_equals_reference(pr, kw, expected, ref_iterations)


@pytest.mark.parametrize("stop_fraction", [0.5, 0.75, 0.875])
def test_the_solve_ends_once_the_stop_fraction_of_pairs_has_stopped(stop_fraction: float) -> None:
    g_mat, rhs = spd_problem()
    h, max_iter = rhs.shape[1], 8
    _, stopped_at, _ = reference_spd(g_mat, rhs, max_iter=max_iter, stop_fraction=1.0)
    # the iteration by which `stop_fraction` of the pairs had stopped, from the per-pair stops alone
    ends = sorted(s for s in stopped_at if s is not None)
    need = math.ceil(stop_fraction * h)
    assert len(ends) >= need, f"this case must stop at least {need} pairs early (stops: {stopped_at})"
    expected_end = ends[need - 1]
    assert expected_end < max_iter
    x, info = run_spd(g_mat, rhs, max_iter=max_iter, stop_fraction=stop_fraction)
    assert info.iterations == expected_end
    assert info.stopped_fraction >= stop_fraction
    # and the pairs still running when the solve ended keep the iterate they had reached
    ref_x, _, ref_iterations = reference_spd(g_mat, rhs, max_iter=max_iter, stop_fraction=stop_fraction)
    assert ref_iterations == expected_end
    for hi, e in enumerate(ref_x):
        assert (x.w1[0, hi, :, 0] - e).abs().max().item() < 1e-10, f"head {hi}"


def test_the_step_scale_scales_the_step_linearly() -> None:
    pr = mlp_problem(5)
    args = (pr["u"], pr["target"], pr["weight"], pr["w"], pr["ln_w"], pr["ln_b"])
    one, _ = hf_cg_update(*args, max_iter=4, stop_fraction=0.75, step_scale=1.0)
    many, _ = hf_cg_update(*args, max_iter=4, stop_fraction=0.75, step_scale=250.0)
    for a, c, w0 in zip(one, many, pr["w"], strict=True):
        assert (a - w0).abs().max() > 0
        torch.testing.assert_close(c - w0, 250.0 * (a - w0), rtol=1e-10, atol=1e-12)


def test_the_literal_paper_step_is_eta_over_n_times_the_newton_step() -> None:
    """With every η_i/n equal to c, the paper's G is hf_cg_newton's divided by c while the right-hand sides
    are equal, so the paper's CG step is c times hf_cg_newton's (one iteration, where neither stop rule can
    differ)."""
    from vsalmonn.memory_store.inner import newton_cg_update

    pr = mlp_problem(6)
    c = 1e-4
    weight = torch.full_like(pr["weight"], c)
    args = (pr["u"], pr["target"], weight, pr["w"], pr["ln_w"], pr["ln_b"])
    paper, _ = hf_cg_update(*args, max_iter=1, stop_fraction=1.0, step_scale=1.0)
    today, _ = newton_cg_update(*args, max_iter=1, tol=0.0, stop_fraction=1.0)
    for a, t, w0 in zip(paper, today, pr["w"], strict=True):
        assert (t - w0).abs().max() > 1e-3
        torch.testing.assert_close(a - w0, c * (t - w0), rtol=1e-9, atol=1e-15)


def test_the_step_passes_gradcheck_in_the_slow_weights() -> None:
    pr = mlp_problem(7, b=1, h=2, n=5, p=3, m=4)
    # η_i/n of order one here: finite differences of a step 10⁻⁴ long would drown in their own curvature
    weight = (pr["weight"] * 5000).clone().requires_grad_(True)
    ln_w = pr["ln_w"].clone().requires_grad_(True)
    u = pr["u"].clone().requires_grad_(True)

    def step(weight: torch.Tensor, ln_w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        new, _ = hf_cg_update(
            u,
            pr["target"],
            weight,
            pr["w"],
            ln_w,
            pr["ln_b"],
            max_iter=3,
            stop_fraction=1.0,
            step_scale=300.0,
        )
        return torch.cat([t.reshape(-1) for t in new])

    assert torch.autograd.gradcheck(step, (weight, ln_w, u))


def test_layer_is_differentiable_and_runs_under_no_grad() -> None:
    cfg = TTTConfig(dim=32, heads=4, mlp_ratio=2, mini_batch=16, long_span_lag=6, optimizer="hf_cg", seed=3)
    layer = TTTLayer(cfg).double()
    x = torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(8), dtype=F64)
    with torch.no_grad():
        y0, state = layer(x, layer.init_state())
    assert state.last_cg is not None and state.last_cg.iterations >= 1
    y, _ = layer(x, layer.init_state())
    # not bit for bit: without a recorded gradient the layer takes ATen's fused LayerNorm kernels and writes
    # [q, 1], [k, 1] in place (docs/benchmarks.md, "Issue 17: gd's own cost"), which round differently
    torch.testing.assert_close(y.detach(), y0, rtol=0.0, atol=1e-12)
    y.pow(2).sum().backward()
    for name in ("qkv", "lr_weight", "w1_init", "ln_weight", "out_proj", "gate"):
        grad = getattr(layer, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_hf_cg_is_the_papers_solver_and_the_default() -> None:
    assert TTTConfig().optimizer == MemoryConfig().optimizer == "hf_cg"
    assert MemoryConfig().cg_step_scale == TTTConfig().cg_step_scale > 1
    # the paper's solver's name before the rename is read as its name now
    assert MemoryConfig(optimizer="hf_cg").optimizer == "hf_cg"
    with pytest.raises(ValueError, match="optimizer"):
        MemoryConfig(optimizer="hf_cg_typo")


def test_stored_configs_from_before_the_rename_keep_their_solver() -> None:
    """A state saved before the rename said "hf_cg" for the solver now called hf_cg_newton; it has no
    rope_regions field, which arrived in the same release. One saved after says "hf_cg" and means it."""
    before = MemoryConfig(optimizer="hf_cg_newton").model_dump()
    del before["rope_regions"]
    before["optimizer"] = "hf_cg"
    assert saved_config(before).optimizer == "hf_cg_newton"
    assert saved_config({**before, "optimizer": "hf_cg_paper"}).optimizer == "hf_cg"
    assert saved_config({**before, "optimizer": "gd"}).optimizer == "gd"
    after = MemoryConfig().model_dump()
    assert saved_config(after).optimizer == "hf_cg"


def test_a_stream_memory_with_the_paper_solver_ingests_and_reads_out() -> None:
    dim, n, at = 64, 1200, 700
    gen = torch.Generator().manual_seed(31)
    anchors = torch.randn(6, dim, generator=gen)
    x = anchors.repeat_interleave(n // 6, dim=0) + 0.05 * torch.randn(n, dim, generator=gen)
    x = torch.nn.functional.normalize(x, dim=-1)
    needle = torch.nn.functional.normalize(torch.randn(dim, generator=gen), dim=0)
    x[at] = needle
    times = torch.arange(n, dtype=torch.float64) / 4
    config = MemoryConfig(
        dim=dim,
        heads=4,
        mlp_ratio=2,
        visual_slots=128,
        audio_slots=32,
        mini_batch=128,
        long_span_lag=128,
        reader_visual_slots=8,
        reader_audio_slots=4,
        optimizer="hf_cg",
        slow_weights="untrained",
    )
    mem = StreamMemory(config)
    start_fast = [t.clone() for t in mem.ttt_state.fast]
    for start in range(0, n, 300):
        mem.write(x[start : start + 300], times[start : start + 300], times[start : start + 300] + 0.25)
    mem.flush()
    assert 0 < len(mem) <= 128 + 32
    assert mem.layer.config.optimizer == "hf_cg"
    state = mem.state_dict()
    assert state["config"]["optimizer"] == "hf_cg"
    assert mem.ttt_state.last_cg is not None, "the paper solver must have run"
    moved = max((a - b).abs().max().item() for a, b in zip(mem.ttt_state.fast, start_fast, strict=True))
    assert moved > 1e-6, "the fast weights must learn the stream"
    top = mem.read(needle, k=3)[0]
    planted = times[at].item()
    assert top.t0 <= planted <= top.t1, f"best moment [{top.t0}, {top.t1}] misses the needle at {planted}"
    # the round trip continues with the same solver
    again = StreamMemory(config)
    again.load_state_dict(state)
    assert again.read(needle, k=3)[0].t0 == top.t0


def paper_layer(dtype: torch.dtype) -> TTTLayer:
    cfg = TTTConfig(dim=32, heads=4, mlp_ratio=2, mini_batch=16, long_span_lag=6, optimizer="hf_cg", seed=3)
    return TTTLayer(cfg).to(dtype)


def test_bfloat16_update_runs_and_stays_close_to_float32() -> None:
    x = torch.nn.functional.normalize(
        torch.randn(1, 48, 32, generator=torch.Generator().manual_seed(9)), dim=-1
    )
    ref, bf = paper_layer(torch.float32), paper_layer(torch.bfloat16)
    with torch.no_grad():
        y32, s32 = ref(x, ref.init_state())
        y16, s16 = bf(x.bfloat16(), bf.init_state())
    assert y16.dtype == torch.bfloat16 and torch.isfinite(y16.float()).all()
    err = ((y16.float() - y32).norm() / y32.norm()).item()
    assert err < 0.05, f"bfloat16 read-out is {err:.3f} away from float32"
    moved = max((a.float() - b).abs().max().item() for a, b in zip(s16.fast, s32.fast, strict=True))
    step = max((a - b).abs().max().item() for a, b in zip(s32.fast, ref.init_state().fast, strict=True))
    assert step > 0.1 and moved < 0.05 * step, (
        f"bfloat16 fast weights went elsewhere ({moved:.3g} of {step:.3g})"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_update_matches_cpu(dtype: torch.dtype) -> None:
    x = torch.nn.functional.normalize(
        torch.randn(1, 64, 32, generator=torch.Generator().manual_seed(10)), dim=-1
    )
    cpu, gpu = paper_layer(torch.float32), paper_layer(dtype).cuda()
    with torch.no_grad():
        y_cpu, _ = cpu(x, cpu.init_state())
        y_gpu, _ = gpu(x.cuda().to(dtype), gpu.init_state())
    err = ((y_gpu.float().cpu() - y_cpu).norm() / y_cpu.norm()).item()
    assert err < (1e-4 if dtype == torch.float32 else 0.05), f"CUDA {dtype} differs from CPU by {err:.3g}"
