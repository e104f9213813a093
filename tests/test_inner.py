"""The inner loop's mathematics against autograd: G·v, the gd step, and what hf_cg_newton buys over gd."""

from __future__ import annotations

import pytest
import torch
from torch.func import jvp, vjp

from vsalmonn.memory_store.inner import (
    FastWeights,
    conjugate_gradient,
    fw_dot,
    gauss_newton_product,
    gd_update,
    loss_gradient,
    mlp_forward,
)
from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer


def random_fast(b: int, h: int, p: int, m: int, *, dtype: torch.dtype, gen: torch.Generator) -> FastWeights:
    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype) * 0.3

    return FastWeights(r(b, h, p, m), r(b, h, 1, m), r(b, h, m, p), r(b, h, 1, p))


def pre_ln_output(u: torch.Tensor, w: FastWeights) -> torch.Tensor:
    """Z2 = W2·gelu(W1·u + b1) + b2, the output whose Jacobian defines G."""
    return torch.nn.functional.gelu(u @ w.w1 + w.b1) @ w.w2 + w.b2


def test_gauss_newton_product_equals_jtj_from_autograd() -> None:
    gen = torch.Generator().manual_seed(1)
    b, h, n, p, m = 2, 3, 7, 5, 9
    u = torch.randn(b, h, n, p, generator=gen, dtype=torch.float64)
    w = random_fast(b, h, p, m, dtype=torch.float64, gen=gen)
    v = random_fast(b, h, p, m, dtype=torch.float64, gen=gen)
    weight = torch.rand(b, h, n, generator=gen, dtype=torch.float64) + 0.1
    ln_w = torch.rand(h, 1, p, generator=gen, dtype=torch.float64) + 0.5
    ln_b = torch.randn(h, 1, p, generator=gen, dtype=torch.float64)

    _, jv = jvp(lambda *ws: pre_ln_output(u, FastWeights(*ws)), tuple(w), tuple(v))
    _, pullback = vjp(lambda *ws: pre_ln_output(u, FastWeights(*ws)), *w)
    expected = pullback(weight[..., None] * jv)

    _, cache = mlp_forward(u, w, ln_w, ln_b)
    got = gauss_newton_product(u, w, cache, weight, v)
    for name, e, g in zip(FastWeights._fields, expected, got, strict=True):
        rel = ((e - g).norm() / e.norm()).item()
        assert rel < 1e-6, f"G·v differs from JᵀJv in {name}: relative error {rel:.3e}"


def test_gradient_matches_autograd_in_float64() -> None:
    gen = torch.Generator().manual_seed(2)
    b, h, n, p, m = 1, 4, 11, 6, 12
    u = torch.randn(b, h, n, p, generator=gen, dtype=torch.float64)
    target = torch.randn(b, h, n, p, generator=gen, dtype=torch.float64)
    weight = torch.rand(b, h, n, generator=gen, dtype=torch.float64)
    w = random_fast(b, h, p, m, dtype=torch.float64, gen=gen)
    ln_w = torch.rand(h, 1, p, generator=gen, dtype=torch.float64) + 0.5
    ln_b = torch.randn(h, 1, p, generator=gen, dtype=torch.float64)

    leaves = [t.clone().requires_grad_(True) for t in w]
    out, _ = mlp_forward(u, FastWeights(*leaves), ln_w, ln_b)
    loss = (weight * 0.5 * ((out - target) ** 2).sum(-1)).sum()
    expected = torch.autograd.grad(loss, leaves)
    got, _ = loss_gradient(u, target, weight, w, ln_w, ln_b)
    for name, e, g in zip(FastWeights._fields, expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12, msg=f"gradient of {name}")


def small_layer(optimizer: str, *, dtype: torch.dtype = torch.float64, lag: int = 6) -> TTTLayer:
    cfg = TTTConfig(
        dim=32,
        heads=4,
        mlp_ratio=2,
        mini_batch=16,
        long_span_lag=lag,
        optimizer=optimizer,
        seed=3,  # type: ignore[arg-type]
    )
    return TTTLayer(cfg).to(dtype)


