"""The TTT layer: a multi-head TTT-MLP whose fast weights learn the stream at test time (DESIGN §3).

The slow weights θ (views, learning-rate gate, LayerNorms, read-out map and gate, initial fast weights) are
ordinary parameters; the fast weights and the long-span carry-over live in a `TTTState` that the caller
threads through, so one layer serves many streams and a checkpoint only needs the state.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TTTConfig
from .inner import (
    LN_EPS,
    CGInfo,
    FastWeights,
    Gelu,
    gd_update,
    hf_cg_update,
    mlp_forward,
    newton_cg_update,
    with_one,
)
from .rope import rope_angles, rope_angles_3d, rotate, time_code

log = logging.getLogger(__name__)


@dataclass
class TTTState:
    """What a stream's TTT layer carries from one mini-batch to the next."""

    fast: FastWeights
    carry: Tensor  # (B, H, lag, p) targets v' of the last `lag` tokens, oldest first
    seen: int = 0  # tokens processed so far; decides where the long-span mask ends
    last_cg: CGInfo | None = field(default=None, compare=False)

    def detach(self) -> TTTState:
        """Cut the graph here: truncated backpropagation across chunks when training θ."""
        return TTTState(FastWeights(*(t.detach() for t in self.fast)), self.carry.detach(), self.seen)


@dataclass
class InnerProblem:
    """One mini-batch's self-supervised task, as the inner optimiser sees it."""

    keys: Tensor  # (B, H, n, p)
    queries: Tensor  # (B, H, n, p)
    target: Tensor  # (B, H, n, p) v' = LN(v - k) + k
    lag_target: Tensor  # (B, H, n, p) v' of the token Δ positions earlier (zeros where none)
    lag_mask: Tensor  # (n,) 1 where a token Δ earlier exists
    eta: Tensor  # (B, H, n) per-token learning rates η_i
    carry: Tensor  # (B, H, lag, p) carry-over after this mini-batch
    lag_weight: float
    gelu: Gelu = "none"
    fused_target: Tensor | None = field(default=None, repr=False)  # combined_target, if made already
    # [k, 1] and [q, 1] (B, H, n, p+1), if made already (inference): `keys` and `queries` are their views
    keys_aug: Tensor | None = field(default=None, repr=False)
    queries_aug: Tensor | None = field(default=None, repr=False)

    @property
    def weight(self) -> Tensor:
        """Per-token weight of the combined least-squares loss: η_i / |b| · (1 + λ·mask_i)."""
        n = self.keys.shape[-2]
        return self.eta / n * (1.0 + self.lag_weight * self.lag_mask)  # (B, H, n)

    @property
    def combined_target(self) -> Tensor:
        """The single target whose loss has the same gradient and Gauss-Newton matrix as both terms."""
        if self.fused_target is not None:
            return self.fused_target
        lam = (self.lag_weight * self.lag_mask)[:, None]  # (n, 1)
        return (self.target + lam * self.lag_target) / (1.0 + lam)  # (B, H, n, p)

    def loss(self, fast: FastWeights, ln_weight: Tensor, ln_bias: Tensor) -> Tensor:
        """The mini-batch loss L_b(W) with both terms written out, per (sample, head): (B, H)."""
        out, _ = mlp_forward(self.keys, fast, ln_weight, ln_bias, gelu=self.gelu)  # (B, H, n, p)
        recon = 0.5 * ((out - self.target) ** 2).sum(-1)  # (B, H, n)
        span = 0.5 * ((out - self.lag_target) ** 2).sum(-1) * self.lag_mask  # (B, H, n)
        n = self.keys.shape[-2]
        return (self.eta / n * (recon + self.lag_weight * span)).sum(-1)  # (B, H)


