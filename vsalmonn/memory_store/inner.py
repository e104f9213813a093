"""The inner loop of the TTT memory: the fast MLP, its loss gradient, the Gauss-Newton product and the
inner optimisers (`gd`, `hf_cg` and `hf_cg_newton`; docs/memory.md sets them side by side).

Everything here is a pure function of tensors with leading dimensions (B, H) — stream sample and head — so
that all heads of all samples are one batched computation and nothing loops over heads in Python. The
gradient and the Gauss-Newton product are written out by hand rather than taken from autograd because they
run on every mini-batch at inference (under no_grad); written with ordinary differentiable torch operations,
they still let autograd train the slow weights through the inner loop.

Shapes: n tokens in the mini-batch, p = head width, m = hidden width of the fast MLP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

LN_EPS = 1e-6
_TINY = 1e-30


class FastWeights(NamedTuple):
    """The fast weights W = (W1, b1, W2, b2) of every head's two-layer MLP."""

    w1: Tensor  # (B, H, p, m)
    b1: Tensor  # (B, H, 1, m)
    w2: Tensor  # (B, H, m, p)
    b2: Tensor  # (B, H, 1, p)


def fw_dot(a: FastWeights, b: FastWeights) -> Tensor:
    """Inner product per (sample, head), accumulated in float32 so bfloat16 weights keep CG stable."""
    total = None
    for x, y in zip(a, b, strict=True):
        acc = torch.promote_types(x.dtype, torch.float32)
        part = (x.to(acc) * y.to(acc)).sum(dim=(-2, -1))  # (B, H)
        total = part if total is None else total + part
    assert total is not None
    return total


def fw_add(a: FastWeights, b: FastWeights, scale: Tensor | float = 1.0) -> FastWeights:
    """a + scale·b, with `scale` either a number or one value per (sample, head) of shape (B, H)."""
    if isinstance(scale, Tensor):
        s = scale[..., None, None]  # (B, H, 1, 1)
        return FastWeights(*(x + s.to(x.dtype) * y for x, y in zip(a, b, strict=True)))
    return FastWeights(*(x + scale * y for x, y in zip(a, b, strict=True)))


def fw_where(mask: Tensor, a: FastWeights, b: FastWeights) -> FastWeights:
    """Per (sample, head): a where mask (B, H) is true, else b."""
    m = mask[..., None, None]  # (B, H, 1, 1)
    return FastWeights(*(torch.where(m, x, y) for x, y in zip(a, b, strict=True)))


def fw_zeros_like(a: FastWeights) -> FastWeights:
    return FastWeights(*(torch.zeros_like(x) for x in a))


def layer_norm(x: Tensor, eps: float = LN_EPS) -> Tensor:
    """LayerNorm over the last dimension without affine parameters."""
    mu = x.mean(dim=-1, keepdim=True)
    xc = x - mu
    return xc * torch.rsqrt((xc * xc).mean(dim=-1, keepdim=True) + eps)


def _affine(bias: Tensor, a: Tensor, w: Tensor) -> Tensor:
    """bias + a @ w over (B, H) batches in one fused kernel; the (n, m)-sized passes dominate the cost."""
    b, h = a.shape[:2]
    out = torch.baddbmm(bias.flatten(0, 1), a.flatten(0, 1), w.flatten(0, 1))  # (B·H, n, ·)
    return out.view(b, h, *out.shape[1:])


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """a @ b over (B, H) batches as one bmm; `b` may be a strided view (a packed CG vector's piece)."""
    bh, h = a.shape[:2]
    out = torch.bmm(a.flatten(0, 1), b.flatten(0, 1))  # (B·H, ·, ·)
    return out.view(bh, h, *out.shape[1:])


def _mm_tn(a: Tensor, b: Tensor) -> Tensor:
    """aᵀ @ b over (B, H) batches; transposing the 3-D view keeps bmm from copying `a`."""
    bh, h = a.shape[:2]
    out = torch.bmm(a.flatten(0, 1).transpose(1, 2), b.flatten(0, 1))  # (B·H, ·, ·)
    return out.view(bh, h, *out.shape[1:])


def _mm_nt(a: Tensor, b: Tensor) -> Tensor:
    """a @ bᵀ over (B, H) batches, without copying `b`."""
    bh, h = a.shape[:2]
    out = torch.bmm(a.flatten(0, 1), b.flatten(0, 1).transpose(1, 2))  # (B·H, ·, ·)
    return out.view(bh, h, *out.shape[1:])


