"""The prompt-dependent reader (DESIGN §3, "Prompt-dependent reader").

A pure function of a prompt and what the banks offer: it neither holds state nor changes a bank, so the
memory can hand it a snapshot of each bank's keys and go on writing. It returns moments, time spans with
the ids of the slots behind them, because the agent has to cite evidence by timestamp rather than receive
anonymous vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from vsalmonn.memory_store.bank import lowest_k_mask
from vsalmonn.memory_store.config import Modality

logger = logging.getLogger(__name__)


class Moment(BaseModel):
    """A stretch of the stream that answers a prompt, with the slots that are its evidence.

    ``slot_ids`` are the slots' stable ids (their ``id0``), so text facts attached to a slot can be found
    again; ``token_ids`` is the first and last written token the moment covers.
    """

    model_config = ConfigDict(frozen=True)

    t0: float
    t1: float
    score: float
    modality: Modality
    slot_ids: list[int]
    token_ids: tuple[int, int]


@dataclass(frozen=True)
class Candidates:
    """What one modality offers the reader: its slots' keys and spans, in time order.

    ``keys`` is (S, d) and unnormalised; ``t0``, ``t1``, ``id0``, ``id1`` are (S,). With ``members`` (R,), the
    keys are R member rows instead (policy ``whole``: tokens a slot keeps whole), ``members[r]`` the slot of
    row r, and a slot scores as its best member.
    """

    modality: Modality
    keys: Tensor
    t0: Tensor
    t1: Tensor
    id0: Tensor
    id1: Tensor
    members: Tensor | None = None

    def select(self, keep: Tensor) -> Candidates:
        """Only the slots where ``keep`` (S,) is true, with their members."""
        spans = (self.t0[keep], self.t1[keep], self.id0[keep], self.id1[keep])
        if self.members is None:
            return Candidates(self.modality, self.keys[keep], *spans)
        rows = keep[self.members]  # (R,) members of kept slots
        renumber = torch.cumsum(keep, 0) - 1  # (S,) a kept slot's new position
        return Candidates(self.modality, self.keys[rows], *spans, members=renumber[self.members[rows]])

    def slot_scores(self, prompt: Tensor) -> Tensor:
        """Each slot's score for ``prompt``: (S,)."""
        rows = score(prompt, self.keys)  # (S,) or (R,)
        if self.members is None:
            return rows
        best = torch.full((self.t0.shape[0],), -torch.inf, dtype=rows.dtype, device=rows.device)  # (S,)
        return best.scatter_reduce(0, self.members.to(rows.device), rows, "amax")  # (S,)


def score(prompt: Tensor, keys: Tensor) -> Tensor:
    """Mean cosine of each key (S, d) with the prompt rows (q, d); returns (S,) float32.

    The mean of cosines over prompt rows equals the cosine numerator against the mean of the unit prompt
    rows, so the keys are read twice (one matrix-vector product, one norm) whatever the prompt's length,
    and never normalised into a copy.
    """
    compute = keys.dtype if keys.dtype in (torch.float32, torch.float64) else torch.float32
    unit = torch.nn.functional.normalize(prompt.to(device=keys.device, dtype=compute), dim=1)  # (q, d)
    direction = unit.mean(0)  # (d,)
    keys = keys.to(compute)
    dots = keys @ direction  # (S,)
    norms = torch.linalg.vector_norm(keys, dim=1).clamp_min(1e-12)  # (S,)
    return torch.nan_to_num(dots / norms, nan=0.0).float()  # (S,)


# Words that join a query's parts: a query is cut at them into its terms ("a cartoon man running down a
# street" -> "a cartoon man running", "a street"). Articles stay with their noun.
_JOINERS = frozenset(
    [
        "above",
        "across",
        "after",
        "against",
        "along",
        "among",
        "and",
        "around",
        "at",
        "before",
        "behind",
        "below",
        "beneath",
        "beside",
        "between",
        "by",
        "down",
        "during",
        "for",
        "from",
        "in",
        "inside",
        "into",
        "near",
        "next",
        "of",
        "off",
        "on",
        "onto",
        "or",
        "out",
        "outside",
        "over",
        "past",
        "through",
        "to",
        "toward",
        "towards",
        "under",
        "underneath",
        "up",
        "upon",
        "while",
        "with",
        "within",
        "without",
        "front",
    ]
)
MIN_TERM_WEIGHT = 0.05  # a term matching every slot still counts a little: it may be all the query says


