"""Rotary position embedding of the TTT layer's queries and keys by stream time (`TTTConfig.rope`).

The paper rotates q and k after their l2 norm so that the fast weights can tell when they saw a thing: after
the rotation, q_i·k_j depends on the times only through t_i − t_j. Channels rotate in pairs (2j, 2j + 1)
within each head, pair j at the angular frequency base^(−2j/p) per `unit_s` seconds, so the fastest pair turns
one radian per unit and the slowest takes about `base` units per radian. Angles are computed in float64
(a three-hour stream is 10⁴ s) and only their cosine and sine are cast to the tokens' dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_angles(times: Tensor, head_dim: int, *, base: float, unit_s: float) -> tuple[Tensor, Tensor]:
    """cos and sin of every token's angle per channel pair: times (B, n) seconds → two (B, 1, n, p/2)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head width, got {head_dim}")
    pairs = torch.arange(head_dim // 2, dtype=torch.float64, device=times.device)  # (p/2,)
    freq = base ** (-2.0 * pairs / head_dim)  # (p/2,) radians per unit
    angle = (times.to(torch.float64) / unit_s)[:, None, :, None] * freq  # (B, 1, n, p/2)
    return angle.cos(), angle.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, n, p) with each channel pair (2j, 2j + 1) rotated by its angle; a rotation keeps the norm."""
    c, s = cos.to(x.dtype), sin.to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]  # (B, H, n, p/2) each
    return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2)  # (B, H, n, p)


def time_code(cos: Tensor, sin: Tensor) -> Tensor:
    """The unit vector (cos θ_0, sin θ_0, cos θ_1, …)/√(p/2) of each token's angles: two (B, 1, n, p/2) →
    (B, 1, n, p). Added to the values (`TTTConfig.value_time_code`), it makes what the fast weights return
    for a key carry when that key was seen; its inner products depend on time differences only, as RoPE's."""
    pairs = cos.shape[-1]
    return torch.stack([cos, sin], dim=-1).flatten(-2) / pairs**0.5  # (B, 1, n, p)
