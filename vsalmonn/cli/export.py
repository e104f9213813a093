"""``vsalmonn export STREAM``: a stream's committed transcript as WebVTT, SRT or Markdown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vsalmonn.cli.checks import require_catalog
from vsalmonn.cli.output import UsageError
from vsalmonn.settings import Settings


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    export = commands.add_parser(
        "export",
        parents=[common],
        help="a stream's transcript as WebVTT, SRT or Markdown",
        description="Write the committed transcript of a stream as subtitles (vtt, srt) or Markdown.",
    )
    export.add_argument("stream", metavar="STREAM", help="the stream's name")
    export.add_argument("--format", choices=("vtt", "srt", "md"), default="vtt", help="default: vtt")
    export.add_argument("-o", "--output", metavar="FILE", type=Path, help="write here (default: stdout)")
    export.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.tools.exports import export

    if args.output is not None and args.output.is_dir():
        raise UsageError(f"cannot write {args.output}: it is a directory; give a file name")
    require_catalog(settings)
    with MemoryStore.open(settings.data_dir, settings.store, read_only=True) as store:
        try:
            text = export(store, args.stream, args.format)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.output is None:
        sys.stdout.write(text)
        return 0
    tmp = args.output.with_name(args.output.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(args.output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"{args.stream}: {args.format} written to {args.output}", file=sys.stderr)
    return 0
