"""StreamMemory end to end: planted tokens, exact state round trips, and rejected input."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from vsalmonn.memory_store import MemoryConfig, StreamMemory

DIM = 64


def small_config(**overrides: Any) -> MemoryConfig:
    base: dict[str, Any] = dict(
        dim=DIM,
        heads=4,
        mlp_ratio=2,
        visual_slots=256,
        audio_slots=64,
        mini_batch=128,
        long_span_lag=128,
        reader_visual_slots=8,
        reader_audio_slots=4,
    )
    base.update(overrides)
    return MemoryConfig(**base)


def drifting_stream(n: int, *, seed: int, noise: float = 0.02) -> torch.Tensor:
    """Near-duplicate unit vectors that drift slowly, like the tokens of a static camera."""
    gen = torch.Generator().manual_seed(seed)
    anchors = torch.randn(4, DIM, generator=gen)
    t = torch.linspace(0, 3, n)[:, None]
    idx = t.long().clamp(max=2)
    frac = t - idx
    base = anchors[idx[:, 0]] * (1 - frac) + anchors[idx[:, 0] + 1] * frac  # (n, d)
    x = base + noise * torch.randn(n, DIM, generator=gen)
    return torch.nn.functional.normalize(x, dim=-1)


def assert_states_equal(a: Any, b: Any, path: str = "state") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys differ"
        for k in a:
            assert_states_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{list(a.shape)} vs {b.dtype}"
        assert torch.equal(a, b), f"{path}: tensors differ"
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.mark.parametrize(
    ("policy", "ttt", "optimizer"),
    [
        ("merge", False, "gd"),
        ("discard", False, "gd"),
        ("merge", True, "gd"),
        ("merge", True, "hf_cg"),
        ("discard", True, "hf_cg"),
        ("merge", True, "hf_cg_newton"),
    ],
)
def test_planted_token_is_read_first(policy: str, ttt: bool, optimizer: str) -> None:
    n, at = 4000, 1234
    x = drifting_stream(n, seed=11)
    needle = torch.nn.functional.normalize(
        torch.randn(DIM, generator=torch.Generator().manual_seed(99)), dim=0
    )
    x[at] = needle
    times = torch.arange(n, dtype=torch.float64) / 8  # 8 tokens a second
    mem = StreamMemory(small_config(policy=policy, ttt=ttt, optimizer=optimizer))
    for start in range(0, n, 500):
        sl = slice(start, start + 500)
        mem.write(x[sl], times[sl], times[sl] + 0.125)
    mem.flush()
    assert len(mem) <= 256 + 64
    moments = mem.read(needle, k=5)
    top = moments[0]
    planted_t = times[at].item()
    assert top.t0 <= planted_t <= top.t1, f"{policy}: best moment [{top.t0}, {top.t1}] misses {planted_t}"
    assert top.t1 - top.t0 < 5.0, f"{policy}: best moment is {top.t1 - top.t0:.1f} s long"


def test_fifo_loses_the_planted_token_once_it_scrolled_out() -> None:
    n, at = 4000, 100
    x = drifting_stream(n, seed=12)
    needle = torch.nn.functional.normalize(
        torch.randn(DIM, generator=torch.Generator().manual_seed(98)), dim=0
    )
    x[at] = needle
    times = torch.arange(n, dtype=torch.float64)
    mem = StreamMemory(small_config(policy="fifo", ttt=False))
    mem.write(x[:200], times[:200], times[:200] + 1)
    found = mem.read(needle, k=1)[0]
    assert found.t0 <= at <= found.t1, "fifo should still hold the needle before it scrolls out"
    mem.write(x[200:], times[200:], times[200:] + 1)
    assert all(not (m.t0 <= at <= m.t1) for m in mem.read(needle, k=5))
    assert min(m.t0 for m in mem.read(needle, k=5)) >= n - 256


def test_pending_tokens_are_searchable_before_their_mini_batch_runs() -> None:
    mem = StreamMemory(small_config(ttt=True))
    x = drifting_stream(50, seed=13)
    mem.write(x, torch.arange(50.0), torch.arange(50.0) + 1)
    assert mem.pending == 50 and len(mem) == 0
    top = mem.read(x[17], k=1)[0]
    assert top.t0 <= 17 <= top.t1
    mem.flush()
    assert mem.pending == 0 and len(mem) == 50


def write_script(mem: StreamMemory, seed: int, steps: range) -> None:
    """A reproducible mixture of visual and audio writes of uneven sizes."""
    for step in steps:
        gen = torch.Generator().manual_seed(seed * 1000 + step)
        n = int(torch.randint(1, 300, (1,), generator=gen))
        x = torch.nn.functional.normalize(torch.randn(n, DIM, generator=gen), dim=-1)
        t = step * 100 + torch.sort(torch.rand(n, generator=gen, dtype=torch.float64) * 99).values
        mem.write(x, t, t + 0.5, modality="audio" if step % 3 == 2 else "visual")


@pytest.mark.parametrize("optimizer", ["gd", "hf_cg", "hf_cg_newton"])
def test_state_round_trip_continues_bit_for_bit(optimizer: str) -> None:
    cfg = small_config(optimizer=optimizer)
    straight = StreamMemory(cfg)
    write_script(straight, 5, range(24))

    first = StreamMemory(cfg)
    write_script(first, 5, range(11))
    assert first.pending > 0, "the checkpoint should catch a partial mini-batch"
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = StreamMemory(cfg)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    write_script(resumed, 5, range(11, 24))

    assert_states_equal(straight.state_dict(), resumed.state_dict())
    probe = torch.nn.functional.normalize(torch.randn(3, DIM), dim=-1)
    assert straight.read(probe, k=5) == resumed.read(probe, k=5)


def test_load_refuses_a_state_of_another_configuration() -> None:
    state = StreamMemory(small_config()).state_dict()
    with pytest.raises(ValueError, match=r"different configuration.*visual_slots"):
        StreamMemory(small_config(visual_slots=128)).load_state_dict(state)


def test_budgets_hold_for_a_long_stream() -> None:
    mem = StreamMemory(small_config(visual_slots=100, audio_slots=20))
    for i in range(30):
        x = torch.nn.functional.normalize(torch.randn(200, DIM), dim=-1)
        t = torch.arange(200, dtype=torch.float64) + 200 * i
        mem.write(x, t, t + 1, modality="visual" if i % 2 else "audio")
        assert len(mem) <= 120
    assert len(mem.banks["visual"]) == 100 and len(mem.banks["audio"]) == 20


BAD_WRITES = [
    ("wrong dim", lambda: (torch.zeros(3, DIM + 1), [10.0] * 3, [11.0] * 3, "visual"), "shape"),
    ("nan", lambda: (torch.full((3, DIM), math.nan), [10.0] * 3, [11.0] * 3, "visual"), "NaN or inf"),
    ("inf", lambda: (torch.full((3, DIM), math.inf), [10.0] * 3, [11.0] * 3, "audio"), "NaN or inf"),
    ("nan time", lambda: (torch.zeros(3, DIM), [10.0, math.nan, 12.0], [11.0] * 3, "visual"), "NaN or inf"),
    ("lengths", lambda: (torch.zeros(3, DIM), [10.0] * 2, [11.0] * 3, "visual"), "3 tokens but 2 t0"),
    ("t1 < t0", lambda: (torch.zeros(3, DIM), [10.0] * 3, [11.0, 9.0, 11.0], "visual"), "t1 < t0 at token 1"),
    ("backwards inside", lambda: (torch.zeros(2, DIM), [12.0, 11.0], [13.0] * 2, "visual"), "backwards"),
    ("backwards", lambda: (torch.zeros(2, DIM), [1.0, 2.0], [3.0] * 2, "visual"), "backwards"),
    ("modality", lambda: (torch.zeros(2, DIM), [10.0] * 2, [11.0] * 2, "smell"), "modality"),
    ("strings", lambda: ([["a"] * DIM], [10.0], [11.0], "visual"), "numeric"),
]


@pytest.mark.parametrize(("case", "make", "reason"), BAD_WRITES, ids=[c[0] for c in BAD_WRITES])
def test_bad_writes_raise_one_line_and_change_nothing(case: str, make: Any, reason: str) -> None:
    mem = StreamMemory(small_config())
    write_script(mem, 7, range(3))  # visual and audio up to t ≈ 300 with tokens pending
    mem.write(torch.nn.functional.normalize(torch.ones(1, DIM), dim=-1), [400.0], [401.0], modality="audio")
    before = mem.state_dict()
    tokens, t0, t1, modality = make()
    if case == "backwards":
        t0, t1 = [350.0, 351.0], [352.0, 352.0]
        modality = "audio"
    with pytest.raises(ValueError, match=reason) as err:
        mem.write(tokens, t0, t1, modality=modality)
    assert "\n" not in str(err.value)
    assert_states_equal(before, mem.state_dict())


@pytest.mark.parametrize(
    ("prompt", "k", "reason"),
    [
        (torch.zeros(2, DIM + 1), 5, "shape"),
        (torch.full((1, DIM), math.nan), 5, "NaN or inf"),
        (torch.zeros(0, DIM), 5, "shape"),
        (torch.ones(DIM), 0, "k must be"),
    ],
)
def test_bad_reads_raise(prompt: torch.Tensor, k: int, reason: str) -> None:
    mem = StreamMemory(small_config())
    with pytest.raises(ValueError, match=reason):
        mem.read(prompt, k=k)


def test_uncopied_state_is_a_stable_snapshot() -> None:
    """A snapshot taken without copying stays as it was while the memory goes on being written."""
    mem = StreamMemory(small_config())
    write_script(mem, 8, range(6))
    snapshot, copied = mem.state_dict(copy=False), mem.state_dict()
    write_script(mem, 8, range(6, 14))
    assert_states_equal(copied, snapshot)


def test_the_reader_view_moves_visual_prompts_only_and_survives_a_round_trip() -> None:
    """θ_R acts on the prompt of visual reads; audio slots are read with the prompt as it is."""
    mem = StreamMemory(small_config(ttt=False))
    x = drifting_stream(12, seed=3)
    mem.write(x, torch.arange(12.0), torch.arange(12.0) + 1)
    mem.write(x[:4], torch.arange(4.0), torch.arange(4.0) + 1, modality="audio")
    swap = torch.eye(DIM)[torch.randperm(DIM, generator=torch.Generator().manual_seed(0))]  # (d, d)
    with torch.no_grad():
        mem.layer.reader_proj.copy_(swap)
    other = StreamMemory(small_config(ttt=False))
    other.load_state_dict(mem.state_dict())
    prompt = x[7]
    visual = other.read(prompt, k=1, modality="visual")[0]
    assert visual.score == pytest.approx(float(F.cosine_similarity(swap @ prompt, x[7], dim=0)), abs=1e-5)
    audio = other.read(prompt, k=1, modality="audio")[0]
    raw = F.cosine_similarity(prompt[None], x[:4]).max()  # the best audio slot, prompt unchanged
    assert audio.score == pytest.approx(float(raw), abs=1e-5)
    assert not torch.equal(other.banks["visual"].keys, swap)  # the slots are stored as written


def test_states_saved_before_the_reader_view_load_with_the_identity() -> None:
    mem = StreamMemory(small_config(ttt=False))
    state = mem.state_dict()
    del state["slow"]["reader_proj"]
    other = StreamMemory(small_config(ttt=False))
    other.load_state_dict(state)
    torch.testing.assert_close(other.layer.reader_proj, torch.eye(DIM))


def test_reads_between_writes_see_the_newest_pending_tokens() -> None:
    mem = StreamMemory(small_config(ttt=True))
    x = drifting_stream(80, seed=14)
    mem.write(x[:50], torch.arange(50.0), torch.arange(50.0) + 1)
    first = mem.read(x[17], k=1)[0]
    assert first.t0 <= 17 <= first.t1
    assert mem.read(x[17], k=1)[0] == first  # a second read of the same state
    mem.write(x[50:], torch.arange(50.0, 80.0), torch.arange(50.0, 80.0) + 1)
    top = mem.read(x[66], k=1)[0]
    assert top.t0 <= 66 <= top.t1


def test_ttt_config_is_the_memory_configs_ttt_fields() -> None:
    """TTTConfig's fields, defaults and bounds are MemoryConfig's own: one definition, no copy to drift."""
    from pydantic import ValidationError

    from vsalmonn.memory_store.memory import ttt_config
    from vsalmonn.memory_store.ttt import TTTConfig

    assert issubclass(MemoryConfig, TTTConfig)
    assert ttt_config(MemoryConfig()) == TTTConfig()
    memory = MemoryConfig(dim=64, heads=4, long_span_lag=0, optimizer="gd", cg_max_iter=2, seed=7)
    derived = ttt_config(memory)
    assert type(derived) is TTTConfig
    assert derived.model_dump() == memory.model_dump(include=set(TTTConfig.model_fields))
    assert derived.head_dim == 16 and derived.hidden == 16 * memory.mlp_ratio
    with pytest.raises(ValidationError, match="not divisible by heads"):
        TTTConfig(dim=30, heads=4)
    with pytest.raises(ValidationError, match="cg_stop_fraction"):
        TTTConfig(cg_stop_fraction=2.0)
    with pytest.raises(ValidationError, match="visual_slots"):
        TTTConfig(visual_slots=8)  # type: ignore[call-arg]  # a bank setting, not the layer's
