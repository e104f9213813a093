"""Training the slow weights: the differentiable bank, the objective, the loop, the file and the command.

The pools here are random token arrays of a small width: they test the training machinery (and that it
learns something learnable: a hidden rotation between queries and pictures), not the shipped weights, which
`bench needle` measures on real footage.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from vsalmonn.cli import main
from vsalmonn.memory_store.bank import Bank
from vsalmonn.memory_store.config import MemoryConfig
from vsalmonn.memory_store.memory import ttt_config
from vsalmonn.memory_store.slow_weights import load_slow_weights
from vsalmonn.memory_store.training import (
    SlotBank,
    TrainConfig,
    recall_at,
    reduce_bank,
    stream_loss,
    train,
)
from vsalmonn.memory_store.training_streams import TokenPool, compose
from vsalmonn.memory_store.ttt import TTTLayer
from vsalmonn.perception.training_pool import PoolConfig, clip_frames

DIM, HEADS, TOKENS = 32, 4, 3
SMALL = {"dim": DIM, "heads": HEADS, "mini_batch": 64, "long_span_lag": 64}


def rotated_pool(seed: int = 0, sights: int = 8) -> TokenPool:
    """Background frames that drift slowly, pictures far from them, and text queries that are a fixed
    rotation of each picture's global token: the untrained reader cannot match them, a trained θ_R can."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal((600, TOKENS, DIM)) * 0.1, axis=0) + rng.standard_normal(
        (1, TOKENS, DIM)
    )
    pictures = rng.standard_normal((sights, 1, 1, TOKENS, DIM))
    looks = pictures + 0.05 * rng.standard_normal((sights, 3, 4, TOKENS, DIM))  # (S, V, Z, n, d)
    rotation, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))  # (d, d)
    queries = pictures[:, 0, 0, 0] @ rotation.T  # (S, d)
    return TokenPool(
        background=[walk.astype(np.float32)],
        background_fps=[1.0],
        sights=looks.astype(np.float32),
        sight_names=[f"s{i}" for i in range(sights)],
        sight_queries=queries.astype(np.float32),
    )


def small_train(**overrides: object) -> TrainConfig:
    base: dict[str, object] = dict(
        steps=3,
        seconds=(200.0, 400.0),
        needles=(3, 5),
        text_share=1.0,
        visual_slots=96,
        bptt_chunks=2,
        validation_sights=["s6", "s7"],
        validation_streams=0,
        device="cpu",
        memory=SMALL,
    )
    return TrainConfig(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["merge", "discard"])
