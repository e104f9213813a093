"""Training the slow weights θ of the TTT layer end to end (`vsalmonn train-memory`, docs/memory-training.md).

What the memory is for decides the objective: after a long stream has gone through the TTT layer and the
fixed bank, a query about an earlier moment must score highest the slots whose spans cover that moment,
including moments whose own tokens were merged or dropped since. So each training stream is written as the
memory writes it, mini-batch by mini-batch through the differentiable inner loop (``gd``) and then through
the bank's own reduction (`reduce_bank`, the same novelty boundaries as `Bank`, written with differentiable
means), and every few mini-batches each needle seen so far is read: a softmax over all slots of the bank,
scored by cosine with the reader's view of the query, whose target is the slots covering the needle
(InfoNCE with several positives). Gradients reach every part of θ: the reader view θ_R through the score,
the read-out map θ_O and gate α through the rewritten tokens, and the views, η gate, LayerNorms and initial
fast weights through the fast weights the read-out uses.

Backpropagation is truncated every `bptt_chunks` mini-batches (the fast weights, the carry-over and the bank
are detached), so a 3-hour stream costs the memory of a few mini-batches. A pull towards the identity-like
start (an L2 term on θ − θ₀) keeps θ near the weights that are already safe, which matters because the
queries at test time are not the training ones.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from .bank import _row_cosine, lowest_k_mask
from .config import MemoryConfig, Policy
from .memory import StreamMemory, ttt_config
from .training_streams import TokenPool, TrainStream, compose
from .ttt import TTTLayer

log = logging.getLogger(__name__)

TOLERANCE_S = 5.0  # a moment found within this many seconds of a needle counts (as in `bench needle`)


class TrainConfig(BaseModel):
    """How θ is trained; read from the ``[train]`` table of the training config file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, description="seeds the streams, the needles and torch")
    steps: int = Field(300, gt=0, description="optimiser steps, one training stream each")
    seconds: tuple[float, float] = Field((600.0, 10800.0), description="stream length range (log-uniform)")
    needles: tuple[int, int] = Field((6, 14), description="needles per stream, both ends included")
    text_share: float = Field(0.5, ge=0, le=1, description="share of needles asked by text (else by a frame)")
    visual_slots: int = Field(1024, gt=0, description="bank budget during training (the benchmark's)")
    policies: list[Policy] = Field(["merge", "discard"], description="bank policies, one drawn per stream")
    train_reader: bool = Field(True, description="learn the reader view θ_R too (else it stays the identity)")
    bptt_chunks: int = Field(4, gt=0, description="mini-batches between truncations of backpropagation")
    temperature: float = Field(0.05, gt=0, description="softmax temperature of the slot scores")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    pull: float = Field(1e-2, ge=0, description="weight of the L2 pull of θ towards its identity-like start")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clip")
    validation_sights: list[str] = Field(
        default_factory=list, description="sights held out of training and used only to validate"
    )
    validation_streams: int = Field(4, ge=0, description="fixed validation streams (3,600 s each)")
    validate_every: int = Field(50, gt=0, description="steps between validations")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or a torch device")
    memory: dict[str, Any] = Field(
        default_factory=dict,
        description="MemoryConfig fields the memory is trained under; the inner optimiser is gd unless set "
        "(every optimiser is ordinary differentiable torch, so hf_cg and hf_cg_newton train through "
        "their CG)",
    )


@dataclass
class TrainResult:
    state: dict[str, Tensor]
    history: list[dict[str, Any]]
    memory: MemoryConfig
    seconds: float


# -- the bank, differentiably -----------------------------------------------------------------------------


@dataclass
class SlotBank:
    """What `Bank` holds, as plain tensors that may carry gradients (tied keys: slots are their values)."""

    values: Tensor  # (S, d)
    t0: Tensor  # (S,) float64
    t1: Tensor  # (S,) float64
    count: Tensor  # (S,) float32 tokens merged into each slot

    @classmethod
    def empty(cls, dim: int, device: torch.device) -> SlotBank:
        times = torch.empty(0, dtype=torch.float64, device=device)  # (0,)
        return cls(torch.empty(0, dim, device=device), times, times, torch.empty(0, device=device))

    def detach(self) -> SlotBank:
        return SlotBank(self.values.detach(), self.t0, self.t1, self.count)


