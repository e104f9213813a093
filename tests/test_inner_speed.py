"""Issue 17's solver speed-up changes no number: the packed solvers against the formulas they replaced.

The reference below is the inner loop as it was before the speed-up (one tensor per piece of W, every vector
op per piece, gelu' recomputed in every G·v), written out here in float64. The updates of gd, hf_cg and
hf_cg_newton, their CG iteration counts and φ, and the gradients that training takes through them (with
respect to the keys, targets, learning rates, LayerNorm and fast weights, and through a whole `TTTLayer`
to θ) must equal the reference's to 1e-10.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from vsalmonn.memory_store import inner, ttt
from vsalmonn.memory_store.inner import (
    FastWeights,
    gauss_newton_product,
    gd_update,
    hf_cg_update,
    mlp_forward,
    newton_cg_update,
)
from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer

F64 = torch.float64
TINY = 1e-30
Fw = FastWeights


# ----- the reference: the pre-speed-up formulas ---------------------------------------------------------
def ref_dot(a: Fw, b: Fw) -> torch.Tensor:
    return sum((x * y).sum(dim=(-2, -1)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def ref_add(a: Fw, b: Fw, s: torch.Tensor | float) -> Fw:
    if isinstance(s, torch.Tensor):
        s = s[..., None, None]
    return Fw(*(x + s * y for x, y in zip(a, b, strict=True)))


def ref_where(mask: torch.Tensor, a: Fw, b: Fw) -> Fw:
    return Fw(*(torch.where(mask[..., None, None], x, y) for x, y in zip(a, b, strict=True)))


def ref_forward(u: torch.Tensor, w: Fw, ln_w: torch.Tensor, ln_b: torch.Tensor, gelu: str) -> tuple[Any, ...]:
    z1 = u @ w.w1 + w.b1
    act = F.gelu(z1, approximate=gelu)
    z2 = act @ w.w2 + w.b2
    zc = z2 - z2.mean(dim=-1, keepdim=True)
    inv_std = torch.rsqrt((zc * zc).mean(dim=-1, keepdim=True) + inner.LN_EPS)
    xhat = zc * inv_std
    return u + ln_w * xhat + ln_b, z1, act, xhat, inv_std


def ref_dgelu(grad: torch.Tensor, z1: torch.Tensor, gelu: str) -> torch.Tensor:
    return torch.ops.aten.gelu_backward(grad, z1, approximate=gelu)


def ref_backward(
    u: torch.Tensor, w: Fw, z1: torch.Tensor, act: torch.Tensor, g_z2: torch.Tensor, gelu: str
) -> Fw:
    g_z1 = ref_dgelu(g_z2 @ w.w2.transpose(-1, -2), z1, gelu)
    return Fw(
        u.transpose(-1, -2) @ g_z1,
        g_z1.sum(-2, keepdim=True),
        act.transpose(-1, -2) @ g_z2,
        g_z2.sum(-2, keepdim=True),
    )


def ref_gradient(u, target, weight, w, ln_w, ln_b, gelu):  # type: ignore[no-untyped-def]
    out, z1, act, xhat, inv_std = ref_forward(u, w, ln_w, ln_b, gelu)
    g_xhat = weight[..., None] * (out - target) * ln_w
    g_z2 = inv_std * (g_xhat - g_xhat.mean(-1, keepdim=True) - xhat * (g_xhat * xhat).mean(-1, keepdim=True))
    return ref_backward(u, w, z1, act, g_z2, gelu), (z1, act)


def ref_gvp(u, w, z1, act, weight, v, gelu):  # type: ignore[no-untyped-def]
    dz1 = ref_dgelu(u @ v.w1 + v.b1, z1, gelu)
    dz2 = (act @ v.w2 + v.b2) + dz1 @ w.w2
    return ref_backward(u, w, z1, act, dz2 if weight is None else weight[..., None] * dz2, gelu)


def ref_newton_cg(gvp: Callable[[Fw], Fw], g: Fw, *, max_iter: int, tol: float, stop_fraction: float):  # type: ignore[no-untyped-def]
    x = Fw(*(torch.zeros_like(t) for t in g))
    gx = Fw(*(torch.zeros_like(t) for t in g))
    r, p = g, g
    rr = ref_dot(r, r)
    active = rr > TINY
    phi_best = torch.zeros_like(rr)
    it = 0
    for _ in range(max_iter):
        it += 1
        gp = gvp(p)
        pgp = ref_dot(p, gp)
        usable = active & (pgp > TINY)
        alpha = torch.where(usable, rr / pgp.clamp_min(TINY), torch.zeros_like(rr))
        x_new, gx_new = ref_add(x, p, alpha), ref_add(gx, gp, alpha)
        phi = ref_dot(x_new, g) / ref_dot(x_new, gx_new).clamp_min(TINY).sqrt()
        accept = usable & (phi > phi_best)
        x, gx = ref_where(accept, x_new, x), ref_where(accept, gx_new, gx)
        active = accept & (phi > phi_best * (1.0 + tol))
        phi_best = torch.where(accept, phi, phi_best)
        if 1.0 - active.float().mean().item() >= stop_fraction:
            break
        r = ref_add(r, gp, -alpha)
        rr_new = ref_dot(r, r)
        beta = torch.where(active, rr_new / rr.clamp_min(TINY), torch.zeros_like(rr))
        p, rr = ref_add(r, p, beta), rr_new
    return x, it, phi_best


def ref_paper_cg(gvp: Callable[[Fw], Fw], g: Fw, *, max_iter: int, stop_fraction: float):  # type: ignore[no-untyped-def]
    x = Fw(*(torch.zeros_like(t) for t in g))
    r, p = g, g
    rr = ref_dot(r, r)
    active = rr > TINY
    xg, rsum, phi = (torch.zeros_like(rr) for _ in range(3))
    zero = torch.zeros_like(rr)
    it = 0
    for k in range(max_iter):
        it += 1
        gp = gvp(p)
        pgp = ref_dot(p, gp)
        usable = active & (pgp > TINY)
        alpha = torch.where(usable, rr / pgp.clamp_min(TINY), zero)
        xg_new = xg + alpha * ref_dot(p, g)
        rsum_new = rsum + torch.where(usable, rr, zero)
        phi_new = xg_new / rsum_new.clamp_min(TINY).sqrt()
        accept = usable if k == 0 else usable & (phi_new > phi)
        alpha = torch.where(accept, alpha, zero)
        x = ref_add(x, p, alpha)
        xg, rsum = torch.where(accept, xg_new, xg), torch.where(accept, rsum_new, rsum)
        phi = torch.where(accept, phi_new, phi)
        active = accept
        if 1.0 - active.float().mean().item() >= stop_fraction:
            break
        r = ref_add(r, gp, -alpha)
        rr_new = ref_dot(r, r)
        beta = torch.where(active, rr_new / rr.clamp_min(TINY), zero)
        p = ref_add(r, p, beta)
        rr = torch.where(active, rr_new, rr)
    return x, it, phi


def ref_update(solver: str, u, target, weight, w, ln_w, ln_b, gelu, **kw):  # type: ignore[no-untyped-def]
    """(new fast weights, CG iterations or None, φ or None) by the reference formulas."""
    grad, (z1, act) = ref_gradient(u, target, weight, w, ln_w, ln_b, gelu)
    if solver == "gd":
        return ref_add(w, grad, -1.0), None, None
    if solver == "hf_cg":
        delta, it, phi = ref_paper_cg(
            lambda v: ref_gvp(u, w, z1, act, None, v, gelu),
            grad,
            max_iter=kw["max_iter"],
            stop_fraction=kw["stop_fraction"],
        )
        return ref_add(w, delta, -kw["step_scale"]), it, phi
    delta, it, phi = ref_newton_cg(
        lambda v: ref_gvp(u, w, z1, act, weight, v, gelu),
        grad,
        max_iter=kw["max_iter"],
        tol=kw["tol"],
        stop_fraction=kw["stop_fraction"],
    )
    return ref_add(w, delta, -1.0), it, phi


def new_update(solver: str, u, target, weight, w, ln_w, ln_b, gelu, **kw):  # type: ignore[no-untyped-def]
    if solver == "gd":
        return gd_update(u, target, weight, w, ln_w, ln_b, gelu=gelu), None, None
    if solver == "hf_cg":
        new, info = hf_cg_update(u, target, weight, w, ln_w, ln_b, gelu=gelu, **kw)
    else:
        new, info = newton_cg_update(u, target, weight, w, ln_w, ln_b, gelu=gelu, **kw)
    return new, info.iterations, info.phi


# ----- problems -----------------------------------------------------------------------------------------
KW = {
    "gd": {},
    "hf_cg": {"max_iter": 5, "stop_fraction": 0.75, "step_scale": 300.0},
    "hf_cg_newton": {"max_iter": 5, "tol": 1e-3, "stop_fraction": 0.75},
}


def problem(seed: int, *, b: int = 2, h: int = 3, n: int = 24, p: int = 5, m: int = 10) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64) * scale

    return {
        "u": F.normalize(r(b, h, n, p), dim=-1),
        "target": r(b, h, n, p),
        "weight": (torch.rand(b, h, n, generator=gen, dtype=F64) + 0.1) / n,
        "w": Fw(
            r(b, h, p, m), r(b, h, 1, m, scale=0.3), r(b, h, m, p, scale=m**-0.5), r(b, h, 1, p, scale=0.3)
        ),
        "ln_w": torch.rand(h, 1, p, generator=gen, dtype=F64) + 0.5,
        "ln_b": r(h, 1, p, scale=0.1),
    }


def max_diff(a: Fw, b: Fw) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


# ----- tests --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gelu", ["none", "tanh"])
@pytest.mark.parametrize("solver", ["gd", "hf_cg", "hf_cg_newton"])
def test_each_update_equals_the_formulas_it_replaced(solver: str, gelu: str) -> None:
    for seed in (1, 2):
        pr = problem(seed)
        args = (pr["u"], pr["target"], pr["weight"], pr["w"], pr["ln_w"], pr["ln_b"], gelu)
        want, want_it, want_phi = ref_update(solver, *args, **KW[solver])
        got, got_it, got_phi = new_update(solver, *args, **KW[solver])
        assert max_diff(got, want) < 1e-10, f"{solver}: the update differs from the reference"
        assert max_diff(want, pr["w"]) > 1e-3, "the step must move W for the comparison to mean anything"
        assert got_it == want_it
        if solver != "gd":
            assert want_it >= 2, "CG must run past its first iteration for the comparison to mean anything"
            assert (got_phi - want_phi).abs().max().item() < 1e-10


@pytest.mark.parametrize("weighted", [True, False])
def test_the_gauss_newton_product_equals_the_formulas_it_replaced(weighted: bool) -> None:
    pr = problem(3)
    u, w = pr["u"], pr["w"]
    v = problem(4)["w"]
    _, cache = mlp_forward(u, w, pr["ln_w"], pr["ln_b"])
    weight = pr["weight"] if weighted else None
    _, z1, act, _, _ = ref_forward(u, w, pr["ln_w"], pr["ln_b"], "none")
    want = ref_gvp(u, w, z1, act, weight, v, "none")
    got = gauss_newton_product(u, w, cache, weight, v)
    assert max_diff(got, want) < 1e-12
    assert all(g.shape == e.shape for g, e in zip(got, want, strict=True))


@pytest.mark.parametrize("solver", ["gd", "hf_cg", "hf_cg_newton"])
def test_the_gradients_through_each_update_equal_the_replaced_ones(solver: str) -> None:
    """Training differentiates a loss of the updated W: every input's gradient must be the reference's."""
    pr = problem(5, b=1, h=2, n=12, p=4, m=6)
    names = ("u", "target", "weight", "ln_w", "ln_b")

    def grads(update: Callable[..., Any]) -> list[torch.Tensor]:
        leaves = {k: pr[k].clone().requires_grad_(True) for k in names}
        w = Fw(*(t.clone().requires_grad_(True) for t in pr["w"]))
        new, _, _ = update(
            solver, *(leaves[k] for k in names[:3]), w, leaves["ln_w"], leaves["ln_b"], "none", **KW[solver]
        )
        loss = sum((t * t).sum() + t.sum() for t in new)
        out = torch.autograd.grad(loss, [*leaves.values(), *w])
        return list(out)

    want, got = grads(ref_update), grads(new_update)
    for name, g, e in zip([*names, *Fw._fields], got, want, strict=True):
        assert e.abs().max() > 0, f"{solver}: the reference has no gradient for {name}"
        assert (g - e).abs().max().item() < 1e-10 * max(1.0, e.abs().max().item()), f"{solver}: d/d{name}"


@pytest.mark.parametrize("solver", ["gd", "hf_cg", "hf_cg_newton"])
def test_a_layer_trains_theta_as_it_did(solver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """θ's gradients through two mini-batches of a float64 `TTTLayer` equal those of the reference solver."""
    cfg = TTTConfig(
        dim=16, heads=2, mlp_ratio=2, mini_batch=12, long_span_lag=6, optimizer=solver, cg_max_iter=4
    )
    gen = torch.Generator().manual_seed(6)
    x = F.normalize(torch.randn(1, 24, 16, generator=gen, dtype=F64), dim=-1)

    def theta_grads() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        layer = TTTLayer(cfg).double()
        pgen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=pgen, dtype=F64))
        y, _ = layer(x, layer.init_state())
        y.pow(2).sum().backward()
        return y.detach(), {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}

    y_new, new = theta_grads()

    def as_ref(name: str) -> Callable[..., Any]:
        def call(u, target, weight, w, ln_w, ln_b, *, gelu="none", **kw):  # type: ignore[no-untyped-def]
            out, it, phi = ref_update(name, u, target, weight, w, ln_w, ln_b, gelu, **kw)
            if name == "gd":
                return out
            return out, inner.CGInfo(iterations=it, stopped_fraction=0.0, phi=phi)

        return call

    monkeypatch.setattr(ttt, "gd_update", as_ref("gd"))
    monkeypatch.setattr(ttt, "hf_cg_update", as_ref("hf_cg"))
    monkeypatch.setattr(ttt, "newton_cg_update", as_ref("hf_cg_newton"))
    y_ref, ref = theta_grads()
    assert (y_new - y_ref).abs().max().item() < 1e-10
    assert set(new) == set(ref) and "w1_init" in new and "qkv" in new
    for name, e in ref.items():
        assert (new[name] - e).abs().max().item() < 1e-10 * max(1.0, e.abs().max().item()), name
