"""Policy ``whole``: slots as ``merge`` makes them, each keeping up to ``members`` of its tokens whole.

``merge`` averages a run of tokens into one vector. For frames of one scene that is what a slot should be, but
a sentence token is already one vector per sentence, and the average of two unrelated sentences matches
neither: at 3 h `bench needle` lost two spoken needles that way, outscored by another prompt of similar
words. This bank keeps ``merge``'s slots (the same novelty boundaries, the same count-weighted means, which
still decide later boundaries), and beside each slot up to ``members`` of the tokens it covers as they were
written. The reader scores a slot by its best member (`reader.Candidates.members`), so a sentence merged
into a neighbour's slot is still found by its own words. A slot that would hold more members merges its
own members the way ``merge`` merges slots: the most novel keep their place, each other one is averaged into
the member before it. The bank therefore holds at most ``capacity`` slot vectors plus ``capacity × members``
member vectors, a bound fixed by the configuration as every other bank's.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from .bank import Bank, _chain_cosine

logger = logging.getLogger(__name__)


class WholeBank(Bank):
    """A ``merge`` bank whose slots also keep up to ``members`` of their tokens whole.

    Extra per-member tensors, in token order (so each slot's members are contiguous), ``R`` members in all:

    - ``member_values`` (R, dim): the members' vectors (keys are tied to values: one vector per member).
    - ``member_ids`` (R,) int64: the first written token a member covers; a slot's members are those whose id
      lies in its [id0, id1].
    - ``member_count`` (R,) int64: written tokens averaged into the member (1 unless its slot overflowed).
    - ``member_slot`` (R,) int64: the slot of each member, kept in step with the slots.
    """

    def __init__(
        self,
        capacity: int,
        dim: int,
        *,
        members: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        balance: float = 0.0,
    ) -> None:
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}")
        super().__init__(capacity, dim, "merge", dtype=dtype, device=device, tied_keys=True, balance=balance)
        self.policy = "whole"
        self.members = int(members)
        self.member_values = torch.empty(0, dim, dtype=dtype, device=self.device)  # (R, dim)
        self.member_ids = torch.empty(0, dtype=torch.int64, device=self.device)  # (R,)
        self.member_count = torch.empty(0, dtype=torch.int64, device=self.device)  # (R,)
        self.member_slot = torch.empty(0, dtype=torch.int64, device=self.device)  # (R,)

    def __repr__(self) -> str:
        return (
            f"WholeBank({len(self)}/{self.capacity} slots, {self.member_ids.shape[0]} members "
            f"(at most {self.members} a slot), dim={self.dim})"
        )

    def append(self, values: Tensor, keys: Tensor | None, t0: Tensor, t1: Tensor, ids: Tensor) -> None:
        n = ids.shape[0]
        super().append(values, keys, t0, t1, ids)
        if n == 0:
            return
        new = values.to(device=self.device, dtype=self.dtype)  # (n, dim)
        vals = torch.cat([self.member_values, new])  # (R + n, dim)
        mids = torch.cat([self.member_ids, ids.to(device=self.device, dtype=torch.int64)])  # (R + n,)
        count = torch.cat([self.member_count, torch.ones(n, dtype=torch.int64, device=self.device)])
        slot = self.slot_of(mids)  # (R + n,)
        per_slot = torch.bincount(slot, minlength=len(self))  # (S,)
        over = torch.nonzero(per_slot > self.members).squeeze(1)  # (O,) slots with too many members
        if over.numel():
            vals, mids, count = self._reduce_members(vals, mids, count, slot, over)
            slot = self.slot_of(mids)
        self.member_values, self.member_ids, self.member_count, self.member_slot = vals, mids, count, slot

    def slot_of(self, ids: Tensor) -> Tensor:
        """The slot covering each token id (the last slot whose id0 is at or before it): (m,) → (m,)."""
        return torch.searchsorted(self.id0, ids, right=True) - 1

    def _reduce_members(
        self, vals: Tensor, mids: Tensor, count: Tensor, slot: Tensor, over: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Each over-full slot's members merged down to ``members`` the way ``merge`` reduces a bank: in
        each slot the ``members`` least like their predecessor (the first always) stay, every other member
        is averaged, count-weighted, into the nearest kept one before it. Vectorised over the over-full
        slots: only their members are read."""
        full = torch.zeros(len(self), dtype=torch.bool, device=self.device)  # (S,)
        full[over] = True
        busy = full[slot]  # (M,) members of over-full slots
        rows = torch.nonzero(busy).squeeze(1)  # (P,)
        v, own = vals[rows], slot[rows]  # (P, dim), (P,)
        sim = _chain_cosine(v[:0], v)  # (P,) each member against the one before it
        first = torch.ones_like(own, dtype=torch.bool)  # (P,) a slot's first member
        first[1:] = own[1:] != own[:-1]
        sim = sim.masked_fill(first, -torch.inf)
        # rank inside the slot by similarity, ties to the earlier member: two stable sorts
        by_sim = torch.sort(sim, stable=True).indices  # (P,)
        order = by_sim[torch.sort(own[by_sim], stable=True).indices]  # (P,) by slot, then by similarity
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=self.device)
        keep = (rank - _slot_begin(own)) < self.members  # (P,)
        run = torch.cumsum(keep, 0) - 1  # (P,) the kept member each one joins (never across slots)
        acc = torch.float64 if self.dtype == torch.float64 else torch.float32
        kept = int(keep.sum())
        sums = torch.zeros(kept, self.dim, dtype=acc, device=self.device)  # (K, dim)
        sums.index_add_(0, run, v.to(acc) * count[rows].to(acc).unsqueeze(1))
        total = torch.zeros(kept, dtype=torch.int64, device=self.device).index_add_(0, run, count[rows])
        merged_vals = (sums / total.to(acc).unsqueeze(1)).to(self.dtype)  # (K, dim)
        rest = ~busy  # (M,)
        ids = torch.cat([mids[rest], mids[rows][keep]])  # (M - P + K,)
        back = torch.argsort(ids)  # members back in token order
        logger.debug("whole bank: %d slots merged their members down to %d", over.numel(), self.members)
        return (
            torch.cat([vals[rest], merged_vals])[back],
            ids[back],
            torch.cat([count[rest], total])[back],
        )

    # ------------------------------------------------------------------------------------- persistence

    def state_dict(self, *, copy: bool = True) -> dict[str, Any]:
        state = super().state_dict(copy=copy)
        for name in ("member_values", "member_ids", "member_count"):
            t = getattr(self, name)
            state[name] = t.detach().clone() if copy else t.detach()
        state["members"] = self.members
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "member_values" not in state:
            raise ValueError("state has no members: it was saved by a bank of another policy")
        if int(state["members"]) != self.members:
            raise ValueError(f"state keeps {state['members']} members a slot, this bank {self.members}")
        super().load_state_dict(state)
        vals = state["member_values"].detach().to(device=self.device, dtype=self.dtype).clone()
        mids = state["member_ids"].detach().to(device=self.device, dtype=torch.int64).clone()
        count = state["member_count"].detach().to(device=self.device, dtype=torch.int64).clone()
        r = mids.shape[0]
        if tuple(vals.shape) != (r, self.dim) or tuple(count.shape) != (r,):
            raise ValueError(
                f"member fields disagree: values {tuple(vals.shape)}, {r} ids, {count.shape[0]} counts"
            )
        slot = self.slot_of(mids)
        per_slot = torch.bincount(slot.clamp_min(0), minlength=len(self))
        if r and (bool((slot < 0).any()) or bool((per_slot > self.members).any())):
            raise ValueError("members do not fall into the bank's slots")
        self.member_values, self.member_ids, self.member_count, self.member_slot = vals, mids, count, slot


def _slot_begin(own: Tensor) -> Tensor:
    """For members sorted by slot (P,), the position among them where each one's slot begins."""
    first = torch.ones_like(own, dtype=torch.bool)  # (P,)
    first[1:] = own[1:] != own[:-1]
    begins = torch.nonzero(first).squeeze(1)  # (O,)
    return begins[torch.cumsum(first, 0) - 1]  # (P,)