# The GELU of the fast MLP, as torch spells it: "none" is the exact erf form, "tanh" the approximation the
# paper's release uses (`TTTConfig.inner_gelu`). Forward pass and gelu' below must use the same one.
Gelu = Literal["none", "tanh"]


def _gelu_chain(grad: Tensor, z: Tensor, approximate: Gelu = "none") -> Tensor:
    """grad ⊙ gelu'(z) in one pass (ATen's GELU backward, itself differentiable), for the same GELU."""
    return torch.ops.aten.gelu_backward(grad, z, approximate=approximate)


def _gelu_chain_into(grad: Tensor, z: Tensor, approximate: Gelu = "none") -> Tensor:
    """`_gelu_chain` written into `grad` (a fresh product nobody else holds) when no gradient is recorded,
    which spares an (n, m)-sized allocation and its first write."""
    if _recording(grad, z):
        return _gelu_chain(grad, z, approximate)
    return torch.ops.aten.gelu_backward.grad_input(grad, z, approximate=approximate, grad_input=grad)


@dataclass
class MLPCache:
    """What the forward pass keeps for the backward pass and for Gauss-Newton products."""

    z1: Tensor  # (B, H, n, m) pre-activation
    act: Tensor  # (B, H, n, m) gelu(z1)
    xhat: Tensor  # (B, H, n, p) normalised pre-LN output
    inv_std: Tensor  # (B, H, n, 1)
    gelu: Gelu = "none"  # which GELU made `act`, so that every gelu' taken from this cache matches it
    u_aug: Tensor | None = None  # (B, H, n, p+1) [u, 1], for the b1 row of [W1; b1]; None if made elsewhere


def with_one(u: Tensor) -> Tensor:
    """[u, 1] (B, H, n, p+1): one bmm by [W1; b1] then gives u·W1 + b1 (and its transpose both gradients)
    without the bias broadcast that baddbmm copies into every (n, m)-sized output, or a sum over n."""
    return torch.cat([u, u.new_ones(()).expand(*u.shape[:-1], 1)], dim=-1)  # (B, H, n, p+1)


def mlp_forward(
    u: Tensor,
    w: FastWeights,
    ln_weight: Tensor,
    ln_bias: Tensor,
    *,
    eps: float = LN_EPS,
    gelu: Gelu = "none",
) -> tuple[Tensor, MLPCache]:
    """f(u; W) = u + LN(W2·gelu(W1·u + b1) + b2), per head; returns the output and the cache."""
    u_aug = with_one(u)  # (B, H, n, p+1)
    z1 = _mm(u_aug, torch.cat([w.w1, w.b1], dim=-2))  # (B, H, n, m)
    act = F.gelu(z1, approximate=gelu)  # (B, H, n, m)
    z2 = _affine(w.b2, act, w.w2)  # (B, H, n, p)
    # Two-pass moments: torch.var_mean over rows of p = 48 took 9x as long on this CPU, and
    # native_layer_norm's 1/σ carries no gradient (training differentiates through the cache's inv_std).
    zc = z2 - z2.mean(dim=-1, keepdim=True)  # (B, H, n, p)
    inv_std = torch.rsqrt((zc * zc).mean(dim=-1, keepdim=True) + eps)  # (B, H, n, 1)
    xhat = zc * inv_std  # (B, H, n, p)
    out = torch.addcmul(u + ln_bias, ln_weight, xhat)  # (B, H, n, p)
    return out, MLPCache(z1=z1, act=act, xhat=xhat, inv_std=inv_std, gelu=gelu, u_aug=u_aug)


def backward_from_preln(u: Tensor, w: FastWeights, cache: MLPCache, g_z2: Tensor) -> FastWeights:
    """Pull a cotangent of the pre-LN output Z2 (B, H, n, p) back to the fast weights."""
    g_w2 = _mm_tn(cache.act, g_z2)  # (B, H, m, p)
    g_b2 = g_z2.sum(dim=-2, keepdim=True)  # (B, H, 1, p)
    g_z1 = _gelu_chain(_mm_nt(g_z2, w.w2), cache.z1, cache.gelu)  # (B, H, n, m)
    g_w1 = _mm_tn(u, g_z1)  # (B, H, p, m)
    g_b1 = g_z1.sum(dim=-2, keepdim=True)  # (B, H, 1, m)
    return FastWeights(g_w1, g_b1, g_w2, g_b2)


