"""Issue 17's layer speed-up changes no number: `TTTLayer`'s shared path against the formulas it replaced.

The reference below is `inner_problem` and `read_out` as they were before (separate q/k/v splits and
normalisations, the two-pass LayerNorm of `inner.layer_norm`, the history concatenation, the combined target
formed from its two terms, the read-out through `mlp_forward` and the output gate as a product and a sum),
written out here and run in float64 with every slow weight perturbed away from its identity-like start. For
each optimiser, with the default options and with all options on, the layer's outputs, fast weights and
carry-over after several mini-batches (the last one short), and θ's gradients through them, must equal the
reference's to 1e-10.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from vsalmonn.memory_store.inner import FastWeights, layer_norm, mlp_forward
from vsalmonn.memory_store.rope import rope_angles, rope_angles_3d, rotate, time_code
from vsalmonn.memory_store.ttt import InnerProblem, TTTConfig, TTTLayer, TTTState

F64 = torch.float64
DIM, HEADS, MB = 32, 4, 16
TOKENS = 2 * MB + 7  # two whole mini-batches and a short one

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},  # long_span_lag 1,024: longer than the mini-batch
    "lag_equals_batch": {"long_span_lag": MB},
    "no_lag": {"long_span_lag": 0},
    "all_on": {
        "rope": True,
        "rope_regions": True,
        "value_time_code": 0.5,
        "long_span_target": "mapped",
        "long_span_lag": 5,  # shorter than the mini-batch
        "target_ln_affine": True,
        "inner_gelu": "tanh",
        "mlp_ratio": 2,
        "rope_unit_s": 3.0,
    },
}


# ----- the reference: the layer's formulas before the speed-up -------------------------------------------
def ref_split(layer: TTTLayer, t: torch.Tensor) -> torch.Tensor:
    b, n, _ = t.shape
    return t.view(b, n, layer.config.heads, layer.config.head_dim).transpose(1, 2)


def ref_problem(
    layer: TTTLayer, x: torch.Tensor, state: TTTState, times: torch.Tensor, positions: torch.Tensor
) -> InnerProblem:
    cfg = layer.config
    n, d = x.shape[1:]
    q, k, v = (ref_split(layer, t) for t in (x @ layer.qkv.t()).split(d, dim=-1))
    k = F.normalize(k, dim=-1)
    q = F.normalize(q, dim=-1)
    if cfg.uses_times:
        if cfg.rope_regions:
            cos, sin = rope_angles_3d(
                times, positions, cfg.head_dim, base=cfg.rope_base, unit_s=cfg.rope_unit_s
            )
        else:
            cos, sin = rope_angles(times, cfg.head_dim, base=cfg.rope_base, unit_s=cfg.rope_unit_s)
        if cfg.rope:
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if cfg.value_time_code:
            v = v + cfg.value_time_code * time_code(cos, sin).to(v.dtype)
    recon = layer_norm(v - k)
    if cfg.target_ln_affine:
        recon = recon * layer.target_ln_weight + layer.target_ln_bias
    target = recon + k
    eta = (cfg.eta_base / cfg.head_dim) * torch.sigmoid(x @ layer.lr_weight.t() + layer.lr_bias).transpose(
        1, 2
    )
    if cfg.long_span_lag > 0:
        mapped = cfg.long_span_target == "mapped"
        if mapped:
            src, now = (ref_split(layer, t) for t in (x @ layer.lag_maps.t()).split(d, dim=-1))
        history = torch.cat([state.carry, src if mapped else target], dim=2)
        lag_target = history[:, :, :n]
        if mapped:
            lag_target = layer_norm(lag_target - now) + k
        carry = history[:, :, -cfg.long_span_lag :]
        lag_mask = (state.seen + torch.arange(n) >= cfg.long_span_lag).to(x.dtype)
    else:
        lag_target, carry, lag_mask = torch.zeros_like(target), state.carry, x.new_zeros(n)
    return InnerProblem(
        keys=k.contiguous(),
        queries=q.contiguous(),
        target=target,
        lag_target=lag_target,
        lag_mask=lag_mask,
        eta=eta,
        carry=carry,
        lag_weight=cfg.long_span_weight if cfg.long_span_lag > 0 else 0.0,
        gelu=layer.gelu,
    )  # no fused_target: the update forms the combined target from its two terms


def ref_read_out(layer: TTTLayer, x: torch.Tensor, queries: torch.Tensor, fast: FastWeights) -> torch.Tensor:
    b, n, d = x.shape
    z, _ = mlp_forward(queries, fast, layer.ln_weight, layer.ln_bias, gelu=layer.gelu)
    o = layer.out_norm(z.transpose(1, 2).reshape(b, n, d)) @ layer.out_proj.t()
    return x + torch.tanh(layer.gate) * o


def ref_forward(
    layer: TTTLayer, x: torch.Tensor, state: TTTState, times: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, TTTState]:
    mb, outs = layer.config.mini_batch, []
    for s in range(0, x.shape[1], mb):
        problem = ref_problem(layer, x[:, s : s + mb], state, times[:, s : s + mb], positions[:, s : s + mb])
        fast, _ = layer.update(problem, state.fast)
        outs.append(ref_read_out(layer, x[:, s : s + mb], problem.queries, fast))
        state = TTTState(fast=fast, carry=problem.carry, seen=state.seen + problem.keys.shape[-2])
    return torch.cat(outs, dim=1), state


# ----- the comparison -------------------------------------------------------------------------------------
def make(optimizer: str, options: dict[str, Any], batch: int) -> tuple[TTTLayer, tuple[torch.Tensor, ...]]:
    cfg = TTTConfig(dim=DIM, heads=HEADS, mini_batch=MB, optimizer=optimizer, seed=5, **options)  # type: ignore[arg-type]
    layer = TTTLayer(cfg).to(F64)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():  # move every slow weight off its identity-like start, so no term can hide
        for p in layer.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=F64))
    x = F.normalize(torch.randn(batch, TOKENS, DIM, generator=gen, dtype=F64), dim=-1)
    times = torch.cumsum(torch.rand(batch, TOKENS, generator=gen, dtype=F64), dim=1)
    positions = torch.randint(-2, 3, (batch, TOKENS, 2), generator=gen).to(F64)
    return layer, (x, times, positions)


def close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=lambda m: f"{what}: {m}")


# one sample takes the per-head bmm of the views, several the plain product: both, where the options are
CASES = [("default", 1), ("default", 2), ("all_on", 1), ("all_on", 2), ("lag_equals_batch", 1), ("no_lag", 2)]


@pytest.mark.parametrize(("config", "batch"), CASES)
@pytest.mark.parametrize("optimizer", ["gd", "hf_cg", "hf_cg_newton"])
def test_forward_equals_the_old_formulas(optimizer: str, config: str, batch: int) -> None:
    layer, (x, times, positions) = make(optimizer, CONFIGS[config], batch)
    with torch.no_grad():
        state = layer.init_state(batch)
        got, got_state = layer(x, state, times, positions)
        want, want_state = ref_forward(layer, x, state, times, positions)
    assert (want - x).abs().max() > 1e-3, "the read-out changed nothing: the comparison would be empty"
    close(got, want, "outputs")
    for name, g, w in zip(FastWeights._fields, got_state.fast, want_state.fast, strict=True):
        close(g, w, f"fast weight {name}")
    assert got_state.carry.shape == want_state.carry.shape
    close(got_state.carry, want_state.carry, "carry-over")
    assert got_state.seen == want_state.seen == TOKENS


@pytest.mark.parametrize("config", ["default", "all_on"])
@pytest.mark.parametrize("optimizer", ["gd", "hf_cg", "hf_cg_newton"])
def test_theta_gradients_equal_the_old_formulas(optimizer: str, config: str) -> None:
    """train-memory differentiates through the layer: θ's gradients through outputs, fast weights and
    carry-over must be the old ones (the read-out's grad path, not its no_grad one, is the one run here)."""
    layer, (x, times, positions) = make(optimizer, CONFIGS[config], 1)
    params = [p for _, p in layer.named_parameters()]

    def grads(run: Any) -> list[torch.Tensor]:
        y, st = run(layer, x, layer.init_state(1), times, positions)
        parts = [y, *st.fast, st.carry]
        weights = [
            torch.randn(t.shape, generator=torch.Generator().manual_seed(i), dtype=F64)
            for i, t in enumerate(parts)
        ]
        loss = sum((t * w).sum() for t, w in zip(parts, weights, strict=True))
        return list(torch.autograd.grad(loss, params, allow_unused=True))

    got = grads(lambda layer_, *a: layer_(*a))
    want = grads(ref_forward)
    for (name, _), g, w in zip(layer.named_parameters(), got, want, strict=True):
        if w is None:
            assert g is None or not g.abs().any(), f"{name}: a gradient where the old formulas have none"
            continue
        assert g is not None, f"{name}: no gradient"
        close(g, w, f"gradient of {name}")
    assert any(w is not None and w.abs().max() > 1e-6 for w in want), "no gradient reached θ"
