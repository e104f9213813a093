"""`StreamMemory`: one stream's fixed-size memory, written token by token and read by prompt (DESIGN §3, §9).

Visual tokens pass through the TTT layer in mini-batches before they enter the visual bank; until a
mini-batch is full they wait in a pending buffer that the reader still sees, so the newest content is
searchable at once. Audio tokens go straight to the audio bank. Everything a checkpoint needs comes out of
`state_dict()`, and every write is validated before anything changes, so a rejected write leaves no trace.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .bank import Bank
from .config import MemoryConfig, Modality, Policy, saved_fields
from .inner import FastWeights
from .reader import Candidates, Moment, background_weighted, read
from .slow_weights import resolve_slow_weights
from .ttt import TTTConfig, TTTLayer, TTTState
from .whole_bank import WholeBank

log = logging.getLogger(__name__)

STATE_VERSION = 1
MODALITIES: tuple[Modality, ...] = ("visual", "audio")
ArrayLike = Tensor | np.ndarray | Sequence[float] | Sequence[Sequence[float]]


def ttt_config(config: MemoryConfig) -> TTTConfig:
    """The TTT layer's view of the memory settings: the fields MemoryConfig inherits from TTTConfig."""
    return TTTConfig.model_validate(config.model_dump(include=set(TTTConfig.model_fields)))