def test_gd_equals_one_autograd_step_on_the_minibatch_loss() -> None:
    layer = small_layer("gd")
    gen = torch.Generator().manual_seed(4)
    state = layer.init_state(batch=2)
    # a first mini-batch fills the carry-over so that the long-span term is active in the second
    warm = torch.randn(2, 16, 32, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        _, state = layer(warm, state)
    x = torch.randn(2, 16, 32, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        problem = layer.inner_problem(x, state)
    assert problem.lag_mask.sum() > 0, "the long-span term must take part in this test"

    leaves = [t.clone().requires_grad_(True) for t in state.fast]
    loss = problem.loss(FastWeights(*leaves), layer.ln_weight.detach(), layer.ln_bias.detach()).sum()
    grads = torch.autograd.grad(loss, leaves)
    expected = FastWeights(*(w.detach() - g for w, g in zip(leaves, grads, strict=True)))

    with torch.no_grad():
        got, _ = layer.update(problem, state.fast)
    for name, e, g in zip(FastWeights._fields, expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12, msg=f"gd step of {name}")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hf_cg_newton_lowers_the_minibatch_loss_at_least_as_much_as_gd(seed: int) -> None:
    """The Newton solver's whole point: a full Gauss-Newton step on the mini-batch beats gd's on it."""
    gd_layer = small_layer("gd", dtype=torch.float32)
    hf_layer = small_layer("hf_cg_newton", dtype=torch.float32)
    hf_layer.load_state_dict(gd_layer.state_dict())
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 32, generator=gen)
    state = gd_layer.init_state()
    ln = (gd_layer.ln_weight, gd_layer.ln_bias)
    with torch.no_grad():
        problem = gd_layer.inner_problem(x, state)
        before = problem.loss(state.fast, *ln).sum().item()
        after_gd = problem.loss(gd_layer.update(problem, state.fast)[0], *ln).sum().item()
        after_hf = problem.loss(hf_layer.update(problem, state.fast)[0], *ln).sum().item()
    assert after_gd < before, f"gd did not lower the loss: {before:.6g} -> {after_gd:.6g}"
    assert after_hf <= after_gd, (
        f"hf_cg_newton lowered the loss less than gd: before {before:.6g}, gd {after_gd:.6g}, "
        f"hf_cg_newton {after_hf:.6g}"
    )


def test_conjugate_gradient_solves_a_small_spd_system_per_head() -> None:
    """With enough iterations and no early stop, CG reaches G⁻¹g for every (sample, head) independently."""
    gen = torch.Generator().manual_seed(5)
    b, h, k = 2, 3, 4
    a = torch.randn(b, h, k, k, generator=gen, dtype=torch.float64)
    g_mat = a @ a.transpose(-1, -2) + 0.5 * torch.eye(k, dtype=torch.float64)  # (B, H, k, k) SPD
    rhs = torch.randn(b, h, k, 1, generator=gen, dtype=torch.float64)
    zero = torch.zeros(b, h, 1, 1, dtype=torch.float64)

    def as_fw(col: torch.Tensor) -> FastWeights:
        return FastWeights(col, zero, zero, zero)

    def gvp(v: FastWeights) -> FastWeights:
        return as_fw(g_mat @ v.w1)

    x, info = conjugate_gradient(gvp, as_fw(rhs), max_iter=k, tol=0.0, stop_fraction=1.0)
    torch.testing.assert_close(x.w1, torch.linalg.solve(g_mat, rhs), rtol=1e-6, atol=1e-8)
    assert info.iterations <= k


def test_phi_stop_rule_keeps_the_best_iterate_and_the_stop_fraction_ends_early() -> None:
    gen = torch.Generator().manual_seed(6)
    b, h, n, p, m = 1, 8, 32, 4, 8
    u = torch.nn.functional.normalize(torch.randn(b, h, n, p, generator=gen), dim=-1)
    target = torch.randn(b, h, n, p, generator=gen)
    weight = torch.full((b, h, n), 1.0 / n)
    w = random_fast(b, h, p, m, dtype=torch.float32, gen=gen)
    ln = (torch.ones(h, 1, p), torch.zeros(h, 1, p))
    grad, cache = loss_gradient(u, target, weight, w, *ln)

    def gvp(v: FastWeights) -> FastWeights:
        return gauss_newton_product(u, w, cache, weight, v)

    # the first step always counts as growth (φ rises from 0); with a huge tolerance every head stops at
    # the second, which it still keeps when φ grew, and the solve ends there
    _, info1 = conjugate_gradient(gvp, grad, max_iter=8, tol=1e9, stop_fraction=0.75)
    assert info1.iterations == 2 and info1.stopped_fraction == 1.0
    # φ of the returned iterate is the best seen, and more iterations never lower it
    x8, info8 = conjugate_gradient(gvp, grad, max_iter=8, tol=0.0, stop_fraction=1.0)
    phi = fw_dot(x8, grad) / fw_dot(x8, gvp(x8)).sqrt()
    torch.testing.assert_close(phi, info8.phi, rtol=1e-3, atol=1e-5)
    assert bool((info8.phi >= info1.phi * (1 - 1e-5)).all())


def test_every_optimiser_is_differentiable_in_the_slow_weights() -> None:
    for optimizer in ("gd", "hf_cg", "hf_cg_newton"):
        layer = small_layer(optimizer, dtype=torch.float64)
        gen = torch.Generator().manual_seed(7)
        x = torch.randn(1, 32, 32, generator=gen, dtype=torch.float64)
        y, _ = layer(x, layer.init_state())
        y.pow(2).sum().backward()
        for name in ("qkv", "lr_weight", "w1_init", "ln_weight", "out_proj", "gate"):
            grad = getattr(layer, name).grad
            assert grad is not None and torch.isfinite(grad).all(), f"{optimizer}: no gradient for {name}"
            assert grad.abs().sum() > 0, f"{optimizer}: zero gradient for {name}"


def test_gd_step_passes_gradcheck_through_the_inner_loop() -> None:
    gen = torch.Generator().manual_seed(8)
    b, h, n, p, m = 1, 2, 5, 3, 4
    u = torch.randn(b, h, n, p, generator=gen, dtype=torch.float64)
    target = torch.randn(b, h, n, p, generator=gen, dtype=torch.float64)
    w = random_fast(b, h, p, m, dtype=torch.float64, gen=gen)
    weight = torch.rand(b, h, n, generator=gen, dtype=torch.float64, requires_grad=True)
    ln_b = torch.zeros(h, 1, p, dtype=torch.float64)

    def step(weight: torch.Tensor, ln_w: torch.Tensor) -> torch.Tensor:
        return gd_update(u, target, weight, w, ln_w, ln_b).w1

    ln_w = (torch.rand(h, 1, p, generator=gen, dtype=torch.float64) + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(step, (weight, ln_w))


def test_bfloat16_update_runs_and_stays_close_to_float32() -> None:
    gen = torch.Generator().manual_seed(9)
    x = torch.nn.functional.normalize(torch.randn(1, 16, 32, generator=gen), dim=-1)
    ref_layer = small_layer("hf_cg_newton", dtype=torch.float32)
    bf_layer = small_layer("hf_cg_newton", dtype=torch.bfloat16)
    with torch.no_grad():
        y32, _ = ref_layer(x, ref_layer.init_state())
        y16, _ = bf_layer(x.bfloat16(), bf_layer.init_state())
    assert y16.dtype == torch.bfloat16 and torch.isfinite(y16.float()).all()
    err = ((y16.float() - y32).norm() / y32.norm()).item()
    assert err < 0.05, f"bfloat16 read-out is {err:.3f} away from float32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_update_matches_cpu(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(10)
    x = torch.nn.functional.normalize(torch.randn(1, 64, 32, generator=gen), dim=-1)
    cpu = small_layer("hf_cg_newton", dtype=torch.float32)
    gpu = small_layer("hf_cg_newton", dtype=dtype).cuda()
    with torch.no_grad():
        y_cpu, _ = cpu(x, cpu.init_state())
        y_gpu, _ = gpu(x.cuda().to(dtype), gpu.init_state())
    err = ((y_gpu.float().cpu() - y_cpu).norm() / y_cpu.norm()).item()
    assert err < (1e-4 if dtype == torch.float32 else 0.05), f"CUDA {dtype} differs from CPU by {err:.3g}"