def loss_gradient(
    u: Tensor,
    target: Tensor,
    weight: Tensor,
    w: FastWeights,
    ln_weight: Tensor,
    ln_bias: Tensor,
    *,
    gelu: Gelu = "none",
) -> tuple[FastWeights, MLPCache]:
    """Gradient of Σ_i weight_i · ½‖f(u_i; W) − target_i‖² with respect to W.

    `weight` (B, H, n) already holds η_i / |b| and the long-span factor; the caller folds the long-span term
    into `target`, which leaves the gradient unchanged (the two losses differ by a constant in W).
    """
    g_z2, cache = _preln_cotangent(u, target, weight, w, ln_weight, ln_bias, gelu=gelu)
    return backward_from_preln(u, w, cache, g_z2), cache


def _preln_cotangent(
    u: Tensor,
    target: Tensor,
    weight: Tensor,
    w: FastWeights,
    ln_weight: Tensor,
    ln_bias: Tensor,
    *,
    gelu: Gelu,
    u_aug: Tensor | None = None,
) -> tuple[Tensor, MLPCache]:
    """The loss's cotangent at the pre-LN output Z2 (B, H, n, p), and the forward cache; `u_aug`: [u, 1]
    if the caller has it already (used only when no gradient is recorded)."""
    if not _recording(u, target, weight, *w, ln_weight, ln_bias):
        return _preln_cotangent_inference(u, target, weight, w, ln_weight, ln_bias, gelu=gelu, u_aug=u_aug)
    out, cache = mlp_forward(u, w, ln_weight, ln_bias, gelu=gelu)
    g_y = weight[..., None] * (out - target)  # (B, H, n, p)
    g_xhat = g_y * ln_weight  # (B, H, n, p)
    g_z2 = cache.inv_std * (
        g_xhat
        - g_xhat.mean(dim=-1, keepdim=True)
        - cache.xhat * (g_xhat * cache.xhat).mean(dim=-1, keepdim=True)
    )  # (B, H, n, p)
    return g_z2, cache


def _recording(*tensors: Tensor) -> bool:
    """Whether autograd records ops on these tensors (training θ through the inner loop)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _preln_cotangent_inference(
    u: Tensor,
    target: Tensor,
    weight: Tensor,
    w: FastWeights,
    ln_weight: Tensor,
    ln_bias: Tensor,
    *,
    gelu: Gelu,
    u_aug: Tensor | None = None,
) -> tuple[Tensor, MLPCache]:
    """`_preln_cotangent` when no gradient is recorded: the same formulas in fewer passes over (n, p).

    The LayerNorm inside f is ATen's native one (its moments and 1/σ in one kernel, the same two-pass
    formula), and the cotangent through it is ATen's LayerNorm backward, rstd·(g − mean g − x̂·mean(g x̂)),
    one kernel instead of nine; out − target is formed in place without `out`, which only this difference
    needs. Every (n, p)-sized pass costs about as much as its memory traffic, so fewer passes are what
    counts (docs/benchmarks.md, "Issue 17: gd's own cost"). Neither ATen kernel's 1/σ carries a gradient
    for training, hence the differentiable formulas when autograd records.
    """
    p = u.shape[-1]
    if u_aug is None:
        u_aug = with_one(u)  # (B, H, n, p+1)
    z1 = _mm(u_aug, torch.cat([w.w1, w.b1], dim=-2))  # (B, H, n, m)
    act = F.gelu(z1, approximate=gelu)  # (B, H, n, m)
    z2 = _affine(w.b2, act, w.w2)  # (B, H, n, p)
    xhat, mean, inv_std = torch.native_layer_norm(z2, (p,), None, None, LN_EPS)  # (B, H, n, p), (B, H, n, 1)
    # g_x̂ = weight ⊙ γ ⊙ (f(u) − target), f(u) = u + β + γ ⊙ x̂
    g_xhat = torch.sub(u, target).add_(ln_bias).addcmul_(ln_weight, xhat)  # (B, H, n, p)
    g_xhat.mul_(weight[..., None]).mul_(ln_weight)  # (B, H, n, p)
    g_z2 = torch.ops.aten.native_layer_norm_backward(
        g_xhat, z2, (p,), mean, inv_std, None, None, (True, False, False)
    )[0]  # (B, H, n, p)
    return g_z2, MLPCache(z1=z1, act=act, xhat=xhat, inv_std=inv_std, gelu=gelu, u_aug=u_aug)


# ----- the packed layout of the CG solvers ---------------------------------------------------------------
# Each (sample, head)'s W travels through CG as one flat vector (B, H, N) in the order of `FastWeights`:
# [W1; b1] as a (p+1, m) block, then [W2; b2] as (m+1, p), N = (p+1)·m + (m+1)·p. A CG iteration's dot
# products, axpys and selections are then one op each instead of one to three per piece: every op on a
# tensor past torch's grain size (32,768 elements) is a parallel region whose barrier costs most on a
# loaded 2-core machine (docs/benchmarks.md, "Issue 17: solver speed"). [W1; b1] is also what the
# augmented keys [u, 1] multiply, so W1 and b1 go in and out of G in one bmm each.


def _pack(w: FastWeights) -> Tensor:
    """W as one flat vector (B, H, N) per (sample, head)."""
    return torch.cat([x.flatten(-2) for x in w], dim=-1)  # (B, H, N)


def _unpack(flat: Tensor, like: FastWeights) -> FastWeights:
    """Views of a flat vector (B, H, N) as pieces shaped like `like`'s (no copy)."""
    sizes = [x.shape[-2] * x.shape[-1] for x in like]
    return FastWeights(
        *(part.unflatten(-1, x.shape[-2:]) for part, x in zip(flat.split(sizes, dim=-1), like, strict=True))
    )


