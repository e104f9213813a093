"""Rotary position embedding of the TTT layer's queries and keys by stream time (`TTTConfig.rope`).

The paper rotates q and k after their l2 norm so that the fast weights can tell when they saw a thing: after
the rotation, q_i·k_j depends on the times only through t_i − t_j. Channels rotate in pairs (2j, 2j + 1)
within each head, pair j at the angular frequency base^(−2j/p) per `unit_s` seconds, so the fastest pair turns
one radian per unit and the slowest takes about `base` units per radian. Angles are computed in float64
(a three-hour stream is 10⁴ s) and only their cosine and sine are cast to the tokens' dtype.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import Tensor

_REGION = re.compile(r"region (\d+) (\d+)")


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


def rope_angles_3d(
    times: Tensor, positions: Tensor, head_dim: int, *, base: float, unit_s: float
) -> tuple[Tensor, Tensor]:
    """The paper's 3-D RoPE: time, height and width share the channel pairs, interleaved so that each axis
    spans the whole frequency range (pairs j ≡ 0, 1 mod 4 turn with time, j ≡ 2 with the height, j ≡ 3 with
    the width). times (B, n) seconds, positions (B, n, 2) (height, width) in grid cells → two (B, 1, n, p/2).
    A frame's tokens share their time, so their q·k then depends on where they lie relative to each other."""
    cos, sin = rope_angles(times, head_dim, base=base, unit_s=unit_s)  # (B, 1, n, p/2) the time angles
    pairs = torch.arange(head_dim // 2, dtype=torch.float64, device=times.device)  # (p/2,)
    freq = base ** (-2.0 * pairs / head_dim)  # (p/2,)
    axis = (pairs.long() % 4) - 2  # (p/2,) -2, -1: time; 0: height; 1: width
    where = positions.to(torch.float64)[:, None]  # (B, 1, n, 2)
    spatial = torch.where(axis == 0, where[..., 0:1], where[..., 1:2]) * freq  # (B, 1, n, p/2)
    is_time = axis < 0  # (p/2,)
    return torch.where(is_time, cos, spatial.cos()), torch.where(is_time, sin, spatial.sin())


def kind_positions(kinds: Sequence[str]) -> list[tuple[float, float]]:
    """(height, width) of each token kind of a frame, in grid cells from the frame's centre: "global" is the
    centre (0, 0); "region r c" of an R×R grid is (r + ½ − R/2, c + ½ − R/2). Any other kind (a plugin's
    encoder may name its tokens as it likes) counts as the centre: it then shares the frame's angle, as every
    token does without region positions."""
    cells = [m for k in kinds if (m := _REGION.fullmatch(k))]
    side = max((int(m.group(g)) + 1 for m in cells for g in (1, 2)), default=0)
    out: list[tuple[float, float]] = []
    for kind in kinds:
        m = _REGION.fullmatch(kind)
        out.append((0.0, 0.0) if m is None else (int(m[1]) + 0.5 - side / 2, int(m[2]) + 0.5 - side / 2))
    return out


def frame_positions(per_frame: int) -> list[tuple[float, float]]:
    """Positions of a frame's `per_frame` tokens in the encoders' order (global, then the R×R regions row by
    row), for token arrays that no longer carry their kinds (cached benchmark and training streams)."""
    side = math.isqrt(per_frame - 1) if per_frame > 0 else 0
    if per_frame < 1 or side * side != per_frame - 1:
        raise ValueError(f"{per_frame} tokens a frame is not one global token and a square grid of regions")
    return kind_positions(["global", *(f"region {r} {c}" for r in range(side) for c in range(side))])
