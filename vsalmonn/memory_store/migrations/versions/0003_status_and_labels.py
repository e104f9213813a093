"""Add stream_status (what an ingesting process reports) and frame_labels (what each frame showed).

`vsalmonn status` must work from another process than the daemon's, so the daemon writes each stream's
position, rate, lag, drops and errors into the catalog every few seconds; and visual moments need readable
evidence, so each sampled frame's top labels are kept.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "frame_labels",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "stream_id", sa.String(32), sa.ForeignKey("streams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("t", sa.Float(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
    )
    op.create_index("ix_frame_labels_stream_t", "frame_labels", ["stream_id", "t"])
    op.create_table(
        "stream_status",
        sa.Column(
            "stream_id", sa.String(32), sa.ForeignKey("streams.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("position", sa.Float(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("lag_s", sa.Float(), nullable=True),
        sa.Column("frames", sa.BigInteger(), nullable=False),
        sa.Column("segments", sa.BigInteger(), nullable=False),
        sa.Column("drops", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stream_status")
    op.drop_index("ix_frame_labels_stream_t", table_name="frame_labels")
    op.drop_table("frame_labels")
