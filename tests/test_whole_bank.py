"""Policy ``whole`` (vsalmonn/memory_store/whole_bank.py): merge's slots, each keeping its tokens whole."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from tests.test_memory import DIM, assert_states_equal, small_config, write_script
from vsalmonn.memory_store import StreamMemory
from vsalmonn.memory_store.bank import Bank
from vsalmonn.memory_store.whole_bank import WholeBank


def basis(*indices: int) -> torch.Tensor:
    return torch.eye(DIM)[list(indices)]  # (n, d)


def test_a_sentence_merged_into_its_neighbours_slot_is_found_by_its_own_words() -> None:
    # Three unrelated sentences into two audio slots: merge's tie rule keeps the second as a boundary and
    # averages the third into it, so a query for the third matches the average only at 1/√2.
    found = {}
    for policy in ("merge", "whole"):
        memory = StreamMemory(small_config(audio_slots=2, audio_policy=policy, ttt=False))
        memory.write(
            basis(0, 1, 2), torch.tensor([0.0, 10.0, 20.0]), torch.tensor([2.0, 12.0, 22.0]), "audio"
        )
        assert len(memory.banks["audio"]) == 2
        found[policy] = memory.read(basis(2)[0], k=1, modality="audio")[0]
    assert found["merge"].score == pytest.approx(2**-0.5, abs=1e-6)
    assert found["whole"].score == pytest.approx(1.0, abs=1e-6)
    # the moment is the slot, and it covers the sentence asked for
    assert (found["whole"].t0, found["whole"].t1) == (10.0, 22.0)


def seeded_appends(bank: Bank, steps: int = 30) -> Iterator[int]:
    """Appends of 1-5 random unit tokens, the same for every bank; yields the tokens written so far."""
    gen = torch.Generator().manual_seed(0)
    written = 0
    for _ in range(steps):
        n = int(torch.randint(1, 6, (1,), generator=gen))
        x = F.normalize(torch.randn(n, DIM, generator=gen), dim=-1)
        t = torch.arange(written, written + n, dtype=torch.float64)
        bank.append(x, None, t, t + 0.5, torch.arange(written, written + n))
        written += n
        yield written


def test_members_stay_bounded_counted_and_inside_their_slots() -> None:
    bank = WholeBank(4, DIM, members=2)
    for written in seeded_appends(bank):
        slots = bank.slot_of(bank.member_ids)
        assert torch.equal(slots, bank.member_slot)
        assert int(torch.bincount(slots, minlength=len(bank)).max()) <= 2
        assert bool((torch.bincount(slots, minlength=len(bank)) >= 1).all()), "every slot keeps a member"
        assert int(bank.member_count.sum()) == written == int(bank.count.sum())
        assert bool((bank.member_ids >= bank.id0[slots]).all() and (bank.member_ids <= bank.id1[slots]).all())
    # the slots themselves are exactly merge's: same boundaries, same means
    plain = Bank(4, DIM, "merge", tied_keys=True)
    for _ in seeded_appends(plain):
        pass
    assert torch.equal(plain.values, bank.values) and torch.equal(plain.id0, bank.id0)


def test_an_overfull_slot_merges_its_most_alike_members() -> None:
    bank = WholeBank(1, DIM, members=2)
    near = F.normalize(basis(0) + 0.1 * basis(1), dim=-1)
    bank.append(torch.cat([basis(0), near, basis(5)]), None, *(torch.arange(3.0),) * 2, torch.arange(3))
    # one slot, two members: the near-duplicate was averaged into the first, the novel one kept whole
    assert bank.member_count.tolist() == [2, 1]
    torch.testing.assert_close(bank.member_values[1], basis(5)[0])
    torch.testing.assert_close(bank.member_values[0], (basis(0)[0] + near[0]) / 2)


def test_window_reads_keep_only_the_members_of_kept_slots() -> None:
    memory = StreamMemory(small_config(audio_slots=2, audio_policy="whole", ttt=False))
    memory.write(basis(0, 1, 2), torch.tensor([0.0, 10.0, 20.0]), torch.tensor([2.0, 12.0, 22.0]), "audio")
    (early,) = memory.read(basis(2)[0], k=2, modality="audio", window=(None, 5.0))
    assert (early.t0, early.t1) == (0.0, 2.0) and early.score == pytest.approx(0.0, abs=1e-6)
    (late,) = memory.read(basis(0)[0], k=2, modality="audio", window=(9.0, None))
    assert late.t0 == 10.0 and late.score == pytest.approx(0.0, abs=1e-6)


def test_whole_memories_resume_bit_for_bit_and_refuse_other_states() -> None:
    cfg = small_config(policy="whole", audio_policy="whole", slot_members=3, optimizer="gd")
    straight = StreamMemory(cfg)
    write_script(straight, 7, range(24))
    first = StreamMemory(cfg)
    write_script(first, 7, range(11))
    assert first.pending > 0  # visual tokens wait for TTT: the reader joins them as one-member slots
    probe = F.normalize(torch.randn(2, DIM, generator=torch.Generator().manual_seed(3)), dim=-1)
    assert first.read(probe, k=5)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = StreamMemory(cfg)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    write_script(resumed, 7, range(11, 24))
    assert_states_equal(straight.state_dict(), resumed.state_dict())
    assert straight.read(probe, k=5) == resumed.read(probe, k=5)
    merge_state = StreamMemory(small_config()).banks["audio"].state_dict()
    with pytest.raises(ValueError, match="saved by a bank of another policy"):
        WholeBank(64, DIM, members=3).load_state_dict(merge_state)
