"""The store most tests read: a 40 s clip with three spoken prompts at known times
(`test_ingest.speech_clip`), ingested with the real default encoders, plus one alert event.

Built once per test session (`conftest.talk_store`); each module gets its own copy (`conftest.ingested`),
so a module that writes (an event, a newer checkpoint) never changes what another one reads, and no module
pays for the encoders and the ingest again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vsalmonn.memory_store import MemoryConfig
from vsalmonn.perception.config import PerceptionConfig

if TYPE_CHECKING:
    from vsalmonn.perception.ingest import Encoders

MEMORY = MemoryConfig(visual_slots=512, audio_slots=64)
PERCEPTION = PerceptionConfig(language="en")


@dataclass(frozen=True)
class Ingested:
    data: Path
    clip: Path
    said_at: dict[str, float]  # each prompt's key word onset, stream seconds


def build(root: Path, encoders: Encoders) -> Ingested:
    """Ingest the clip into ``root/data`` as stream "talk" and add an alert at 18.5 s."""
    from vsalmonn.memory_store.models import Event
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.perception.ingest import ingest_file

    from .test_ingest import speech_clip

    clip, said_at = speech_clip(root / "talk.mp4")
    data = root / "data"
    with MemoryStore(data) as store:
        ingest_file(
            clip, "talk", store=store, encoders=encoders, perception=PERCEPTION, memory_config=MEMORY,
            window_s=10, checkpoint_every_s=10,
        )  # fmt: skip
        stream = store.catalog.stream("talk")
        assert stream is not None
        with store.catalog.transaction() as s:
            s.add(
                Event(stream_id=stream.id, kind="alert", source="test", t=18.5, message="keyword 'goodbye'")
            )
    return Ingested(data=data, clip=clip, said_at=said_at)


def copy(built: Ingested, root: Path) -> Ingested:
    """A copy of the store under `root` (the clip is shared: nothing writes it)."""
    shutil.copytree(built.data, root / "data")
    return replace(built, data=root / "data", said_at=dict(built.said_at))
