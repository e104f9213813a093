"""``vsalmonn memory export|import``: a stream's memory as one portable, checksummed file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vsalmonn.cli.checks import require_catalog
from vsalmonn.cli.output import UsageError
from vsalmonn.settings import Settings


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    memory = commands.add_parser(
        "memory", parents=[common], help="a stream's memory as one portable, checksummed file"
    )
    actions = memory.add_subparsers(dest="memory_command", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export", parents=[common], help="write a stream's newest verified checkpoint and its rows to FILE"
    )
    export.add_argument("stream", metavar="NAME", help="the stream's name")
    export.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="the file to write")
    export.set_defaults(handler=run_export)
    load = actions.add_parser("import", parents=[common], help="bring an exported memory into this store")
    load.add_argument("file", type=Path, metavar="FILE", help="a file `memory export` wrote")
    load.add_argument("--stream", metavar="NAME", help="the stream's name here (default: its own)")
    load.set_defaults(handler=run_import)


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.portable import PortableError, export_stream
    from vsalmonn.memory_store.store import MemoryStore

    require_catalog(settings)
    with MemoryStore.open(settings.data_dir, settings.store, read_only=True) as store:
        if not store.checkpoints(args.stream):
            raise UsageError(f"no stream named {args.stream!r} with a checkpoint in {settings.data_dir}")
        try:
            manifest = export_stream(store, args.stream, args.output)
        except PortableError as exc:
            raise UsageError(str(exc)) from None
    rows = ", ".join(f"{n} {k}" for k, n in manifest.rows.items())
    print(f"stream {args.stream}: memory written to {args.output} ({rows})", file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.names import validate_stream_name
    from vsalmonn.memory_store.portable import PortableError, import_stream
    from vsalmonn.memory_store.store import MemoryStore

    if args.stream is not None:
        try:
            validate_stream_name(args.stream)
        except ValueError as exc:
            raise UsageError(f"bad stream name: {exc}") from None
    with MemoryStore.open(settings.data_dir, settings.store) as store:
        try:
            manifest = import_stream(store, args.file, name=args.stream, encoders=settings.memory.encoders)
        except PortableError as exc:
            raise UsageError(str(exc)) from None
    print(f"stream {args.stream or manifest.stream}: memory imported from {args.file}", file=sys.stderr)
    return 0
