"""The first catalog schema: streams, checkpoints, transcripts, moments, evidence, events, ingest files.

Written out by hand rather than generated from models.py at run time: a revision is a frozen record of what
the schema was, and must not change when the models change later.

Revision ID: 0001
Revises:
Create Date: 2025-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at(name: str = "created_at") -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(32), nullable=True),
        sa.Column("config", sa.JSON(), nullable=True),
        _created_at(),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "stream_id", sa.String(32), sa.ForeignKey("streams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("t_start", sa.Float(), nullable=True),
        sa.Column("t_end", sa.Float(), nullable=True),
        sa.Column("source_offset", sa.Float(), nullable=True),
        sa.Column("source_state", sa.JSON(), nullable=True),
        sa.Column("tokens_visual", sa.BigInteger(), nullable=False),
        sa.Column("tokens_audio", sa.BigInteger(), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("bytes_raw", sa.BigInteger(), nullable=False),
        sa.Column("bytes_stored", sa.BigInteger(), nullable=False),
        _created_at(),
        sa.UniqueConstraint("stream_id", "seq", name="uq_checkpoint_stream_seq"),
    )
    op.create_index("ix_checkpoints_stream_id", "checkpoints", ["stream_id"])
    op.create_table(
        "transcript_segments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "stream_id", sa.String(32), sa.ForeignKey("streams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("t0", sa.Float(), nullable=False),
        sa.Column("t1", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("words", sa.JSON(), nullable=True),
        sa.Column("language", sa.String(16), nullable=True),
        _created_at(),
    )
    op.create_index("ix_transcript_stream_t0", "transcript_segments", ["stream_id", "t0"])
    op.create_table(
        "moments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "stream_id", sa.String(32), sa.ForeignKey("streams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("t0", sa.Float(), nullable=False),
        sa.Column("t1", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("query", sa.Text(), nullable=True),
        sa.Column("checkpoint_seq", sa.Integer(), nullable=True),
        _created_at(),
    )
    op.create_index("ix_moments_stream_t0", "moments", ["stream_id", "t0"])
    op.create_table(
        "evidence",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("moment_id", sa.Integer(), sa.ForeignKey("moments.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ref", sa.Text(), nullable=True),
        sa.Column("t0", sa.Float(), nullable=True),
        sa.Column("t1", sa.Float(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=True),
    )
    op.create_index("ix_evidence_moment_id", "evidence", ["moment_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("stream_id", sa.String(32), sa.ForeignKey("streams.id", ondelete="CASCADE"), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("source", sa.String(128), nullable=True),
        sa.Column("t", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        _created_at(),
    )
    op.create_index("ix_events_stream_created", "events", ["stream_id", "created_at"])
    op.create_table(
        "ingest_files",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "stream_id", sa.String(32), sa.ForeignKey("streams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("mtime", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("offset", sa.Float(), nullable=False),
        sa.Column("stream_offset", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("stream_id", "path", name="uq_ingest_stream_path"),
    )
    op.create_index("ix_ingest_files_stream_id", "ingest_files", ["stream_id"])


def downgrade() -> None:
    for table in ("ingest_files", "events", "evidence", "moments", "transcript_segments", "checkpoints"):
        op.drop_table(table)
    op.drop_table("streams")
