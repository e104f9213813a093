"""The TTT layer's options of issue 17 (docs/memory.md): RoPE by stream time, the mapped long-span target, γ/β
on the target LayerNorm, tanh-GELU and the hidden width.

Every option defaults to the layer as it was, so the references here are written from the equations of that
layer (float64); the options are then checked against what they promise.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.func import jvp, vjp

from tests.test_memory import assert_states_equal, write_script
from tests.test_memory_training import SMALL, rotated_pool, small_train
from vsalmonn.memory_store import MemoryConfig, StreamMemory
from vsalmonn.memory_store.inner import FastWeights, gauss_newton_product, mlp_forward
from vsalmonn.memory_store.memory import ttt_config
from vsalmonn.memory_store.slow_weights import load_slow_weights, save_slow_weights, shipped_path
from vsalmonn.memory_store.training import stream_loss
from vsalmonn.memory_store.training_streams import compose
from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer

F64 = torch.float64
DIM, HEADS = 32, 4
P = DIM // HEADS


def small(**overrides: Any) -> TTTConfig:
    base: dict[str, Any] = dict(dim=DIM, heads=HEADS, mlp_ratio=2, mini_batch=16, long_span_lag=8)
    base.update(overrides)
    return TTTConfig(**base)


def perturbed_layer(cfg: TTTConfig, seed: int = 1) -> TTTLayer:
    """A float64 layer whose θ is moved off its identity-like start, so that every part of θ matters."""
    layer = TTTLayer(cfg).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=F64))
    return layer


def tokens(b: int, n: int, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, n, DIM, generator=gen, dtype=F64), dim=-1)


def stream_times(b: int, n: int, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.cumsum(torch.rand(b, n, generator=gen, dtype=F64) * 2.0, dim=1)  # (B, n) seconds


# ----- the defaults are the layer as it was -------------------------------------------------------------
def reference_gd_stream(layer: TTTLayer, x: torch.Tensor) -> torch.Tensor:
    """Today's layer with `gd`, written from the equations of docs/memory.md, one (sample, head) at a time,
    with the gradient from autograd: views, target v' = LN(v − k) + k, η, the long-span term on v'_{i−Δ},
    one step W ← W − ∇L_b, read-out x + tanh(α) ⊙ θ_O·LN(f(q; W))."""
    cfg = layer.config
    lag, lam, mb = cfg.long_span_lag, cfg.long_span_weight, cfg.mini_batch
    d, h, p = cfg.dim, cfg.heads, cfg.head_dim

    def ln(t: torch.Tensor) -> torch.Tensor:
        c = t - t.mean(-1, keepdim=True)
        return c / torch.sqrt((c * c).mean(-1, keepdim=True) + 1e-6)

    def f(u: torch.Tensor, w: list[torch.Tensor], hd: int) -> torch.Tensor:
        z2 = F.gelu(u @ w[0] + w[1]) @ w[2] + w[3]
        return u + layer.ln_weight[hd] * ln(z2) + layer.ln_bias[hd]

    outs = []
    for s in range(x.shape[0]):
        xs = x[s]  # (N, d)
        wq, wk, wv = layer.qkv.split(d)
        q_all, k_all, v_all = xs @ wq.t(), xs @ wk.t(), xs @ wv.t()
        eta_all = cfg.eta_base / p * torch.sigmoid(xs @ layer.lr_weight.t() + layer.lr_bias)  # (N, H)
        fast = [
            [layer.w1_init[hd], layer.b1_init[hd], layer.w2_init[hd], layer.b2_init[hd]] for hd in range(h)
        ]
        targets = [[] for _ in range(h)]  # v' of every token so far, per head
        z = torch.zeros(xs.shape[0], d, dtype=F64)
        for start in range(0, xs.shape[0], mb):
            idx = range(start, min(start + mb, xs.shape[0]))
            n = len(idx)
            for hd in range(h):
                sl = slice(hd * p, (hd + 1) * p)
                k = F.normalize(k_all[list(idx), sl], dim=-1)
                q = F.normalize(q_all[list(idx), sl], dim=-1)
                tgt = ln(v_all[list(idx), sl] - k) + k
                targets[hd].extend(tgt)
                w = [t.detach().clone().requires_grad_(True) for t in fast[hd]]
                out = f(k, w, hd)
                loss = torch.zeros((), dtype=F64)
                for j, i in enumerate(idx):
                    term = 0.5 * ((out[j] - tgt[j]) ** 2).sum()
                    if i >= lag:
                        term = term + lam * 0.5 * ((out[j] - targets[hd][i - lag]) ** 2).sum()
                    loss = loss + eta_all[i, hd] / n * term
                grads = torch.autograd.grad(loss, w)
                fast[hd] = [(a - g).detach() for a, g in zip(w, grads, strict=True)]
                z[list(idx), sl] = f(q, fast[hd], hd).detach()
        outs.append(xs + torch.tanh(layer.gate) * (F.layer_norm(z, (d,), eps=1e-6) @ layer.out_proj.t()))
    return torch.stack(outs)


def test_the_default_layer_is_todays_layer_from_the_equations() -> None:
    layer = perturbed_layer(small(optimizer="gd"))
    with torch.no_grad():
        layer.out_norm.weight.fill_(1.0)  # the reference's read-out LN has no affine parameters
        layer.out_norm.bias.zero_()
    x = tokens(2, 40)
    with torch.no_grad():
        y, _ = layer(x, layer.init_state(2), stream_times(2, 40))
    torch.testing.assert_close(y, reference_gd_stream(layer, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["gd", "hf_cg", "hf_cg_newton"])
@pytest.mark.parametrize(
    "option",
    [
        {"rope": False},
        {"long_span_target": "value"},
        {"target_ln_affine": False},
        {"inner_gelu": "exact"},
        {"mlp_ratio": 4},
    ],
)
def test_each_default_spelled_out_reproduces_the_default_layer(
    optimizer: str, option: dict[str, Any]
) -> None:
    base = dict(mlp_ratio=4, optimizer=optimizer)
    plain = perturbed_layer(small(**base))
    spelled = perturbed_layer(small(**{**base, **option}))
    assert plain.state_dict().keys() == spelled.state_dict().keys()
    x = tokens(2, 40)
    with torch.no_grad():
        a, sa = plain(x, plain.init_state(2))
        b, sb = spelled(x, spelled.init_state(2), stream_times(2, 40))
    assert torch.equal(a, b)
    assert all(torch.equal(u, v) for u, v in zip(sa.fast, sb.fast, strict=True))
    assert torch.equal(sa.carry, sb.carry)


# ----- RoPE ---------------------------------------------------------------------------------------------
def rope_views(layer: TTTLayer, x: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    problem = layer.inner_problem(x, layer.init_state(x.shape[0]), times)
    return problem.queries, problem.keys


def test_rope_scores_depend_on_time_differences_only() -> None:
    layer = perturbed_layer(small(rope=True, rope_base=100.0))
    x, t = tokens(2, 24), stream_times(2, 24)
    with torch.no_grad():
        q, k = rope_views(layer, x, t)
        q_shift, k_shift = rope_views(layer, x, t + 1234.5)
        _, k_other = rope_views(layer, x, t + 3.0)
    scores = q @ k.transpose(-1, -2)  # (B, H, n, n)
    torch.testing.assert_close(q_shift @ k_shift.transpose(-1, -2), scores, rtol=0, atol=1e-10)
    # keys moved by another offset than the queries: the scores change
    assert (q @ k_other.transpose(-1, -2) - scores).abs().max() > 1e-2
    # the rotation keeps the unit norm of the l2-normalised views
    torch.testing.assert_close(k.norm(dim=-1), torch.ones_like(k[..., 0]), rtol=0, atol=1e-12)


def test_rope_changes_the_update_and_at_time_zero_is_the_plain_layer() -> None:
    plain = perturbed_layer(small(optimizer="hf_cg"))
    rope = perturbed_layer(small(optimizer="hf_cg", rope=True))
    x = tokens(2, 40)
    with torch.no_grad():
        a, _ = plain(x, plain.init_state(2))
        at_zero, _ = rope(x, rope.init_state(2), torch.zeros(2, 40, dtype=F64))
        moving, _ = rope(x, rope.init_state(2), stream_times(2, 40))
    torch.testing.assert_close(at_zero, a, rtol=0, atol=1e-12)
    assert (moving - a).abs().max() > 1e-4


def test_rope_without_times_and_with_an_odd_head_width_is_refused() -> None:
    layer = TTTLayer(small(rope=True))
    with pytest.raises(ValueError, match="need the tokens' stream times"):
        layer(torch.zeros(1, 4, DIM), layer.init_state(1))
    with pytest.raises(ValidationError, match="head width 5 is odd"):
        TTTConfig(dim=20, heads=4, rope=True)
    with pytest.raises(ValidationError, match="head width 5 is odd"):
        TTTConfig(dim=20, heads=4, value_time_code=1.0)


# ----- time-coded values --------------------------------------------------------------------------------
def test_time_code_adds_a_unit_code_of_time_to_the_values_only() -> None:
    weight = 0.7
    plain = perturbed_layer(small(rope_base=100.0))
    coded = perturbed_layer(small(rope_base=100.0, value_time_code=weight))
    x, t = tokens(2, 24), stream_times(2, 24)
    with torch.no_grad():
        a = plain.inner_problem(x, plain.init_state(2), t)
        b = coded.inner_problem(x, coded.init_state(2), t)
        # the reference from the equation: v + w·(cos θ_0, sin θ_0, …)/√(p/2), θ_j = t·100^(−2j/p)
        _, k, v = (plain._split_heads(u) for u in (x @ plain.qkv.t()).split(DIM, dim=-1))
        k = F.normalize(k, dim=-1)
        freq = 100.0 ** (-2.0 * torch.arange(P // 2, dtype=F64) / P)  # (p/2,)
        angle = t[:, None, :, None] * freq  # (B, 1, n, p/2)
        code = torch.stack([angle.cos(), angle.sin()], dim=-1).flatten(-2) / (P // 2) ** 0.5  # (B, 1, n, p)
        c = (v + weight * code) - k
        c = c - c.mean(-1, keepdim=True)
        expected = c / torch.sqrt((c * c).mean(-1, keepdim=True) + 1e-6) + k
    torch.testing.assert_close(b.target, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(code.norm(dim=-1), torch.ones_like(code[..., 0]), rtol=0, atol=1e-12)
    # keys and queries carry no time (that is RoPE's job), so the views equal the plain layer's
    torch.testing.assert_close(b.keys, a.keys, rtol=0, atol=0)
    torch.testing.assert_close(b.queries, a.queries, rtol=0, atol=0)
    assert (b.target - a.target).abs().max() > 1e-3
    # unlike RoPE's scores, the code is of absolute time: the same tokens later get other targets
    shifted = coded.inner_problem(x, coded.init_state(2), t + 500.0)
    assert (shifted.target - b.target).abs().max() > 1e-3


# ----- γ/β on the target LayerNorm ----------------------------------------------------------------------
def test_target_affine_at_its_init_changes_nothing_and_trained_it_does() -> None:
    cfg = dict(optimizer="hf_cg")
    plain = perturbed_layer(small(**cfg))
    affine = TTTLayer(small(**cfg, target_ln_affine=True)).double()
    affine.load_state_dict(plain.state_dict())  # θ without γ/β: they start at 1 and 0
    assert torch.equal(affine.target_ln_weight, torch.ones(HEADS, 1, P, dtype=F64))
    assert torch.equal(affine.target_ln_bias, torch.zeros(HEADS, 1, P, dtype=F64))
    x = tokens(2, 40)
    with torch.no_grad():
        a, _ = plain(x, plain.init_state(2))
        b, _ = affine(x, affine.init_state(2))
        affine.target_ln_weight.mul_(1.5)
        affine.target_ln_bias.add_(0.1)
        c, _ = affine(x, affine.init_state(2))
    assert torch.equal(a, b)
    assert (c - a).abs().max() > 1e-4
    assert "target_ln_weight" not in plain.state_dict()


# ----- the mapped long-span target ----------------------------------------------------------------------
def test_mapped_long_span_target_is_ln_of_lag_map_minus_k_lag() -> None:
    lag, n = 8, 16
    layer = perturbed_layer(small(long_span_target="mapped", long_span_lag=lag, mini_batch=n))
    x = tokens(1, 2 * n)
    with torch.no_grad():
        first = layer.inner_problem(x[:, :n], layer.init_state(1))
        state = layer.init_state(1)
        state.carry, state.seen = first.carry, n
        second = layer.inner_problem(x[:, n:], state)
    lag_map, k_lag = layer.lag_maps.detach().split(DIM)
    xs = x[0]
    for i in range(n, 2 * n):  # every token of the second mini-batch has one Δ earlier
        for hd in range(HEADS):
            sl = slice(hd * P, (hd + 1) * P)
            diff = (lag_map @ xs[i - lag])[sl] - (k_lag @ xs[i])[sl]
            want = F.layer_norm(diff, (P,), eps=1e-6) + second.keys[0, hd, i - n]
            torch.testing.assert_close(second.lag_target[0, hd, i - n], want, rtol=0, atol=1e-12)
    assert torch.equal(first.lag_mask, torch.tensor([0.0] * lag + [1.0] * (n - lag), dtype=F64))
    assert torch.equal(second.lag_mask, torch.ones(n, dtype=F64))


def test_mapped_maps_are_slow_weights_only_when_enabled_and_old_theta_loads() -> None:
    plain = perturbed_layer(small())
    mapped = TTTLayer(small(long_span_target="mapped")).double()
    assert "lag_maps" not in plain.state_dict() and "lag_maps" in mapped.state_dict()
    mapped.load_state_dict(plain.state_dict())  # θ saved before the maps: identities
    assert torch.equal(mapped.lag_maps, torch.cat([torch.eye(DIM), torch.eye(DIM)]).double())
    with pytest.raises(RuntimeError, match="lag_maps"):
        plain.load_state_dict(mapped.state_dict())  # a θ with maps does not silently lose them
    x = tokens(2, 40)
    with torch.no_grad():
        a, _ = plain(x, plain.init_state(2))
        b, _ = mapped(x, mapped.init_state(2))
    assert (b - a).abs().max() > 1e-6  # a different target


# ----- tanh-GELU -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("gelu", ["none", "tanh"])
def test_gauss_newton_product_matches_autograd_for_each_gelu(gelu: str) -> None:
    gen = torch.Generator().manual_seed(7)
    b, h, n, p, m = 2, 3, 10, 4, 6

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64) * 0.5

    u = r(b, h, n, p)
    w = FastWeights(r(b, h, p, m), r(b, h, 1, m), r(b, h, m, p), r(b, h, 1, p))
    v = FastWeights(r(b, h, p, m), r(b, h, 1, m), r(b, h, m, p), r(b, h, 1, p))
    weight = torch.rand(b, h, n, generator=gen, dtype=F64)
    ones = torch.ones(h, 1, p, dtype=F64)
    _, cache = mlp_forward(u, w, ones, ones * 0, gelu=gelu)  # type: ignore[arg-type]
    got = gauss_newton_product(u, w, cache, weight, v)

    def z2(*ws: torch.Tensor) -> torch.Tensor:
        return F.gelu(u @ ws[0] + ws[1], approximate=gelu) @ ws[2] + ws[3]

    _, jv = jvp(z2, tuple(w), tuple(v))
    _, pull = vjp(z2, *w)
    want = pull(weight[..., None] * jv)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-12)
    # the other GELU's gelu' gives another product: the test tells the two apart
    other = "tanh" if gelu == "none" else "none"
    mixed = gauss_newton_product(u, w, dataclasses.replace(cache, gelu=other), weight, v)
    assert max((a - e).abs().max().item() for a, e in zip(mixed, want, strict=True)) > 1e-6


def test_tanh_gelu_changes_the_layer() -> None:
    exact = perturbed_layer(small(optimizer="hf_cg"))
    tanh = perturbed_layer(small(optimizer="hf_cg", inner_gelu="tanh"))
    x = tokens(2, 40)
    with torch.no_grad():
        a, _ = exact(x, exact.init_state(2))
        b, _ = tanh(x, tanh.init_state(2))
    assert 0 < (b - a).abs().max() < 1e-2


# ----- hidden width --------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["gd", "hf_cg", "hf_cg_newton"])
def test_hidden_width_p_shapes_the_fast_mlp_and_every_optimiser_runs(optimizer: str) -> None:
    cfg = small(mlp_ratio=1, optimizer=optimizer, inner_gelu="tanh", target_ln_affine=True)
    layer = TTTLayer(cfg).double()
    assert cfg.hidden == P
    assert layer.w1_init.shape == (HEADS, P, P) and layer.w2_init.shape == (HEADS, P, P)
    x = tokens(2, 40)
    with torch.no_grad():
        y, state = layer(x, layer.init_state(2))
    assert state.fast.w1.shape == (2, HEADS, P, P) and torch.isfinite(y).all()
    y, _ = layer(x, layer.init_state(2))  # differentiable: θ trains through the inner loop
    y.sum().backward()
    assert layer.qkv.grad is not None and torch.isfinite(layer.qkv.grad).all()
    assert layer.qkv.grad.abs().max() > 0 and layer.target_ln_bias.grad.abs().max() > 0


def test_hidden_width_is_validated() -> None:
    for bad in (0, -1, 65):
        with pytest.raises(ValidationError, match="mlp_ratio"):
            TTTConfig(mlp_ratio=bad)


# ----- a memory with every option on ----------------------------------------------------------------------
ALL_ON: dict[str, Any] = dict(
    rope=True,
    long_span_target="mapped",
    target_ln_affine=True,
    inner_gelu="tanh",
    mlp_ratio=1,
    value_time_code=0.5,
)


def memory_config(**overrides: Any) -> MemoryConfig:
    base: dict[str, Any] = dict(
        dim=64,
        heads=4,
        visual_slots=256,
        audio_slots=64,
        mini_batch=128,
        long_span_lag=128,
        reader_visual_slots=8,
        reader_audio_slots=4,
        optimizer="hf_cg",
        cg_step_scale=64.0,
    )
    base.update(overrides)
    return MemoryConfig(**base)


def test_a_memory_with_every_option_on_ingests_checkpoints_and_reads() -> None:
    cfg = memory_config(**ALL_ON)
    straight = StreamMemory(cfg)
    write_script(straight, 5, range(24))
    plain = StreamMemory(memory_config())
    write_script(plain, 5, range(24))
    assert not torch.equal(straight.banks["visual"].keys, plain.banks["visual"].keys)

    first = StreamMemory(cfg)
    write_script(first, 5, range(11))
    assert first.pending > 0
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = StreamMemory(cfg)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    write_script(resumed, 5, range(11, 24))
    assert_states_equal(straight.state_dict(), resumed.state_dict())
    assert {"lag_maps", "target_ln_weight", "target_ln_bias"} <= straight.state_dict()["slow"].keys()
    probe = F.normalize(torch.randn(3, 64), dim=-1)
    assert straight.read(probe, k=5) == resumed.read(probe, k=5)
    with pytest.raises(ValueError, match="different configuration"):
        StreamMemory(memory_config()).load_state_dict(straight.state_dict())


def test_states_saved_before_the_options_load_as_their_defaults() -> None:
    mem = StreamMemory(memory_config())
    write_script(mem, 3, range(4))
    state = mem.state_dict()
    for key in ("rope", "rope_base", "rope_unit_s", "long_span_target", "target_ln_affine", "inner_gelu"):
        del state["config"][key]
    other = StreamMemory(memory_config())
    other.load_state_dict(state)
    assert_states_equal(mem.state_dict()["banks"], other.state_dict()["banks"])


@pytest.mark.skipif(not shipped_path().is_file(), reason="no shipped slow weights in this build")
def test_the_shipped_theta_loads_with_the_defaults_and_with_every_option_that_keeps_its_shapes() -> None:
    shipped, _ = load_slow_weights(shipped_path())
    mem = StreamMemory(MemoryConfig())
    assert mem.layer.state_dict().keys() == shipped.keys()
    for name, tensor in mem.layer.state_dict().items():
        assert torch.equal(tensor, shipped[name]), name
    opts = {k: v for k, v in ALL_ON.items() if k != "mlp_ratio"}  # the hidden width changes W's shapes
    on = StreamMemory(MemoryConfig(**opts))
    for name, tensor in shipped.items():
        assert torch.equal(on.layer.state_dict()[name], tensor), name
    assert torch.equal(on.layer.target_ln_weight, torch.ones_like(on.layer.target_ln_weight))
    assert torch.equal(StreamMemory(MemoryConfig(mlp_ratio=1)).layer.gate, torch.full((384,), 0.1))


def test_theta_with_an_options_weights_is_refused_by_a_memory_without_the_option(tmp_path: Any) -> None:
    cfg = memory_config(long_span_target="mapped")
    path = tmp_path / "mapped.safetensors"
    state = StreamMemory(cfg).layer.state_dict()
    save_slow_weights(
        path, state, vision_encoder="efficientnet-lite0", text_encoder="minilm", dim=64, heads=4, mlp_ratio=4
    )
    assert (
        "lag_maps"
        in StreamMemory(memory_config(long_span_target="mapped", slow_weights=str(path))).layer.state_dict()
    )
    with pytest.raises(ValueError, match=r"do not fit the TTT layer: .*lag_maps"):
        StreamMemory(memory_config(slow_weights=str(path)))


def test_training_reaches_every_slow_weight_with_every_option_on() -> None:
    layer = TTTLayer(ttt_config(MemoryConfig(**{**SMALL, **ALL_ON, "optimizer": "gd"})))
    stream = compose(rotated_pool(), np.random.default_rng(0), 400.0, list(range(6)), 5, text_share=1.0)
    stats = stream_loss(
        layer, stream, "merge", small_train(), torch.device("cpu")
    )  # the stream's times reach RoPE
    assert np.isfinite(stats["loss"]) and stats["asked"] > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


# ----- 3-D RoPE: the region of a frame's tokens -------------------------------------------------------------
def test_region_positions_of_the_encoders_kinds() -> None:
    from vsalmonn.memory_store.rope import frame_positions, kind_positions

    kinds = ["global", "region 0 0", "region 0 1", "region 1 0", "region 1 1"]
    expected = [(0.0, 0.0), (-0.5, -0.5), (-0.5, 0.5), (0.5, -0.5), (0.5, 0.5)]
    assert kind_positions(kinds) == expected == frame_positions(5)
    assert frame_positions(1) == [(0.0, 0.0)]
    assert kind_positions(["global", "a plugin's own kind"]) == [(0.0, 0.0), (0.0, 0.0)]
    with pytest.raises(ValueError, match="square grid"):
        frame_positions(4)


def test_3d_rope_scores_depend_on_time_and_position_differences_only() -> None:
    layer = perturbed_layer(small(rope=True, rope_regions=True, rope_base=100.0))
    x, t = tokens(2, 25), stream_times(2, 25)
    gen = torch.Generator().manual_seed(4)
    where = torch.randn(2, 25, 2, generator=gen, dtype=F64)  # (B, n, 2)
    with torch.no_grad():

        def views(times: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            problem = layer.inner_problem(x, layer.init_state(2), times, positions)
            return problem.queries, problem.keys

        q, k = views(t, where)
        q_shift, k_shift = views(t + 77.0, where + torch.tensor([3.0, -2.0], dtype=F64))
        q_flat, k_flat = views(t, torch.zeros_like(where))
    scores = q @ k.transpose(-1, -2)  # (B, H, n, n)
    torch.testing.assert_close(q_shift @ k_shift.transpose(-1, -2), scores, rtol=0, atol=1e-10)
    # the same tokens at the frame's centre score otherwise: the regions turn q and k
    assert (q_flat @ k_flat.transpose(-1, -2) - scores).abs().max() > 1e-3
    with pytest.raises(ValidationError, match="needs rope = true"):
        TTTConfig(rope_regions=True)


def test_a_memory_with_3d_rope_takes_positions_and_resumes_with_them() -> None:
    from vsalmonn.memory_store.rope import frame_positions

    cfg = memory_config(rope=True, rope_regions=True)
    where = torch.tensor(frame_positions(5), dtype=F64).repeat(4, 1)  # (20, 2): 4 frames of 5 tokens
    x = F.normalize(torch.randn(20, 64, generator=torch.Generator().manual_seed(5)), dim=-1)
    t = torch.arange(20, dtype=F64) // 5
    straight, placed = StreamMemory(cfg), StreamMemory(cfg)
    straight.write(x, t, t + 1, positions=where)
    placed.write(x[:10], t[:10], t[:10] + 1, positions=where[:10])
    assert placed.state_dict()["pending"]["pos"].shape == (10, 2)
    resumed = StreamMemory(cfg)
    resumed.load_state_dict(placed.state_dict())
    resumed.write(x[10:], t[10:], t[10:] + 1, positions=where[10:])
    straight.flush()
    resumed.flush()
    assert_states_equal(straight.state_dict(), resumed.state_dict())
    centred = StreamMemory(cfg)
    centred.write(x, t, t + 1)  # no positions: every token at the centre
    centred.flush()
    assert not torch.equal(centred.banks["visual"].values, straight.banks["visual"].values)
    with pytest.raises(ValueError, match=r"positions must be finite with shape \[20, 2\]"):
        StreamMemory(cfg).write(x, t, t + 1, positions=where[:3])
    # without rope_regions positions are not kept: states stay what they were
    assert "pos" not in StreamMemory(memory_config(rope=True)).state_dict()["pending"]


def test_configs_stored_before_an_option_existed_read_it_as_it_was() -> None:
    from vsalmonn.memory_store.config import LEGACY_FIELDS, saved_config

    fields = MemoryConfig(rope=True, mlp_ratio=2, value_time_code=1.0).model_dump(mode="json")
    for key in ("rope", "mlp_ratio", "value_time_code", "audio_merge_balance"):
        del fields[key]
    old = saved_config(fields)
    # whatever today's defaults are, a config that predates a field was made with its old value
    assert (old.rope, old.mlp_ratio, old.value_time_code) == (False, 4, 0.0)
    assert MemoryConfig().audio_merge_balance > 0 and old.audio_merge_balance == 0.0  # the paper's merge
    assert set(LEGACY_FIELDS) <= set(MemoryConfig.model_fields)
    # a memory with the option on refuses the old state: it was not made with it
    mem = StreamMemory(memory_config())
    state = mem.state_dict()
    del state["config"]["rope"]
    with pytest.raises(ValueError, match=r"different configuration \(rope\)"):
        StreamMemory(memory_config(rope=True)).load_state_dict(state)
