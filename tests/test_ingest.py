"""A file into a stream's memory with the real default encoders: footage, speech, resume, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, select

from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.models import Checkpoint, FrameLabel, TranscriptSegment
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.ingest import Encoders, ingest_file
from vsalmonn.perception.media import DecodeError

from . import media
from .words import normalise

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
needs_media = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared media folder {SHARED} is absent")
MEMORY = MemoryConfig(visual_slots=2048, audio_slots=256)
PERCEPTION = PerceptionConfig(language="en")


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> Encoders:
    return Encoders.from_config(PERCEPTION, tmp_path_factory.mktemp("models"))


@needs_media
def test_street_footage_ingests_with_spans_inside_the_clip_and_labels(
    tmp_path: Path, encoders: Encoders
) -> None:
    with MemoryStore(tmp_path) as store:
        result = ingest_file(
            SHARED / "vtest.avi", "street", store=store, encoders=encoders, perception=PERCEPTION,
            memory_config=MEMORY, window_s=20, checkpoint_every_s=20,
        )  # fmt: skip
        assert result.frames == 80 and result.segments == 0
        assert result.checkpoints >= 3
        with store.catalog.session() as s:  # every frame's top labels are kept as evidence
            rows = s.scalars(select(FrameLabel).order_by(FrameLabel.t)).all()
        assert len(rows) == 80 and all(r.labels["labels"] for r in rows)
        memory, info = store.open_memory("street")
        assert info is not None and info.source_state == {"done": True}
        assert info.t_start == 0.0 and info.t_end <= 80.5
        moments = memory.read(encoders.text.encode(["people walking on a street"]), k=5)
        assert moments and all(0.0 <= m.t0 <= m.t1 <= 80.5 for m in moments)
        with store.catalog.session() as s:  # each moment's evidence: the labels of the frames in its span
            for m in moments:
                rows = s.scalars(select(FrameLabel).where(FrameLabel.t >= m.t0, FrameLabel.t < m.t1)).all()
                assert rows and all(r.labels["labels"] for r in rows), m


def speech_clip(path: Path, seconds: float = 40.0, gop: int = 25) -> tuple[Path, dict[str, float]]:
    """A 40 s video with three real spoken prompts at known times; the clip and each key word's onset.

    The container follows the suffix (.mp4, .ts, .mkv); `gop` is the keyframe interval in frames (at 5 fps).
    """
    prompts = {
        "weasels": ("tt-weasels.wav", 4.0),
        "goodbye": ("vm-goodbye.wav", 18.0),
        "muted": ("conf-muted.wav", 33.0),
    }
    placements = [(SHARED / "speech" / name, at) for name, at in prompts.values()]
    track, onsets = media.speech_track(placements, seconds, 48_000)
    media.write_media(path, video_times=media.uniform_times(seconds, 5), rate=5, audio=track, gop=gop)
    return path, dict(zip(prompts, onsets, strict=True))


def words_at(store: MemoryStore) -> list[tuple[str, float]]:
    with store.catalog.session() as s:
        rows = s.scalars(select(TranscriptSegment).order_by(TranscriptSegment.t0)).all()
    found = []
    for row in rows:
        for w in (row.words or {}).get("words", []):
            found.append((normalise(w["w"]), w["t0"]))
    return found


@needs_media
def test_speech_lands_in_the_transcript_at_its_times_and_a_resume_duplicates_nothing(
    tmp_path: Path, encoders: Encoders
) -> None:
    clip, expected = speech_clip(tmp_path / "talk.mp4")
    data = tmp_path / "data"
    kwargs = dict(
        encoders=encoders, perception=PERCEPTION, memory_config=MEMORY, window_s=10, checkpoint_every_s=10
    )
    with MemoryStore(data) as store:
        result = ingest_file(clip, "talk", store=store, **kwargs)  # type: ignore[arg-type]
        assert result.segments >= 3
        words = words_at(store)
        for word, at in expected.items():
            times = [t for w, t in words if w == word]
            assert times, f"{word!r} missing from the transcript {words}"
            assert abs(times[0] - at) <= 2.0, f"{word!r} at {times[0]:.2f} s, placed at {at:.2f} s"
        memory, _ = store.open_memory("talk")
        top = memory.read(encoders.text.encode(["goodbye"]), k=3, modality="audio")[0]
        assert top.t0 - 2 <= expected["goodbye"] <= top.t1 + 2

        # A run killed after its checkpoint at 20 s leaves that checkpoint as the newest and transcript rows
        # past it: simulate it by removing the newer checkpoints; resuming must not duplicate the rows.
        newer = [c.seq for c in store.checkpoints("talk") if (c.source_offset or 0) > 20.0]
        with store.catalog.transaction() as s:
            s.execute(delete(Checkpoint).where(Checkpoint.seq.in_(newer)))
        assert store.checkpoints("talk")[0].source_offset == 20.0
        before = words_at(store)
        again = ingest_file(clip, "talk", store=store, **kwargs)  # type: ignore[arg-type]
        assert again.resumed_at == 20.0
        assert words_at(store) == before, "the resumed run rewrote exactly the rows past its offset"


def labels_and_lines(store: MemoryStore, stream: str) -> tuple[list[tuple[float, object]], list[tuple]]:
    """Every frame's label row and every transcript row of a stream, in time order."""
    with store.catalog.session() as s:
        labels = [(r.t, r.labels) for r in s.scalars(select(FrameLabel).order_by(FrameLabel.t))]
        lines = s.execute(
            select(TranscriptSegment.t0, TranscriptSegment.t1, TranscriptSegment.text).order_by(
                TranscriptSegment.t0
            )
        ).all()
    return labels, [tuple(r) for r in lines]


@needs_media
@pytest.mark.parametrize("suffix", [".ts", ".mkv", ".mp4"])
def test_a_resume_between_distant_keyframes_reads_every_frame_again(
    tmp_path: Path, encoders: Encoders, suffix: str
) -> None:
    """Keyframes at 0 and 35 s, resumed from 30 s: MPEG-TS seeks past the resume point unless checked."""
    clip, _ = speech_clip(tmp_path / f"talk{suffix}", gop=175)
    kwargs = dict(
        encoders=encoders, perception=PERCEPTION, memory_config=MEMORY, window_s=10, checkpoint_every_s=10
    )
    with MemoryStore(tmp_path / "data") as store:
        ingest_file(clip, "talk", store=store, **kwargs)  # type: ignore[arg-type]
        whole = labels_and_lines(store, "talk")
        assert len(whole[0]) == 40 and len(whole[1]) >= 3, whole
        newer = [c.seq for c in store.checkpoints("talk") if (c.source_offset or 0) > 30.0]
        with store.catalog.transaction() as s:  # killed after the checkpoint at 30 s
            s.execute(delete(Checkpoint).where(Checkpoint.seq.in_(newer)))
        again = ingest_file(clip, "talk", store=store, **kwargs)  # type: ignore[arg-type]
        assert again.resumed_at == 30.0 and again.frames == 10
        assert labels_and_lines(store, "talk") == whole


def test_bad_files_fail_with_one_line(tmp_path: Path, encoders: Encoders) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with MemoryStore(tmp_path / "data") as store:
        for bad in (text, empty, tmp_path / "missing.mp4"):
            with pytest.raises(DecodeError) as err:
                ingest_file(
                    bad, "bad", store=store, encoders=encoders, perception=PERCEPTION, memory_config=MEMORY
                )
            assert "\n" not in str(err.value) and bad.name in str(err.value)
        assert store.checkpoints("bad") == []
