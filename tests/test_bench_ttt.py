"""`vsalmonn bench ttt`'s token streams: the targets are read on scenes because hf_cg's cost depends on its
input through the φ rule, and scenes cost what encoded video costs (docs/benchmarks.md, "Issue 17: page
faults, and the arithmetic behind gd / hf_cg")."""

from __future__ import annotations

import importlib

import pytest
import torch

from vsalmonn.cli.bench import BENCH_PACKAGE, load_benchmark

ttt = load_benchmark("ttt")
token_stream = ttt.token_stream
SCENE = importlib.import_module(f"{BENCH_PACKAGE}._harness").SCENE


def test_token_streams_are_unit_tokens_and_scenes_hold_together() -> None:
    scenes = token_stream("scenes", 3 * SCENE + 5, 48, seed=1, dtype=torch.float32)  # a scene cut short
    rand = token_stream("random", 3 * SCENE + 5, 48, seed=1, dtype=torch.float32)
    for x in (scenes, rand):
        assert x.shape == (1, 3 * SCENE + 5, 48) and x.dtype == torch.float32
        assert torch.allclose(x.norm(dim=-1), torch.ones(1, 3 * SCENE + 5))
    within = (scenes[0, 0] @ scenes[0, 1:SCENE].T).min()  # one scene's tokens share their anchor
    across = (scenes[0, 0] @ scenes[0, SCENE : 2 * SCENE].T).abs().max()
    assert within > 0.5 > across
    assert (rand[0, 0] @ rand[0, 1:].T).abs().max() < 0.6
    assert torch.equal(token_stream("scenes", 128, 48, seed=1), token_stream("scenes", 128, 48, seed=1))
    with pytest.raises(ValueError, match="'scenes' or 'random'"):
        token_stream("video", 8, 48)


def test_hf_cg_runs_every_cg_iteration_on_scenes_and_stops_at_two_on_random_tokens() -> None:
    """What the bench's choice rests on; encoded video behaves as scenes do (17 of 17 mini-batches of the
    needle streams at 4 iterations, shipped θ or not: docs/benchmarks.md)."""
    scenes = ttt._ttt_throughput(warmup=0, timed=2, stream="scenes")
    rand = ttt._ttt_throughput(warmup=0, timed=2, stream="random")
    assert scenes["hf_cg"]["cg_iterations_mean"] == ttt.CG_MAX_ITER
    assert rand["hf_cg"]["cg_iterations_mean"] == 2
    assert scenes["hf_cg_newton"]["cg_iterations_mean"] == rand["hf_cg_newton"]["cg_iterations_mean"] == 4
    for result in (scenes, rand):
        assert set(result) == set(ttt.OPTIMIZERS)
        assert all(r["tokens_per_s"] > 0 and r["page_faults_per_mini_batch"] >= 0 for r in result.values())