def test_reduce_bank_keeps_what_the_bank_keeps(policy: str) -> None:
    bank = Bank(40, DIM, policy, tied_keys=True)  # type: ignore[arg-type]
    slots = SlotBank.empty(DIM, torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    for i in range(5):
        x = torch.randn(25, DIM, generator=gen)  # (n, d)
        t = torch.arange(25, dtype=torch.float64) + 25 * i  # (n,)
        bank.append(x, None, t, t + 1, torch.arange(25) + 25 * i)
        slots = reduce_bank(slots, x, t, t + 1, 40, policy)  # type: ignore[arg-type]
    torch.testing.assert_close(slots.values, bank.values)
    assert torch.equal(slots.t0, bank.t0) and torch.equal(slots.t1, bank.t1)


def test_reduce_bank_refuses_the_policies_training_does_not_support() -> None:
    slots = SlotBank.empty(DIM, torch.device("cpu"))
    x, t = torch.randn(10, DIM), torch.arange(10, dtype=torch.float64)
    with pytest.raises(ValueError, match="merge and discard"):
        reduce_bank(slots, x, t, t + 1, 4, "fifo")


def test_compose_places_needles_with_their_frames_and_queries() -> None:
    pool = rotated_pool()
    stream = compose(pool, np.random.default_rng(3), 300.0, [0, 1, 2, 3], 3, text_share=0.0)
    assert stream.tokens.shape == (300 * TOKENS, DIM) and stream.t0.shape == (300 * TOKENS,)
    assert len(stream.needles) == 3 == len(stream.queries)
    ends = [n.t0 for n in stream.needles[1:]]
    assert all(b - a.t1 >= 15 for a, b in zip(stream.needles, ends, strict=False))
    for needle, query in zip(stream.needles, stream.queries, strict=True):
        first = int(needle.t0) * TOKENS
        shown = stream.tokens[first : first + TOKENS]  # the needle's first frame
        assert min(np.abs(shown - pool.sights[needle.sight, v, 0]).max() for v in range(3)) == 0.0
        assert needle.kind == "image"
        # a query by picture is a global token of the same sight, under another look than the one shown
        assert any(
            np.array_equal(query, pool.sights[needle.sight, v, z, 0]) for v in range(3) for z in range(4)
        )
        assert not any(np.array_equal(shown, pool.sights[needle.sight, v, 0]) and np.array_equal(
            query, pool.sights[needle.sight, v, 0, 0]) for v in range(3))  # fmt: skip


def test_gradients_reach_every_slow_weight() -> None:
    pool = rotated_pool()
    config = small_train()
    layer = TTTLayer(ttt_config(MemoryConfig(**SMALL, optimizer="gd")))
    stream = compose(pool, np.random.default_rng(0), 400.0, list(range(6)), 5, text_share=1.0)
    stats = stream_loss(layer, stream, "merge", config, torch.device("cpu"))
    assert np.isfinite(stats["loss"]) and stats["asked"] > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_training_is_seeded_and_logged(tmp_path: Path) -> None:
    pool = rotated_pool()
    a = train(pool, small_train(), log_path=tmp_path / "a.jsonl")
    b = train(pool, small_train())
    for key in a.state:
        assert torch.equal(a.state[key], b.state[key]), key
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    assert all(np.isfinite(x["loss"]) for x in lines)
    c = train(pool, small_train(seed=1))
    assert any(not torch.equal(a.state[k], c.state[k]) for k in a.state)


def test_training_learns_a_reader_view_that_finds_unseen_pictures() -> None:
    """Queries are a hidden rotation of the pictures: untrained, the reader finds few of the held-out
    pictures; after training on the others (enough of them to pin the rotation down) it finds most."""
    pool = rotated_pool(sights=48)
    held = [f"s{i}" for i in range(40, 48)]
    config = small_train(steps=60, lr=0.05, pull=0.0, needles=(5, 8), validation_sights=held)
    memory = MemoryConfig(**SMALL, visual_slots=96, optimizer="gd")
    checks = [
        compose(pool, np.random.default_rng(100 + i), 400.0, list(range(40, 48)), 4, 1.0) for i in range(4)
    ]
    before = recall_at(memory, None, checks)
    result = train(pool, config)
    layer = TTTLayer(ttt_config(memory))
    layer.load_state_dict(result.state)
    after = recall_at(memory, layer, checks)
    assert before <= 50.0
    assert after >= before + 30.0


def test_validation_sights_must_exist_and_leave_something_to_train_on() -> None:
    pool = rotated_pool(sights=2)
    with pytest.raises(ValueError, match="not in the pool: nope"):
        train(pool, small_train(validation_sights=["nope"]))
    with pytest.raises(ValueError, match="nothing to train on"):
        train(pool, small_train(validation_sights=["s0", "s1"]))


def test_pool_round_trip(tmp_path: Path) -> None:
    pool = rotated_pool()
    pool.save(tmp_path / "pool.npz")
    again = TokenPool.load(tmp_path / "pool.npz")
    assert np.array_equal(again.sights, pool.sights) and again.sight_names == pool.sight_names
    assert np.array_equal(again.background[0], pool.background[0])


def test_pool_config_wants_one_source_per_sight() -> None:
    with pytest.raises(ValueError, match="either file, or package and path"):
        PoolConfig(sights=[{"name": "x", "query": "x"}])  # type: ignore[list-item]


def test_a_broken_clip_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(ValueError, match="cannot decode"):
        clip_frames(bad)
    with pytest.raises(FileNotFoundError):
        clip_frames(tmp_path / "absent.avi")


def test_the_command_trains_from_a_cached_pool_and_writes_a_verified_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "train.toml"
    config.write_text(
        '[data]\nmedia = "."\nsights = [{ name = "a", query = "a", file = "a.png" }]\n'
        f"[train]\nsteps = 2\nseconds = [200.0, 300.0]\nneedles = [2, 3]\nvisual_slots = 96\n"
        f'device = "cpu"\nvalidation_sights = ["s7"]\nvalidation_streams = 1\nvalidate_every = 2\n'
        f"memory = {{ dim = {DIM}, heads = {HEADS}, mini_batch = 64, long_span_lag = 64 }}\n"
    )
    data = tmp_path / "data"
    # The pool as the command would have cached it for these data settings and the default encoders.
    key = PoolConfig(**tomllib.loads(config.read_text())["data"]).key("efficientnet-lite0/minilm")
    rotated_pool().save(data / "train" / f"pool-{key}.npz")
    out = tmp_path / "theta.safetensors"
    code = main(["train-memory", "--data", str(data), "--train-config", str(config), "-o", str(out)])
    assert code == 0
    assert "slow weights written to" in capsys.readouterr().out
    state, info = load_slow_weights(out)
    assert (info.vision_encoder, info.text_encoder, info.dim, info.heads) == (
        "efficientnet-lite0",
        "minilm",
        DIM,
        HEADS,
    )
    assert info.trained["train"]["steps"] == 2 and "val_recall5" in info.trained["final"]
    assert set(state) == set(TTTLayer(ttt_config(MemoryConfig(**SMALL))).state_dict())
    assert len(list((data / "train").glob("train-*.jsonl"))) == 1


def test_the_command_rejects_a_bad_config_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "train.toml"
    config.write_text("[train]\nsteps = -3\n")
    code = main(["train-memory", "--data", str(tmp_path), "--train-config", str(config)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "steps" in err
    assert main(["train-memory", "--data", str(tmp_path), "--train-config", str(tmp_path / "none.toml")]) == 2
