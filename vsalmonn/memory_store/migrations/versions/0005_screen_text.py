"""Add `screen_text`: lines of on-screen text read on sampled frames (perception's OCR), with their times.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "screen_text",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(
            "stream_id", sa.String(32), sa.ForeignKey("streams.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("t", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_screen_text_stream_t", "screen_text", ["stream_id", "t"])


def downgrade() -> None:
    op.drop_index("ix_screen_text_stream_t", table_name="screen_text")
    op.drop_table("screen_text")