class StreamMemory:
    """The TTT memory of one stream: a visual and an audio bank of fixed size plus the TTT layer's state."""

    def __init__(self, config: MemoryConfig | None = None, *, layer: TTTLayer | None = None) -> None:
        self.config = config or MemoryConfig()
        cfg = self.config
        self.device = torch.device(cfg.device)
        self.dtype = getattr(torch, cfg.dtype)
        self.layer = (layer or self._make_layer()).to(device=self.device, dtype=self.dtype)
        self.layer.requires_grad_(False)
        self.banks = self._make_banks()
        self.ttt_state: TTTState = self.layer.init_state(batch=1)
        self._pending = self._empty_pending()
        self._joined: tuple[Tensor, Tensor, Candidates] | None = None  # see _candidates
        self._next_id: dict[Modality, int] = {"visual": 0, "audio": 0}
        self._last_t0: dict[Modality, float] = {"visual": -math.inf, "audio": -math.inf}

    def _make_layer(self) -> TTTLayer:
        """A TTT layer with the θ the configuration asks for (`resolve_slow_weights`).

        With ``ttt=False`` θ stays untrained: tokens are not rewritten, so a reader view trained for
        rewritten tokens would not fit them; plain merging and plain cosine are the baseline without TTT.
        """
        cfg = self.config
        layer = TTTLayer(ttt_config(cfg))
        state = resolve_slow_weights(cfg) if cfg.ttt else None
        if state is not None:
            try:
                layer.load_state_dict(state)
            except RuntimeError as exc:
                reason = str(exc).strip().splitlines()[-1].strip()
                raise ValueError(
                    f"slow weights {cfg.slow_weights!r} do not fit the TTT layer: {reason}"
                ) from None
        return layer

    def _make_banks(self) -> dict[Modality, Bank]:
        """Empty banks whose keys are their values: the reader compares prompts with the slots themselves
        (the TTT layer's learned reader view acts on the prompt), so each slot is stored once."""
        cfg = self.config

        def bank(capacity: int, policy: Policy, balance: float = 0.0) -> Bank:
            kw = {"dtype": self.dtype, "device": self.device, "balance": balance}
            if policy == "whole":
                return WholeBank(capacity, cfg.dim, members=cfg.slot_members, **kw)
            return Bank(capacity, cfg.dim, policy, tied_keys=True, **kw)

        return {
            "visual": bank(cfg.visual_slots, cfg.policy),
            "audio": bank(cfg.audio_slots, cfg.audio_policy, cfg.audio_merge_balance),
        }

    # ----- size -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Slots in use in both banks; never above visual_slots + audio_slots."""
        return sum(len(b) for b in self.banks.values())

    @property
    def pending(self) -> int:
        """Visual tokens waiting for a full TTT mini-batch (fewer than `mini_batch`)."""
        return int(self._pending["values"].shape[0])

    @property
    def tokens_written(self) -> dict[Modality, int]:
        return dict(self._next_id)

    # ----- writing --------------------------------------------------------------------------------------
    def write(
        self,
        tokens: ArrayLike,
        t0: ArrayLike,
        t1: ArrayLike,
        modality: Modality = "visual",
        positions: ArrayLike | None = None,
    ) -> None:
        """Add n tokens [n, dim] with their spans t0, t1 [n] (seconds of stream time, never going back).

        `positions` [n, 2] says where in its frame each visual token lies (`rope.kind_positions`: the
        global token at the centre (0, 0), regions in grid cells); only a layer with `rope_regions` reads
        it, and without it every token counts as the centre.

        Raises ValueError with a one-line reason, leaving the memory untouched, on a wrong dim, NaN or inf,
        mismatched lengths, t1 < t0, or times earlier than what the modality already holds.
        """
        x, start, end = self._validate(tokens, t0, t1, modality)
        n = x.shape[0]
        where = self._positions(positions, n)
        if n == 0:
            return
        ids = torch.arange(self._next_id[modality], self._next_id[modality] + n, dtype=torch.int64)
        self._next_id[modality] += n
        self._last_t0[modality] = float(start[-1])
        if modality == "visual" and self.config.ttt:
            before = self._pending
            self._pending = {
                "values": torch.cat([self._pending["values"], x]),
                "t0": torch.cat([self._pending["t0"], start]),
                "t1": torch.cat([self._pending["t1"], end]),
                "ids": torch.cat([self._pending["ids"], ids]),
            }
            if where is not None:
                self._pending["pos"] = torch.cat([before["pos"], where])
            self._drain(full_only=True)
        else:
            self._store(modality, x, start, end, ids)

    def flush(self) -> None:
        """Run the TTT update on a partial mini-batch now (end of a stream); a no-op when nothing waits."""
        self._drain(full_only=False)

    def _drain(self, *, full_only: bool) -> None:
        mb = self.config.mini_batch
        while self.pending >= mb or (not full_only and self.pending > 0):
            take = min(mb, self.pending)
            chunk = {k: v[:take] for k, v in self._pending.items()}
            self._pending = {k: v[take:] for k, v in self._pending.items()}
            # a token's time for RoPE is the start of its span; the layer ignores times when rope is off
            where = chunk["pos"][None] if "pos" in chunk else None  # (1, take, 2) with rope_regions
            with torch.no_grad():
                y, self.ttt_state = self.layer.step(
                    chunk["values"][None], self.ttt_state, times=chunk["t0"][None], positions=where
                )  # (1, take, d)
            self._store("visual", y[0], chunk["t0"], chunk["t1"], chunk["ids"])

    def _store(self, modality: Modality, x: Tensor, t0: Tensor, t1: Tensor, ids: Tensor) -> None:
        self.banks[modality].append(x, None, t0, t1, ids)

    def _empty_pending(self) -> dict[str, Tensor]:
        d = self.config.dim
        return {
            "values": torch.empty(0, d, dtype=self.dtype, device=self.device),
            "t0": torch.empty(0, dtype=torch.float64, device=self.device),
            "t1": torch.empty(0, dtype=torch.float64, device=self.device),
            "ids": torch.empty(0, dtype=torch.int64, device=self.device),
            # where each pending token lies in its frame; kept (and checkpointed) only with rope_regions
            **({"pos": torch.empty(0, 2, dtype=torch.float64, device=self.device)} if self._regions else {}),
        }

    @property
    def _regions(self) -> bool:
        return self.config.ttt and self.config.rope_regions

    def _positions(self, positions: ArrayLike | None, n: int) -> Tensor | None:
        """The write's positions as (n, 2) float64 when the layer reads them, else None (ignored)."""
        if not self._regions:
            return None
        if positions is None:
            return torch.zeros(n, 2, dtype=torch.float64, device=self.device)
        where = _as_tensor(positions, "positions", torch.float64)
        if tuple(where.shape) != (n, 2) or not torch.isfinite(where).all():
            raise ValueError(f"positions must be finite with shape [{n}, 2], got {list(where.shape)}")
        return where.to(self.device)

    def _validate(
        self, tokens: ArrayLike, t0: ArrayLike, t1: ArrayLike, modality: str
    ) -> tuple[Tensor, Tensor, Tensor]:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
        x = _as_tensor(tokens, "tokens", torch.float32)
        if x.ndim != 2 or x.shape[1] != self.config.dim:
            raise ValueError(f"tokens must have shape [n, {self.config.dim}], got {list(x.shape)}")
        start = _as_tensor(t0, "t0", torch.float64).reshape(-1)
        end = _as_tensor(t1, "t1", torch.float64).reshape(-1)
        n = x.shape[0]
        if start.shape[0] != n or end.shape[0] != n:
            raise ValueError(f"got {n} tokens but {start.shape[0]} t0 and {end.shape[0]} t1 values")
        if not torch.isfinite(x).all():
            raise ValueError("tokens contain NaN or inf")
        if not (torch.isfinite(start).all() and torch.isfinite(end).all()):
            raise ValueError("t0 or t1 contains NaN or inf")
        if n and bool((end < start).any()):
            i = int(torch.nonzero(end < start)[0])
            raise ValueError(f"t1 < t0 at token {i}: [{start[i].item()}, {end[i].item()}]")
        if n > 1 and bool((start[1:] < start[:-1]).any()):
            i = int(torch.nonzero(start[1:] < start[:-1])[0]) + 1
            raise ValueError(f"time goes backwards inside the write at token {i}")
        last = self._last_t0[modality]  # type: ignore[index]
        if n and start[0].item() < last:
            raise ValueError(
                f"time goes backwards: t0 {start[0].item()} is before the last {modality} t0 {last}"
            )
        return x.to(self.device, self.dtype), start.to(self.device), end.to(self.device)

    # ----- reading --------------------------------------------------------------------------------------
    def read(
        self,
        prompt_vectors: ArrayLike,
        k: int = 5,
        modality: Modality | None = None,
        window: tuple[float | None, float | None] | None = None,
        terms: ArrayLike | None = None,
    ) -> list[Moment]:
        """The k best moments for a prompt [q, dim] (or [dim]), best first; one modality if given, and only
        slots overlapping ``window`` (start, end in stream seconds; either may be None) if given.

        ``terms`` [T, dim]: the embeddings of the query's terms (`reader.query_terms`, the whole query
        first); when given, they replace the prompt, weighted per modality by how rarely each matches that
        modality's slots in the window (`reader.background_weighted`).

        Visual slots are compared with the layer's reader view of the prompt; audio slots, which never pass
        through the TTT layer, with the prompt as it is.
        """
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if modality is not None and modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
        prompt = _as_tensor(prompt_vectors, "prompt_vectors", torch.float32)
        if prompt.ndim == 1:
            prompt = prompt[None]
        if prompt.ndim != 2 or prompt.shape[1] != self.config.dim or prompt.shape[0] == 0:
            raise ValueError(
                f"prompt_vectors must have shape [q, {self.config.dim}], got {list(prompt.shape)}"
            )
        if not torch.isfinite(prompt).all():
            raise ValueError("prompt_vectors contain NaN or inf")
        term_rows = None
        if terms is not None:
            term_rows = _as_tensor(terms, "terms", torch.float32)
            if term_rows.ndim != 2 or term_rows.shape[1] != self.config.dim or term_rows.shape[0] == 0:
                raise ValueError(f"terms must have shape [T, {self.config.dim}], got {list(term_rows.shape)}")
            if not torch.isfinite(term_rows).all():
                raise ValueError("terms contain NaN or inf")
            term_rows = term_rows.to(self.device, self.dtype)  # (T, d)
        lo, hi = window or (None, None)
        lo = -math.inf if lo is None else float(lo)
        hi = math.inf if hi is None else float(hi)
        bounded = lo > -math.inf or hi < math.inf
        budgets = {"visual": self.config.reader_visual_slots, "audio": self.config.reader_audio_slots}
        moments: list[Moment] = []
        with torch.no_grad():
            prompt = prompt.to(self.device, self.dtype)  # (q, d)
            for m in MODALITIES:
                if modality not in (None, m):
                    continue
                cand = self._candidates(m)
                if bounded:
                    # Slots are in time order, so the window is one contiguous run: adjacency is kept.
                    cand = cand.select((cand.t1 >= lo) & (cand.t0 <= hi))  # keep: (S,)
                query = self.layer.reader_view(prompt) if m == "visual" else prompt  # (q, d)
                if term_rows is not None:  # the query's terms, weighed against this modality's slots
                    view = self.layer.reader_view(term_rows) if m == "visual" else term_rows  # (T, d)
                    query = background_weighted(view, cand.keys)  # (1, d)
                moments += read(
                    query,
                    [cand],
                    k=k,
                    budgets=budgets,  # type: ignore[arg-type]
                    join_ratio=self.config.reader_join_ratio,
                    join_gap_s=self.config.reader_join_gap_s,
                    join_touching=self.config.reader_join_touching,
                )
        moments.sort(key=lambda mo: (-mo.score, mo.t0))
        return moments[:k]

    def _candidates(self, modality: Modality) -> Candidates:
        bank = self.banks[modality]
        whole = isinstance(bank, WholeBank)
        keys = bank.member_values if whole else bank.keys  # (S, d), or (R, d) members
        members = bank.member_slot if whole else None  # (R,)
        if modality != "visual" or self.pending == 0:
            return Candidates(modality, keys, bank.t0, bank.t1, bank.id0, bank.id1, members)
        pend = self._pending
        # Bank and pending tensors are replaced on every change, never mutated: while the same objects are
        # current, the joined candidates are still valid, and repeated reads skip copying the whole bank.
        cached = self._joined
        if cached is not None and cached[0] is keys and cached[1] is pend["values"]:
            return cached[2]
        if members is not None:  # each pending token is a slot of its own with one member
            members = torch.cat([members, len(bank) + torch.arange(self.pending, device=members.device)])
        joined = Candidates(
            modality,
            torch.cat([keys, pend["values"]]),
            torch.cat([bank.t0, pend["t0"]]),
            torch.cat([bank.t1, pend["t1"]]),
            torch.cat([bank.id0, pend["ids"]]),
            torch.cat([bank.id1, pend["ids"]]),
            members,
        )
        self._joined = (keys, pend["values"], joined)
        return joined

    # ----- checkpoint state -----------------------------------------------------------------------------
    def state_dict(self, *, copy: bool = True) -> dict[str, Any]:
        """Everything needed to continue this stream exactly: banks, slow and fast weights, carry-over,
        pending tokens and counters (the memory uses no random numbers after construction).

        ``copy=False`` returns the memory's own tensors: a consistent snapshot in microseconds, because no
        tensor of the memory is ever changed in place (each write replaces them). Checkpoints are written
        from such snapshots in the background while ingestion goes on.
        """
        st = self.ttt_state

        def take(t: Tensor) -> Tensor:
            return t.detach().clone() if copy else t.detach()

        return {
            "version": STATE_VERSION,
            "config": self.config.model_dump(),
            "slow": {k: take(v) for k, v in self.layer.state_dict().items()},
            "fast": {k: take(v) for k, v in st.fast._asdict().items()},
            "carry": take(st.carry),
            "seen": st.seen,
            "pending": {k: take(v) for k, v in self._pending.items()},
            "banks": {m: b.state_dict(copy=copy) for m, b in self.banks.items()},
            "next_id": dict(self._next_id),
            "last_t0": dict(self._last_t0),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from `state_dict()`; refuses one made under a different configuration."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"memory state version {state.get('version')!r} is not {STATE_VERSION}")
        # Where θ came from does not matter here: the state carries its own θ in state["slow"]. Fields that
        # states saved before they existed lack count as their defaults.
        ignore = {"device", "dtype", "slow_weights", "encoders"}
        ours = self.config.model_dump(exclude=ignore)
        theirs = {**MemoryConfig().model_dump(exclude=ignore), **saved_fields(state["config"])}
        theirs = {k: v for k, v in theirs.items() if k not in ignore}
        if ours != theirs:
            diff = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
            raise ValueError(f"memory state was made with a different configuration ({', '.join(diff)})")
        dev, dt = self.device, self.dtype
        self.layer.load_state_dict(state["slow"])
        self.banks = self._make_banks()
        fast = FastWeights(**{k: v.to(dev, dt) for k, v in state["fast"].items()})
        self.ttt_state = TTTState(fast=fast, carry=state["carry"].to(dev, dt), seen=int(state["seen"]))
        pend = state["pending"]
        self._pending = {k: v.to(dev, dt if k == "values" else v.dtype) for k, v in pend.items()}
        for m, bank in self.banks.items():
            bank.load_state_dict(state["banks"][m])
        self._next_id = {m: int(state["next_id"][m]) for m in MODALITIES}  # type: ignore[misc]
        self._last_t0 = {m: float(state["last_t0"][m]) for m in MODALITIES}  # type: ignore[misc]


def _as_tensor(value: ArrayLike, name: str, dtype: torch.dtype) -> Tensor:
    try:
        t = value.detach() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not numeric: {exc}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be real numbers, got {t.dtype}")
    try:
        return t.to(dtype)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"{name} is not numeric: {exc}") from None
