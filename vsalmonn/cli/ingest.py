"""``vsalmonn ingest SOURCE``: one file, URL, folder or capture device into a stream's memory, with its
progress on stderr."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vsalmonn.app import make_daemon, open_plugins
from vsalmonn.cli.output import UsageError, quiet_model_loading
from vsalmonn.cli.signals import stop_on_signals
from vsalmonn.settings import Settings

if TYPE_CHECKING:
    from vsalmonn.perception.runners.base import KindRunner


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    ingest = commands.add_parser(
        "ingest",
        parents=[common],
        help="ingest a file, URL, folder or capture device into a stream's memory",
        description=(
            "Decode a source, encode its frames and speech, and write them into the stream's memory, "
            "checkpointing as it goes; a second run resumes where the last committed checkpoint left off. "
            "A file ends by itself; a URL, a capture device (/dev/videoN) or a watched folder runs until "
            "SIGINT/SIGTERM (a folder with --once stops when the files present are done)."
        ),
    )
    ingest.add_argument("source", metavar="SOURCE", help="a media file, URL, folder or /dev/videoN")
    ingest.add_argument(
        "--stream", metavar="NAME", help="stream name (default: the file's or folder's name without suffix)"
    )
    ingest.add_argument("--once", action="store_true", help="a folder: ingest the files present, then exit")
    ingest.set_defaults(handler=run_ingest)


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.names import validate_stream_name
    from vsalmonn.memory_store.redact import redact
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.perception.config import StreamSpec
    from vsalmonn.perception.identity import SourceMismatch
    from vsalmonn.perception.media import DecodeError
    from vsalmonn.perception.runners.registry import SOURCE_KINDS

    source: str = args.source
    shown = redact(source)  # what messages say: the URL without its credentials
    kind = SOURCE_KINDS.classify(source)
    if args.stream is not None and not args.stream.strip():
        raise UsageError("bad stream name: --stream must not be empty")
    name = args.stream or kind.default_stream_name(source)
    if not name:
        raise UsageError(f"{shown}: give the stream a name with --stream NAME")
    try:
        name = validate_stream_name(name)
    except ValueError as exc:
        raise UsageError(f"bad stream name: {exc}") from None
    if args.once and not kind.watches:
        raise UsageError("--once applies to a folder only")
    try:  # a source that cannot work fails here, before the encoders take seconds to load
        kind.check(source)
    except DecodeError as exc:
        raise UsageError(str(exc)) from None
    spec = StreamSpec(name=name, source=source, kind=kind.name)
    with MemoryStore.open(settings.data_dir, settings.store) as store:
        _refuse_before_writing(store, name)
    quiet_model_loading(settings.perception.threads)
    with (
        MemoryStore.open(settings.data_dir, settings.store) as store,
        open_plugins(settings, store) as plugins,
    ):
        try:  # refused before anything is written: the store stays exactly as it was
            how = kind.check_resume(store, name, source)
        except SourceMismatch as exc:
            raise UsageError(str(exc)) from None
        daemon = make_daemon(settings, store, [spec], once=args.once, plugins=plugins)
        with stop_on_signals() as stop:
            daemon.start()
            runner = daemon.runners[0]
            show = _progress_display(runner.stats, runner.source_kind)
            while daemon.running and not stop.wait(0.25):
                show()
            daemon.shutdown()
            show(final=True)
    stats, result = runner.stats, runner.result
    if stats.state in ("failed", "skipped"):
        raise UsageError(stats.last_error or f"stream {name} {stats.state}")
    if (
        result is not None
        and result.frames == 0
        and result.segments == 0
        and stats.state == "done"
        and how != "grew"
        and (result.position == result.resumed_at)
    ):
        print(f"stream {name}: {shown} was ingested completely already (same size and head); nothing to do")
        return 0
    if result is not None:
        print(
            f"stream {name}: {shown} {'grew; ' if how == 'grew' else ''}"
            f"{'stopped' if result.stopped else 'ingested'} at "
            f"{result.position:.1f} s "
            f"(resumed at {result.resumed_at:.1f} s): {result.frames} frames, {result.segments} transcript "
            f"segments, {result.checkpoints} checkpoints, {result.speed:.1f}x real time"
        )
        return 0
    print(
        f"stream {name}: {stats.state} at {stats.position or 0.0:.1f} s: {stats.frames} frames, "
        f"{stats.segments} transcript segments, {stats.drops} dropped, {stats.errors} errors"
    )
    return 0


def _refuse_before_writing(store: Any, name: str) -> None:
    """UsageError for what would fail a stream once it runs (and log a stream.failed event for a stream
    that did not fail): a name confusable with an existing stream, or a stream another process writes."""
    from vsalmonn.memory_store.names import refuse_confusable
    from vsalmonn.memory_store.store import stream_busy

    streams = store.catalog.streams()
    try:
        refuse_confusable(name, [s.name for s in streams])
    except ValueError as exc:
        raise UsageError(f"bad stream name: {exc}") from None
    existing = next((s for s in streams if s.name == name), None)
    if existing is not None and stream_busy(store.stream_dir(existing.id)):
        raise UsageError(f"stream {name} is being written by another process")


def _progress_display(stats: Any, kind: KindRunner) -> Callable[..., None]:
    """A function that redraws the progress of one stream on stderr: a tqdm bar when the kind knows where
    the stream ends (a file: position, rate as a multiple of real time, ETA), a status line for the others;
    on a terminal only. What the line says is the kind's (`KindRunner.progress_title`, `describe_progress`).
    """
    from tqdm import tqdm

    bar: Any = None

    def show(final: bool = False) -> None:
        nonlocal bar
        if stats.position is None:
            return
        if bar is None:
            total = kind.progress_total(stats)
            bar = tqdm(
                total=total, initial=stats.position, unit="s", dynamic_ncols=True, disable=None,
                desc=kind.progress_title(stats),
                bar_format=(
                    "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
                    if total else "{desc}: {n:.0f} s [{elapsed}{postfix}]"
                ),
            )  # fmt: skip
        bar.n = stats.position
        bar.set_postfix_str(kind.describe_progress(stats), refresh=False)
        bar.refresh()
        if final:
            bar.close()

    return show