def _flat_dot(a: Tensor, b: Tensor) -> Tensor:
    """aᵀb per (sample, head) of flat vectors (B, H, N), accumulated in at least float32."""
    acc = torch.promote_types(a.dtype, torch.float32)
    return (a.to(acc) * b.to(acc)).sum(dim=-1)  # (B, H); a bmm of (1, N) by (N, 1) took 15x as long


def _flat_add(a: Tensor, b: Tensor, scale: Tensor | float) -> Tensor:
    """a + scale·b for flat vectors, `scale` a number or one value per (sample, head) (B, H)."""
    if isinstance(scale, Tensor):
        return torch.addcmul(a, scale[..., None].to(a.dtype), b)  # (B, H, N)
    return torch.add(a, b, alpha=scale)  # (B, H, N)


def _flat_where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask[..., None], a, b)  # (B, H, N)


def _times(a: Tensor, b: Tensor) -> Tensor:
    """a ⊙ b, written into `a` (a fresh product nobody else holds) when no gradient is being recorded: the
    (n, m)-sized products are memory-bound, and reusing a's buffer spares a 6 MB allocation per call."""
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return a * b
    return a.mul_(b)


class _GaussNewton:
    """What every G·v of one update shares, computed once: gelu'(Z1), the augmented keys, the weights.

    Written out by hand (no autograd) from the same formulas as `backward_from_preln`, so it stays an
    ordinary differentiable torch computation for training θ. gelu'(Z1) taken once replaces the two GELU
    backward passes each product made (the exact one evaluates erf and exp per element).
    """

    def __init__(
        self, u: Tensor, w: FastWeights, cache: MLPCache, weight: Tensor | None, *, own_cache: bool = False
    ) -> None:
        """`own_cache`: the cache is `mlp_forward(u, w, …)`'s with this very u, so its [u, 1] is reused."""
        self.p, self.m = w.w1.shape[-2:]
        reuse = own_cache and cache.u_aug is not None
        self.u_aug = cache.u_aug if reuse else with_one(u)  # (B, H, n, p+1) keys with a 1 for b1
        self.dgelu = _gelu_chain(u.new_ones(()).expand_as(cache.z1), cache.z1, cache.gelu)  # (B, H, n, m)
        self.act = cache.act  # (B, H, n, m)
        self.w2 = w.w2  # (B, H, m, p)
        self.weight = None if weight is None else weight[..., None]  # (B, H, n, 1)

    def pull_back(self, g_z2: Tensor) -> Tensor:
        """Jᵀ g_z2 for a cotangent of Z2 (B, H, n, p), packed (B, H, N)."""
        g_z1 = _times(_mm_nt(g_z2, self.w2), self.dgelu)  # (B, H, n, m)
        g_w1b1 = _mm_tn(self.u_aug, g_z1)  # (B, H, p+1, m)
        g_w2 = _mm_tn(self.act, g_z2)  # (B, H, m, p)
        g_b2 = g_z2.sum(dim=-2)  # (B, H, p)
        return torch.cat([g_w1b1.flatten(-2), g_w2.flatten(-2), g_b2], dim=-1)  # (B, H, N)

    def product(self, v: Tensor) -> Tensor:
        """G·v for a packed direction v (B, H, N): pushed forward to dZ2 and pulled back again."""
        p, m = self.p, self.m
        v_w1b1 = v[..., : (p + 1) * m].unflatten(-1, (p + 1, m))  # (B, H, p+1, m)
        v_w2b2 = v[..., (p + 1) * m :].unflatten(-1, (m + 1, p))  # (B, H, m+1, p)
        dz1 = _times(_mm(self.u_aug, v_w1b1), self.dgelu)  # (B, H, n, m) (K dW1 + db1) ⊙ gelu'(Z1)
        dz2 = _affine(_affine(v_w2b2[..., m:, :], self.act, v_w2b2[..., :m, :]), dz1, self.w2)  # (B, H, n, p)
        return self.pull_back(dz2 if self.weight is None else self.weight * dz2)


