"""What a found moment or an instant rests on, in words a reader can check: speech, on-screen text, labels,
memory slots.

Catalog rows are read only up to a stream's committed offset (`before`): rows past it are work in progress
that a restart of the writer removes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vsalmonn.memory_store.rows.labels import labels_between, labels_of
from vsalmonn.memory_store.rows.screen_text import screen_text_between
from vsalmonn.memory_store.rows.transcript import transcript_between

from .results import Line, SlotCover

if TYPE_CHECKING:
    from vsalmonn.memory_store.catalog import Catalog
    from vsalmonn.memory_store.memory import StreamMemory
    from vsalmonn.memory_store.models import FrameLabel

SAID_MAX = 5  # transcript lines kept as one moment's evidence
SAID_CHARS = 300  # characters of one transcript line in a moment's evidence
SHOWN_MAX = 5  # lines of on-screen text kept as one moment's evidence
SEEN_MAX = 3  # labels kept as one moment's evidence
LABEL_ROWS_MAX = 3600  # frames whose labels are counted for one moment (an hour at 1 FPS)


def lines(
    catalog: Catalog, stream_id: str, start: float, end: float, before: float, limit: int
) -> list[Line]:
    """Transcript lines overlapping [start, end] that begin before `before`, in time order."""
    rows = transcript_between(catalog, stream_id, start, end, before=before, limit=limit)
    return [Line(t0=r.t0, t1=r.t1, text=r.text) for r in rows]


def top_labels(rows: Sequence[FrameLabel], n: int = SEEN_MAX) -> list[tuple[str, float, int]]:
    """The labels in most of `rows`: (label, mean probability where seen, frames), most frequent first."""
    count: Counter[str] = Counter()
    total: defaultdict[str, float] = defaultdict(float)
    for row in rows:
        for label, p in labels_of(row):
            count[label] += 1
            total[label] += p
    ranked = sorted(count, key=lambda label: (-count[label], -total[label], label))
    return [(label, total[label] / count[label], count[label]) for label in ranked[:n]]


def moment_evidence(catalog: Catalog, stream_id: str, t0: float, t1: float, before: float) -> list[str]:
    """What a moment rests on that a reader can check: speech overlapping it, text read on its frames (OCR),
    labels of frames inside it."""
    said = lines(catalog, stream_id, t0, t1, before, SAID_MAX)
    shown = screen_text_between(catalog, stream_id, t0, t1, before=before, limit=SHOWN_MAX)
    frames = labels_between(catalog, stream_id, t0, max(t1, t0 + 1e-3), before=before, limit=LABEL_ROWS_MAX)
    evidence = [f"said: {_quote(line.text, SAID_CHARS)}" for line in said]
    evidence += [f"shown: {_quote(row.text, SAID_CHARS)}" for row in shown]
    # ImageNet names list synonyms ("web site, website"): the first is enough to say what was seen.
    evidence += [f"seen: {label.split(',')[0].strip()} ({p:.2f})" for label, p, _ in top_labels(frames)]
    return evidence


def _quote(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"'{text}'"


def slots_at(memory: StreamMemory, t: float) -> list[SlotCover]:
    """Per modality, how many memory slots contain `t` and the union of their spans."""
    candidates = getattr(memory, "_candidates", None)
    out = []
    for modality in ("visual", "audio"):
        if candidates is not None:
            c = candidates(modality)
            t0, t1 = c.t0, c.t1
        else:
            bank = memory.banks[modality]  # type: ignore[index]
            t0, t1 = bank.t0, bank.t1
        hit = (t0 <= t) & (t1 >= t)  # (S,)
        n = int(hit.sum())
        if n:
            out.append(
                SlotCover(modality=modality, slots=n, t0=float(t0[hit].min()), t1=float(t1[hit].max()))
            )
    return out


__all__ = [
    "LABEL_ROWS_MAX",
    "SAID_CHARS",
    "SAID_MAX",
    "SEEN_MAX",
    "SHOWN_MAX",
    "lines",
    "moment_evidence",
    "slots_at",
    "top_labels",
]
