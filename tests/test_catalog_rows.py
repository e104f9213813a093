"""The named catalog queries of memory_store/rows: what each writes and reads, on a real catalog database.

Each test runs on an SQLite file and (where its binaries exist) on a throwaway PostgreSQL server, through
the `catalog` fixture of conftest.py. Rows are written through the functions under test and, where a test
needs rows no function writes (checkpoints), through a plain transaction.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from vsalmonn.memory_store.catalog import Catalog
from vsalmonn.memory_store.models import Checkpoint, Event, FrameLabel, IngestFile, StreamStatus
from vsalmonn.memory_store.rows.events import add_event, event_kinds, events_since
from vsalmonn.memory_store.rows.ingest import (
    reconcile_ingest_files,
    remember_source_identity,
    upsert_ingest_file,
)
from vsalmonn.memory_store.rows.labels import add_labels, labels_between, labels_near, labels_of
from vsalmonn.memory_store.rows.resume import forget_from
from vsalmonn.memory_store.rows.status import StatusReport, read_status, stream_overviews, upsert_statuses
from vsalmonn.memory_store.rows.transcript import (
    SpokenLine,
    add_transcript,
    count_transcript,
    stream_transcript,
    transcript_between,
)

ROOT = Path(__file__).resolve().parents[1]


def _ids(catalog: Catalog, *names: str) -> list[str]:
    return [catalog.ensure_stream(name).id for name in names]


# ----- transcript ------------------------------------------------------------------------------------------


def test_transcript_lines_come_back_by_overlap_and_before_the_committed_offset(catalog: Catalog) -> None:
    sid, other = _ids(catalog, "talk", "other")
    words = {"words": [{"w": "hello", "t0": 1.0, "t1": 1.4, "p": 0.9}]}
    lines = [
        SpokenLine(5.0, 7.0, "second"),
        SpokenLine(1.0, 3.0, "first", language="en", words=words),
        SpokenLine(9.0, 12.0, "third"),
        SpokenLine(20.0, 21.0, "past the checkpoint"),
    ]
    assert add_transcript(catalog, sid, lines) == 4
    assert add_transcript(catalog, other, [SpokenLine(1.0, 30.0, "elsewhere")]) == 1
    assert add_transcript(catalog, sid, []) == 0

    got = transcript_between(catalog, sid, 2.0, 10.0, before=15.0)
    assert [r.text for r in got] == ["first", "second", "third"]  # time order; [1,3] and [9,12] overlap
    assert got[0].language == "en" and got[0].words == words
    assert [r.text for r in transcript_between(catalog, sid, 2.0, 10.0, before=15.0, limit=2)] == [
        "first",
        "second",
    ]
    assert [r.text for r in transcript_between(catalog, sid, 0.0, 100.0, before=20.0)][-1] == "third"
    assert [r.text for r in transcript_between(catalog, sid, 0.0, 100.0)][-1] == "past the checkpoint"
    assert transcript_between(catalog, sid, 13.0, 19.0, before=100.0) == []
    assert count_transcript(catalog, sid, 2.0, 10.0, before=15.0) == 3
    assert count_transcript(catalog, sid, 0.0, 100.0) == 4
    assert [r.text for r in stream_transcript(catalog, sid)] == [
        "first",
        "second",
        "third",
        "past the checkpoint",
    ]


# ----- labels ----------------------------------------------------------------------------------------------


def test_labels_are_stored_per_frame_and_read_by_span_and_by_nearness(catalog: Catalog) -> None:
    (sid,) = _ids(catalog, "cam")
    frames = [(float(t), [("tabby cat", 0.8 - t / 100), ("dog", 0.1)]) for t in range(10)]
    assert add_labels(catalog, sid, [*frames, (10.0, [])]) == 10  # a frame without labels writes no row
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(FrameLabel)) == 10

    span = labels_between(catalog, sid, 2.0, 5.0, before=4.0, limit=100)
    assert [r.t for r in span] == [2.0, 3.0]  # [t0, t1) and before the committed offset
    assert labels_of(span[0]) == [("tabby cat", pytest.approx(0.78)), ("dog", pytest.approx(0.1))]
    assert [r.t for r in labels_between(catalog, sid, 0.0, 10.0, limit=3)] == [0.0, 1.0, 2.0]

    near = labels_near(catalog, sid, 6.2, within=3.0, before=8.0, limit=3)
    assert [r.t for r in near] == [6.0, 7.0, 5.0]  # nearest first, nothing at or past 8
    assert labels_near(catalog, sid, 50.0, within=3.0, limit=3) == []


def test_labels_of_skips_entries_that_are_not_pairs() -> None:
    row = FrameLabel(stream_id="x", t=0.0, labels={"labels": [["cat", 0.5], ["bad"], "x", ["dog", "nan?"]]})
    assert labels_of(row) == [("cat", 0.5)]
    assert labels_of(FrameLabel(stream_id="x", t=0.0, labels={})) == []


# ----- resume ----------------------------------------------------------------------------------------------


def test_forget_from_removes_one_streams_rows_at_or_after_the_offset(catalog: Catalog) -> None:
    sid, other = _ids(catalog, "a", "b")
    for stream in (sid, other):
        add_transcript(catalog, stream, [SpokenLine(t, t + 1, f"line {t}") for t in (1.0, 5.0, 9.0)])
        add_labels(catalog, stream, [(t, [("cat", 0.5)]) for t in (1.0, 5.0, 9.0)])
    assert forget_from(catalog, sid, 5.0) == (2, 2)
    assert [r.t0 for r in stream_transcript(catalog, sid)] == [1.0]
    assert [r.t for r in labels_between(catalog, sid, 0.0, 100.0, limit=10)] == [1.0]
    assert len(stream_transcript(catalog, other)) == 3  # another stream's rows stay
    assert forget_from(catalog, sid, 5.0) == (0, 0)


# ----- status ----------------------------------------------------------------------------------------------


def test_status_reports_are_upserted_and_read_with_the_newest_checkpoint(catalog: Catalog) -> None:
    a, b, c = _ids(catalog, "reported", "checked", "new")
    now = datetime.now(UTC).replace(microsecond=0)
    upsert_statuses(catalog, [StatusReport(stream_id=a, state="running", updated_at=now, frames=3)])
    report = StatusReport(
        stream_id=a, state="done", updated_at=now + timedelta(seconds=5), pid=42, host="h", source="s",
        position=12.5, duration=20.0, rate=2.0, lag_s=None, frames=10, segments=2, drops=1, errors=1,
        last_error="boom", detail={"files_done": 1}, started_at=now,
    )  # fmt: skip
    upsert_statuses(catalog, [report, StatusReport(stream_id=b, state="starting", updated_at=now)])
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(StreamStatus)) == 2
    row = read_status(catalog, a)
    assert row is not None
    assert (row.state, row.pid, row.position, row.frames, row.last_error) == ("done", 42, 12.5, 10, "boom")
    assert row.detail == {"files_done": 1} and row.updated_at == now + timedelta(seconds=5)
    assert read_status(catalog, c) is None

    with catalog.transaction() as session:
        for seq in (1, 2):
            session.add(
                Checkpoint(
                    stream_id=b, seq=seq, path=f"p{seq}", t_end=10.0 * seq, checksum="0" * 64,
                    bytes_raw=1, bytes_stored=1,
                )
            )  # fmt: skip
    overviews = stream_overviews(catalog)
    assert [o.stream.name for o in overviews] == ["checked", "new", "reported"]  # by name
    checked, new, reported = overviews
    assert checked.checkpoint is not None and checked.checkpoint.seq == 2  # the newest
    assert checked.status is not None and checked.status.state == "starting"
    assert reported.checkpoint is None and reported.status is not None and reported.status.state == "done"
    assert new.status is None and new.checkpoint is None


# ----- events ----------------------------------------------------------------------------------------------


def test_events_are_stored_and_filtered_newest_first(catalog: Catalog) -> None:
    sid, other = _ids(catalog, "door", "yard")
    base = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [
        add_event(catalog, kind="alert", stream_id=sid, source="p", t=5.0, message="one", created_at=base),
        add_event(catalog, kind="reconnect", stream_id=sid, created_at=base + timedelta(minutes=1)),
        add_event(catalog, kind="alert", stream_id=other, t=1.0, payload={"k": 1}, created_at=base),
        add_event(catalog, kind="fault", created_at=base + timedelta(minutes=2)),
    ]
    assert len(set(ids)) == 4
    with catalog.session() as session:
        stored = session.get(Event, ids[2])
        assert stored is not None and stored.payload == {"k": 1} and stored.message == ""

    assert [e.id for e in events_since(catalog, limit=10)] == [ids[3], ids[1], ids[2], ids[0]]
    assert [e.id for e in events_since(catalog, limit=2)] == [ids[3], ids[1]]
    assert [e.id for e in events_since(catalog, stream_id=sid, limit=10)] == [ids[1], ids[0]]
    assert [e.id for e in events_since(catalog, kind="alert", limit=10)] == [ids[2], ids[0]]
    naive = datetime(2026, 1, 1, 0, 1)  # naive means UTC
    assert [e.id for e in events_since(catalog, since=naive, limit=10)] == [ids[3], ids[1]]
    assert [e.id for e in events_since(catalog, since_t=2.0, limit=10)] == [ids[0]]  # no t: never matches
    assert event_kinds(catalog) == ["alert", "fault", "reconnect"]
    assert event_kinds(catalog, sid) == ["alert", "reconnect"]
    assert event_kinds(catalog, limit=1) == ["alert"]


# ----- ingest files ----------------------------------------------------------------------------------------


def test_ingest_file_rows_are_created_once_and_updated(catalog: Catalog) -> None:
    (sid,) = _ids(catalog, "folder")
    upsert_ingest_file(catalog, sid, "a.mp4", status="ingesting", stream_offset=0.0, size=10, head_bytes=4)
    upsert_ingest_file(catalog, sid, "a.mp4", offset=7.5)
    with pytest.raises(TypeError, match="not columns of ingest_files: bogus"):
        upsert_ingest_file(catalog, sid, "b.mp4", status="done", bogus=1)
    with catalog.session() as session:
        rows = session.scalars(select(IngestFile)).all()
    assert [(r.path, r.status, r.offset, r.size, r.head_bytes) for r in rows] == [
        ("a.mp4", "ingesting", 7.5, 10, 4)
    ]  # and nothing of b.mp4 was written


@pytest.mark.parametrize("done", [False, True])
def test_reconcile_lets_the_checkpoint_win(catalog: Catalog, done: bool) -> None:
    (sid,) = _ids(catalog, "folder")
    for path, status in [
        ("a", "done"),
        ("b", "ingesting"),
        ("c", "ingesting"),
        ("d", "failed"),
        ("e", "pending"),
    ]:
        upsert_ingest_file(catalog, sid, path, status=status, offset=3.0)
    finished = reconcile_ingest_files(catalog, sid, "b", current_done=done)
    assert sorted(finished) == (["a", "b", "d"] if done else ["a", "d"])
    with catalog.session() as session:
        state = {r.path: (r.status, r.offset) for r in session.scalars(select(IngestFile))}
    assert state["b"] == ("done" if done else "ingesting", 3.0)
    assert state["c"] == ("pending", 0.0)  # started, but no checkpoint holds any of it
    assert state["e"] == ("pending", 3.0)


def test_remember_source_identity(catalog: Catalog) -> None:
    (sid,) = _ids(catalog, "file")
    identity = {"path": "/x.mp4", "size": 3, "mtime": 1.0, "head_sha256": "ab", "head_bytes": 3}
    remember_source_identity(catalog, sid, identity)
    row = catalog.stream("file")
    assert row is not None and row.source_identity == identity


# ----- nothing else opens a session ------------------------------------------------------------------------


def test_no_module_outside_memory_store_opens_a_catalog_session() -> None:
    offenders = []
    for path in sorted((ROOT / "vsalmonn").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("vsalmonn/memory_store/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("session", "transaction") and not node.args and not node.keywords:
                    offenders.append(f"{rel}:{node.lineno} .{node.func.attr}()")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                offenders.append(f"{rel}:{node.lineno} from {node.module} import")
            elif isinstance(node, ast.Import) and any(a.name.startswith("sqlalchemy") for a in node.names):
                offenders.append(f"{rel}:{node.lineno} import sqlalchemy")
    assert offenders == []
