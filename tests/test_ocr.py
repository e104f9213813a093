"""On-screen text: a real clip with phrases drawn at known times, read by rapidocr into the catalog.

One module-scoped ingest of a 30 s clip (three slides, 10 s each, 640x360) with OCR on and speech off; the
tests read its rows, its memory (search) and its exports, and one resumes a stopped run of the same clip.
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from vsalmonn.memory_store.catalog import Catalog
from vsalmonn.memory_store.rows.screen_text import ShownLine, add_screen_text, stream_screen_text
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.ingest import Encoders, ingest_file
from vsalmonn.tools.exports import export
from vsalmonn.tools.memory_view import MemoryView
from vsalmonn.tools.timefmt import hms

from .media import text_slide, write_images
from .talk_store import MEMORY

pytest.importorskip("rapidocr")

from vsalmonn.perception.encoders.ocr import FramePicker, OcrReader

SLIDES = [  # (from, to, text, background): stream seconds
    (0.0, 10.0, "QUARTERLY BUDGET REVIEW", (20, 40, 110)),
    (10.0, 20.0, "PLATFORM NINE DEPARTURES", (10, 80, 40)),
    (20.0, 30.0, "EMERGENCY EXIT ONLY", (90, 90, 90)),
]
PERCEPTION = PerceptionConfig(ocr=True, speech_encoder="none")


def similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.upper(), b.upper()).ratio()


@dataclass(frozen=True)
class Built:
    clip: Path
    data: Path
    encoders: Encoders


def slides_clip(path: Path, rate: int = 2) -> Path:
    images = []
    for start, end, text, background in SLIDES:
        slide = text_slide(text, background)
        images += [slide] * round((end - start) * rate)
    return write_images(path, images, rate)


def ingest(built: Built, stream: str, **kw: object) -> None:
    with MemoryStore(built.data) as store:
        ingest_file(
            built.clip, stream, store=store, encoders=built.encoders, perception=PERCEPTION,
            memory_config=MEMORY, window_s=10, checkpoint_every_s=10, **kw,  # type: ignore[arg-type]
        )  # fmt: skip


def rows_of(data: Path, stream: str) -> list[tuple[float, str]]:
    with MemoryStore(data) as store:
        row = store.catalog.stream(stream)
        assert row is not None
        return [(r.t, r.text) for r in stream_screen_text(store.catalog, row.id)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, encoders: Encoders) -> Built:
    root = tmp_path_factory.mktemp("ocr")
    ocr = OcrReader(min_score=PERCEPTION.ocr_min_score, threads=PERCEPTION.threads)
    out = Built(slides_clip(root / "slides.mp4"), root / "data", replace(encoders, speech=None, ocr=ocr))
    ingest(out, "slides")
    return out


def test_each_slide_is_read_once_at_the_time_it_appears(built: Built) -> None:
    rows = rows_of(built.data, "slides")
    assert len(rows) == len(SLIDES), rows  # a slide on screen for 10 s is one row, not one per read
    for (t, text), (start, _, phrase, _) in zip(rows, SLIDES, strict=True):
        assert start <= t < start + 1.0, (t, text)
        assert similar(text, phrase) >= 0.8, (text, phrase)


def test_a_stopped_run_resumed_leaves_no_duplicate_rows(built: Built) -> None:
    """Stop at the first checkpoint, leave a row past it (as a kill before the next checkpoint would), resume
    the run: the rows equal an uninterrupted run's."""
    stop = threading.Event()

    def progress(done: float, _total: float | None) -> None:
        if done >= 10.0:
            stop.set()

    ingest(built, "resumed", stop=stop, progress=progress)
    assert [t for t, _ in rows_of(built.data, "resumed")] == [0.0]
    with MemoryStore(built.data) as store:
        row = store.catalog.stream("resumed")
        assert row is not None
        add_screen_text(store.catalog, row.id, [ShownLine(10.0, "PLATFORM NINE DEPARTURES", 0.99)])
    ingest(built, "resumed")
    assert rows_of(built.data, "resumed") == rows_of(built.data, "slides")


def test_the_picker_reads_scene_changes_and_every_n_seconds_within_its_cap() -> None:
    blue, green = text_slide("A", (20, 40, 110)), text_slide("B", (200, 200, 200))
    picker = FramePicker(every_s=10, change=0.02, max_per_minute=12)  # at most one frame in 5 s
    frames = [blue] * 12 + [green, blue, green] + [green] * 20
    picked = [t for t, image in enumerate(frames) if picker.pick(float(t), image)]
    # 0: the first; 5-9: unchanged; 10: due (every 10 s); 12-14 change, but within 5 s of 10; 15: changed
    # from the blue read at 10 (a change held back by the cap is still seen); 20-24: unchanged; 25: due.
    assert picked == [0, 10, 15, 25], picked


