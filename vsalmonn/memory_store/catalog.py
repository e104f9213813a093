"""The catalog: the metadata database of the memory store (DESIGN §4), SQLite by default, PostgreSQL by URL.

What this module takes care of, so that callers only ever ask for a session:

* **Transactions that mean what they say on SQLite.** Python's sqlite3 module begins transactions lazily, only
  before a write, so a "read then write" runs its read outside any transaction; and when it does begin one it
  is DEFERRED: two processes that both read and then both write deadlock, and SQLite breaks the tie by failing
  one of them at once with "database is locked", without waiting for the busy timeout. The engine therefore
  takes transaction control away from the driver (isolation_level None) and emits BEGIN itself, following
  SQLAlchemy's pysqlite recipe: `session()` (reading) begins with a plain BEGIN, which in WAL mode never
  blocks and is never blocked by the writer; `transaction()` (writing) begins with BEGIN IMMEDIATE, which
  takes the write lock before the first read and so waits (up to the busy timeout) instead of failing.
* **WAL, busy timeout, foreign keys and synchronous=NORMAL** on every SQLite connection: readers in other
  processes keep reading while one process writes; the ON DELETE CASCADE of the schema is enforced; and a
  commit survives a crash of the process (NORMAL is durable against process crashes in WAL mode; it may lose
  the last commits on power loss, which the commit protocol tolerates: the previous checkpoint is then the
  state).
* **The schema**, brought to the newest Alembic revision on open (migrations/ inside this package; no
  alembic.ini needed); see docs/catalog.md. A database written by a newer vsalmonn is refused, untouched.
  Concurrent first opens serialise on the write lock (SQLite) or an advisory lock (PostgreSQL).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from vsalmonn.errors import one_line

from . import models
from .names import refuse_confusable, validate_stream_name
from .redact import redact, redact_url

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# The execution option read by the SQLite "begin" event: which BEGIN to emit.
_BEGIN_OPTION = "vsalmonn_sqlite_begin"
# PostgreSQL advisory lock held while the schema is created or upgraded: "vsalmonn" in ASCII, as a bigint.
_SCHEMA_LOCK_KEY = int.from_bytes(b"vsalmonn", "big")
_VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps


class CatalogError(RuntimeError):
    """The catalog cannot be used as it is: a bad URL, a database that cannot be opened, a newer schema.

    The message is one line meant for the user; the underlying exception, if any, is chained.
    """


def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


def _single_head() -> str:
    head = _scripts().get_current_head()  # raises if the revisions branch: that is a bug to catch at import
    if head is None:
        raise RuntimeError(f"no Alembic revisions in {MIGRATIONS_DIR}")
    return head


SCHEMA_HEAD: str = _single_head()
"""The newest schema revision this code knows; `Catalog` brings every database it opens to it."""


def alembic_config() -> Config:
    """An Alembic configuration for the catalog's migrations, without an ini file.

    Give a connection in `config.attributes["connection"]` to run commands against it, inside its
    transaction; without one, env.py takes the URL from `-x url=...` or VSALMONN_CATALOG_URL.
    """
    config = Config()
    # Config values go through configparser interpolation: a '%' in the path must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def _driver_reason(exc: BaseException) -> str:
    """The first line of an exception's message (DBAPI errors: of the driver's message, without SQL: the
    driver's later lines quote the statement and point at a column, which a one-line reason does not need)."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(inner).strip().splitlines()
    return one_line(lines[0]) if lines else type(inner).__name__