def reduce_bank(
    bank: SlotBank, values: Tensor, t0: Tensor, t1: Tensor, capacity: int, policy: Policy
) -> SlotBank:
    """`Bank.append` for ``merge`` and ``discard``: the same boundaries (the `capacity` items least similar
    to their predecessor), with merged slots as count-weighted means that gradients pass through."""
    items = torch.cat([bank.values, values])  # (N, d)
    start = torch.cat([bank.t0, t0])  # (N,)
    end = torch.cat([bank.t1, t1])  # (N,)
    count = torch.cat([bank.count, torch.ones(values.shape[0], device=values.device)])  # (N,)
    total = items.shape[0]
    if total <= capacity:
        return SlotBank(items, start, end, count)
    if policy not in ("merge", "discard"):
        raise ValueError(f"training supports the merge and discard policies, not {policy!r}")
    with torch.no_grad():
        sim = _row_cosine(items[1:], items[:-1])  # (N - 1,) as the bank computes it
        sim = torch.cat([sim.new_full((1,), -math.inf), sim])  # (N,) the first item is always kept
        is_boundary = lowest_k_mask(sim, capacity)  # (N,)
        bounds = torch.nonzero(is_boundary).squeeze(1)  # (M,)
        run = torch.cumsum(is_boundary, 0) - 1  # (N,) slot of each item
    if policy == "discard":
        return SlotBank(items[bounds], start[bounds], end[bounds], count[bounds])
    weight = count[:, None]  # (N, 1)
    sums = torch.zeros(capacity, items.shape[1], device=items.device).index_add(
        0, run, items * weight
    )  # (M, d)
    counts = torch.zeros(capacity, device=items.device).index_add(0, run, count)  # (M,)
    first = torch.full((capacity,), math.inf, dtype=torch.float64, device=items.device)
    last = torch.full((capacity,), -math.inf, dtype=torch.float64, device=items.device)
    return SlotBank(
        sums / counts[:, None],
        first.scatter_reduce(0, run, start, "amin"),
        last.scatter_reduce(0, run, end, "amax"),
        counts,
    )


# -- the objective ------------------------------------------------------------------------------------------


def needle_loss(
    layer: TTTLayer, bank: SlotBank, stream: TrainStream, upto: float, temperature: float
) -> tuple[Tensor | None, int]:
    """Mean InfoNCE over the needles that ended before `upto`: each needle's query should score the slots
    covering it above all others. Returns (loss or None, needles counted)."""
    seen = [i for i, n in enumerate(stream.needles) if n.t1 <= upto]
    if not seen or bank.values.shape[0] == 0:
        return None, 0
    device = bank.values.device
    queries = torch.from_numpy(stream.queries[seen]).to(device)  # (Q, d)
    span0 = torch.tensor([stream.needles[i].t0 for i in seen], dtype=torch.float64, device=device)  # (Q,)
    span1 = torch.tensor([stream.needles[i].t1 for i in seen], dtype=torch.float64, device=device)  # (Q,)
    covers = (bank.t0[None] < span1[:, None]) & (bank.t1[None] > span0[:, None])  # (Q, S)
    has = covers.any(1)  # (Q,) a needle whose every slot was dropped cannot be asked for
    if not bool(has.any()):
        return None, 0
    prompt = F.normalize(layer.reader_view(queries[has]), dim=-1)  # (Q', d)
    slots = F.normalize(bank.values, dim=-1)  # (S, d)
    logits = prompt @ slots.t() / temperature  # (Q', S)
    positive = logits.masked_fill(~covers[has], -math.inf)  # (Q', S)
    loss = (torch.logsumexp(logits, 1) - torch.logsumexp(positive, 1)).mean()  # ()
    return loss, int(has.sum())