def gauss_newton_product(
    u: Tensor, w: FastWeights, cache: MLPCache, weight: Tensor | None, v: FastWeights
) -> FastWeights:
    """G·v with G = Σ_i weight_i J_iᵀ J_i, J_i the Jacobian of the pre-LN output Z2_i with respect to W.

    `weight` None is the paper's unweighted G = Σ_i J_iᵀ J_i. The direction is pushed forward to dZ2 and
    pulled back again, so G (of size |W|² per head) never exists. (The solvers keep one `_GaussNewton` per
    update instead of calling this, which would take gelu'(Z1) anew each time.)
    """
    return _unpack(_GaussNewton(u, w, cache, weight).product(_pack(v)), w)


@dataclass
class CGInfo:
    """How a conjugate-gradient solve went, for logging and tests."""

    iterations: int
    stopped_fraction: float
    phi: Tensor  # (B, H) final φ per (sample, head)


def conjugate_gradient(
    gvp: Callable[[FastWeights], FastWeights],
    g: FastWeights,
    *,
    max_iter: int,
    tol: float,
    stop_fraction: float,
) -> tuple[FastWeights, CGInfo]:
    """`hf_cg_newton`'s solve: G x = g for every (sample, head) at once, from x = 0, without damping.

    A (sample, head) stops when φ = xᵀg / sqrt(xᵀGx) stops increasing (its step is then rejected, so it
    keeps the iterate with the best φ) or grows by less than the fraction `tol` (that step is kept). φ²/2 is
    the loss reduction the quadratic model promises for x scaled optimally, so a stalled φ means further
    iterations buy nothing. The whole solve stops once `stop_fraction` of all heads have stopped, or after
    `max_iter`.
    """
    x, info = _newton_cg_flat(
        _packed_gvp(gvp, g), _pack(g), max_iter=max_iter, tol=tol, stop_fraction=stop_fraction
    )
    return _unpack(x, g), info


def _packed_gvp(gvp: Callable[[FastWeights], FastWeights], like: FastWeights) -> Callable[[Tensor], Tensor]:
    """A G·v on W's pieces as one on packed vectors, for callers that hand the solvers their own product."""
    return lambda v: _pack(gvp(_unpack(v, like)))


def _newton_cg_flat(
    gvp: Callable[[Tensor], Tensor], g: Tensor, *, max_iter: int, tol: float, stop_fraction: float
) -> tuple[Tensor, CGInfo]:
    """`conjugate_gradient` on packed vectors (B, H, N): the same iteration, each vector op one kernel."""
    x = torch.zeros_like(g)  # (B, H, N)
    gx = torch.zeros_like(g)  # (B, H, N) G·x, kept incrementally for φ
    r = g
    p = g
    rr = _flat_dot(r, r)  # (B, H)
    active = rr > _TINY  # (B, H)
    phi_best = torch.zeros_like(rr)  # (B, H)
    iterations = 0
    for _ in range(max_iter):
        iterations += 1
        gp = gvp(p)  # (B, H, N)
        pgp = _flat_dot(p, gp)  # (B, H)
        usable = active & (pgp > _TINY)
        alpha = torch.where(usable, rr / pgp.clamp_min(_TINY), torch.zeros_like(rr))  # (B, H)
        x_new = _flat_add(x, p, alpha)
        gx_new = _flat_add(gx, gp, alpha)
        phi = _flat_dot(x_new, g) / _flat_dot(x_new, gx_new).clamp_min(_TINY).sqrt()  # (B, H)
        accept = usable & (phi > phi_best)
        x = _flat_where(accept, x_new, x)
        gx = _flat_where(accept, gx_new, gx)
        active = accept & (phi > phi_best * (1.0 + tol))
        phi_best = torch.where(accept, phi, phi_best)
        stopped = 1.0 - active.float().mean().item()
        if stopped >= stop_fraction:
            break
        r = _flat_add(r, gp, -alpha)
        rr_new = _flat_dot(r, r)  # (B, H)
        beta = torch.where(active, rr_new / rr.clamp_min(_TINY), torch.zeros_like(rr))  # (B, H)
        p = _flat_add(r, p, beta)
        rr = rr_new
    stopped = 1.0 - active.float().mean().item()
    return x, CGInfo(iterations=iterations, stopped_fraction=stopped, phi=phi_best)


