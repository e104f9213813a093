"""Shared fixtures: catalog databases on SQLite and on a throwaway PostgreSQL server (tests/postgres.py).

`catalog_url` runs a test once per backend, each time on a new, empty database; `catalog` opens a `Catalog` on
it. The PostgreSQL server is started once per test session, only if a test asks for it, and the PostgreSQL
cases skip (with the reason) where no server binaries are installed. Deselect them with `-m "not postgresql"`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import URL

from . import postgres

if TYPE_CHECKING:  # imported lazily below: a broken catalog module must not take the whole suite down
    from vsalmonn.memory_store.catalog import Catalog


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of an SQLite file, quoted so that any path survives the round trip."""
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    """The session's PostgreSQL server; skips the test where no server binaries exist."""
    try:
        server = postgres.start_server()
    except postgres.PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: postgres.PostgresServer) -> str:
    """URL of one database shared by the whole session (use `catalog_url` for a fresh one per test)."""
    return postgres_server.url(postgres_server.create_database("vsalmonn"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a new, empty catalog database: an SQLite file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "catalog.sqlite")
        return
    server: postgres.PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    """A `Catalog` opened (schema created) on `catalog_url`, closed after the test."""
    from vsalmonn.memory_store.catalog import Catalog

    cat = Catalog(catalog_url)
    try:
        yield cat
    finally:
        cat.close()
