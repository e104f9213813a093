"""`vsalmonn demo`: the main job on the bundled sample, end to end (DESIGN §9).

Ingest 30 s of real street footage with four real spoken prompts (`vsalmonn.sample`) with the default
encoders, then ask the agent the sample's questions with the embedded model and print each answer with its
cited times beside where the answer truly is. Everything runs from what the packages ship: the first run
joins Whisper's two halves and converts SmolLM2 under `<data>/models` (about a minute), later runs reuse them
and the already ingested memory.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from vsalmonn import sample
from vsalmonn.agent.loop import Answer
from vsalmonn.app import make_agent, make_toolkit, open_plugins
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.ingest import ingest_file
from vsalmonn.perception.pipeline import Encoders
from vsalmonn.settings import Settings
from vsalmonn.tools.timefmt import hms

log = logging.getLogger(__name__)

STREAM = "sample"
TOLERANCE_S = 2.0  # a citation is right when it overlaps the true span widened by this much


@dataclass
class Asked:
    question: str
    truth: tuple[float, float]
    answer: Answer
    seconds: float

    @property
    def right(self) -> bool:
        t0, t1 = self.truth
        return any(c.t0 <= t1 + TOLERANCE_S and c.t1 >= t0 - TOLERANCE_S for c in self.answer.citations)


@dataclass
class DemoResult:
    ingest_seconds: float
    asked: list[Asked] = field(default_factory=list)


def run_demo(
    settings: Settings,
    *,
    out: IO[str] | None = None,
    progress: Callable[[float, float | None], None] | None = None,
) -> DemoResult:
    """Ingest the sample (once) and answer its questions, writing answers to `out` as they are made."""
    out = out or sys.stdout
    meta = sample.description()
    with MemoryStore.open(settings.data_dir, settings.store) as store:
        started = time.perf_counter()
        encoders = Encoders.from_config(settings.perception, settings.data_dir)
        result = ingest_file(
            sample.clip(), STREAM, store=store, encoders=encoders, perception=settings.perception,
            memory_config=settings.memory, window_s=10, checkpoint_every_s=10, progress=progress,
        )  # fmt: skip
        ingest_seconds = time.perf_counter() - started
        what = (
            "already in memory"
            if result.frames == 0 and result.position == result.resumed_at
            else f"{result.frames} frames and {result.segments} transcript segments ingested "
            f"({ingest_seconds:.0f} s with model loading)"
        )
        out.write(f"sample: {meta['seconds']} s of street footage with spoken prompts, {what}\n")
        demo = DemoResult(ingest_seconds=ingest_seconds)
        toolkit = make_toolkit(settings, store, text_encoder=encoders.text)
        plugins = open_plugins(settings, store, text_encoder=encoders.text)
        agent = make_agent(settings, toolkit, plugins=plugins)
        for item in meta["questions"]:
            out.write(f"\nQ: {item['question']}\nA: ")
            out.flush()
            asked_at = time.perf_counter()

            def write(piece: str) -> None:
                out.write(piece)
                out.flush()

            answer = agent.ask(item["question"], stream=STREAM, on_token=write)
            asked = Asked(item["question"], (item["t0"], item["t1"]), answer, time.perf_counter() - asked_at)
            demo.asked.append(asked)
            cited = ", ".join(f"{hms(c.t0)}-{hms(c.t1)}" for c in answer.citations) or "none"
            truth = f"{hms(item['t0'])}-{hms(item['t1'])}"
            mark = "right" if asked.right else "wrong"
            out.write(f"\n   cited {cited}; truly at {truth}: {mark} ({asked.seconds:.1f} s)\n")
        plugins.close()
        toolkit.close()
    right = sum(a.right for a in demo.asked)
    out.write(f"\n{right} of {len(demo.asked)} answers cite the right time\n")
    return demo