def gd_update(
    u: Tensor,
    target: Tensor,
    weight: Tensor,
    w: FastWeights,
    ln_weight: Tensor,
    ln_bias: Tensor,
    *,
    gelu: Gelu = "none",
    u_aug: Tensor | None = None,
) -> FastWeights:
    """One gradient step W ← W − ∇L_b; the per-token learning rates live in `weight`.

    `backward_from_preln` with the subtraction folded in: W2 − Aᵀg in one baddbmm, and [W1; b1] from the
    keys with a 1 appended, which spares a sum over the (n, m)-sized cotangent. `u_aug`, here and in the
    other solvers: those keys [u, 1] (B, H, n, p+1) if the caller has them already (`InnerProblem.keys_aug`).
    """
    g_z2, cache = _preln_cotangent(u, target, weight, w, ln_weight, ln_bias, gelu=gelu, u_aug=u_aug)
    g_z1 = _gelu_chain_into(_mm_nt(g_z2, w.w2), cache.z1, cache.gelu)  # (B, H, n, m)
    p = u.shape[-1]
    assert cache.u_aug is not None  # the cache is mlp_forward's of this u
    g_w1b1 = _mm_tn(cache.u_aug, g_z1)  # (B, H, p+1, m)
    w2 = torch.baddbmm(
        w.w2.flatten(0, 1), cache.act.flatten(0, 1).transpose(1, 2), g_z2.flatten(0, 1), alpha=-1.0
    ).view(w.w2.shape)  # (B, H, m, p)
    return FastWeights(
        w.w1 - g_w1b1[..., :p, :], w.b1 - g_w1b1[..., p:, :], w2, w.b2 - g_z2.sum(dim=-2, keepdim=True)
    )


def newton_cg_update(
    u: Tensor,
    target: Tensor,
    weight: Tensor,
    w: FastWeights,
    ln_weight: Tensor,
    ln_bias: Tensor,
    *,
    max_iter: int,
    tol: float,
    stop_fraction: float,
    gelu: Gelu = "none",
    u_aug: Tensor | None = None,
) -> tuple[FastWeights, CGInfo]:
    """`hf_cg_newton`: one Hessian-free step W ← W − Δ with G Δ = ∇L_b solved by conjugate gradient.

    G is the Gauss-Newton matrix of the same weighted mini-batch loss, so Δ approximates the Newton step on
    L_b; the learning-rate gate then sets how much each token counts rather than the step length.
    """
    g_z2, cache = _preln_cotangent(u, target, weight, w, ln_weight, ln_bias, gelu=gelu, u_aug=u_aug)
    gn = _GaussNewton(u, w, cache, weight, own_cache=True)
    delta, info = _newton_cg_flat(
        gn.product, gn.pull_back(g_z2), max_iter=max_iter, tol=tol, stop_fraction=stop_fraction
    )
    return fw_add(w, _unpack(delta, w), -1.0), info


