"""Alembic revisions of the catalog, one file each; Alembic skips this file when it scans for revisions."""