def stream_loss(
    layer: TTTLayer, stream: TrainStream, policy: Policy, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """Write the stream as the memory would, backpropagating the needle loss every `bptt_chunks`
    mini-batches and cutting the graph there. Gradients accumulate in the layer's parameters."""
    x = torch.from_numpy(stream.tokens).to(device)  # (N, d)
    t0 = torch.from_numpy(stream.t0).to(device)  # (N,)
    t1 = t0 + 1.0  # (N,)
    where = torch.from_numpy(stream.positions).to(device) if layer.config.rope_regions else None  # (N, 2)
    state = layer.init_state(1)
    bank = SlotBank.empty(x.shape[1], device)
    mb = layer.config.mini_batch
    chunks = math.ceil(x.shape[0] / mb)
    losses, asked = [], 0
    for i in range(chunks):
        lo, hi = i * mb, min((i + 1) * mb, x.shape[0])
        at = None if where is None else where[None, lo:hi]  # (1, n, 2)
        y, state = layer.step(x[None, lo:hi], state, times=t0[None, lo:hi], positions=at)  # (1, n, d)
        bank = reduce_bank(bank, y[0], t0[lo:hi], t1[lo:hi], config.visual_slots, policy)
        if (i + 1) % config.bptt_chunks and i + 1 < chunks:
            continue
        loss, count = needle_loss(layer, bank, stream, float(t1[hi - 1]), config.temperature)
        if loss is not None:
            (loss / math.ceil(chunks / config.bptt_chunks)).backward()
            losses.append(float(loss.detach()))
            asked += count
        state, bank = state.detach(), bank.detach()
    return {"loss": float(np.mean(losses)) if losses else float("nan"), "asked": asked}


# -- validation: the real memory and reader ---------------------------------------------------------------


def recall_at(
    memory_config: MemoryConfig, layer: TTTLayer | None, streams: Sequence[TrainStream], k: int = 5
) -> float:
    """Share of needles whose moment is among the reader's first `k`, through the real `StreamMemory`."""
    found = total = 0
    for stream in streams:
        memory = StreamMemory(memory_config, layer=layer)
        where = stream.positions if memory_config.rope_regions else None
        memory.write(stream.tokens, stream.t0, stream.t0 + 1.0, positions=where)
        memory.flush()
        for needle, query in zip(stream.needles, stream.queries, strict=True):
            moments = memory.read(query[None], k=k, modality="visual")
            total += 1
            found += any(m.t0 <= needle.t1 + TOLERANCE_S and m.t1 >= needle.t0 - TOLERANCE_S for m in moments)
    return 100.0 * found / max(total, 1)


# -- the loop -----------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(
    pool: TokenPool,
    config: TrainConfig,
    *,
    log_path: Path | None = None,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train θ on streams composed from `pool`; returns the trained state and the logged history.

    Seeded end to end (streams, needles, torch). Each step's loss goes to the log (JSON lines in `log_path`
    if given) and to `progress`; every `validate_every` steps the reader's recall@5 on fixed streams of
    held-out sights is measured with the untrained θ and the current one.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    memory = MemoryConfig(**{"optimizer": "gd", **config.memory, "visual_slots": config.visual_slots})
    layer = TTTLayer(ttt_config(memory)).to(device)
    layer.reader_proj.requires_grad_(config.train_reader)
    start = {name: p.detach().clone() for name, p in layer.named_parameters()}
    optimiser = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=config.lr)
    names = pool.sight_names
    unknown = sorted(set(config.validation_sights) - set(names))
    if unknown:
        raise ValueError(f"validation sights not in the pool: {', '.join(unknown)}")
    held = [names.index(s) for s in config.validation_sights]
    taught = [i for i in range(len(names)) if i not in held]
    if not taught:
        raise ValueError("every sight is held out for validation: nothing to train on")
    check_rng = np.random.default_rng([config.seed, 1])
    checks = [
        compose(pool, check_rng, 3600.0, held, len(held), config.text_share)
        for _ in range(config.validation_streams if held else 0)
    ]
    check_config = memory.model_copy(update={"ttt": True, "policy": "discard", "audio_policy": "discard"})
    baseline = recall_at(check_config.model_copy(update={"ttt": False}), None, checks) if checks else None
    history: list[dict[str, Any]] = []
    sink = log_path.open("a") if log_path else None
    lo, hi = (math.log(s) for s in config.seconds)
    try:
        for step in range(1, config.steps + 1):
            seconds = float(math.exp(rng.uniform(lo, hi)))
            policy: Policy = config.policies[int(rng.integers(len(config.policies)))]
            count = int(rng.integers(config.needles[0], config.needles[1] + 1))
            stream = compose(pool, rng, seconds, taught, count, config.text_share)
            layer.train()
            stats = stream_loss(layer, stream, policy, config, device)
            pull = sum(((p - start[n]) ** 2).sum() for n, p in layer.named_parameters())
            (config.pull * pull).backward()
            norm = float(torch.nn.utils.clip_grad_norm_(layer.parameters(), config.grad_clip))
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            entry: dict[str, Any] = {
                "step": step,
                "loss": stats["loss"],
                "asked": stats["asked"],
                "seconds": round(seconds),
                "policy": policy,
                "pull": float(pull.detach()),
                "grad_norm": norm,
                "gate": float(torch.tanh(layer.gate.detach()).abs().mean()),
                "elapsed_s": round(time.perf_counter() - started, 1),
            }
            if checks and (step % config.validate_every == 0 or step == config.steps):
                with torch.no_grad():
                    entry["val_recall5"] = recall_at(check_config, _frozen(layer, memory), checks)
                entry["val_recall5_untrained"] = baseline
            history.append(entry)
            if sink:
                sink.write(json.dumps(entry) + "\n")
                sink.flush()
            if progress:
                progress(step, entry)
            log.info("step %d: %s", step, entry)
    finally:
        if sink:
            sink.close()
    state = {k: v.detach().cpu().clone() for k, v in layer.state_dict().items()}
    return TrainResult(state=state, history=history, memory=memory, seconds=time.perf_counter() - started)


def _frozen(layer: TTTLayer, memory: MemoryConfig) -> TTTLayer:
    """A copy of the layer for evaluation on CPU (the memory owns and moves its layer)."""
    copy = TTTLayer(ttt_config(memory))
    copy.load_state_dict({k: v.detach().cpu() for k, v in layer.state_dict().items()})
    return copy