@pytest.mark.parametrize("query", ["platform nine departures", "emergency exit"])
def test_search_for_a_phrase_shown_finds_its_moment_cited_with_the_text(built: Built, query: str) -> None:
    start, _, phrase, _ = next(s for s in SLIDES if query.split()[0] in s[2].lower())
    with MemoryView(MemoryStore(built.data), built.encoders.text, owns_store=True) as view:
        (best, *_) = view.search(query, stream="slides", k=3)
    assert best.modality == "audio"  # the text bank: sentence embeddings, beside the transcript's
    assert best.t0 <= start + 1.0 and best.t1 >= start, best
    shown = [e for e in best.evidence if e.startswith("shown: ")]
    assert shown and similar(shown[0].removeprefix("shown: ").strip("'"), phrase) >= 0.8, best.evidence


def test_the_markdown_export_lists_the_text_shown_with_its_time(built: Built) -> None:
    with MemoryStore(built.data) as store:
        md = export(store, "slides", "md")
        vtt = export(store, "slides", "vtt")
    section = md.split("## On screen", 1)[1]
    for start, _, phrase, _ in SLIDES:
        line = next(line for line in section.splitlines() if line.startswith(f"- [{hms(start)}]"))
        assert similar(line.split("] ", 1)[1], phrase) >= 0.8, line
    assert "QUARTERLY" not in vtt  # subtitles are speech only


def test_a_portable_export_carries_the_screen_text(built: Built, tmp_path: Path) -> None:
    from vsalmonn.memory_store.portable import export_stream, import_stream

    with MemoryStore(built.data) as store:
        export_stream(store, "slides", tmp_path / "slides.vsm")
    with MemoryStore(tmp_path / "other") as store:
        import_stream(store, tmp_path / "slides.vsm")
    assert rows_of(tmp_path / "other", "slides") == rows_of(built.data, "slides")


def test_the_agent_reads_shown_evidence_of_a_text_bank_moment() -> None:
    from vsalmonn.agent.loop import _evidence_line

    moment = {"stream": "s", "t0": 10.0, "t1": 11.0, "modality": "audio"}
    line = _evidence_line({**moment, "evidence": ["shown: 'PLATFORM NINE'", "seen: scoreboard (0.40)"]})
    assert "shown: 'PLATFORM NINE'" in line and "seen:" not in line


def test_retention_ages_screen_text_by_stream_time_and_bounds_its_bytes(
    catalog: Catalog, tmp_path: Path
) -> None:
    from vsalmonn.memory_store.config import DataRetention, KindRetention
    from vsalmonn.memory_store.retention import apply_data_retention, stream_sizes

    cam = catalog.ensure_stream("cam").id
    add_screen_text(catalog, cam, [ShownLine(float(t), f"GATE {t} OPEN", 0.9) for t in range(100)])
    off = KindRetention(max_age_s=0, max_bytes=0)
    kinds = ("labels", "transcript", "events", "thumbnails", "transcript_files")
    policy = DataRetention(**dict.fromkeys(kinds, off), screen_text=KindRetention(max_age_s=50, max_bytes=0))
    removed = apply_data_retention(catalog, tmp_path, cam, "cam", policy)
    assert removed["screen_text"] == 49  # the newest is at t=99: rows before t=49 go
    assert [r.t for r in stream_screen_text(catalog, cam)][:1] == [49.0]
    size = stream_sizes(catalog, tmp_path, cam, "cam")["screen_text"]
    assert size.rows == 51
    budget = KindRetention(max_age_s=0, max_bytes=size.bytes // 2)
    apply_data_retention(
        catalog, tmp_path, cam, "cam", DataRetention(**dict.fromkeys(kinds, off), screen_text=budget)
    )
    left = stream_screen_text(catalog, cam)
    assert 20 <= len(left) <= 26 and left[-1].t == 99.0  # the oldest went first


def test_describe_moment_lists_the_text_shown_around_the_instant(built: Built) -> None:
    """describe at 25 s lists the slide shown from 20 s (within ±10 s), not those of 0 s and 10 s, and the
    tool's text carries it."""
    from vsalmonn.tools.render import render_description

    with MemoryView(MemoryStore(built.data), built.encoders.text, owns_store=True) as view:
        described = view.describe("slides", 25.0)
    assert [round(s.t) for s in described.shown] == [20], described.shown
    assert similar(described.shown[0].text, "EMERGENCY EXIT ONLY") >= 0.8
    text = render_description(described)
    assert "shown: [00:00:20] '" in text and "QUARTERLY" not in text.upper(), text
