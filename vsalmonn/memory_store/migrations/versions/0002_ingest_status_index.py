"""Index ingest_files by (stream_id, status).

The folder watcher asks, on every scan and after every restart, which files of a stream are still pending or
failed; a watched folder of months of recordings holds thousands of rows per stream, and without this index
that question reads all of them.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_ingest_files_stream_status", "ingest_files", ["stream_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_ingest_files_stream_status", table_name="ingest_files")
