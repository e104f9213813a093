"""Retention of labels, transcript rows, events, thumbnails and live transcripts (memory_store.retention)."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from vsalmonn.memory_store.catalog import Catalog
from vsalmonn.memory_store.config import DataRetention, KindRetention, StoreConfig
from vsalmonn.memory_store.models import Event, FrameLabel, TranscriptSegment
from vsalmonn.memory_store.names import path_component
from vsalmonn.memory_store.retention import (
    ROW_OVERHEAD,
    THUMBS_DIR,
    TRANSCRIPTS_DIR,
    RetentionSchedule,
    apply_data_retention,
    stream_sizes,
)
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.plugins.builtin.surveillance import safe_name

from .test_cli import in_process

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = 86_400.0
OFF = KindRetention(max_age_s=0, max_bytes=0)
LABELS = {"labels": [["street", 0.61], ["car", 0.22], ["traffic light", 0.07], ["bus", 0.04], ["taxi", 0.02]]}


def _policy(**kinds: KindRetention) -> DataRetention:
    base = {
        k: OFF for k in ("labels", "transcript", "screen_text", "events", "thumbnails", "transcript_files")
    }
    return DataRetention(**{**base, **kinds})


def _fill(catalog: Catalog, stream_id: str, n: int, *, start: datetime = NOW - timedelta(days=10)) -> None:
    """n labels (one per stream second), n/5 transcript rows and n/100 events, created one per second."""
    with catalog.transaction() as s:
        for i in range(n):
            s.add(FrameLabel(stream_id=stream_id, t=float(i), labels=LABELS))
            created = start + timedelta(seconds=i)
            if i % 5 == 0:
                words = {
                    "words": [
                        {"w": "hello", "t0": i, "t1": i + 0.4},
                        {"w": "there", "t0": i + 0.5, "t1": i + 1},
                    ]
                }
                s.add(TranscriptSegment(stream_id=stream_id, t0=i, t1=i + 1, text="hello there", words=words,
                                        language="en", created_at=created))  # fmt: skip
            if i % 100 == 0:
                payload = {"score": 0.5}
                s.add(Event(stream_id=stream_id, kind="surveillance.motion", source="surveillance",
                            t=float(i), message="motion", payload=payload, created_at=created))  # fmt: skip


def _count(catalog: Catalog, model: type, stream_id: str) -> int:
    with catalog.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(model.stream_id == stream_id)) or 0)


def _min(catalog: Catalog, column: object, stream_id: str, model: type) -> object:
    with catalog.session() as s:
        return s.scalar(select(func.min(column)).where(model.stream_id == stream_id))


def test_rows_past_their_age_go_and_newer_stay(catalog: Catalog, tmp_path: Path) -> None:
    cam = catalog.ensure_stream("cam").id
    other = catalog.ensure_stream("other").id
    _fill(catalog, cam, 1000)
    _fill(catalog, other, 200)
    # Labels age in stream time against the newest label (t=999): 300 s keeps t >= 699.
    # Transcripts and events age in wall time: created at start + i s; 10 days - 600 s keeps i >= 600.
    age = KindRetention(max_age_s=10 * DAY - 600, max_bytes=0)
    removed = apply_data_retention(
        catalog, tmp_path, cam, "cam",
        _policy(labels=KindRetention(max_age_s=300, max_bytes=0), transcript=age, events=age), now=NOW,
    )  # fmt: skip
    assert removed["labels"] == 699 and _min(catalog, FrameLabel.t, cam, FrameLabel) == 699.0
    assert _count(catalog, FrameLabel, cam) == 301
    assert (
        removed["transcript"] == 120 and _min(catalog, TranscriptSegment.t0, cam, TranscriptSegment) == 600.0
    )
    assert removed["events"] == 6 and _count(catalog, Event, cam) == 4
    # Another stream is not touched.
    assert _count(catalog, FrameLabel, other) == 200 and _count(catalog, TranscriptSegment, other) == 40


def test_rows_over_the_byte_budget_go_oldest_first_in_batches(catalog: Catalog, tmp_path: Path) -> None:
    cam = catalog.ensure_stream("cam").id
    _fill(catalog, cam, 2000)
    before = stream_sizes(catalog, tmp_path, cam, "cam")["labels"]
    assert before.rows == 2000
    per_row = before.bytes / before.rows
    budget = int(before.bytes * 0.25)
    policy = _policy(labels=KindRetention(max_age_s=0, max_bytes=budget)).model_copy(
        update={"batch_rows": 100}
    )
    statements: list[str] = []
    from sqlalchemy import event

    def count_deletes(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            statements.append(statement)

    event.listen(catalog.engine, "before_cursor_execute", count_deletes)
    try:
        removed = apply_data_retention(catalog, tmp_path, cam, "cam", policy, now=NOW)
    finally:
        event.remove(catalog.engine, "before_cursor_execute", count_deletes)
    after = stream_sizes(catalog, tmp_path, cam, "cam")["labels"]
    assert budget - per_row < after.bytes <= budget  # down to the budget, not further
    assert removed["labels"] == 2000 - after.rows
    assert len(statements) == -(-removed["labels"] // 100)  # one DELETE of at most 100 rows per transaction
    assert _min(catalog, FrameLabel.t, cam, FrameLabel) == float(2000 - after.rows)  # the oldest went
    # Under the budget, nothing more goes.
    assert apply_data_retention(catalog, tmp_path, cam, "cam", policy, now=NOW)["labels"] == 0


def test_unlimited_keeps_everything(catalog: Catalog, tmp_path: Path) -> None:
    cam = catalog.ensure_stream("cam").id
    _fill(catalog, cam, 300, start=NOW - timedelta(days=400))
    removed = apply_data_retention(catalog, tmp_path, cam, "cam", _policy(), now=NOW)
    assert not any(removed.values())
    assert _count(catalog, FrameLabel, cam) == 300


def test_size_estimate_is_close_to_what_sqlite_stores(tmp_path: Path) -> None:
    """The per-row overhead is calibrated against dbstat: within 25 % of the pages of table and index."""
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    try:
        cam = catalog.ensure_stream("cam").id
        _fill(catalog, cam, 20_000)
        estimate = stream_sizes(catalog, tmp_path, cam, "cam")
    finally:
        catalog.close()
    con = sqlite3.connect(tmp_path / "catalog.sqlite")
    try:
        con.execute("SELECT * FROM dbstat LIMIT 1")
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat")
    stored = dict(con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    con.close()
    labels = stored["frame_labels"] + stored["ix_frame_labels_stream_t"]
    transcript = stored["transcript_segments"] + stored["ix_transcript_stream_t0"]
    assert 0.75 < estimate["labels"].bytes / labels < 1.25, (estimate["labels"], labels)
    assert 0.75 < estimate["transcript"].bytes / transcript < 1.25, (estimate["transcript"], transcript)


def _write(path: Path, size: int, age_s: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    t = NOW.timestamp() - age_s
    os.utime(path, (t, t))


def test_thumbnails_are_pruned_by_age_then_bytes(catalog: Catalog, tmp_path: Path) -> None:
    name = "Kamera Eingang 1"
    sid = catalog.ensure_stream(name).id
    assert safe_name(name) == path_component(name)  # the plugin and the store name the folder alike
    folder = tmp_path / THUMBS_DIR / path_component(name)
    for i in range(10):  # thumb-0 is the oldest: 10 days old; thumb-9 one day
        _write(folder / f"motion-{i}.jpg", 1000, (10 - i) * DAY)
    _write(tmp_path / THUMBS_DIR / "other" / "motion-0.jpg", 1000, 100 * DAY)  # another stream's
    rule = KindRetention(max_age_s=7.5 * DAY, max_bytes=3500)
    removed = apply_data_retention(catalog, tmp_path, sid, name, _policy(thumbnails=rule), now=NOW)
    assert sorted(p.name for p in folder.iterdir()) == ["motion-7.jpg", "motion-8.jpg", "motion-9.jpg"]
    assert removed["thumbnails"] == 7
    assert (tmp_path / THUMBS_DIR / "other" / "motion-0.jpg").exists()
    sizes = stream_sizes(catalog, tmp_path, sid, name)
    assert sizes["thumbnails"].rows == 3 and sizes["thumbnails"].bytes == 3000


def test_live_transcript_keeps_its_newest_whole_lines(catalog: Catalog, tmp_path: Path) -> None:
    sid = catalog.ensure_stream("meeting").id
    path = tmp_path / TRANSCRIPTS_DIR / "meeting.txt"
    path.parent.mkdir(parents=True)
    lines = [f"[00:{i // 60:02d}:{i % 60:02d}] line number {i}\n" for i in range(1000)]
    path.write_text("".join(lines))
    t = NOW.timestamp() - 60
    os.utime(path, (t, t))
    rule = KindRetention(max_age_s=DAY, max_bytes=5000)
    assert (
        apply_data_retention(catalog, tmp_path, sid, "meeting", _policy(transcript_files=rule), now=NOW)[
            "transcript_files"
        ]
        == 1
    )
    kept = path.read_text()
    assert len(kept.encode()) <= 5000 and kept.endswith(lines[-1])
    assert kept.splitlines(keepends=True) == lines[-len(kept.splitlines()) :]  # whole lines, the newest
    assert abs(path.stat().st_mtime - t) < 1e-3  # still as old as its last write
    # Not written for longer than max_age: the whole file goes.
    os.utime(path, (t - 2 * DAY, t - 2 * DAY))
    apply_data_retention(catalog, tmp_path, sid, "meeting", _policy(transcript_files=rule), now=NOW)
    assert not path.exists()


def test_schedule_applies_at_most_every_interval(catalog: Catalog, tmp_path: Path) -> None:
    cam = catalog.ensure_stream("cam").id
    policy = _policy(labels=KindRetention(max_age_s=10, max_bytes=0)).model_copy(update={"interval_s": 3600})
    schedule = RetentionSchedule(catalog, tmp_path, cam, "cam", policy)
    _fill(catalog, cam, 100)
    assert schedule() == {"labels": 89, "thumbnails": 0, "transcript_files": 0}
    with catalog.transaction() as s:
        s.add(FrameLabel(stream_id=cam, t=500.0, labels=LABELS))
    assert schedule() is None  # within the interval
    assert _count(catalog, FrameLabel, cam) == 12


def test_settings_accept_a_data_retention_table() -> None:
    config = StoreConfig.model_validate(
        {"data_retention": {"interval_s": 60, "labels": {"max_age_s": 3600, "max_bytes": 0}}}
    )
    assert config.data_retention.labels == KindRetention(max_age_s=3600, max_bytes=0)
    assert config.data_retention.events.max_bytes == 64_000_000  # defaults for the others
    with pytest.raises(ValueError):
        StoreConfig.model_validate({"data_retention": {"labels": {"max_bytes": -1}}})


def test_status_shows_sizes_per_stream(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with MemoryStore.open(tmp_path) as store:
        sid = store.catalog.ensure_stream("cam").id
        _fill(store.catalog, sid, 500)
    _write(tmp_path / THUMBS_DIR / "cam" / "motion-1.jpg", 20_000, 0)
    result = in_process(capsys, "--data", str(tmp_path), "status", "--json")
    assert result.returncode == 0, result
    (entry,) = json.loads(result.stdout)["streams"]
    sizes = entry["sizes"]
    assert (
        sizes["labels"]["rows"] == 500 and sizes["transcript"]["rows"] == 100 and sizes["events"]["rows"] == 5
    )
    assert sizes["thumbnails"] == {"rows": 1, "bytes": 20_000}
    assert sizes["transcript_files"] == {"rows": 0, "bytes": 0} and sizes["checkpoints"]["rows"] == 0
    assert sizes["labels"]["bytes"] > 500 * ROW_OVERHEAD["labels"]
    text = in_process(capsys, "--data", str(tmp_path), "status")
    assert (
        text.returncode == 0
        and "stored" in text.stdout
        and "500 / " in text.stdout
        and "thumbnails" in text.stdout
    )


def test_a_committed_checkpoint_applies_retention_through_the_pipeline(tmp_path: Path) -> None:
    """The sink's listener on the real writer: a commit prunes the labels; the checkpoint itself stays."""
    from vsalmonn.memory_store import MemoryConfig, StreamMemory
    from vsalmonn.perception.config import PerceptionConfig
    from vsalmonn.perception.pipeline import StreamSink

    config = StoreConfig(data_retention=_policy(labels=KindRetention(max_age_s=60, max_bytes=0)))
    memory_config = MemoryConfig(dim=32, heads=2, visual_slots=64, audio_slots=16, ttt=False, mini_batch=16)
    with MemoryStore.open(tmp_path, config) as store, store.writer("cam", config=memory_config) as writer:
        StreamSink(
            store=store, writer=writer, memory=None, encoders=None,  # type: ignore[arg-type]
            perception=PerceptionConfig(), window_s=30.0,
        )  # fmt: skip
        _fill(store.catalog, writer.stream_id, 300)
        writer.commit(StreamMemory(memory_config).state_dict())
        assert _count(store.catalog, FrameLabel, writer.stream_id) == 61  # t from 239 to 299
        assert len(store.checkpoints("cam")) == 1
