"""The catalog (DESIGN §4): schema versions, SQLite's WAL and locking, races between processes, constraints.

Most tests run twice through the `catalog_url` fixture: on an SQLite file and on a throwaway PostgreSQL
server. The multi-process tests start their workers with the spawn method, so they share nothing with pytest.
"""

from __future__ import annotations

import multiprocessing
import queue
import re
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, delete, event, func, inspect, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from vsalmonn.memory_store import models
from vsalmonn.memory_store.catalog import (
    MIGRATIONS_DIR,
    SCHEMA_HEAD,
    Catalog,
    CatalogError,
    alembic_config,
    create_catalog_engine,
    immediate,
)
from vsalmonn.memory_store.models import Checkpoint, Stream

from . import postgres
from .conftest import sqlite_url

TABLES = set(models.Base.metadata.tables)


# --- helpers ------------------------------------------------------------------------------------------------


@contextmanager
def recorded_sql() -> Iterator[list[str]]:
    """Every statement any engine sends while the block runs."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def snapshot(url: str) -> dict[str, Any]:
    """What a database holds: its tables, their indexes, the schema version and the streams."""
    engine = create_catalog_engine(url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            tables = sorted(insp.get_table_names())
            return {
                "tables": tables,
                "indexes": {t: sorted(i["name"] or "" for i in insp.get_indexes(t)) for t in tables},
                "version": conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all(),
                "streams": conn.execute(text("SELECT id, name FROM streams ORDER BY name")).all(),
            }
    finally:
        engine.dispose()


def add_checkpoint(session: Any, stream: Stream, seq: int, **kw: Any) -> Checkpoint:
    row = Checkpoint(
        stream_id=stream.id,
        seq=seq,
        path=f"memory/{stream.id}/{seq:08d}.zarr",
        checksum="0" * 64,
        bytes_raw=100,
        bytes_stored=50,
        **kw,
    )
    session.add(row)
    return row


# --- schema -------------------------------------------------------------------------------------------------


def test_an_empty_database_is_created_at_head(catalog_url: str) -> None:
    with Catalog(catalog_url) as cat:
        assert cat.schema_revision() == SCHEMA_HEAD
        assert cat.dialect == catalog_url.split(":")[0].split("+")[0]
        with cat.engine.connect() as conn:
            assert TABLES | {"alembic_version"} <= set(inspect(conn).get_table_names())
            # The migrations build exactly what models.py declares: nothing for autogenerate to add.
            assert compare_metadata(MigrationContext.configure(conn), models.Base.metadata) == []


def test_reopening_at_head_changes_nothing(catalog_url: str) -> None:
    with Catalog(catalog_url) as cat:
        cat.ensure_stream("cam1")
    before = snapshot(catalog_url)
    with recorded_sql() as statements, Catalog(catalog_url) as cat:
        assert cat.schema_revision() == SCHEMA_HEAD
    writes = [s for s in statements if re.match(r"\s*(CREATE|ALTER|DROP|INSERT|UPDATE|DELETE)\b", s, re.I)]
    assert writes == []
    assert not any("IMMEDIATE" in s or "advisory" in s for s in statements)  # no write lock taken
    assert snapshot(catalog_url) == before


def test_a_newer_schema_is_refused_and_left_untouched(catalog_url: str) -> None:
    with Catalog(catalog_url) as cat:
        cat.ensure_stream("cam1")
        with cat.transaction() as s:
            s.execute(text("UPDATE alembic_version SET version_num = 'f00d_from_the_future'"))
    before = snapshot(catalog_url)
    for create in (True, False):
        with pytest.raises(CatalogError) as info:
            Catalog(catalog_url, create=create)
        assert str(info.value) == (
            "catalog schema f00d_from_the_future is newer than this vsalmonn understands "
            f"(head {SCHEMA_HEAD}); upgrade vsalmonn"
        )
    assert snapshot(catalog_url) == before


def test_upgrade_from_revision_0001_keeps_the_data(catalog_url: str) -> None:
    # A catalog as the first release wrote it: schema 0001, rows inserted with that release's SQL.
    engine = immediate(create_catalog_engine(catalog_url))
    with engine.connect() as conn, conn.begin():
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            text(
                "INSERT INTO streams (id, name, source, kind, config, created_at) "
                "VALUES (:id, :n, :s, :k, :c, :t)"
            ),
            {"id": "a" * 32, "n": "Kamera Eingang 1", "s": "/media/in", "k": "folder", "c": '{"dim": 384}',
             "t": "2025-01-02 03:04:05.000000"},
        )  # fmt: skip
        conn.execute(
            text(
                "INSERT INTO checkpoints (stream_id, seq, path, t_start, t_end, source_offset, source_state, "
                "tokens_visual, tokens_audio, checksum, bytes_raw, bytes_stored, created_at) VALUES "
                "(:sid, 1, 'memory/x/1.zarr', 0.0, 12.5, 12.5, NULL, 300, 40, :sum, 1000, 400, :t)"
            ),
            {"sid": "a" * 32, "sum": "ab" * 32, "t": "2025-01-02 03:04:06.000000"},
        )
        conn.execute(
            text(
                'INSERT INTO ingest_files (stream_id, path, size, mtime, status, "offset", updated_at) '
                "VALUES (:sid, 'in/a.mp4', 123, 1.5, 'pending', 0.0, :t)"
            ),
            {"sid": "a" * 32, "t": "2025-01-02 03:04:07.000000"},
        )
        assert "ix_ingest_files_stream_status" not in {
            i["name"] for i in inspect(conn).get_indexes("ingest_files")
        }
    engine.dispose()

    with Catalog(catalog_url) as cat:
        assert cat.schema_revision() == SCHEMA_HEAD
        with cat.engine.connect() as conn:
            assert "ix_ingest_files_stream_status" in {
                i["name"] for i in inspect(conn).get_indexes("ingest_files")
            }
        stream = cat.stream("Kamera Eingang 1")
        assert stream is not None
        assert (stream.id, stream.source, stream.kind, stream.config) == (
            "a" * 32,
            "/media/in",
            "folder",
            {"dim": 384},
        )
        with cat.session() as s:
            (cp,) = s.scalars(select(Checkpoint)).all()
            assert (cp.seq, cp.t_end, cp.tokens_visual, cp.checksum, cp.bytes_stored) == (
                1,
                12.5,
                300,
                "ab" * 32,
                400,
            )
            assert cp.created_at == datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC)
            assert s.scalar(select(models.IngestFile.status)) == "pending"


def test_every_older_revision_upgrades_to_head(catalog_url: str) -> None:
    """Down to each older revision (down to an empty database) and back: downgrades and upgrades both work."""
    older = [script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()][1:]
    Catalog(catalog_url).close()
    for revision in [*older, "base"]:
        engine = immediate(create_catalog_engine(catalog_url))
        with engine.connect() as conn, conn.begin():
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
        engine.dispose()
        with Catalog(catalog_url) as cat:
            assert cat.schema_revision() == SCHEMA_HEAD
            with cat.engine.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), models.Base.metadata) == []


def test_an_open_waits_for_another_that_is_creating_the_schema(
    catalog_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first open is held inside its upgrade transaction; a second open meanwhile must wait, then find the
    schema at head and run nothing (without the lock it would run the DDL again and fail on the tables)."""
    real_upgrade = command.upgrade
    inside, release = threading.Event(), threading.Event()
    upgrades: list[str] = []

    def held_upgrade(config: Any, revision: str, **kw: Any) -> None:
        upgrades.append(revision)
        real_upgrade(config, revision, **kw)
        if len(upgrades) == 1:
            inside.set()
            release.wait(30)

    monkeypatch.setattr(command, "upgrade", held_upgrade)
    revisions: dict[str, object] = {}

    def open_catalog(key: str) -> None:
        try:
            with Catalog(catalog_url) as cat:
                revisions[key] = cat.schema_revision()
        except Exception as exc:
            revisions[key] = exc

    first = threading.Thread(target=open_catalog, args=("first",))
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=open_catalog, args=("second",))
    second.start()
    second.join(0.5)
    waited = second.is_alive()
    release.set()
    first.join(30)
    second.join(30)
    assert revisions == {"first": SCHEMA_HEAD, "second": SCHEMA_HEAD}
    assert waited
    assert upgrades == ["head"]


