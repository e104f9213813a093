"""Shared fixtures: catalog databases on SQLite and on a throwaway PostgreSQL server (tests/postgres.py), and
the ingested store of a spoken clip that the tools', the server's and the MCP tests read (talk_store.py).

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
    from vsalmonn.perception.ingest import Encoders

    from .s3_server import S3Server
    from .talk_store import Ingested


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


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """moto's real S3 server on 127.0.0.1 (tests/s3_server.py), one per module, stopped after it."""
    from .s3_server import start_server

    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> Encoders:
    """The real default encoders (English speech), loaded once; a module may define its own."""
    from vsalmonn.perception.ingest import Encoders

    from .talk_store import PERCEPTION

    return Encoders.from_config(PERCEPTION, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def talk_store(tmp_path_factory: pytest.TempPathFactory, encoders: Encoders) -> Ingested:
    """The spoken clip's store, ingested once per session; read it through `ingested`, a module's copy."""
    from .talk_store import build
    from .test_ingest import SHARED

    if not SHARED.is_dir():
        pytest.skip(f"shared media folder {SHARED} is absent")
    return build(tmp_path_factory.mktemp("talk"), encoders)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, talk_store: Ingested) -> Ingested:
    """This module's own copy of the spoken clip's store."""
    from .talk_store import copy

    return copy(talk_store, tmp_path_factory.mktemp("talk-copy"))
