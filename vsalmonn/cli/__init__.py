"""The ``vsalmonn`` command line (also ``python -m vsalmonn``); DESIGN §9 fixes its interface.

Results go to stdout, progress and logging to stderr. Bad usage or input exits with status 2 and one line on
stderr, never a traceback: scripts branch on the status and people read the line.

One module per command. Each has ``register(commands, common)``, which adds its parser(s) to the
subcommands and sets ``handler`` to a function ``(args, settings) -> int``; COMMANDS lists them in the
order ``--help`` shows. What they share lives in ``output`` (tables, progress, UsageError, quiet model
loading; bench/ imports it too), ``checks`` and ``signals``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from vsalmonn import __version__
from vsalmonn.cli import (
    ask,
    bench,
    config,
    daemon,
    demo,
    export,
    ingest,
    mcp,
    memory,
    plugins,
    search,
    serve,
    status,
    store,
    streams,
    train,
)
from vsalmonn.cli.output import PROG, UsageError
from vsalmonn.errors import did_you_mean, one_line
from vsalmonn.settings import DATA_ENV, DEFAULT_DATA_DIR, Settings, SettingsError, load_settings

__all__ = ["COMMANDS", "PROG", "UsageError", "build_parser", "main"]

Command = Callable[[argparse.Namespace, Settings], int]

COMMANDS: tuple[ModuleType, ...] = (
    demo, ingest, daemon, serve, mcp, status, search, ask, plugins, export, store, streams, memory, train,
    bench, config,
)  # fmt: skip
"""The command modules, in the order ``vsalmonn --help`` lists their commands."""

QUERY_COMMANDS = frozenset(
    {"serve", "mcp", "search", "ask", "status", "export", "plugins", "store", "streams", "memory"}
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (argparse prints the usage block first by default), and
    that names the closest command or action to a misspelt one."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            hint = did_you_mean(value, action.choices)
            if hint:
                what = str(action.metavar or "command").lower()
                self.exit(2, f"{self.prog}: error: unknown {what} {value!r}{hint}\n")
        super()._check_value(action, value)


# ---------------------------------------------------------------------------------------------- parsing


def _common_options() -> argparse.ArgumentParser:
    """Options every command takes, before or after the command's name.

    Their default is SUPPRESS so that a subcommand's parser does not overwrite a value given before the
    command's name; main() supplies the real defaults.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data",
        metavar="DIR",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"data directory (default: ${DATA_ENV}, else ./{DEFAULT_DATA_DIR})",
    )
    common.add_argument(
        "--config", metavar="FILE", type=Path, default=argparse.SUPPRESS, help="settings file (TOML)"
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log more to stderr (-v: info, -vv: debug)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = _Parser(
        prog=PROG,
        parents=[common],
        description="A video agent framework with a streaming test-time-training memory.",
        epilog="Settings precedence: command-line flag > environment > --config file > default.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(commands, common)
    return parser


# ------------------------------------------------------------------------------------------------- main


SPIN_COUNT = "10000"
"""Spins an OpenMP thread waits before it sleeps, outside the query commands (libgomp's default: 300,000)."""


def openmp_waits(command: str) -> None:
    """How torch's OpenMP threads wait at a barrier, set before torch loads (its runtime reads it once).

    A thread that spins takes the core its partner needs when other work shares the 2 cores, and then every
    barrier costs a scheduler slice. Queries sleep at once (`OMP_WAIT_POLICY=PASSIVE`): the 3-hour search
    went from 25 ms to 780 ms at p95 with one other job running. Every other command spins briefly
    (`GOMP_SPINCOUNT`, `SPIN_COUNT`) and then sleeps: idle, that keeps 96 % of the default's TTT speed and
    all of its ingest speed, and beside one busy process it wrote the memory 1.8-2.3x faster
    (docs/benchmarks.md, "ttt"). A user's own setting of either wins.
    """
    if command in QUERY_COMMANDS:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    elif "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)


def tune_malloc(command: str) -> None:
    """glibc's malloc set for the memory's temporaries (`allocator.tune`) in the commands that write a
    memory (ingest, daemon, bench, train-memory, demo): hf_cg ran 28-35 % faster without its page faults.
    The query commands keep glibc's defaults: they run no TTT update."""
    if command not in QUERY_COMMANDS:
        from vsalmonn.perception import allocator

        allocator.tune()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    openmp_waits(args.command)
    tune_malloc(args.command)
    from vsalmonn.memory_store.redact import redact

    _configure_logging(getattr(args, "verbose", 0))
    handler: Command = args.handler
    try:
        settings = load_settings(config=getattr(args, "config", None), data_dir=getattr(args, "data", None))
        return handler(args, settings)
    except (SettingsError, UsageError) as exc:
        print(f"{PROG}: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vsalmonn config show | head`: the reader left; not a fault of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except Exception as exc:
        reason = _input_fault(exc)
        if reason is None:
            raise
        print(f"{PROG}: error: {redact(reason)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


# Errors of the components that describe a fault of the input or the environment (a catalog that cannot be
# opened, a model folder that is no model, a stream another process writes, a full or read-only disk) rather
# than a bug: main() prints them as one line and exits 2. Looked up by module so that a command that never
# imported the agent does not import it here.
_FAULT_TYPES = (
    ("vsalmonn.memory_store.catalog", "CatalogError"),
    ("vsalmonn.memory_store.store", "StreamBusyError"),
    ("vsalmonn.memory_store.store", "StoreError"),
    ("vsalmonn.memory_store.checkpoint", "CheckpointError"),
    ("vsalmonn.memory_store.objects", "ObjectStoreError"),
    ("vsalmonn.agent.local_model", "ModelError"),
    ("vsalmonn.perception.media", "DecodeError"),
)


def _input_fault(exc: BaseException) -> str | None:
    """One line for an error that is the input's or the environment's fault; None for a bug."""
    import errno

    for module_name, class_name in _FAULT_TYPES:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if cls is not None and isinstance(exc, cls):
            return one_line(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EDQUOT):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    dbapi = sys.modules.get("sqlalchemy.exc")
    if dbapi is not None and isinstance(exc, dbapi.OperationalError):
        first = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
        return f"catalog: {one_line(first[0]) if first else type(exc).__name__}"
    return None


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    from vsalmonn.memory_store.redact import RedactingFilter

    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # credentials in a URL never reach the log, whoever logs it
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