def query_terms(query: str) -> list[str]:
    """The query and, when it has more than one, its terms: the stretches between joining words.

    What `background_weighted` weighs; the whole query comes first so that a query of one term is read
    exactly as before.
    """
    words = query.replace(",", " , ").split()
    terms, current = [], []
    for word in words:
        if word.lower() in _JOINERS or word == ",":
            if current:
                terms.append(" ".join(current))
            current = []
        else:
            current.append(word)
    if current:
        terms.append(" ".join(current))
    terms = [t for t in terms if t.lower() not in ("a", "an", "the")]
    return [query.strip()] + (terms if len(terms) > 1 else [])


def background_weighted(terms: Tensor, keys: Tensor) -> Tensor:
    """One prompt row (1, d) from a query's term rows (T, d): their unit vectors averaged, each weighted by
    how rarely it matches the slots `keys` (S, d) of this stream.

    A term's frequency f is the share of slots scoring in the upper half of its own score range over the
    stream (min to max); its weight is 1 - f (at least `MIN_TERM_WEIGHT`). A term that the background
    matches everywhere ("a street" in street footage) scores high on nearly every slot and counts little,
    one that singles out a few moments counts fully. Scores are cosines (`score`), so the weights depend on
    the slots' directions only. With one row, or no slots, the prompt is that row's average unchanged.
    """
    unit = torch.nn.functional.normalize(terms.float(), dim=1)  # (T, d)
    if unit.shape[0] == 1 or keys.shape[0] == 0:
        return unit.mean(0, keepdim=True)  # (1, d)
    keys = keys.to(unit.dtype)
    cos = torch.nn.functional.normalize(keys, dim=1) @ unit.T  # (S, T)
    lo, hi = cos.min(0).values, cos.max(0).values  # (T,)
    frequency = (cos >= (lo + hi) / 2).float().mean(0)  # (T,)
    weight = (1.0 - frequency).clamp_min(MIN_TERM_WEIGHT)  # (T,)
    return (weight[:, None] * unit).sum(0, keepdim=True) / weight.sum()  # (1, d)


def read(
    prompt: Tensor,
    candidates: Sequence[Candidates],
    *,
    k: int,
    budgets: Mapping[Modality, int],
    join_ratio: float = 0.5,
    join_gap_s: float = 2.0,
    join_touching: bool = True,
) -> list[Moment]:
    """The at most ``k`` best moments for ``prompt`` (q, d), best first (ties: earlier ``t0`` first).

    Each modality keeps its own ``budgets[modality]`` best slots before anything is compared across
    modalities: audio and visual scores are not calibrated against each other, and a fixed budget per
    modality keeps one from crowding the other out. Selected slots that are adjacent in their bank (no
    unselected slot between them) become one moment scored by its best slot, unless the weaker of two
    neighbours scores below ``join_ratio`` times the stronger: a strong hit beside slots that only filled the
    budget would otherwise cite a span far wider than its evidence. Neighbours further apart in time than
    ``join_gap_s`` stay apart too: two remarks a minute apart are two moments, not one long one. With
    ``join_touching``, moments whose spans touch and whose scores are similar (by ``join_ratio``) then
    become one, even when a weak slot between them parted their runs (`_join_touching`). Ties in
    slot scores keep the earlier slot; moments tied in score and ``t0`` keep the order of ``candidates``.
    A 1-D prompt is one row.
    """
    if prompt.dim() == 1:
        prompt = prompt.unsqueeze(0)
    if prompt.dim() != 2 or prompt.shape[0] == 0:
        raise ValueError(f"prompt must be (q, d) with q >= 1, got shape {tuple(prompt.shape)}")
    if k <= 0:
        return []
    moments: list[Moment] = []
    for cand in candidates:
        size = cand.t0.shape[0]
        if size == 0:
            continue
        if cand.keys.dim() != 2 or cand.keys.shape[1] != prompt.shape[1]:
            raise ValueError(
                f"{cand.modality} keys have shape {tuple(cand.keys.shape)}, prompt width is {prompt.shape[1]}"
            )
        if cand.modality not in budgets:
            raise KeyError(f"no reader budget for modality {cand.modality!r}")
        scores = cand.slot_scores(prompt)
        found = _moments(cand, scores, int(budgets[cand.modality]), join_ratio, join_gap_s)
        moments.extend(_join_touching(found, join_ratio) if join_touching else found)
    moments.sort(key=lambda m: (-m.score, m.t0))
    logger.debug("reader: %d moments from %d modalities, returning %d", len(moments), len(candidates), k)
    return moments[:k]


