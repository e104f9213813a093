"""The catalog's tables (DESIGN §4): SQLAlchemy 2.0 typed ORM models, portable across SQLite and PostgreSQL.

Tensors live in Zarr; these rows hold what must be queried, joined or committed atomically: which
checkpoints exist (a row is the commit of its Zarr group), what was said and when, which moments were cited
with what evidence, what happened, and how far each watched file has been ingested.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAME_MAX = 128


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC, on every backend.

    PostgreSQL stores `timestamp with time zone` and returns aware values, but SQLite has no time zone type:
    SQLAlchemy writes the wall-clock digits without an offset and reads them back naive, so an aware value in
    another zone would be stored shifted and compared wrongly. Values are therefore converted to UTC before
    they are stored, and whatever is read is marked UTC. A naive value given by the caller is taken to be UTC
    already (what `datetime.utcnow()`-style code means); pass aware values to avoid the ambiguity.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # SQLite's storage format has no offset: store the UTC wall clock, naive.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class Stream(Base):
    """A named source with its own memory; `id` is stable and names its folders, `name` is what users type."""

    __tablename__ = "streams"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(NAME_MAX), unique=True)
    source: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(String(32))  # file, url, folder, device
    config: Mapped[dict[str, Any] | None]  # the MemoryConfig its memory was made with
    # A single-file stream's file as last read: {path, size, mtime, head_sha256, head_bytes} (revision 0004)
    source_identity: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    checkpoints: Mapped[list[Checkpoint]] = relationship(
        back_populates="stream", cascade="all, delete-orphan", order_by="Checkpoint.seq", passive_deletes=True
    )


class Checkpoint(Base):
    """One committed, immutable Zarr group holding a stream's whole memory state."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("stream_id", "seq", name="uq_checkpoint_stream_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, 3, … per stream
    path: Mapped[str] = mapped_column(Text)  # of the Zarr group, relative to the data directory
    t_start: Mapped[float | None] = mapped_column(Float)  # stream seconds covered by the memory
    t_end: Mapped[float | None] = mapped_column(Float)
    source_offset: Mapped[float | None] = mapped_column(Float)  # where ingestion resumes, seconds of source
    source_state: Mapped[dict[str, Any] | None]  # anything else a source needs to resume (e.g. next file)
    tokens_visual: Mapped[int] = mapped_column(BigInteger, default=0)  # written so far, all time
    tokens_audio: Mapped[int] = mapped_column(BigInteger, default=0)
    checksum: Mapped[str] = mapped_column(String(64))  # sha256 of the state's canonical bytes
    bytes_raw: Mapped[int] = mapped_column(BigInteger)  # uncompressed size of the arrays
    bytes_stored: Mapped[int] = mapped_column(BigInteger)  # size on disk
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    stream: Mapped[Stream] = relationship(back_populates="checkpoints")