class TTTLayer(nn.Module):
    """Multi-head TTT-MLP with an identity-like initialisation.

    Untrained, the views are identities and the read-out enters through a small gate, scaled so that its
    contribution has the norm of a unit token: rewriting can then shift a token by about tanh(α) of its
    length, which keeps retrieval by cosine close to what the raw tokens give.
    """

    def __init__(self, config: TTTConfig) -> None:
        super().__init__()
        if config.dim % config.heads:
            raise ValueError(f"dim {config.dim} is not divisible by heads {config.heads}")
        self.config = config
        d, h, p, m = config.dim, config.heads, config.head_dim, config.hidden
        gen = torch.Generator().manual_seed(config.seed)
        eye = torch.eye(d)
        self.qkv = nn.Parameter(torch.cat([eye, eye, eye], dim=0))  # (3d, d): θ_Q, θ_K, θ_V stacked
        self.lr_weight = nn.Parameter(torch.zeros(h, d))  # (H, d) η gate
        self.lr_bias = nn.Parameter(torch.zeros(h))  # (H,)
        # keys are unit vectors per head, so W1 ~ N(0, 1) and W2 ~ N(0, 1/m) give pre-LN outputs of order one;
        # a much smaller start would put the inner LayerNorm at a huge gain and make every step overshoot.
        self.w1_init = nn.Parameter(torch.randn(h, p, m, generator=gen))  # (H, p, m)
        self.b1_init = nn.Parameter(torch.zeros(h, 1, m))  # (H, 1, m)
        self.w2_init = nn.Parameter(torch.randn(h, m, p, generator=gen) / math.sqrt(m))  # (H, m, p)
        self.b2_init = nn.Parameter(torch.zeros(h, 1, p))  # (H, 1, p)
        self.ln_weight = nn.Parameter(torch.ones(h, 1, p))  # (H, 1, p) LN inside f
        self.ln_bias = nn.Parameter(torch.zeros(h, 1, p))  # (H, 1, p)
        self.out_norm = nn.LayerNorm(d, eps=LN_EPS)
        self.out_proj = nn.Parameter(eye / math.sqrt(d))  # (d, d) θ_O
        self.gate = nn.Parameter(torch.full((d,), float(config.gate_init)))  # (d,) α
        self.reader_proj = nn.Parameter(eye.clone())  # (d, d) θ_R: the reader's view of a prompt
        # The options' own slow weights exist only when the option is on, so the state dict of a layer
        # without them is what it always was.
        self._optional: tuple[str, ...] = ()
        if config.target_ln_affine:
            self.target_ln_weight = nn.Parameter(torch.ones(h, 1, p))  # (H, 1, p) γ of LN(v − k)
            self.target_ln_bias = nn.Parameter(torch.zeros(h, 1, p))  # (H, 1, p) β
            self._optional += ("target_ln_weight", "target_ln_bias")
        if config.long_span_target == "mapped" and config.long_span_lag > 0:
            self.lag_maps = nn.Parameter(torch.cat([eye, eye], dim=0))  # (2d, d): lag_map, K_lag stacked
            self._optional += ("lag_maps",)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # States saved before the reader projection existed read prompts as they are: θ_R = I. θ saved
        # without an option's weights (the shipped θ, trained before the options) starts them at their
        # initial values, with which γ/β change nothing and the maps are identities.
        if prefix + "qkv" in state_dict:
            dtype = state_dict[prefix + "qkv"].dtype
            key = prefix + "reader_proj"
            if key not in state_dict:
                state_dict[key] = torch.eye(self.config.dim, dtype=dtype)
            for name in self._optional:
                if prefix + name not in state_dict:
                    state_dict[prefix + name] = getattr(self, name).detach().to(dtype).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def gelu(self) -> Gelu:
        """The fast MLP's GELU as torch spells it."""
        return "tanh" if self.config.inner_gelu == "tanh" else "none"

    # ----- views -------------------------------------------------------------------------------------
    def reader_view(self, prompt: Tensor) -> Tensor:
        """θ_R p: what the reader compares with the visual slots.

        The slots themselves are compared as they are (the rewritten tokens), so the bank stores one vector
        per slot; a learned map on the prompt side alone is enough to move prompts towards what the slots
        of their moments hold, and it leaves the inner loop's views θ_Q, θ_K free to serve the inner task.
        """
        return prompt @ self.reader_proj.t()  # (..., d)

    def _split_heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.config.heads, self.config.head_dim).transpose(1, 2)  # (B, H, n, p)

    # ----- state -------------------------------------------------------------------------------------
    def init_state(self, batch: int = 1) -> TTTState:
        """Fresh fast weights (copies of the learned initial ones) and an empty carry-over."""
        cfg = self.config

        def rep(t: Tensor) -> Tensor:
            return t.unsqueeze(0).expand(batch, *t.shape).clone()  # (B, H, ...)

        fast = FastWeights(rep(self.w1_init), rep(self.b1_init), rep(self.w2_init), rep(self.b2_init))
        carry = self.qkv.new_zeros(batch, cfg.heads, cfg.long_span_lag, cfg.head_dim)  # (B, H, lag, p)
        return TTTState(fast=fast, carry=carry, seen=0)

    # ----- one mini-batch ----------------------------------------------------------------------------
    def _heads_of(self, x: Tensor, weight: Tensor) -> Tensor:
        """x (B, n, d) through the stacked maps `weight` (k·d, d), straight into the head-major layout
        (B, k·H, n, p) that every later op wants contiguous.

        For one sample this is one bmm over the k·H heads' (p, d) blocks, as fast as the plain (n, d)·(d, k·d)
        product on this CPU and without the three (n, H, p) → (H, n, p) copies that product then needs
        (docs/benchmarks.md, "Issue 17: the layer's shared path"). Several samples take the plain product.
        """
        b, n, d = x.shape
        p = self.config.head_dim
        blocks = weight.view(-1, p, d)  # (k·H, p, d)
        if b == 1:
            out = torch.bmm(x[0].expand(blocks.shape[0], n, d), blocks.transpose(1, 2))  # (k·H, n, p)
            return out.unsqueeze(0)  # (1, k·H, n, p)
        return (x @ weight.t()).view(b, n, -1, p).transpose(1, 2).contiguous()  # (B, k·H, n, p)

    def inner_problem(
        self, x: Tensor, state: TTTState, times: Tensor | None = None, positions: Tensor | None = None
    ) -> InnerProblem:
        """Views, targets and learning rates of a mini-batch x (B, n, d); `times` (B, n): stream seconds,
        needed (and only used) with `rope` or the time code; `positions` (B, n, 2): each token's region
        (`rope.kind_positions`), used with `rope_regions` (zeros, the frame's centre, when not given).

        The formulas are docs/memory.md's; the ops are chosen for a 2-core CPU, where each kernel over a
        mini-batch-sized tensor costs a pass over memory and a thread barrier: q, k and v come out of one
        product already head-major, q and k are l2-normalised (and rotated) together, and the combined
        target that the inner optimiser fits is formed here in one lerp.
        """
        cfg = self.config
        n = x.shape[1]
        h = cfg.heads
        qkv = self._heads_of(x, self.qkv)  # (B, 3H, n, p) θ_Q x, θ_K x, θ_V x
        qk = qkv[:, : 2 * h]  # (B, 2H, n, p)
        v = qkv[:, 2 * h :]  # (B, H, n, p)
        # F.normalize's formula (x / max(‖x‖, 1e-12)) for q and k in one norm and one division
        norm = torch.linalg.vector_norm(qk, dim=-1, keepdim=True).clamp_min(1e-12)  # (B, 2H, n, 1)
        qk_aug = None
        if cfg.rope or torch.is_grad_enabled():
            qk = qk / norm  # (B, 2H, n, p)
        else:
            # Inference without rotation: the division writes q and k straight into [q, 1] and [k, 1], the
            # augmented rows the fast MLP's first product takes, which spares two (n, p+1) concatenations.
            b = x.shape[0]
            p = cfg.head_dim
            qk_aug = x.new_empty(2, b, h, n, p + 1)  # (2, B, H, n, p+1) [q, 1] then [k, 1]
            qk_aug[..., p].fill_(1.0)
            rows = qk_aug[..., :p].transpose(0, 1)  # (B, 2, H, n, p)
            torch.div(qk.unflatten(1, (2, h)), norm.unflatten(1, (2, h)), out=rows)
        if cfg.uses_times:
            if times is None or times.shape != x.shape[:2]:
                got = None if times is None else list(times.shape)
                raise ValueError(
                    f"rope and the time code need the tokens' stream times of shape {list(x.shape[:2])}, "
                    f"got {got}"
                )
            if cfg.rope_regions:
                where = times.new_zeros(*times.shape, 2) if positions is None else positions  # (B, n, 2)
                if where.shape != (*times.shape, 2):
                    raise ValueError(
                        f"rope_regions needs positions of shape {[*times.shape, 2]}, got {list(where.shape)}"
                    )
                cos, sin = rope_angles_3d(
                    times, where, cfg.head_dim, base=cfg.rope_base, unit_s=cfg.rope_unit_s
                )
            else:
                cos, sin = rope_angles(times, cfg.head_dim, base=cfg.rope_base, unit_s=cfg.rope_unit_s)
            if cfg.rope:
                qk = rotate(qk, cos, sin)  # (B, 2H, n, p) q and k rotated by the same angles
            if cfg.value_time_code:
                v = v + cfg.value_time_code * time_code(cos, sin).to(v.dtype)  # (B, H, n, p)
        if qk_aug is None:
            q, k = qk[:, :h], qk[:, h:]  # (B, H, n, p) each, contiguous: slices of the head dimension
        else:
            q, k = qk_aug[0, ..., :p], qk_aug[1, ..., :p]  # (B, H, n, p) each, rows of stride p+1
        recon = F.layer_norm(v - k, (cfg.head_dim,), eps=LN_EPS)  # (B, H, n, p) LN(v − k)
        if cfg.target_ln_affine:
            target = torch.addcmul(k + self.target_ln_bias, recon, self.target_ln_weight)  # (B, H, n, p)
        elif qk_aug is None:
            target = recon + k  # (B, H, n, p)
        else:
            target = recon.add_(k)  # (B, H, n, p) inference: LN(v − k) is needed no more
        eta = torch.sigmoid(F.linear(x, self.lr_weight, self.lr_bias)).transpose(1, 2)  # (B, H, n)
        eta = (cfg.eta_base / cfg.head_dim) * eta  # (B, H, n)
        lag = cfg.long_span_lag
        if lag > 0:
            mapped = cfg.long_span_target == "mapped"
            if mapped:
                # the carry holds lag_map(x) of the last Δ tokens instead of their targets: same shape
                maps = self._heads_of(x, self.lag_maps)  # (B, 2H, n, p) lag_map x, K_lag x
                src, now = maps[:, :h], maps[:, h:]
            else:
                src = target
            # history = [carry, src] along the tokens, (B, H, lag + n, p); token i's lag target is
            # history[i] (stream position seen + i − lag) and the new carry its last Δ rows. Built only as
            # far as needed: with Δ = n (the default) the lag targets are the carry and the carry is src.
            if lag >= n:
                lag_target = state.carry[:, :, :n]  # (B, H, n, p)
                carry = src if lag == n else torch.cat([state.carry[:, :, n:], src], dim=2)  # (B, H, lag, p)
            else:
                lag_target = torch.cat([state.carry, src[:, :, : n - lag]], dim=2)  # (B, H, n, p)
                carry = src[:, :, n - lag :]  # (B, H, lag, p)
            if mapped:
                lag_target = F.layer_norm(lag_target - now, (cfg.head_dim,), eps=LN_EPS) + k  # (B, H, n, p)
            position = state.seen + torch.arange(n, device=x.device)  # (n,)
            lag_mask = (position >= lag).to(x.dtype)  # (n,)
            lam = (cfg.long_span_weight * lag_mask)[:, None]  # (n, 1)
            # (target + λ·lag_target) / (1 + λ) as one lerp towards the lag target by λ / (1 + λ)
            fused = torch.lerp(target, lag_target, lam / (1.0 + lam))  # (B, H, n, p)
        else:
            lag_target = target.new_zeros(()).expand_as(target)  # (B, H, n, p) no long-span term
            carry = state.carry
            lag_mask = x.new_zeros(n)
            fused = target
        return InnerProblem(
            keys=k,
            queries=q,
            target=target,
            lag_target=lag_target,
            lag_mask=lag_mask,
            eta=eta,
            carry=carry,
            lag_weight=cfg.long_span_weight if lag > 0 else 0.0,
            gelu=self.gelu,
            fused_target=fused,
            keys_aug=None if qk_aug is None else qk_aug[1],
            queries_aug=None if qk_aug is None else qk_aug[0],
        )

    def update(self, problem: InnerProblem, fast: FastWeights) -> tuple[FastWeights, CGInfo | None]:
        """The fast weights after one step of the configured inner optimiser on `problem`."""
        cfg = self.config
        args = (problem.keys, problem.combined_target, problem.weight, fast, self.ln_weight, self.ln_bias)
        common = {"gelu": problem.gelu, "u_aug": problem.keys_aug}
        if cfg.optimizer == "gd":
            return gd_update(*args, **common), None
        if cfg.optimizer == "hf_cg":
            return hf_cg_update(
                *args, max_iter=cfg.cg_max_iter, stop_fraction=cfg.cg_stop_fraction,
                step_scale=cfg.cg_step_scale, **common,
            )  # fmt: skip
        return newton_cg_update(
            *args, max_iter=cfg.cg_max_iter, tol=cfg.cg_tol, stop_fraction=cfg.cg_stop_fraction, **common
        )

    def read_out(
        self, x: Tensor, queries: Tensor, fast: FastWeights, queries_aug: Tensor | None = None
    ) -> Tensor:
        """x̃ = x + tanh(α) ⊙ θ_O·LN(f(q; W)): the mini-batch rewritten with the updated weights.

        f is `mlp_forward`'s formula without the cache the update keeps for its backward pass (one native
        LayerNorm over p instead of the moments' six passes); under no_grad its last op writes straight into
        the (B, n, H, p) layout of the output LayerNorm; and tanh(α) ⊙ θ_O· + x is one addmm with α folded
        into the rows of θ_O (a (d, d) product instead of two passes over the (n, d) output). `queries_aug`:
        [q, 1] (B, H, n, p+1) if made already (`InnerProblem.queries_aug`).
        """
        b, n, d = x.shape
        p = self.config.head_dim
        u_aug = with_one(queries) if queries_aug is None else queries_aug  # (B, H, n, p+1)
        z1 = torch.matmul(u_aug, torch.cat([fast.w1, fast.b1], dim=-2))  # (B, H, n, m) q·W1 + b1
        if torch.is_grad_enabled():
            act = F.gelu(z1, approximate=self.gelu)  # (B, H, n, m)
        else:
            act = torch.ops.aten.gelu_(z1, approximate=self.gelu)  # (B, H, n, m) z1 is needed no more
        z2 = torch.baddbmm(fast.b2.flatten(0, 1), act.flatten(0, 1), fast.w2.flatten(0, 1))  # (B·H, n, p)
        ln = F.layer_norm(z2, (p,), eps=LN_EPS).view(queries.shape)  # (B, H, n, p)
        base = queries + self.ln_bias  # (B, H, n, p)
        if torch.is_grad_enabled():
            z = torch.addcmul(base, self.ln_weight, ln).transpose(1, 2).reshape(b, n, d)  # (B, n, d)
        else:
            z = x.new_empty(b, n, self.config.heads, p)  # (B, n, H, p)
            torch.addcmul(base, self.ln_weight, ln, out=z.transpose(1, 2))
            z = z.view(b, n, d)  # (B, n, d)
        normed = F.layer_norm(
            z, (d,), self.out_norm.weight, self.out_norm.bias, self.out_norm.eps
        )  # (B, n, d)
        proj = self.out_proj * torch.tanh(self.gate)[:, None]  # (d, d) diag(tanh α)·θ_O
        return torch.addmm(x.reshape(b * n, d), normed.view(b * n, d), proj.t()).view(b, n, d)  # (B, n, d)

    def step(
        self, x: Tensor, state: TTTState, times: Tensor | None = None, positions: Tensor | None = None
    ) -> tuple[Tensor, TTTState]:
        """Update on one mini-batch x (B, n, d) at stream times (B, n) and regions (B, n, 2), then rewrite it
        with the post-update weights."""
        problem = self.inner_problem(x, state, times, positions)
        fast, info = self.update(problem, state.fast)
        y = self.read_out(x, problem.queries, fast, problem.queries_aug)  # (B, n, d)
        return y, TTTState(fast=fast, carry=problem.carry, seen=state.seen + x.shape[1], last_cg=info)

    def forward(
        self, x: Tensor, state: TTTState, times: Tensor | None = None, positions: Tensor | None = None
    ) -> tuple[Tensor, TTTState]:
        """Process x (B, n, d) as consecutive mini-batches of `mini_batch` tokens (the last may be short)."""
        mb = self.config.mini_batch
        outputs = []
        for start in range(0, x.shape[1], mb):
            span = None if times is None else times[:, start : start + mb]
            where = None if positions is None else positions[:, start : start + mb]
            y, state = self.step(x[:, start : start + mb], state, span, where)
            outputs.append(y)
        if not outputs:
            return x, state
        return torch.cat(outputs, dim=1), state  # (B, n, d)