def test_schema_head_is_the_newest_revision() -> None:
    assert ScriptDirectory(str(MIGRATIONS_DIR)).get_heads() == [SCHEMA_HEAD]


def test_tables_made_without_catalog_are_refused(catalog_url: str) -> None:
    engine = create_catalog_engine(catalog_url)
    models.Base.metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(CatalogError, match="has tables but no schema version"):
        Catalog(catalog_url)


def test_create_false_does_not_make_a_catalog(catalog_url: str, tmp_path: Path) -> None:
    if catalog_url.startswith("sqlite"):
        missing = tmp_path / "nowhere" / "catalog.sqlite"
        with pytest.raises(CatalogError, match="no catalog at"):
            Catalog(sqlite_url(missing), create=False)
        assert not missing.parent.exists()
        Catalog(catalog_url).close()  # the fixture's file now exists but is empty of schema below
        engine = create_catalog_engine(catalog_url)
        with engine.connect() as conn, conn.begin():
            for table in [*reversed(models.Base.metadata.sorted_tables)]:
                conn.execute(text(f"DROP TABLE {table.name}"))
            conn.execute(text("DROP TABLE alembic_version"))
        engine.dispose()
    with pytest.raises(CatalogError, match=r"no catalog schema in .*create=False"):
        Catalog(catalog_url, create=False)
    with Catalog(catalog_url, create=True) as cat:
        assert cat.schema_revision() == SCHEMA_HEAD


