"""Add what identifies a file beyond its name: streams.source_identity and ingest_files' head hash.

A stream fed by one file used to be recognised by its name alone, so a different file given the same name
(the default name is the file's stem: `clip.mp4` from two folders) or a file that grew after its ingest was
reported "ingested completely already" without being read. A file is now known by its resolved path, size,
mtime and the SHA-256 of its head (docs/catalog.md): the same file is skipped, a file that grew is appended,
a different one is refused.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ADD/DROP COLUMN, never a batch "move and copy": recreating `streams` on SQLite would drop the table
# under ON DELETE CASCADE (foreign keys are on) and take every checkpoint row with it. SQLite has DROP COLUMN
# since 3.35 (2021); nullable columns need no backfill.


def upgrade() -> None:
    op.add_column("streams", sa.Column("source_identity", sa.JSON(), nullable=True))
    op.add_column("ingest_files", sa.Column("head_sha256", sa.String(64), nullable=True))
    op.add_column("ingest_files", sa.Column("head_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("ingest_files", "head_bytes")
    op.drop_column("ingest_files", "head_sha256")
    op.drop_column("streams", "source_identity")
