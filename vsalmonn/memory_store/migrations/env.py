"""Alembic environment of the catalog.

`Catalog` runs migrations programmatically: it opens its own connection, begins the transaction (BEGIN
IMMEDIATE on SQLite, an advisory lock on PostgreSQL, so that concurrent first opens serialise) and hands the
connection over in `config.attributes["connection"]`; the migrations then run inside that transaction and the
caller commits. The `alembic` command line (for writing new revisions, see docs/catalog.md) has no such
connection and takes the database URL from `-x url=...` or the VSALMONN_CATALOG_URL environment variable.

Unlike Alembic's template, this file does not configure logging: it runs inside applications and test runs
whose logging is theirs.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.types import TypeDecorator

from vsalmonn.memory_store.models import Base


def _render_item(kind: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Autogenerate writes a column of a TypeDecorator (models.UTCDateTime) as its database type.

    A revision must not import models.py, which changes after the revision is written; the decorator only
    converts values in Python, the column in the database is its `impl`.
    """
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; autogenerate then writes batch operations (copy and move).
        render_as_batch=connection.dialect.name == "sqlite",
        # Catalog's SQLite engine emits BEGIN itself, which makes SQLite's DDL transactional as well.
        transactional_ddl=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url_from_command_line() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("VSALMONN_CATALOG_URL")
    if not url:
        raise SystemExit("give the catalog's URL: alembic -x url=sqlite:///path/catalog.sqlite ...")
    return url


if context.is_offline_mode():
    context.configure(url=_url_from_command_line(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        # The same engine set-up as Catalog's (WAL, busy timeout, real transactions on SQLite), but no schema
        # check: that is what is being run here.
        from vsalmonn.memory_store.catalog import create_catalog_engine, immediate

        engine = immediate(create_catalog_engine(_url_from_command_line()))
        try:
            with engine.connect() as connection, connection.begin():
                _run(connection)
        finally:
            engine.dispose()