# --- connections and errors ---------------------------------------------------------------------------------


def test_bad_urls_and_unreachable_databases_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="bad catalog URL") as info:
        Catalog("this is not a URL")
    assert "\n" not in str(info.value)
    with pytest.raises(CatalogError, match="bad catalog URL"):
        Catalog("nosuchdb://user:pw@host/db")
    with pytest.raises(CatalogError, match="cannot open catalog") as info:
        Catalog(sqlite_url(tmp_path))  # a directory, not a database file
    assert "\n" not in str(info.value)
    port = _closed_port()
    with pytest.raises(CatalogError, match="cannot open catalog") as info:
        Catalog(f"postgresql://someone:s3cret@127.0.0.1:{port}/nothing", busy_timeout_s=2)
    assert "\n" not in str(info.value)
    assert "s3cret" not in str(info.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_for_data_dir_makes_the_directory_and_an_sqlite_catalog(tmp_path: Path) -> None:
    data = tmp_path / "odd name 100%#?" / "data"
    with Catalog.for_data_dir(data) as cat:
        assert cat.dialect == "sqlite"
        cat.ensure_stream("cam1")
    assert (data / "catalog.sqlite").is_file()
    with Catalog.for_data_dir(data) as cat:
        assert [s.name for s in cat.streams()] == ["cam1"]


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    with Catalog(sqlite_url(tmp_path / "c.sqlite"), busy_timeout_s=7.5) as cat:
        for block in (cat.session, cat.transaction):
            with block() as s:
                pragma = {p: s.execute(text(f"PRAGMA {p}")).scalar() for p in
                          ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")}  # fmt: skip
                assert pragma == {
                    "journal_mode": "wal",
                    "busy_timeout": 7500,
                    "foreign_keys": 1,
                    "synchronous": 1,
                }


def test_sqlite_transactions_begin_immediate_and_sessions_deferred(tmp_path: Path) -> None:
    with Catalog(sqlite_url(tmp_path / "c.sqlite")) as cat:
        stream = cat.ensure_stream("cam1")
        with recorded_sql() as statements:
            with cat.transaction() as s:
                s.scalar(select(func.count()).select_from(Checkpoint))
            with cat.session() as s:
                s.scalar(select(func.count()).select_from(Checkpoint))
        begins = [st for st in statements if st.startswith("BEGIN")]
        assert begins == ["BEGIN IMMEDIATE", "BEGIN"]

        # A reader's session is one snapshot: a commit made meanwhile is not half-visible in it.
        with cat.session() as reader:
            assert reader.scalar(select(func.count()).select_from(Checkpoint)) == 0
            with cat.transaction() as writer:  # the open reader neither blocks nor is blocked
                add_checkpoint(writer, stream, 1)
            assert reader.scalar(select(func.count()).select_from(Checkpoint)) == 0
        with cat.session() as reader:
            assert reader.scalar(select(func.count()).select_from(Checkpoint)) == 1


def test_sqlite_read_then_write_transactions_wait_instead_of_failing(tmp_path: Path) -> None:
    """Two writers that read, pause and write: with deferred BEGIN one fails at once; here both succeed."""
    url = sqlite_url(tmp_path / "c.sqlite")
    Catalog(url).ensure_stream("cam1")
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with Catalog(url) as cat:  # its own engine, as another process would have
                stream = cat.stream("cam1")
                assert stream is not None
                for _ in range(5):
                    with cat.transaction() as s:
                        last = s.scalar(
                            select(func.max(Checkpoint.seq)).where(Checkpoint.stream_id == stream.id)
                        )
                        time.sleep(0.02)
                        add_checkpoint(s, stream, (last or 0) + 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Catalog(url) as cat, cat.session() as s:
        assert s.scalars(select(Checkpoint.seq).order_by(Checkpoint.seq)).all() == list(range(1, 11))


def test_a_held_write_lock_makes_other_writers_wait_up_to_the_busy_timeout(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "c.sqlite")
    with Catalog(url) as holder, Catalog(url, busy_timeout_s=0.3) as other, holder.transaction() as s:
        s.scalar(select(func.count()).select_from(Stream))  # BEGIN IMMEDIATE: the lock is held from here
        with other.session() as reader:  # readers are not affected
            assert reader.scalar(select(func.count()).select_from(Stream)) == 0
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"), other.transaction() as s2:
            s2.scalar(select(func.count()).select_from(Stream))
        assert time.monotonic() - started >= 0.25


# --- rows ---------------------------------------------------------------------------------------------------


def test_ensure_stream_creates_once_and_returns_detached_rows(catalog: Catalog) -> None:
    first = catalog.ensure_stream("会议室", source="rtsp://cam", kind="url", config={"dim": 384})
    again = catalog.ensure_stream("会议室", source="ignored", kind="file")
    assert again.id == first.id and len(first.id) == 32
    assert (again.source, again.kind, again.config) == ("rtsp://cam", "url", {"dim": 384})  # not updated
    assert inspect(again).detached
    assert again.created_at.tzinfo is not None and again.created_at.utcoffset() == timedelta(0)
    catalog.ensure_stream("Kamera Eingang 1")
    assert [s.name for s in catalog.streams()] == sorted(["会议室", "Kamera Eingang 1"])
    assert catalog.stream("会议室").id == first.id  # type: ignore[union-attr]
    assert catalog.stream("nope") is None
    with pytest.raises(ValueError, match="path separator"):
        catalog.ensure_stream("../etc/passwd")
    assert len(catalog.streams()) == 2


def test_transaction_commits_or_rolls_back_and_session_never_commits(catalog: Catalog) -> None:
    with pytest.raises(RuntimeError, match="boom"), catalog.transaction() as s:
        s.add(Stream(name="rolled back"))
        s.flush()
        raise RuntimeError("boom")
    with catalog.session() as s:
        s.add(Stream(name="never committed"))
        s.flush()
    with catalog.transaction() as s:
        s.add(Stream(name="kept"))
    assert [s.name for s in catalog.streams()] == ["kept"]


def test_checkpoint_sequence_numbers_are_unique_per_stream(catalog: Catalog) -> None:
    a, b = catalog.ensure_stream("a"), catalog.ensure_stream("b")
    with catalog.transaction() as s:
        add_checkpoint(s, a, 1)
        add_checkpoint(s, b, 1)  # the same number in another stream is fine
    with pytest.raises(IntegrityError), catalog.transaction() as s:
        add_checkpoint(s, a, 1)
    with catalog.session() as s:
        assert s.scalar(select(func.count()).select_from(Checkpoint)) == 2


@pytest.mark.parametrize("how", ["orm", "sql"])
def test_deleting_a_stream_deletes_everything_of_it(catalog: Catalog, how: str) -> None:
    doomed, other = catalog.ensure_stream("doomed"), catalog.ensure_stream("other")
    with catalog.transaction() as s:
        for stream in (doomed, other):
            add_checkpoint(s, stream, 1)
            add_checkpoint(s, stream, 2)
            s.add(models.TranscriptSegment(stream_id=stream.id, t0=0.0, t1=1.0, text="hallo"))
            moment = models.MomentRecord(stream_id=stream.id, t0=0.0, t1=1.0, score=0.9, modality="visual")
            moment.evidence.append(models.Evidence(kind="slot", ref="17"))
            s.add(moment)
            s.add(models.Event(stream_id=stream.id, kind="alert", message="door opened"))
            s.add(models.IngestFile(stream_id=stream.id, path="in/a.mp4"))
    with catalog.transaction() as s:
        if how == "orm":
            s.delete(s.get(Stream, doomed.id))
        else:  # the database's own ON DELETE CASCADE (on SQLite only with foreign_keys=ON)
            s.execute(delete(Stream).where(Stream.id == doomed.id))
    with catalog.session() as s:
        for model in (
            Checkpoint,
            models.TranscriptSegment,
            models.MomentRecord,
            models.Event,
            models.IngestFile,
        ):
            assert s.scalars(select(model.stream_id)).all() == [other.id] * (2 if model is Checkpoint else 1)
        assert s.scalar(select(func.count()).select_from(models.Evidence)) == 1
    assert [s.name for s in catalog.streams()] == ["other"]


def test_timestamps_come_back_aware_in_utc(catalog: Catalog) -> None:
    stream = catalog.ensure_stream("cam1")
    berlin = datetime(2025, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    with catalog.transaction() as s:
        s.add(models.Event(stream_id=stream.id, kind="aware", created_at=berlin))
        s.add(models.Event(stream_id=stream.id, kind="naive", created_at=datetime(2025, 6, 1, 10, 0)))
    with catalog.session() as s:
        stamps = {kind: t for kind, t in s.execute(select(models.Event.kind, models.Event.created_at))}
        # The same instant, whichever way it was given; compared in SQL as well as in Python.
        assert stamps["aware"] == stamps["naive"] == datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
        assert all(t.tzinfo is UTC for t in stamps.values())
        later = datetime(2025, 6, 1, 11, 30, tzinfo=timezone(timedelta(hours=2)))  # 09:30 UTC
        assert s.scalar(select(func.count()).where(models.Event.created_at > later)) == 2


# --- several processes at once ------------------------------------------------------------------------------

STRESS_SECONDS = 3.0
WRITERS, READERS = 2, 3


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


def _crowd_worker(url: str, role: str, barrier: Any, results: Any, seconds: float) -> None:
    """One process of the crowd: open at once, race for a stream, then write or read until time is up."""
    report: dict[str, Any] = {"role": role, "errors": [], "ops": 0}
    try:
        barrier.wait(120)
        cat = Catalog(url)  # all processes open a brand-new database at the same instant
        report["revision"] = cat.schema_revision()
        barrier.wait(60)
        report["stream_id"] = cat.ensure_stream("race").id  # and all create the same stream at once
        barrier.wait(60)
        deadline = time.monotonic() + seconds
        last_seen = 0
        while time.monotonic() < deadline:
            try:
                if role == "writer":
                    with cat.transaction() as s:  # read, then write: the deferred-upgrade deadlock pattern
                        stream = s.scalars(select(Stream).where(Stream.name == "race")).one()
                        last = s.scalar(
                            select(func.max(Checkpoint.seq)).where(Checkpoint.stream_id == stream.id)
                        )
                        add_checkpoint(s, stream, (last or 0) + 1)
                else:
                    with cat.session() as s:
                        seen = s.scalar(select(func.count()).select_from(Checkpoint)) or 0
                        if seen < last_seen:
                            report["errors"].append(f"checkpoint count went back from {last_seen} to {seen}")
                        last_seen = seen
                report["ops"] += 1
            except Exception as exc:
                report["errors"].append(_first_line(exc))
                if len(report["errors"]) > 20:
                    break
        cat.close()
    except BaseException as exc:
        report["errors"].append(_first_line(exc) + "\n" + traceback.format_exc())
        barrier.abort()  # the others stop waiting for this one at the next barrier
    results.put(report)


def run_crowd(url: str, seconds: float) -> list[dict[str, Any]]:
    """Run the crowd and collect one report per process (a process that died gives a report of its death)."""
    ctx = multiprocessing.get_context("spawn")
    roles = ["writer"] * WRITERS + ["reader"] * READERS
    barrier, results = ctx.Barrier(len(roles)), ctx.Queue()
    procs = [ctx.Process(target=_crowd_worker, args=(url, r, barrier, results, seconds)) for r in roles]
    for p in procs:
        p.start()
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120 + seconds
    try:
        while len(reports) < len(procs) and time.monotonic() < deadline:
            try:
                reports.append(results.get(timeout=0.5))
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    barrier.abort()  # the others would wait at the barrier for the dead one
                if all(p.exitcode is not None for p in procs) and results.empty():
                    break
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    died = [f"worker exited with status {p.exitcode} without a report" for p in procs if p.exitcode != 0]
    missing = len(procs) - len(reports)
    reports += [{"role": "?", "ops": 0, "errors": died or ["no report before the deadline"]}] * missing
    return reports


@pytest.fixture(scope="module")
def sqlite_crowd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Five processes on a new SQLite catalog: a concurrent first open, an ensure_stream race, then
    STRESS_SECONDS of two writers (read-then-write transactions) and three readers."""
    url = sqlite_url(tmp_path_factory.mktemp("crowd") / "catalog.sqlite")
    return {"url": url, "reports": run_crowd(url, STRESS_SECONDS)}


@pytest.fixture(scope="module")
def postgresql_crowd(postgres_server: postgres.PostgresServer) -> Iterator[dict[str, Any]]:
    """The same two races on PostgreSQL (no read/write stress: PostgreSQL's locking is not ours to test)."""
    name = postgres_server.create_database()
    try:
        url = postgres_server.url(name)
        yield {"url": url, "reports": run_crowd(url, 0.0)}
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def crowd(request: pytest.FixtureRequest) -> dict[str, Any]:
    result: dict[str, Any] = request.getfixturevalue(f"{request.param}_crowd")
    return result


def test_concurrent_first_opens_all_succeed(crowd: dict[str, Any]) -> None:
    reports = crowd["reports"]
    assert all("revision" in r for r in reports), [r["errors"] for r in reports]
    assert {r["revision"] for r in reports} == {SCHEMA_HEAD}
    assert snapshot(crowd["url"])["version"] == [SCHEMA_HEAD]


def test_concurrent_ensure_stream_makes_one_row(crowd: dict[str, Any]) -> None:
    reports = crowd["reports"]
    assert all("stream_id" in r for r in reports), [r["errors"] for r in reports]
    assert len({r["stream_id"] for r in reports}) == 1
    assert [name for _, name in snapshot(crowd["url"])["streams"]] == ["race"]


def test_concurrent_writers_and_readers_never_see_a_locked_database(sqlite_crowd: dict[str, Any]) -> None:
    crowd = sqlite_crowd
    reports = crowd["reports"]
    assert [e for r in reports for e in r["errors"]] == []
    writes = sum(r["ops"] for r in reports if r["role"] == "writer")
    # Every process gets through (SQLite's busy handler is not fair: on a loaded machine one writer can
    # win most of the lock, so the bound is progress, not a share).
    assert all(r["ops"] >= 1 for r in reports), [(r["role"], r["ops"]) for r in reports]
    with Catalog(crowd["url"]) as cat, cat.session() as s:
        # Every read-then-write transaction saw the one before it: the numbers are 1..N, no gap, no clash.
        assert s.scalars(select(Checkpoint.seq).order_by(Checkpoint.seq)).all() == list(range(1, writes + 1))
