"""The fixed-size bank of one modality (DESIGN §3, "Fixed-size bank").

A stream's memory must not grow with the stream, so each modality keeps at most ``capacity`` slots. A slot
stands for one or more consecutive written tokens: its value and key vectors, the time span it covers and
the ids of the first and last token it covers. When an append would overflow the bank, the old slots and
the new tokens are reduced together to ``capacity`` slots by the configured :data:`Policy`.

Everything here is vectorised torch work over whole banks; the only Python loop (``uniform``'s stride
doubling) runs over powers of two, never over slots. Reductions never modify a tensor in place: they build
new per-slot tensors, so tensors a caller took from the bank earlier (for example a reader's snapshot of
``keys``) stay valid and unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from vsalmonn.memory_store.config import Policy

logger = logging.getLogger(__name__)

_POLICIES: tuple[Policy, ...] = ("merge", "discard", "fifo", "uniform")
_FIELDS: tuple[str, ...] = ("values", "keys", "t0", "t1", "id0", "id1", "count")
# Floor of the product of two norms in the cosine: zero vectors get cosine 0 instead of NaN.
_EPS = 1e-12


def lowest_k_mask(x: Tensor, k: int) -> Tensor:
    """Mark the ``k`` positions of a 1-D tensor with the lowest values, ties kept at earlier positions.

    ``torch.topk`` alone is not deterministic when values tie at the cut, and a full stable sort is an order
    of magnitude slower than ``topk`` at bank sizes. So ``topk`` only finds the cut value; the positions
    strictly below it are all kept, and of the positions equal to it the earliest ones fill the remaining
    places. The result equals taking the first ``k`` of ``torch.sort(x, stable=True)``.
    ``x`` must hold no NaN.
    """
    n = x.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=x.device)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=x.device)
    cut = torch.topk(x, k, largest=False, sorted=False).values.max()  # () the k-th lowest value
    below = x < cut  # (n,)
    ties = x == cut  # (n,)
    room = k - below.sum()  # () places left for the tied positions
    return below | (ties & (torch.cumsum(ties, 0) <= room))  # (n,)


class Bank:
    """At most ``capacity`` slots of one modality, in time order (oldest first).

    Per-slot tensors, all of length ``S = len(bank)``:

    - ``values`` (S, dim): token vectors of the slots, in the bank's dtype.
    - ``keys`` (S, dim): the reader's key vectors; a linear view of the values computed by the caller, so a
      merged slot's key (the count-weighted mean of its tokens' keys) is the view of its merged value.
      With ``tied_keys`` (the caller's view is the identity, as with untrained slow weights) the keys are
      the values themselves: stored, merged and checkpointed once, which halves the bank's memory.
    - ``t0``, ``t1`` (S,) float64: stream seconds of the start and end of the slot's span.
    - ``id0``, ``id1`` (S,) int64: ids of the first and last token the slot covers; ``id0`` is the slot's
      stable id, unchanged while the slot lives (a merge keeps its boundary's ``id0``).
    - ``count`` (S,) int64: written tokens merged into the slot (always 1 except under ``merge``).

    Reduction happens only when ``S + n > capacity``, on the time-ordered concatenation of the old slots and
    the ``n`` new tokens ("items"):

    - ``merge``: each item's cosine similarity to its predecessor (the first item: -inf, so it always
      stays) ranks the items; the ``capacity`` least similar ones (the most novel) become boundaries, and
      each run (a boundary and the items up to the next boundary) becomes one slot whose value and key are
      the count-weighted mean of the run's. The count-weighted sum of values is therefore preserved.
    - ``discard``: the same boundaries; the other items are dropped, boundaries keep their fields.
    - ``fifo``: the newest ``capacity`` items are kept.
    - ``uniform``: the bank keeps exactly the written tokens whose id is a multiple of ``stride`` (a power
      of two, starting at 1, part of the state). New tokens are admitted only on that grid; when the bank
      would overflow, the stride doubles (repeatedly if needed) and off-grid slots are dropped. Re-sampling
      the bank every n-th slot at each overflow would instead thin old content geometrically (it is halved
      again at every overflow while new content arrives dense); the global stride keeps the kept tokens
      evenly spread over the whole stream.

    Ties in similarity (``merge``, ``discard``) are resolved toward keeping the earlier position as a
    boundary, which makes the reduction deterministic. The similarities of the slots already in the bank
    are cached between appends (and saved with the state), so an append scores only the new tokens and
    the slots the last reduction changed instead of re-reading the whole bank.

    Inputs are validated by the caller (StreamMemory); the bank only asserts its preconditions: new tokens
    come with increasing ids above the bank's and times not before the bank's, and values are finite.
    """

    def __init__(
        self,
        capacity: int,
        dim: int,
        policy: Policy,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        tied_keys: bool = False,
        balance: float = 0.0,
    ) -> None:
        if capacity <= 0 or dim <= 0:
            raise ValueError(f"capacity and dim must be positive, got {capacity} and {dim}")
        if policy not in _POLICIES:
            raise ValueError(f"unknown policy {policy!r}; expected one of {_POLICIES}")
        self.capacity = int(capacity)
        self.dim = int(dim)
        self.policy: Policy = policy
        self.dtype = dtype
        self.device = torch.device(device)
        self.stride = 1
        self.tied_keys = tied_keys
        if balance < 0:
            raise ValueError(f"balance must be at least 0, got {balance}")
        self.balance = float(balance)
        self._fields = tuple(f for f in _FIELDS if not (tied_keys and f == "keys"))
        self._vectors = tuple(f for f in ("values", "keys") if f in self._fields)
        self.values = torch.empty(0, dim, dtype=dtype, device=self.device)  # (S, dim)
        self._keys = torch.empty(0, dim, dtype=dtype, device=self.device)  # (S, dim) unused when tied
        self.t0 = torch.empty(0, dtype=torch.float64, device=self.device)  # (S,)
        self.t1 = torch.empty(0, dtype=torch.float64, device=self.device)  # (S,)
        self.id0 = torch.empty(0, dtype=torch.int64, device=self.device)  # (S,)
        self.id1 = torch.empty(0, dtype=torch.int64, device=self.device)  # (S,)
        self.count = torch.empty(0, dtype=torch.int64, device=self.device)  # (S,)
        # Cosine of each slot's value to its predecessor's (-inf for the first). A cache, but part of the
        # state: recomputing it could round differently and so change later reductions.
        self._sim = torch.empty(0, dtype=_sim_dtype(dtype), device=self.device)  # (S,)

    def __len__(self) -> int:
        return self.id0.shape[0]

    @property
    def keys(self) -> Tensor:
        return self.values if self.tied_keys else self._keys  # (S, dim)

    @keys.setter
    def keys(self, value: Tensor) -> None:
        if not self.tied_keys:
            self._keys = value

    def __repr__(self) -> str:
        return f"Bank({len(self)}/{self.capacity} slots, dim={self.dim}, policy={self.policy!r})"

    # ------------------------------------------------------------------------------------------ append

    def append(self, values: Tensor, keys: Tensor | None, t0: Tensor, t1: Tensor, ids: Tensor) -> None:
        """Add ``n`` written tokens (values, keys (n, dim); t0, t1, ids (n,)) and reduce to capacity.

        ``keys`` is ignored (and may be None) when the bank's keys are tied to its values.
        """
        n = ids.shape[0]
        keys = values if self.tied_keys or keys is None else keys
        assert values.shape == (n, self.dim) and keys.shape == (n, self.dim), "values/keys must be (n, dim)"
        assert t0.shape == (n,) and t1.shape == (n,), "t0/t1 must be (n,)"
        if n == 0:
            return
        dev = self.device
        new = {
            "values": values.to(device=dev, dtype=self.dtype),  # (n, dim)
            "t0": t0.to(device=dev, dtype=torch.float64),  # (n,)
            "t1": t1.to(device=dev, dtype=torch.float64),  # (n,)
            "id0": ids.to(device=dev, dtype=torch.int64),  # (n,)
            "id1": ids.to(device=dev, dtype=torch.int64),  # (n,)
            "count": torch.ones(n, dtype=torch.int64, device=dev),  # (n,)
        }
        if not self.tied_keys:
            new["keys"] = keys.to(device=dev, dtype=self.dtype)  # (n, dim)
        if len(self):
            assert bool(new["id0"][0] > self.id1[-1]), "new token ids must follow the bank's"

        if self.policy == "uniform":
            on_grid = torch.remainder(new["id0"], self.stride) == 0  # (n,)
            new = {f: t[on_grid] for f, t in new.items()}
            n = new["id0"].shape[0]
            if n == 0:
                return
        prev = self.values[-1:]  # (0 or 1, dim) the predecessor of the first new token
        sim = torch.cat([self._sim, _chain_cosine(prev, new["values"])])  # (N,) over old slots + new tokens
        if len(self) + n <= self.capacity:
            self._set({f: torch.cat([getattr(self, f), new[f]]) for f in self._fields}, sim)
        elif self.policy == "fifo":
            self._reduce_fifo(new, sim)
        elif self.policy == "uniform":
            self._reduce_uniform(new)
        else:
            self._reduce_boundaries(new, sim)

    def _set(self, fields: dict[str, Tensor], sim: Tensor) -> None:
        for name in self._fields:
            setattr(self, name, fields[name])
        self._sim = sim

    def _reduce_fifo(self, new: dict[str, Tensor], sim: Tensor) -> None:
        drop = len(self) + new["id0"].shape[0] - self.capacity
        keep_old = max(len(self) - drop, 0)
        start_new = max(drop - len(self), 0)
        fields = {
            f: torch.cat([getattr(self, f)[len(self) - keep_old :], new[f][start_new:]]) for f in self._fields
        }
        sim = sim[drop:].clone()  # (cap,) the same neighbours except for the new first slot
        sim[0] = -torch.inf
        self._set(fields, sim)

    def _reduce_uniform(self, new: dict[str, Tensor]) -> None:
        merged = {f: torch.cat([getattr(self, f), new[f]]) for f in self._fields}
        stride = self.stride
        keep = torch.ones(merged["id0"].shape[0], dtype=torch.bool, device=self.device)  # (N,)
        # One iteration per doubling (O(log stream length) over the whole stream), never per slot.
        while int(keep.sum()) > self.capacity:
            stride *= 2
            keep = torch.remainder(merged["id0"], stride) == 0  # (N,)
        logger.debug("uniform bank: stride %d -> %d", self.stride, stride)
        self.stride = stride
        fields = {f: t[keep] for f, t in merged.items()}
        # Nearly every slot has a new neighbour now; doublings are rare, so recompute all.
        self._set(fields, _chain_cosine(fields["values"][:0], fields["values"]))

    def _novelty(self, sim: Tensor, new_count: Tensor) -> Tensor:
        """What the boundaries are chosen by, lowest first: each item's cosine to its predecessor, raised by
        ``balance`` · log2 of the predecessor's token count.

        With ``balance`` 0 this is the paper's merge. Sentences are one token each, and a stretch of similar
        ones (bench needle: 27 telephony prompts over 12 minutes) is never novel against its neighbour, so
        plain merge averages it into one slot that no longer answers any of them; the count term makes a
        large slot reluctant to take one more token, so the budget goes to splitting such runs instead.
        """
        if self.balance == 0:
            return sim
        counts = torch.cat([self.count, new_count]).to(sim.dtype)  # (N,)
        before = torch.cat([counts[:1], counts[:-1]])  # (N,) the predecessor's count (the first: its own)
        return sim - self.balance * torch.log2(before)  # (N,)

    def _reduce_boundaries(self, new: dict[str, Tensor], sim: Tensor) -> None:
        """Reduce old slots + new tokens to ``capacity`` slots by novelty (``merge`` / ``discard``).

        ``sim`` (N,) is each item's cosine to its predecessor, kept up to date between appends so that
        only new tokens and the slots a reduction changed are ever scored.
        """
        s, n, cap = len(self), new["id0"].shape[0], self.capacity
        total = s + n
        is_boundary = lowest_k_mask(self._novelty(sim, new["count"]), cap)  # (N,)
        bounds = torch.nonzero(is_boundary).squeeze(1)  # (cap,) increasing positions
        ends = torch.cat([bounds[1:], bounds.new_tensor([total])]) - 1  # (cap,) last position of each run
        multi = ends > bounds  # (cap,) runs of more than one item
        small = {f: torch.cat([getattr(self, f), new[f]]) for f in ("t0", "t1", "id0", "id1", "count")}
        values = _gather_rows(self.values, new["values"], bounds)  # (cap, dim)
        keys = values if self.tied_keys else _gather_rows(self.keys, new["keys"], bounds)  # (cap, dim)
        # A boundary's similarity stays valid unless its predecessor changed: in both policies the item
        # before it is gone when the previous run had several items; under merge its own value changes too.
        stale = torch.zeros(cap, dtype=torch.bool, device=self.device)  # (cap,)
        stale[1:] = multi[:-1]

        if self.policy == "discard":
            out = {f: t[bounds] for f, t in small.items()}
        else:
            run = torch.cumsum(is_boundary, 0) - 1  # (N,) slot each item falls into
            out = {
                "t0": torch.full((cap,), torch.inf, dtype=torch.float64, device=self.device).scatter_reduce(
                    0, run, small["t0"], "amin"
                ),  # (cap,)
                "t1": torch.full((cap,), -torch.inf, dtype=torch.float64, device=self.device).scatter_reduce(
                    0, run, small["t1"], "amax"
                ),  # (cap,)
                "id0": small["id0"][bounds],  # (cap,)
                "id1": small["id1"][ends],  # (cap,)
                "count": torch.zeros(cap, dtype=torch.int64, device=self.device).index_add_(
                    0, run, small["count"]
                ),  # (cap,)
            }
            self._average_runs(new, run, multi, out["count"], values, keys, small["count"])
            stale |= multi
        stale[0] = False  # the first slot has no predecessor: its -inf stays
        sim = sim[bounds]  # (cap,)
        fix = torch.nonzero(stale).squeeze(1)  # (F,)
        sim[fix] = _row_cosine(values[fix], values[fix - 1])
        logger.debug("%s bank: %d + %d items -> %d slots", self.policy, s, n, cap)
        out["values"], out["keys"] = values, keys
        self._set(out, sim)

    def _average_runs(
        self,
        new: dict[str, Tensor],
        run: Tensor,
        multi: Tensor,
        run_count: Tensor,
        values: Tensor,
        keys: Tensor,
        count: Tensor,
    ) -> None:
        """Overwrite the rows of multi-item runs in ``values`` and ``keys`` with their count-weighted means.

        Single-item runs keep their vectors bit for bit; only the (few) items of multi-item runs are read,
        so the cost of a merge scales with what is merged, not with the bank.
        """
        multi_runs = torch.nonzero(multi).squeeze(1)  # (R,)
        if multi_runs.numel() == 0:
            return
        acc = torch.float64 if self.dtype == torch.float64 else torch.float32
        members = torch.nonzero(multi[run]).squeeze(1)  # (P,) positions inside multi-item runs
        compact = torch.cumsum(multi, 0)[run[members]] - 1  # (P,) index of each member's run among the R
        weight = count[members].to(acc).unsqueeze(1)  # (P, 1)
        run_weight = run_count[multi_runs].to(acc).unsqueeze(1)  # (R, 1)
        for name, dest, old in (("values", values, self.values), ("keys", keys, self.keys)):
            if name not in self._vectors:
                continue
            rows = _gather_rows(old, new[name], members).to(acc)  # (P, dim)
            sums = torch.zeros(multi_runs.numel(), self.dim, dtype=acc, device=self.device)  # (R, dim)
            sums.index_add_(0, compact, rows * weight)
            dest.index_copy_(0, multi_runs, (sums / run_weight).to(self.dtype))

    # ------------------------------------------------------------------------------------- persistence

    def state_dict(self, *, copy: bool = True) -> dict[str, Any]:
        """Everything that determines future behaviour: per-slot tensors and the ints.

        With ``copy=False`` the tensors are the bank's own. That is a consistent snapshot at no cost, because
        the bank never changes a tensor in place (every append builds new ones): a checkpoint can be
        written from it in the background while the bank goes on. The policy is not stored: it is part of
        the MemoryConfig that persistence keeps beside the state.
        """

        def take(t: Tensor) -> Tensor:
            return t.detach().clone() if copy else t.detach()

        state: dict[str, Any] = {f: take(getattr(self, f)) for f in self._fields}
        state["sim"] = take(self._sim)
        state.update(capacity=self.capacity, dim=self.dim, stride=self.stride)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the bank must have been built with the same shape.

        A state without ``sim`` (written by hand, or by an older version) gets it recomputed: the bank is
        then valid, though later reductions may differ from the original's by rounding in tied cases.
        """
        if int(state["capacity"]) != self.capacity or int(state["dim"]) != self.dim:
            raise ValueError(
                f"state is for capacity {state['capacity']} and dim {state['dim']}, "
                f"this bank has {self.capacity} and {self.dim}"
            )
        size = state["id0"].shape[0]
        if size > self.capacity:
            raise ValueError(f"state holds {size} slots, more than the capacity {self.capacity}")
        dtypes = {"values": self.dtype, "keys": self.dtype, "t0": torch.float64, "t1": torch.float64}
        fields = {}
        for name in self._fields:
            if name == "keys" and "keys" not in state:  # saved by a bank whose keys were tied
                fields[name] = fields["values"].clone()
                continue
            tensor = state[name].detach().to(device=self.device, dtype=dtypes.get(name, torch.int64))
            expected = (size, self.dim) if name in ("values", "keys") else (size,)
            if tuple(tensor.shape) != expected:
                raise ValueError(f"state field {name} has shape {tuple(tensor.shape)}, expected {expected}")
            fields[name] = tensor.clone()
        if "sim" in state:
            sim = state["sim"].detach().to(device=self.device, dtype=_sim_dtype(self.dtype)).clone()
            if tuple(sim.shape) != (size,):
                raise ValueError(f"state field sim has shape {tuple(sim.shape)}, expected {(size,)}")
        else:
            sim = _chain_cosine(fields["values"][:0], fields["values"])
        self._set(fields, sim)
        self.stride = int(state["stride"])


def _row_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine of each row of ``a`` (m, dim) with the same row of ``b``; zero rows give 0, NaN gives 1.

    Computed in at least float32 so that bfloat16 banks still rank similarities finely. A NaN can only come
    from norms that overflow; counting it as a duplicate lets such a token be merged rather than kept.
    """
    compute = a.dtype if a.dtype in (torch.float32, torch.float64) else torch.float32
    a, b = a.to(compute), b.to(compute)
    dots = (a * b).sum(1)  # (m,)
    norms = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)  # (m,)
    return torch.nan_to_num(dots / norms.clamp_min(_EPS), nan=1.0)


def _chain_cosine(prev: Tensor, rows: Tensor) -> Tensor:
    """Cosine of each of ``rows`` (n, dim) to the row before it; the first is compared with ``prev``.

    ``prev`` is (1, dim), or (0, dim) when nothing precedes, which makes the first similarity -inf so
    that the first slot of a bank is always a boundary.
    """
    if rows.shape[0] == 0:
        return torch.empty(0, dtype=_sim_dtype(rows.dtype), device=rows.device)
    chain = torch.cat([prev, rows])  # (n or n + 1, dim)
    first = torch.full((1 - prev.shape[0],), -torch.inf, device=rows.device)  # (0 or 1,)
    return torch.cat([first.to(_sim_dtype(rows.dtype)), _row_cosine(chain[1:], chain[:-1])])  # (n,)


def _sim_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _gather_rows(old: Tensor, new: Tensor, positions: Tensor) -> Tensor:
    """Rows at increasing ``positions`` of ``cat([old, new])``, copying only the rows taken."""
    split = int(torch.searchsorted(positions, old.shape[0]))  # positions before it come from old
    out = torch.empty(positions.shape[0], old.shape[1], dtype=old.dtype, device=old.device)  # (P, dim)
    torch.index_select(old, 0, positions[:split], out=out[:split])
    torch.index_select(new, 0, positions[split:] - old.shape[0], out=out[split:])
    return out
