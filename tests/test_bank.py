"""The fixed-size bank: its invariants under any appends, what each policy keeps, and exact persistence."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vsalmonn.memory_store.bank import Bank, lowest_k_mask

POLICIES = ("merge", "discard", "fifo", "uniform")


@dataclass
class Written:
    """Everything appended to a bank so far, to check the bank against."""

    values: torch.Tensor
    keys: torch.Tensor
    t0: torch.Tensor
    t1: torch.Tensor
    ids: torch.Tensor


class Stream:
    """Makes consecutive chunks of a stream: increasing ids, non-overlapping time-ordered spans.

    ``discrete`` draws small integer vectors so that exact duplicates, zero vectors and tied similarities
    occur often; ``gaps`` lets ids skip values and spans touch or leave holes.
    """

    def __init__(self, dim: int, seed: int, *, discrete: bool = False, gaps: bool = False) -> None:
        self.dim = dim
        self.gen = torch.Generator().manual_seed(seed)
        self.discrete = discrete
        self.gaps = gaps
        self.next_id = 0
        self.clock = 0.0
        self.chunks: list[tuple[torch.Tensor, ...]] = []

    def chunk(self, n: int) -> tuple[torch.Tensor, ...]:
        g = self.gen
        if self.discrete:
            values = torch.randint(-1, 2, (n, self.dim), generator=g).float()  # (n, dim)
        else:
            values = torch.randn(n, self.dim, generator=g)  # (n, dim)
        keys = values @ torch.linspace(-1, 1, self.dim * self.dim).view(self.dim, self.dim)  # (n, dim)
        if self.gaps:
            step = torch.randint(1, 4, (n,), generator=g)  # id increments
            dur = torch.randint(0, 3, (n,), generator=g).double() / 2  # span lengths, zero included
            gap = torch.randint(0, 2, (n,), generator=g).double()  # silence before each span
        else:
            step, dur, gap = torch.ones(n, dtype=torch.int64), torch.ones(n).double(), torch.zeros(n).double()
        ids = self.next_id + torch.cumsum(step, 0) - 1  # (n,)
        t0 = self.clock + torch.cumsum(gap, 0) + torch.cumsum(dur, 0) - dur  # (n,)
        t1 = t0 + dur  # (n,)
        if n:
            self.next_id = int(ids[-1]) + 1
            self.clock = float(t1[-1])
        out = (values, keys, t0, t1, ids)
        self.chunks.append(out)
        return out

    def written(self) -> Written:
        cols = list(zip(*self.chunks, strict=True)) if self.chunks else [[torch.empty(0)]] * 5
        return Written(*(torch.cat(c) for c in cols))


def check_invariants(bank: Bank, written: Written) -> None:
    """What must hold for every policy after any appends, plus what each policy promises about content."""
    s = len(bank)
    total = written.ids.numel()
    assert s <= bank.capacity
    for name in ("values", "keys"):
        assert getattr(bank, name).shape == (s, bank.dim)
    for name in ("t0", "t1", "id0", "id1", "count"):
        assert getattr(bank, name).shape == (s,)
    if total and bank.policy != "uniform":
        assert s == min(total, bank.capacity)
    if s == 0:
        return
    # The cached similarity of each slot to its predecessor matches a fresh computation.
    fresh = torch.nn.functional.cosine_similarity(bank.values[1:], bank.values[:-1], dim=1, eps=1e-30)
    torch.testing.assert_close(
        bank._sim, torch.cat([torch.tensor([-torch.inf]), fresh]), rtol=1e-5, atol=1e-6
    )
    # Spans: ordered, within the written range; consecutive slots never overlap.
    assert bool((bank.t0 <= bank.t1).all())
    assert bool((bank.t1[:-1] <= bank.t0[1:]).all())
    assert float(bank.t0.min()) >= float(written.t0.min())
    assert float(bank.t1.max()) <= float(written.t1.max())
    # Ids: each slot's range starts and ends at written ids, ranges are disjoint and increasing.
    assert bool((bank.id0 <= bank.id1).all())
    assert bool((bank.id1[:-1] < bank.id0[1:]).all())
    assert bool(torch.isin(bank.id0, written.ids).all()) and bool(torch.isin(bank.id1, written.ids).all())

    # Which written tokens each slot covers: (s, total) membership by id range.
    covers = (written.ids[None, :] >= bank.id0[:, None]) & (written.ids[None, :] <= bank.id1[:, None])
    assert torch.equal(bank.count, covers.sum(1))
    first = covers.float().argmax(1)  # (s,) position of each slot's first token
    assert torch.equal(bank.t0, written.t0[first])
    assert torch.equal(bank.t1, torch.where(covers, written.t1[None, :], -torch.inf).amax(1))

    if bank.policy == "merge":
        # Runs partition the written stream, and a slot is the mean of everything it covers.
        assert bool((covers.sum(0) == 1).all())
        assert int(bank.count.sum()) == total
        weights = bank.count.double()[:, None]
        for name, written_rows in (("values", written.values), ("keys", written.keys)):
            rows = getattr(bank, name).double()
            torch.testing.assert_close(
                (rows * weights).sum(0), written_rows.double().sum(0), rtol=1e-5, atol=1e-4
            )
            mean = covers.double() @ written_rows.double() / weights
            torch.testing.assert_close(rows, mean, rtol=1e-5, atol=1e-5)
    else:
        # Every other policy keeps a subset of the written tokens, untouched.
        assert torch.equal(bank.id0, bank.id1)
        assert bool((bank.count == 1).all())
        pos = torch.searchsorted(written.ids, bank.id0)
        assert torch.equal(bank.values, written.values[pos])
        assert torch.equal(bank.keys, written.keys[pos])
        assert torch.equal(bank.t1, written.t1[pos])
    if bank.policy == "fifo":
        assert torch.equal(bank.id0, written.ids[total - s :])
    if bank.policy == "uniform":
        stride = bank.stride
        assert stride & (stride - 1) == 0, "the stride is a power of two"
        assert torch.equal(bank.id0, written.ids[written.ids % stride == 0])


@settings(max_examples=150, deadline=None)
# A uniform bank whose ids miss the grid empties completely, and must still accept later tokens.
@example(policy="uniform", capacity=1, dim=2, sizes=[19, 3], seed=0, discrete=True, gaps=True)
@given(
    policy=st.sampled_from(POLICIES),
    capacity=st.integers(1, 20),
    dim=st.integers(1, 4),
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
    discrete=st.booleans(),
    gaps=st.booleans(),
)
def test_invariants_hold_for_any_appends(
    policy: str, capacity: int, dim: int, sizes: list[int], seed: int, discrete: bool, gaps: bool
) -> None:
    stream = Stream(dim, seed, discrete=discrete, gaps=gaps)
    bank = Bank(capacity, dim, policy)  # type: ignore[arg-type]
    for n in sizes:
        bank.append(*stream.chunk(n))
        check_invariants(bank, stream.written())


def test_merge_keeps_most_novel_boundaries_and_averages_runs() -> None:
    e = torch.eye(3)
    values = torch.stack([e[0], e[0], e[1], 3 * e[1], e[2]])  # similarities: -inf, 1, 0, 1, 0
    ids = torch.arange(5)
    t = ids.double()
    bank = Bank(3, 3, "merge")
    bank.append(values, 2 * values, t, t + 1, ids)
    assert bank.id0.tolist() == [0, 2, 4]
    assert bank.id1.tolist() == [1, 3, 4]
    assert bank.count.tolist() == [2, 2, 1]
    assert torch.equal(bank.values, torch.stack([e[0], 2 * e[1], e[2]]))
    assert torch.equal(bank.keys, 2 * bank.values)
    assert bank.t0.tolist() == [0.0, 2.0, 4.0] and bank.t1.tolist() == [2.0, 4.0, 5.0]


def test_balance_splits_a_run_of_alike_tokens_that_plain_merge_averages_into_one_slot() -> None:
    """bench needle's lost sentences: a long stretch of alike tokens is never novel against its neighbour,
    so plain merge folds it into one ever-growing slot; with `balance` that slot is reluctant to grow."""
    gen = torch.Generator().manual_seed(0)
    dim, capacity = 16, 8
    anchor = torch.nn.functional.normalize(torch.randn(dim, generator=gen), dim=0)
    alike = torch.nn.functional.normalize(anchor + 0.2 * torch.randn(40, dim, generator=gen), dim=1)
    distinct = torch.nn.functional.normalize(torch.randn(8, dim, generator=gen), dim=1)
    stream = torch.cat([distinct[:4], alike, distinct[4:]])  # (48, dim): the alike run in the middle
    plain, balanced = Bank(capacity, dim, "merge"), Bank(capacity, dim, "merge", balance=1.0)
    for bank in (plain, balanced):
        for start in range(0, 48, 4):  # sentences arrive a few at a time
            ids = torch.arange(start, start + 4)
            v = stream[start : start + 4]
            bank.append(v, v, ids.double(), ids.double() + 1, ids)
        assert len(bank) == capacity and int(bank.count.sum()) == 48
    assert int(plain.count.max()) >= 30, plain.count.tolist()  # the run became (nearly) one slot
    assert int(balanced.count.max()) <= 16, balanced.count.tolist()
    # balance 0 is the paper's merge, bit for bit
    zero = Bank(capacity, dim, "merge", balance=0.0)
    for start in range(0, 48, 4):
        ids = torch.arange(start, start + 4)
        zero.append(stream[start : start + 4], stream[start : start + 4], ids.double(), ids.double() + 1, ids)
    assert torch.equal(zero.values, plain.values) and torch.equal(zero.count, plain.count)
    with pytest.raises(ValueError, match="balance"):
        Bank(capacity, dim, "merge", balance=-1.0)


def test_discard_keeps_boundaries_unchanged() -> None:
    e = torch.eye(3)
    values = torch.stack([e[0], e[0], e[1], 3 * e[1], e[2]])
    ids = torch.arange(5) * 10
    bank = Bank(3, 3, "discard")
    bank.append(values, values, ids.double(), ids.double() + 1, ids)
    assert bank.id0.tolist() == [0, 20, 40] and bank.id1.tolist() == [0, 20, 40]
    assert torch.equal(bank.values, torch.stack([e[0], e[1], e[2]]))
    assert bank.count.tolist() == [1, 1, 1]


@pytest.mark.parametrize("policy", ["merge", "discard"])
def test_similarity_ties_keep_earlier_positions(policy: str) -> None:
    values = torch.eye(4)  # every similarity to the predecessor is 0: all tie
    ids = torch.arange(4)
    bank = Bank(2, 4, policy)  # type: ignore[arg-type]
    bank.append(values, values, ids.double(), ids.double() + 1, ids)
    assert bank.id0.tolist() == [0, 1]
    expected_last = values[1:].mean(0) if policy == "merge" else values[1]
    torch.testing.assert_close(bank.values[1], expected_last)


def test_lowest_k_mask_equals_stable_sort() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = torch.randint(0, 5, (40,), generator=gen).float()
        x[0] = -torch.inf
        for k in (0, 1, 7, 20, 39, 40, 45):
            expected = torch.zeros(40, dtype=torch.bool)
            expected[torch.sort(x, stable=True).indices[:k]] = True
            assert torch.equal(lowest_k_mask(x, k), expected)


def planted_stream(dim: int, total: int, planted_at: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Near-duplicates of one base vector with one distinct vector planted among them."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(dim, generator=gen)
    values = base + 0.01 * torch.randn(total, dim, generator=gen)  # (total, dim)
    planted = torch.randn(dim, generator=gen)
    planted = planted - (planted @ base) / (base @ base) * base  # orthogonal to the base
    values[planted_at] = planted
    return values, planted


@pytest.mark.parametrize("policy", ["merge", "discard", "fifo"])
def test_planted_vector_survives_novelty_policies(policy: str) -> None:
    dim, total, chunk, capacity, planted_at = 16, 4096, 256, 64, 1000
    values, planted = planted_stream(dim, total, planted_at)
    bank = Bank(capacity, dim, policy)  # type: ignore[arg-type]
    for start in range(0, total, chunk):
        ids = torch.arange(start, start + chunk)
        bank.append(
            values[start : start + chunk], values[start : start + chunk], ids.double(), ids + 1.0, ids
        )
    cos = torch.nn.functional.cosine_similarity(bank.values, planted[None, :], dim=1)
    if policy == "fifo":
        assert planted_at not in bank.id0.tolist()
        assert float(cos.max()) < 0.5
    else:
        assert planted_at in bank.id0.tolist()
        assert float(cos.max()) > 0.99


def test_fifo_keeps_planted_vector_until_it_scrolls_out() -> None:
    dim, capacity = 8, 32
    values, _ = planted_stream(dim, 200, planted_at=40)
    bank = Bank(capacity, dim, "fifo")
    for start in range(0, 200, 8):
        ids = torch.arange(start, start + 8)
        bank.append(values[start : start + 8], values[start : start + 8], ids.double(), ids + 1.0, ids)
        last = start + 7
        assert (40 in bank.id0.tolist()) == (40 <= last < 40 + capacity)


@pytest.mark.parametrize("policy", POLICIES)
def test_state_dict_round_trip_continues_exactly(policy: str) -> None:
    stream = Stream(5, seed=3, gaps=True)
    sizes = [7, 13, 1, 40, 9, 22, 5, 17, 3, 30]
    chunks = [stream.chunk(n) for n in sizes]
    uninterrupted = Bank(16, 5, policy)  # type: ignore[arg-type]
    interrupted = Bank(16, 5, policy)  # type: ignore[arg-type]
    for c in chunks[:5]:
        uninterrupted.append(*c)
        interrupted.append(*c)
    state = interrupted.state_dict()
    assert all(isinstance(v, torch.Tensor | int) for v in state.values())
    restored = Bank(16, 5, policy)  # type: ignore[arg-type]
    restored.load_state_dict(state)
    state["values"].zero_()  # the state is a copy: changing it must not reach either bank
    for c in chunks[5:]:
        uninterrupted.append(*c)
        restored.append(*c)
    for name in ("values", "keys", "t0", "t1", "id0", "id1", "count"):
        assert torch.equal(getattr(restored, name), getattr(uninterrupted, name)), name
    assert restored.stride == uninterrupted.stride


def test_load_state_dict_refuses_other_shapes() -> None:
    bank = Bank(8, 4, "merge")
    with pytest.raises(ValueError, match="capacity"):
        Bank(9, 4, "merge").load_state_dict(bank.state_dict())
    with pytest.raises(ValueError, match="dim"):
        Bank(8, 3, "merge").load_state_dict(bank.state_dict())


def test_uniform_keeps_common_stride_over_whole_stream() -> None:
    capacity, total = 10, 1000
    bank = Bank(capacity, 2, "uniform")
    gen = torch.Generator().manual_seed(1)
    start = 0
    while start < total:
        n = min(int(torch.randint(1, 60, (1,), generator=gen)), total - start)
        ids = torch.arange(start, start + n)
        bank.append(
            torch.randn(n, 2, generator=gen), torch.randn(n, 2, generator=gen), ids.double(), ids + 1.0, ids
        )
        start += n
    stride = bank.stride
    assert stride == 128  # the smallest power of two with at most 10 multiples below 1000
    assert bank.id0.tolist() == list(range(0, total, stride))
    assert len(bank) <= capacity
    assert int(bank.id0[-1]) >= total - stride  # the newest part of the stream is covered too


def test_uniform_admits_only_on_grid() -> None:
    bank = Bank(4, 1, "uniform")
    ids = torch.arange(6)
    bank.append(torch.ones(6, 1), torch.ones(6, 1), ids.double(), ids + 1.0, ids)  # overflows: stride 2
    assert bank.stride == 2 and bank.id0.tolist() == [0, 2, 4]
    ids = torch.arange(6, 8)  # 7 is off the grid
    bank.append(torch.ones(2, 1), torch.ones(2, 1), ids.double(), ids + 1.0, ids)
    assert bank.stride == 2 and bank.id0.tolist() == [0, 2, 4, 6]
    ids = torch.arange(8, 9)  # on the grid but over capacity: the stride doubles
    bank.append(torch.ones(1, 1), torch.ones(1, 1), ids.double(), ids + 1.0, ids)
    assert bank.stride == 4 and bank.id0.tolist() == [0, 4, 8]


def test_reduction_leaves_earlier_tensors_untouched() -> None:
    stream = Stream(4, seed=5)
    bank = Bank(8, 4, "merge")
    bank.append(*stream.chunk(8))
    keys, snapshot = bank.keys, bank.keys.clone()
    bank.append(*stream.chunk(8))
    assert torch.equal(keys, snapshot)


def test_bfloat16_bank_merges() -> None:
    stream = Stream(8, seed=2)
    bank = Bank(16, 8, "merge", dtype=torch.bfloat16)
    for _ in range(4):
        bank.append(*stream.chunk(10))
    assert bank.values.dtype == torch.bfloat16 and bank.keys.dtype == torch.bfloat16
    assert len(bank) == 16 and int(bank.count.sum()) == 40


def test_empty_append_changes_nothing() -> None:
    bank = Bank(4, 2, "merge")
    bank.append(
        torch.empty(0, 2),
        torch.empty(0, 2),
        torch.empty(0).double(),
        torch.empty(0).double(),
        torch.empty(0, dtype=torch.int64),
    )
    assert len(bank) == 0


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["merge", "discard"])
def test_full_bank_append_speed(policy: str) -> None:
    """DESIGN target: 1,024 tokens (dim 384) into a full 16,384-slot bank in <= 20 ms (best of 10)."""
    capacity, n, dim = 16384, 1024, 384
    stream = Stream(dim, seed=0)
    bank = Bank(capacity, dim, policy)  # type: ignore[arg-type]
    for _ in range(capacity // n + 2):
        bank.append(*stream.chunk(n))
    chunks = [stream.chunk(n) for _ in range(10)]
    best = float("inf")
    for c in chunks:
        start = time.perf_counter()
        bank.append(*c)
        best = min(best, time.perf_counter() - start)
    assert best <= 0.020, f"{policy}: {best * 1e3:.1f} ms"


@pytest.mark.parametrize("policy", ["merge", "discard", "fifo", "uniform"])
def test_tied_keys_behave_like_keys_equal_to_values(policy: str) -> None:
    gen = torch.Generator().manual_seed(21)
    tied = Bank(40, 6, policy, tied_keys=True)  # type: ignore[arg-type]
    untied = Bank(40, 6, policy)  # type: ignore[arg-type]
    next_id, t = 0, 0.0
    for _ in range(12):
        n = int(torch.randint(1, 30, (1,), generator=gen))
        values = torch.randn(n, 6, generator=gen)
        times = t + torch.arange(n, dtype=torch.float64)
        ids = torch.arange(next_id, next_id + n)
        tied.append(values, None, times, times + 1, ids)
        untied.append(values, values.clone(), times, times + 1, ids)
        next_id, t = next_id + n, t + n
    assert tied.keys is tied.values
    assert "keys" not in tied.state_dict()
    for name in ("values", "keys", "t0", "t1", "id0", "id1", "count"):
        assert torch.equal(getattr(tied, name), getattr(untied, name)), name
    restored = Bank(40, 6, policy)  # type: ignore[arg-type]
    restored.load_state_dict(tied.state_dict())  # a tied state loads into an untied bank
    assert torch.equal(restored.keys, tied.values)


def test_uncopied_state_is_a_stable_snapshot() -> None:
    """state_dict(copy=False) must not change as the bank goes on: checkpoints are written from it."""
    gen = torch.Generator().manual_seed(22)
    bank = Bank(30, 4, "merge")
    for i in range(3):
        v = torch.randn(20, 4, generator=gen)
        t = torch.arange(20, dtype=torch.float64) + 20 * i
        bank.append(v, v * 2, t, t + 1, torch.arange(20) + 20 * i)
    snapshot, copied = bank.state_dict(copy=False), bank.state_dict()
    for i in range(3, 8):
        v = torch.randn(20, 4, generator=gen)
        t = torch.arange(20, dtype=torch.float64) + 20 * i
        bank.append(v, v * 2, t, t + 1, torch.arange(20) + 20 * i)
    for name, value in copied.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(snapshot[name], value), name