def _parse_url(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CatalogError(f"bad catalog URL {redact_url(str(url))!r}: {_driver_reason(exc)}") from exc
    # Plain postgresql:// means psycopg2 to SQLAlchemy; vsalmonn ships psycopg 3 (the `postgres` extra).
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite_url(url: str | None) -> bool:
    """Whether a `catalog_url` names SQLite (None: the default file inside the data directory)."""
    return url is None or make_url(url).get_backend_name() == "sqlite"


def _is_sqlite_file(url: URL) -> bool:
    return (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not url.database.startswith("file:")  # URI filenames (uri=true): leave them to SQLite
    )


def _install_sqlite_events(engine: Engine, busy_timeout_s: float) -> None:
    """Per-connection pragmas and explicit BEGIN, following SQLAlchemy's pysqlite transaction recipe."""
    busy_ms = max(0, int(busy_timeout_s * 1000))
    in_memory = not _is_sqlite_file(engine.url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Stop pysqlite from beginning (and committing) transactions on its own; "begin" below does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")  # first: the journal mode switch may wait
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    # Persistent in the file: only the first opener of a new catalog actually switches.
                    mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        logger.warning(
                            "catalog %s: SQLite refused WAL mode (journal_mode=%s)", engine.url, mode
                        )
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def _read_only_url(path: Path, *, immutable: bool) -> URL:
    """A SQLite URI filename that opens `path` for reading only (``immutable`` also skips all locking)."""
    from urllib.parse import quote

    flags = "mode=ro&immutable=1" if immutable else "mode=ro"
    return URL.create("sqlite", database=f"file:{quote(str(path.absolute()))}?{flags}", query={"uri": "true"})


def _readable(engine: Engine) -> bool:
    """True when a read-only SQLite engine can query (false: it needs -wal/-shm files it cannot make)."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").fetchone()
    except DBAPIError as exc:
        logger.debug("catalog read-only open failed: %s", _driver_reason(exc))
        return False
    return True


def create_catalog_engine(url: str | URL, *, busy_timeout_s: float = 30.0) -> Engine:
    """The engine `Catalog` uses, without the schema check (for env.py's command-line use and for tools).

    SQLite gets the pragmas and explicit transaction control described in the module docstring; transactions
    begin with a plain BEGIN unless the engine is wrapped by `immediate()`. PostgreSQL gets pre-ping (a daemon
    runs for months; the server may restart) and a connect timeout.
    """
    parsed = _parse_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": busy_timeout_s})
            _install_sqlite_events(engine, busy_timeout_s)
        else:
            connect_args: dict[str, Any] = {}
            if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
                connect_args["connect_timeout"] = max(1, math.ceil(busy_timeout_s))
            engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except NoSuchModuleError as exc:
        raise CatalogError(f"bad catalog URL {redact_url(str(url))!r}: {_driver_reason(exc)}") from exc
    except ImportError as exc:
        hint = " (pip install 'vsalmonn[postgres]')" if parsed.get_backend_name() == "postgresql" else ""
        reason = _driver_reason(exc)
        raise CatalogError(f"cannot open catalog: database driver missing: {reason}{hint}") from exc
    return engine


def immediate(engine: Engine) -> Engine:
    """`engine` whose SQLite transactions begin with BEGIN IMMEDIATE (same pool; no effect elsewhere)."""
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


def _current_heads(connection: Connection) -> tuple[str, ...]:
    """The revisions recorded in alembic_version; () for a database without one.

    Read directly rather than through Alembic's MigrationContext, which logs at INFO each time it is made:
    this runs on every open.
    """
    if not inspect(connection).has_table(_VERSION_TABLE):
        return ()
    return tuple(sorted(connection.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalars()))


class Catalog:
    """The metadata database, at the current schema, with sessions for reading and transactions for writing.

    One `Catalog` per process and database (it holds a connection pool; do not carry it across fork()).
    Rows returned by its helpers are detached with their columns loaded; relationships are not loaded.
    """

    url: str
    engine: Engine
    dialect: str

    def __init__(
        self, url: str, *, busy_timeout_s: float = 30.0, create: bool = True, read_only: bool = False
    ) -> None:
        """Open the catalog at `url` and bring its schema to `SCHEMA_HEAD`.

        With `create` false, a missing SQLite file or an empty database is an error instead of a new catalog
        (for tools that must not leave an empty catalog behind where they were pointed by mistake); an older
        schema is still upgraded, as on every open.

        With `read_only` (readers: search, status, export, ask) nothing is ever written: a SQLite file is
        opened with ``mode=ro``, and where even its -wal/-shm files cannot be made (a read-only mount, a
        backup, a full disk) as ``immutable=1``; the schema must be at head already (no migration);
        `transaction()` is refused. A store that cannot be written can still be read.
        """
        self.url = url
        self.read_only = read_only
        parsed = _parse_url(url)
        self._display_url = parsed.render_as_string(hide_password=True)
        sqlite_path: Path | None = None
        if _is_sqlite_file(parsed):
            path = Path(parsed.database or "")
            if create and not read_only:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise CatalogError(
                        f"cannot create the data directory {path.parent}: {exc.strerror or exc}"
                    ) from exc
            elif not path.exists():
                raise CatalogError(f"no catalog at {path}")
            if not read_only and not os.access(path.parent, os.W_OK):
                raise CatalogError(f"cannot write the catalog: {path.parent} is not writable (read-only?)")
            if read_only:
                sqlite_path = path
                parsed = _read_only_url(path, immutable=False)
        self.engine = create_catalog_engine(parsed, busy_timeout_s=busy_timeout_s)
        if sqlite_path is not None and not _readable(self.engine):
            # mode=ro still needs the -shm file (made or mapped writable); without it, read the file as it is
            self.engine.dispose()
            logger.info("catalog %s: opening as immutable (cannot create its -wal/-shm)", self._display_url)
            self.engine = create_catalog_engine(
                _read_only_url(sqlite_path, immutable=True),
                busy_timeout_s=busy_timeout_s,
            )
        self.dialect = self.engine.dialect.name
        self._writer = immediate(self.engine)
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        try:
            self._bring_to_head(create and not read_only)
        except CatalogError:
            self.engine.dispose()
            raise
        except DBAPIError as exc:
            self.engine.dispose()
            raise CatalogError(f"cannot open catalog {self._display_url}: {_driver_reason(exc)}") from exc
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def for_data_dir(cls, data_dir: Path, url: str | None = None, **kw: Any) -> Catalog:
        """The catalog of a data directory: `url` if given, else `sqlite:///<data_dir>/catalog.sqlite`.

        The data directory is created (unless `create=False` is passed): it holds the Zarr checkpoints too.
        """
        data_dir = Path(data_dir)
        if kw.get("create", True) and not kw.get("read_only", False):
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CatalogError(
                    f"cannot create the data directory {data_dir}: {exc.strerror or exc}"
                ) from exc
        if url is None:
            db = (data_dir / "catalog.sqlite").absolute()
            url = URL.create("sqlite", database=str(db)).render_as_string(hide_password=False)
        return cls(url, **kw)

    # --- schema ---------------------------------------------------------------------------------------------

    def _refuse_unknown(self, heads: tuple[str, ...]) -> None:
        known = {script.revision for script in _scripts().walk_revisions()}
        for rev in heads:
            if rev not in known:
                raise CatalogError(
                    f"catalog schema {rev} is newer than this vsalmonn understands (head {SCHEMA_HEAD}); "
                    "upgrade vsalmonn"
                )

    def _bring_to_head(self, create: bool) -> None:
        """Create or upgrade the schema, unless it is at head already (the usual case: one read, no lock)."""
        with self.engine.connect() as connection:
            heads = _current_heads(connection)
        if heads == (SCHEMA_HEAD,):
            logger.debug("catalog %s at schema %s", self._display_url, SCHEMA_HEAD)
            return
        self._refuse_unknown(heads)
        if not heads and not create:
            raise CatalogError(f"no catalog schema in {self._display_url} (opened with create=False)")
        if self.read_only:
            raise CatalogError(
                f"catalog {self._display_url} is at schema {','.join(heads)}, older than this vsalmonn's "
                f"{SCHEMA_HEAD}, and is opened read-only; run a writing command (ingest) once to upgrade it"
            )

        # One transaction holds the whole upgrade: on SQLite it starts with BEGIN IMMEDIATE (the write
        # lock), on PostgreSQL with an advisory lock; a second process opening at the same time waits here,
        # then finds the schema at head. SQLite and PostgreSQL both run DDL transactionally, so a failed
        # upgrade leaves the old schema.
        with self._writer.connect() as connection, connection.begin():
            if self.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            heads = _current_heads(connection)
            if heads == (SCHEMA_HEAD,):
                logger.debug("catalog %s brought to %s by another process", self._display_url, SCHEMA_HEAD)
                return
            self._refuse_unknown(heads)
            if not heads and inspect(connection).has_table(models.Stream.__tablename__):
                raise CatalogError(
                    f"catalog {self._display_url} has tables but no schema version; not made by Catalog"
                )
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        logger.info(
            "catalog %s: schema %s -> %s", self._display_url, ",".join(heads) or "(empty)", SCHEMA_HEAD
        )

    def schema_revision(self) -> str:
        """The revision recorded in the database (several, comma-separated, only if someone branched it)."""
        with self.engine.connect() as connection:
            heads = _current_heads(connection)
        if not heads:
            raise CatalogError(f"catalog {self._display_url} has no schema version")
        return ",".join(heads)

    # --- sessions -------------------------------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for reading. Nothing is committed: anything written in it is rolled back at the end.

        On SQLite it reads one consistent snapshot (plain BEGIN) and never waits for, nor blocks, the writer.
        Objects stay loaded after the block (expire_on_commit=False) and are detached.
        """
        with self._read_sessions() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction: committed when the block ends, rolled back if it raises.

        On SQLite it begins with BEGIN IMMEDIATE, so it holds the write lock from its first statement: reading
        and then writing never fails with "database is locked"; a second writer waits up to the busy timeout.
        Keep these blocks short: they serialise all writers of the catalog.
        """
        if self.read_only:
            raise CatalogError(f"catalog {self._display_url} is opened read-only; nothing can be written")
        with self._write_sessions.begin() as session:
            yield session

    # --- streams --------------------------------------------------------------------------------------------

    def ensure_stream(
        self,
        name: str,
        *,
        source: str | None = None,
        kind: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> models.Stream:
        """The stream called `name`, created with the given fields if it does not exist yet.

        `name` is taken in NFC; a new name that looks like an existing one (`names.skeleton`) is refused
        with ValueError. An existing stream is returned as it is (its fields are not updated). Two processes
        creating the same name at once end with one row: on SQLite the write lock serialises them; on
        PostgreSQL the loser's insert fails on the unique name inside a savepoint and it reads the winner's
        row instead.
        """
        name = validate_stream_name(name)
        with self.transaction() as session:
            row = session.scalars(select(models.Stream).where(models.Stream.name == name)).one_or_none()
            if row is not None:
                return row
            # a new name must not pass for one that exists: 'sаmple' (Cyrillic а) beside 'sample'
            refuse_confusable(name, session.scalars(select(models.Stream.name)))
            # The source is stored as shown, without credentials: it is for display only, since whoever
            # connects to it has the real one in its settings (docs/catalog.md).
            row = models.Stream(name=name, source=redact(source), kind=kind, config=config)
            try:
                with session.begin_nested():
                    session.add(row)
            except IntegrityError:
                existing = session.scalars(
                    select(models.Stream).where(models.Stream.name == name)
                ).one_or_none()
                if existing is None:
                    raise
                return existing
            logger.info("catalog: new stream %r (id %s)", name, row.id)
            return row

    def stream(self, name: str) -> models.Stream | None:
        """The stream called `name`, or None."""
        with self.session() as session:
            return session.scalars(select(models.Stream).where(models.Stream.name == name)).one_or_none()

    def streams(self) -> list[models.Stream]:
        """All streams, by name."""
        with self.session() as session:
            return list(session.scalars(select(models.Stream).order_by(models.Stream.name)))

    # --- lifetime -------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close all pooled connections. Sessions still open keep theirs until they end."""
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self._display_url!r})"
