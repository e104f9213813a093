"""``vsalmonn streams delete NAME``: a stream and every file and row it has, only with --yes."""

from __future__ import annotations

import argparse
from pathlib import Path

from vsalmonn.cli.checks import require_catalog
from vsalmonn.cli.output import UsageError
from vsalmonn.settings import Settings


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    streams = commands.add_parser(
        "streams", parents=[common], help="manage streams (delete one with all its data)"
    )
    actions = streams.add_subparsers(dest="streams_command", metavar="ACTION", required=True)
    delete = actions.add_parser(
        "delete",
        parents=[common],
        help="delete a stream: its checkpoints, catalog rows, thumbnails and live transcript",
        description="Without --yes, only say what would be deleted (exit 2).",
    )
    delete.add_argument("stream", metavar="NAME", help="the stream's name")
    delete.add_argument("--yes", action="store_true", help="really delete it")
    delete.set_defaults(handler=run_delete)


def run_delete(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.deletion import delete_stream, stream_footprint
    from vsalmonn.memory_store.store import MemoryStore, StreamBusyError, stream_busy

    require_catalog(settings)
    with MemoryStore.open(settings.data_dir, settings.store) as store:
        footprint = stream_footprint(store, args.stream, _stream_files(settings, args.stream))
        if footprint is None:
            raise UsageError(f"no stream named {args.stream!r} in {settings.data_dir}")
        if stream_busy(store.stream_dir(footprint.stream_id)):
            raise UsageError(f"stream {args.stream} is being written by another process; stop it first")
        if not args.yes:
            raise UsageError(f"would delete {footprint.summary()}; add --yes to delete it")
        try:
            done = delete_stream(store, args.stream, footprint.paths)
        except StreamBusyError as exc:
            raise UsageError(f"{exc}; stop it first") from None
    print(f"deleted {done.summary() if done else 'stream ' + args.stream}")
    return 0


def _stream_files(settings: Settings, name: str) -> list[Path]:
    """A stream's files outside the memory folder: the plugins' thumbnails and live transcript."""
    from vsalmonn.memory_store.retention import plugin_paths

    thumbs, transcript = plugin_paths(settings.data_dir, name)
    return [thumbs] if transcript is None else [thumbs, transcript]
