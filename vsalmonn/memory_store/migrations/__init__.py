"""Alembic migrations of the catalog; `Catalog` applies them on open (see docs/catalog.md)."""