def _join_touching(moments: list[Moment], join_ratio: float) -> list[Moment]:
    """One modality's moments, those whose spans touch joined when neither is weak beside the other.

    A frame is several tokens, so several slots of one span; the budget fills with weak slots of the same
    frames, and the weak-link rule of `_moments` then cuts one scene into several strong moments that crowd
    the first k (bench needle: three of the first five for one scene, pushing the needle out). A moment is
    a stretch of time, so touching strong ones are one; a weak moment between them stays apart and does not
    block the join.
    """
    out: list[Moment] = []
    for m in sorted(moments, key=lambda m: (m.t0, m.t1)):
        for i in range(len(out) - 1, -1, -1):
            g = out[i]
            hi, lo = max(g.score, m.score), min(g.score, m.score)
            if g.t1 >= m.t0 and not (hi > 0 and lo < join_ratio * hi):  # touching, neither weak
                out[i] = Moment(
                    t0=g.t0,
                    t1=max(g.t1, m.t1),
                    score=max(g.score, m.score),
                    modality=g.modality,
                    slot_ids=sorted(g.slot_ids + m.slot_ids),
                    token_ids=(min(g.token_ids[0], m.token_ids[0]), max(g.token_ids[1], m.token_ids[1])),
                )
                break
        else:
            out.append(m)
    return out


def _moments(
    cand: Candidates, scores: Tensor, budget: int, join_ratio: float, join_gap_s: float = 2.0
) -> list[Moment]:
    """Top-``budget`` slots of one modality, grouped into runs of adjacent slots of similar score."""
    chosen = torch.nonzero(lowest_k_mask(-scores, budget)).squeeze(1)  # (B,) increasing slot positions
    if chosen.numel() == 0:
        return []
    # Only the B chosen slots leave the bank's device; everything below is small.
    t0 = cand.t0[chosen].to("cpu", torch.float64)  # (B,)
    t1 = cand.t1[chosen].to("cpu", torch.float64)  # (B,)
    best = scores[chosen].to("cpu", torch.float64)  # (B,)
    slot_ids = cand.id0[chosen].tolist()
    last_ids = cand.id1[chosen].tolist()
    chosen = chosen.cpu()
    starts = torch.ones_like(chosen, dtype=torch.bool)  # (B,) does a new run begin here?
    hi = torch.maximum(best[1:], best[:-1])  # (B-1,)
    lo = torch.minimum(best[1:], best[:-1])  # (B-1,)
    weak_link = (hi > 0) & (lo < join_ratio * hi)  # (B-1,)
    far = t0[1:] - t1[:-1] > join_gap_s  # (B-1,)
    starts[1:] = (chosen[1:] != chosen[:-1] + 1) | weak_link | far
    group = torch.cumsum(starts, 0) - 1  # (B,)
    runs = int(group[-1]) + 1
    run_t0 = torch.full((runs,), torch.inf, dtype=torch.float64).scatter_reduce(0, group, t0, "amin")
    run_t1 = torch.full((runs,), -torch.inf, dtype=torch.float64).scatter_reduce(0, group, t1, "amax")
    run_score = torch.full((runs,), -torch.inf, dtype=torch.float64).scatter_reduce(0, group, best, "amax")
    bounds = [*torch.nonzero(starts).squeeze(1).tolist(), chosen.numel()]
    return [
        Moment(
            t0=a,
            t1=b,
            score=c,
            modality=cand.modality,
            slot_ids=slot_ids[bounds[r] : bounds[r + 1]],
            token_ids=(slot_ids[bounds[r]], last_ids[bounds[r + 1] - 1]),
        )
        for r, (a, b, c) in enumerate(zip(run_t0.tolist(), run_t1.tolist(), run_score.tolist(), strict=True))
    ]
