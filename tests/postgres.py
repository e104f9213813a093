"""A throwaway PostgreSQL server for the test session, from the binaries of Debian's postgresql package.

The catalog must work unchanged on PostgreSQL (DESIGN §4), and only a real server shows it: a fresh cluster is
made with initdb in a temporary directory and started with pg_ctl, listening on 127.0.0.1 at a free port (and
on a unix socket inside the directory, never the system's), with durability switched off for speed. Each test
that wants a clean database gets its own with `create_database()`. PostgreSQL refuses to run as root, so when
the tests run as root the server runs as the `postgres` system user that the Debian package creates.

The binaries are found through VSALMONN_PG_BINDIR, `pg_config --bindir`, /usr/lib/postgresql/*/bin (newest
first) or an `initdb` on PATH, whichever first has initdb, pg_ctl and postgres. Without them the PostgreSQL
tests skip with `MISSING` as the reason; with them, a server that fails to start is an error, not a skip.
"""

from __future__ import annotations

import atexit
import logging
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

MISSING = "PostgreSQL server binaries not found: apt-get install postgresql"
_BINARIES = ("initdb", "pg_ctl", "postgres")
_SUPERUSER = "vsalmonn"  # the cluster's superuser role, made by initdb; trust authentication on loopback


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine: the PostgreSQL tests skip."""


def _version_key(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name)) or (0,)


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) and (bindir / name).is_file() for name in _BINARIES)


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    candidates: list[Path] = []
    if os.environ.get("VSALMONN_PG_BINDIR"):
        candidates.append(Path(os.environ["VSALMONN_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    return next((c for c in candidates if _has_server(c)), None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _traversable_by_all(path: Path) -> bool:
    """Whether every directory from / down to `path` lets other users through (the server user needs it)."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


@dataclass
class PostgresServer:
    """A running throwaway cluster; `stop()` ends it and removes its directory."""

    bindir: Path
    root: Path
    port: int
    uid: int | None  # run the server binaries as this user (when the tests run as root), else as ourselves
    gid: int | None
    _stopped: bool = field(default=False, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of a database of this server, through psycopg 3 on loopback TCP."""
        return f"postgresql+psycopg://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user={_SUPERUSER} dbname=postgres connect_timeout=10"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # names below are generated, never user input

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (named at random unless `name` is given) and return its name."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"unsafe database name {name!r}")
        self._admin(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing any connections a test left open to it."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"unsafe database name {name!r}")
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run_as(self.uid, self.gid, self.root, [str(self.bindir / args[0]), *args[1:]], timeout)

    def stop(self) -> None:
        """Stop the server at once (the data are thrown away anyway) and remove its directory."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("could not stop the test PostgreSQL server in %s: %s", self.root, exc)
        shutil.rmtree(self.root, ignore_errors=True)


def _run_as(
    uid: int | None, gid: int | None, cwd: Path, cmd: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    kwargs: dict[str, object] = {}
    if uid is not None:
        kwargs = {"user": uid, "group": gid, "extra_groups": []}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no stray PGDATA, PGPORT, …
    env["LC_ALL"] = "C"
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def _check(result: subprocess.CompletedProcess[str], what: str, log: Path | None = None) -> None:
    if result.returncode == 0:
        return
    detail = (result.stdout + result.stderr).strip()
    if log is not None and log.exists():
        detail += "\n--- server log ---\n" + log.read_text(errors="replace")[-4000:]
    raise RuntimeError(f"{what} failed with exit status {result.returncode}:\n{detail}")


def start_server() -> PostgresServer:
    """initdb and start a cluster in a new temporary directory; raise PostgresUnavailable without binaries."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(MISSING)
    uid = gid = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "the tests run as root, PostgreSQL refuses root, and there is no 'postgres' user to run it as"
            ) from None
        uid, gid = pw.pw_uid, pw.pw_gid
    base = Path(tempfile.gettempdir())
    if uid is not None and not _traversable_by_all(base):
        base = Path("/tmp")
    root = Path(tempfile.mkdtemp(prefix="vsalmonn-pg-", dir=base))
    if uid is not None:
        os.chown(root, uid, gid if gid is not None else -1)
    server = PostgresServer(bindir=bindir, root=root, port=0, uid=uid, gid=gid)
    atexit.register(server.stop)  # a test run interrupted hard still leaves no server behind
    try:
        data = str(server.data)
        result = server._run(
            "initdb", "-D", data, "-U", _SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C", "-N"
        )
        _check(result, "initdb")
        for attempt in range(3):  # the free port may be taken between finding it and binding it
            server.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB"
            )
            start = ["-D", data, "-l", str(server.log), "-o", options, "-w", "-t", "60", "start"]
            result = server._run("pg_ctl", *start)
            if result.returncode == 0:
                break
            logger.warning("test PostgreSQL did not start on port %d (attempt %d)", server.port, attempt + 1)
        _check(result, "pg_ctl start", server.log)
    except BaseException:
        server.stop()
        raise
    logger.info("test PostgreSQL %s running on 127.0.0.1:%d in %s", bindir, server.port, root)
    return server