class TranscriptSegment(Base):
    """A stretch of recognised speech, with word times when the recogniser gives them."""

    __tablename__ = "transcript_segments"
    __table_args__ = (Index("ix_transcript_stream_t0", "stream_id", "t0"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"))
    t0: Mapped[float] = mapped_column(Float)
    t1: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    words: Mapped[dict[str, Any] | None]  # {"words": [{"w": str, "t0": float, "t1": float}, …]}
    language: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MomentRecord(Base):
    """A moment the reader returned and someone kept (a cited answer, an alert), with its evidence."""

    __tablename__ = "moments"
    __table_args__ = (Index("ix_moments_stream_t0", "stream_id", "t0"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"))
    t0: Mapped[float] = mapped_column(Float)
    t1: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    modality: Mapped[str] = mapped_column(String(16))
    query: Mapped[str | None] = mapped_column(Text)
    checkpoint_seq: Mapped[int | None] = mapped_column(Integer)  # the memory state it was read from
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    evidence: Mapped[list[Evidence]] = relationship(back_populates="moment", cascade="all, delete-orphan")


class Evidence(Base):
    """One piece of what a moment rests on: a slot, a label, a transcript line, a thumbnail."""

    __tablename__ = "evidence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    moment_id: Mapped[int] = mapped_column(ForeignKey("moments.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # slot, label, transcript, thumbnail, …
    ref: Mapped[str | None] = mapped_column(Text)  # slot id, file path, segment id
    t0: Mapped[float | None] = mapped_column(Float)
    t1: Mapped[float | None] = mapped_column(Float)
    text: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]

    moment: Mapped[MomentRecord] = relationship(back_populates="evidence")


class Event(Base):
    """Something worth telling: an alert, a plugin fault, a reconnect, a dropped frame count."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_stream_created", "stream_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream_id: Mapped[str | None] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(128))  # the plugin or component that raised it
    t: Mapped[float | None] = mapped_column(Float)  # stream seconds, when it has one
    message: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IngestFile(Base):
    """How far one file of a watched folder has been ingested, so that a restart neither skips nor repeats."""

    __tablename__ = "ingest_files"
    __table_args__ = (
        UniqueConstraint("stream_id", "path", name="uq_ingest_stream_path"),
        # The watcher's question on every scan and restart: which files of this stream are pending or failed.
        Index("ix_ingest_files_stream_status", "stream_id", "status"),  # added by revision 0002
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime: Mapped[float | None] = mapped_column(Float)
    # SHA-256 of the file's first `head_bytes` bytes: tells a file that grew from one replaced (rev. 0004)
    head_sha256: Mapped[str | None] = mapped_column(String(64))
    head_bytes: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, ingesting, done, failed
    offset: Mapped[float] = mapped_column(Float, default=0.0)  # seconds of the file already in memory
    stream_offset: Mapped[float | None] = mapped_column(Float)  # stream time at which the file starts
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FrameLabel(Base):
    """The top labels of one sampled frame: what a person reads as a visual moment's evidence.

    Tokens are vectors nobody can read; the vision encoder's best labels for each frame are kept here so that
    a moment found in the memory can say what was seen in it (revision 0003).
    """

    __tablename__ = "frame_labels"
    __table_args__ = (Index("ix_frame_labels_stream_t", "stream_id", "t"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"))
    t: Mapped[float] = mapped_column(Float)  # stream seconds of the frame
    labels: Mapped[dict[str, Any]]  # {"labels": [[label, probability], …]}, best first


class StreamStatus(Base):
    """What the process ingesting a stream last reported: read by `vsalmonn status` from any process.

    Written every few seconds by the ingesting process (revision 0003); `updated_at` tells a live report from
    the last words of a process that died. Checkpoints are not repeated here: they have their own table.
    """

    __tablename__ = "stream_status"

    stream_id: Mapped[str] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"), primary_key=True)
    # starting, running, reconnecting, done, stopped, failed, skipped
    state: Mapped[str] = mapped_column(String(16))
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(Text)
    position: Mapped[float | None] = mapped_column(Float)  # stream seconds ingested
    duration: Mapped[float | None] = mapped_column(Float)  # of the current file, when known
    rate: Mapped[float | None] = mapped_column(Float)  # stream seconds per wall second, recent
    lag_s: Mapped[float | None] = mapped_column(Float)  # live sources: now minus the newest written frame
    frames: Mapped[int] = mapped_column(BigInteger, default=0)
    segments: Mapped[int] = mapped_column(BigInteger, default=0)
    drops: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None]  # kind-specific: reconnects, files pending/done/failed, …
    started_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScreenText(Base):
    """A line of text read on a sampled frame (a slide, a screen, a sign), with the reader's score.

    Written with the frame's window, before the checkpoint that covers it, and removed past the resume
    offset on a restart, exactly as transcript rows are (revision 0005).
    """

    __tablename__ = "screen_text"
    __table_args__ = (Index("ix_screen_text_stream_t", "stream_id", "t"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"))
    t: Mapped[float] = mapped_column(Float)  # stream seconds of the frame read
    text: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)  # the recogniser's confidence, 0 to 1