def paper_conjugate_gradient(
    gvp: Callable[[FastWeights], FastWeights],
    g: FastWeights,
    *,
    max_iter: int,
    stop_fraction: float,
) -> tuple[FastWeights, CGInfo]:
    """`hf_cg`'s solve: G x = g for every (sample, head) at once from x = 0, with the paper's stop rules.

    The paper's φ is the official loop's running ratio φ_k = Σ_{j≤k} α_j p_jᵀg / sqrt(Σ_{j≤k} r_jᵀr_j):
    the numerator is x_kᵀg, but the denominator sums the squared residual norms r_jᵀr_j = α_j p_jᵀGp_j
    where x_kᵀGx_k would accumulate α_j² p_jᵀGp_j. (With the true x_kᵀGx_k, φ = sqrt(x_kᵀg) in exact
    arithmetic, which only rises; this one falls once a step length α_k drops below about half the running
    mean, so it does stop.) From the second iteration on, a (sample, head) whose φ does not rise stops and
    that iteration's step is rejected; there is no tolerance rule. The whole solve stops once
    `stop_fraction` of all (sample, head) pairs have stopped, or after `max_iter`. A pair with a zero
    right-hand side has nothing to solve and counts as stopped from the start.
    """
    x, info = _paper_cg_flat(_packed_gvp(gvp, g), _pack(g), max_iter=max_iter, stop_fraction=stop_fraction)
    return _unpack(x, g), info


def _paper_cg_flat(
    gvp: Callable[[Tensor], Tensor], g: Tensor, *, max_iter: int, stop_fraction: float
) -> tuple[Tensor, CGInfo]:
    """`paper_conjugate_gradient` on packed vectors (B, H, N): the same loop, each vector op one kernel."""
    x = torch.zeros_like(g)  # (B, H, N)
    r = g
    p = g
    rr = _flat_dot(r, r)  # (B, H)
    active = rr > _TINY  # (B, H)
    xg = torch.zeros_like(rr)  # (B, H) running Σ α_j p_jᵀg = xᵀg
    rsum = torch.zeros_like(rr)  # (B, H) running Σ r_jᵀr_j
    phi = torch.zeros_like(rr)  # (B, H)
    zero = torch.zeros_like(rr)
    iterations = 0
    for k in range(max_iter):
        iterations += 1
        gp = gvp(p)
        pgp = _flat_dot(p, gp)  # (B, H)
        usable = active & (pgp > _TINY)
        alpha = torch.where(usable, rr / pgp.clamp_min(_TINY), zero)  # (B, H)
        xg_new = xg + alpha * _flat_dot(p, g)
        rsum_new = rsum + torch.where(usable, rr, zero)
        phi_new = xg_new / rsum_new.clamp_min(_TINY).sqrt()  # (B, H)
        accept = usable if k == 0 else usable & (phi_new > phi)
        alpha = torch.where(accept, alpha, zero)
        x = _flat_add(x, p, alpha)
        xg = torch.where(accept, xg_new, xg)
        rsum = torch.where(accept, rsum_new, rsum)
        phi = torch.where(accept, phi_new, phi)
        active = accept
        if 1.0 - active.float().mean().item() >= stop_fraction:
            break
        r = _flat_add(r, gp, -alpha)
        rr_new = _flat_dot(r, r)  # (B, H)
        beta = torch.where(active, rr_new / rr.clamp_min(_TINY), zero)  # (B, H)
        p = _flat_add(r, p, beta)
        rr = torch.where(active, rr_new, rr)
    stopped = 1.0 - active.float().mean().item()
    return x, CGInfo(iterations=iterations, stopped_fraction=stopped, phi=phi)


def hf_cg_update(
    u: Tensor,
    target: Tensor,
    weight: Tensor,
    w: FastWeights,
    ln_weight: Tensor,
    ln_bias: Tensor,
    *,
    max_iter: int,
    stop_fraction: float,
    step_scale: float,
    gelu: Gelu = "none",
    u_aug: Tensor | None = None,
) -> tuple[FastWeights, CGInfo]:
    """`hf_cg`, TTT_HF as the paper defines it: W ← W − s·Δ with (Σ_i J_iᵀ J_i) Δ = ∇L_b.

    G is unweighted while the right-hand side carries η_i/|b|, so Δ is about (η/|b|) times the Newton step
    of `hf_cg_newton`'s: at default sizes (η ≈ 1e-3, |b| = 1,024) that is inert, hence the step scale s
    (`cg_step_scale`; s = 1 is the literal paper step).
    """
    g_z2, cache = _preln_cotangent(u, target, weight, w, ln_weight, ln_bias, gelu=gelu, u_aug=u_aug)
    gn = _GaussNewton(u, w, cache, None, own_cache=True)
    delta, info = _paper_cg_flat(
        gn.product, gn.pull_back(g_z2), max_iter=max_iter, stop_fraction=stop_fraction
    )
    return fw_add(w, _unpack(delta, w), -step_scale), info
