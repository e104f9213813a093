"""The ``vsalmonn`` command line (also ``python -m vsalmonn``); DESIGN §9 fixes its interface.

The commands are those of DESIGN §9.

Results go to stdout, progress and logging to stderr. Bad usage or input exits with status 2 and one line on
stderr, never a traceback: scripts branch on the status and people read the line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, NoReturn

from vsalmonn import __version__
from vsalmonn.app import BUILTIN_PLUGINS, make_agent, make_daemon, open_plugins
from vsalmonn.settings import DATA_ENV, DEFAULT_DATA_DIR, Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from vsalmonn.smoke import SmokeResult

log = logging.getLogger(__name__)

PROG = "vsalmonn"
BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
BENCH_PACKAGE = "vsalmonn_bench"
"""Name under which bench/ is imported: never plain ``bench``, which could shadow a user's own module."""

Command = Callable[[argparse.Namespace, Settings], int]


class UsageError(Exception):
    """Bad usage or input found after parsing; main() prints it as one line and exits with status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (argparse prints the usage block first by default)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


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

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="ingest the bundled sample clip, then answer questions about it with cited times",
        description=(
            "Ingest the bundled 30 s sample (real street footage with four spoken prompts) with the default "
            "encoders, then ask the agent (the embedded model) the sample's questions and print each "
            "answer with its cited times beside the true ones. --memory runs the memory smoke run instead: "
            "~42 min of synthetic 1 FPS tokens with planted vectors, then each planted vector's rank."
        ),
    )
    demo.add_argument(
        "--memory", action="store_true", help="the memory smoke run (synthetic tokens, no models)"
    )
    demo.set_defaults(handler=_cmd_demo)

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
    ingest.set_defaults(handler=_cmd_ingest)

    daemon = commands.add_parser(
        "daemon",
        parents=[common],
        help="run every stream of the settings until SIGTERM/SIGINT",
        description=(
            "Run the [[streams]] of the settings, each from its last committed checkpoint, reporting "
            "status into the catalog (see 'vsalmonn status'). SIGTERM or SIGINT checkpoints every stream "
            "and exits 0."
        ),
    )
    daemon.set_defaults(handler=_cmd_daemon)

    status = commands.add_parser(
        "status",
        parents=[common],
        help="streams, positions, rates, lag, drops, checkpoints and errors",
        description="What the processes ingesting streams last reported, read from the catalog.",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=_cmd_status)

    search = commands.add_parser(
        "search",
        parents=[common],
        help="the reader's moments for a prompt, from the newest committed checkpoint",
        description="Search the memory of one stream or of all with a text prompt; times in stream seconds.",
    )
    search.add_argument("prompt", metavar="PROMPT", help="what to look for, in words")
    search.add_argument("--stream", metavar="NAME", help="one stream (default: every stream)")
    search.add_argument("-k", type=int, default=5, metavar="N", help="moments to return (default 5)")
    search.add_argument("--json", action="store_true", help="print one JSON object")
    search.set_defaults(handler=_cmd_search)

    ask = commands.add_parser(
        "ask",
        parents=[common],
        help="the agent's answer to a question, with cited times",
        description=(
            "Answer a question about the streams in the memory. The embedded model (SmolLM2-135M) answers "
            "from the reader's evidence; --llm ollama:MODEL or openai:MODEL lets a larger model call the "
            "tools. The answer streams to stdout as it is written; --json prints one object at the end."
        ),
    )
    ask.add_argument("question", metavar="QUESTION", help="what to ask, in words")
    ask.add_argument("--stream", metavar="NAME", help="one stream (default: every stream)")
    ask.add_argument(
        "--llm", metavar="PROVIDER:MODEL", help="smollm2 (default), hf:/folder, ollama:MODEL or openai:MODEL"
    )
    ask.add_argument("--json", action="store_true", help='print {"answer", "citations", "steps"}')
    ask.set_defaults(handler=_cmd_ask)

    plugins = commands.add_parser(
        "plugins",
        parents=[common],
        help="the plugins: installed, built in, loaded or not",
        description="List the plugins: entry points of group vsalmonn.plugins and the built-in ones.",
    )
    plugin_commands = plugins.add_subparsers(dest="plugins_command", metavar="ACTION", required=True)
    listing = plugin_commands.add_parser(
        "list", parents=[common], help="name, version, state and hooks of every plugin"
    )
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(handler=_cmd_plugins_list)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="a stream's transcript as WebVTT, SRT or Markdown",
        description="Write the committed transcript of a stream as subtitles (vtt, srt) or Markdown.",
    )
    export.add_argument("stream", metavar="STREAM", help="the stream's name")
    export.add_argument("--format", choices=("vtt", "srt", "md"), default="vtt", help="default: vtt")
    export.add_argument("-o", "--output", metavar="FILE", type=Path, help="write here (default: stdout)")
    export.set_defaults(handler=_cmd_export)

    _add_store_commands(commands, common)
    _add_streams_commands(commands, common)
    _add_memory_commands(commands, common)

    train = commands.add_parser(
        "train-memory",
        parents=[common],
        help="train the TTT memory's slow weights for the configured encoders",
        description="Encode footage into a token pool (cached in <data>/train), then train the slow weights "
        "θ of the TTT layer on streams composed from it, and write them as a .safetensors file "
        "(docs/memory-training.md).",
    )
    train.add_argument(
        "--train-config",
        metavar="FILE",
        type=Path,
        help="training config (TOML with [data] and [train]); default: the one the shipped θ was made with",
    )
    train.add_argument(
        "--media", metavar="DIR", type=Path, help="folder of the footage (overrides [data] media)"
    )
    train.add_argument("--steps", type=int, metavar="N", help="optimiser steps (overrides [train] steps)")
    train.add_argument("--device", metavar="DEV", help="'auto', 'cpu', 'cuda' (overrides [train] device)")
    train.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        type=Path,
        help="where to write θ (default: <data>/train/ttt-<vision>-<text>.safetensors)",
    )
    train.set_defaults(handler=_cmd_train_memory)

    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="run a benchmark of bench/ (needs a source checkout)",
        description="Run bench/NAME.py and print its table, or one JSON object with --json.",
    )
    names = available_benchmarks()
    bench.add_argument("name", metavar="NAME", help=f"one of: {', '.join(names) or 'none here'}")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    bench.add_argument(
        "--plot",
        metavar="DIR",
        type=Path,
        help="also write the benchmark's plots (PNG, needs the 'bench' extra) into DIR",
    )
    bench.set_defaults(handler=_cmd_bench)
    return parser


# ------------------------------------------------------------------------------------------------- main


SEARCH_PROMPT_LIMIT = (
    1000  # as the agent's search tool (tools.schemas.QUERY_LIMIT): the encoder reads ~64 words
)
QUERY_COMMANDS = frozenset({"search", "ask", "status", "export", "plugins", "store", "streams", "memory"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in QUERY_COMMANDS:
        # Before torch loads (its OpenMP runtime reads this once): waiting threads sleep instead of spinning.
        # A query shares the cores with a running daemon, and a spinning thread takes the core the working
        # one needs: the 3-hour search went from 25 ms to 780 ms at p95 with one other job running. Ingest
        # keeps OpenMP's default, spinning, which transcribes ~20 % faster on free cores (docs/benchmarks.md,
        # "search"). A user's own setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from vsalmonn.memory_store.redact import redact

    _configure_logging(getattr(args, "verbose", 0))
    handler: Command = args.handler
    try:
        settings = load_settings(config=getattr(args, "config", None), data_dir=getattr(args, "data", None))
        return handler(args, settings)
    except (SettingsError, UsageError) as exc:
        print(f"{PROG}: error: {redact(str(exc))}", file=sys.stderr)
        return 2
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
            return " ".join(str(exc).split()) or class_name
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EDQUOT):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    dbapi = sys.modules.get("sqlalchemy.exc")
    if dbapi is not None and isinstance(exc, dbapi.OperationalError):
        first = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
        return f"catalog: {first[0] if first else type(exc).__name__}"
    return None


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    from vsalmonn.memory_store.redact import RedactingFilter

    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # credentials in a URL never reach the log, whoever logs it
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


# ------------------------------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.smoke import DEMO_BUDGETS, demo_config, run_smoke

    if not args.memory:
        from vsalmonn.agent.local_model import ModelError
        from vsalmonn.demo import run_demo

        _quiet_model_loading(settings.perception.threads)
        progress = ProgressLine("ingesting the sample", unit="s")
        try:
            run_demo(settings, progress=lambda done, total: progress.update(int(done), int(total or 30)))
        except ModelError as exc:
            raise UsageError(str(exc)) from None
        return 0
    config = demo_config(settings.memory)
    demo_budgets = sorted(set(DEMO_BUDGETS) - settings.memory.model_fields_set)
    progress = ProgressLine("writing", unit="tokens")
    result = run_smoke(config, progress=progress.update)
    progress.close()
    print(_render_smoke(result, demo_budgets))
    return 0


def _render_smoke(result: SmokeResult, demo_budgets: Sequence[str]) -> str:
    from vsalmonn.smoke import TOP_K

    """The smoke run as text: what was streamed into which memory, then one row per planted vector.

    ``demo_budgets`` names the bank budgets that are the demo's own rather than the settings'.
    """
    cfg = result.config
    ttt = "off"
    if cfg.ttt:
        ttt = f"on (hf_cg, cg_max_iter {cfg.cg_max_iter})" if cfg.optimizer == "hf_cg" else "on (gd)"
    tokens = result.visual_tokens + result.audio_tokens
    lines = [
        f"memory smoke run: {result.visual_tokens:,} visual + {result.audio_tokens:,} audio synthetic "
        f"tokens, {result.stream_seconds / 60:.0f} min of stream at 1 FPS",
        f"memory: policy {cfg.policy}, TTT {ttt}, visual bank {cfg.visual_slots:,} slots, "
        f"audio bank {cfg.audio_slots:,} slots",
    ]
    if demo_budgets:
        names = " and ".join(f"memory.{name}" for name in demo_budgets)
        lines.append(
            f"  ({names}: the demo's own, below the defaults of 16,384/4,096 so that this stream overflows "
            "the banks and they reduce; set in --config to change)"
        )
    lines += [
        f"wrote in {result.write_seconds:.1f} s ({tokens / result.write_seconds:,.0f} tokens/s); "
        f"{result.slots_used:,} slots in use",
        "",
        f"reading the memory with each planted vector as the prompt (top {TOP_K} moments):",
    ]
    rows = []
    for probe in result.probes:
        best = probe.moments[0] if probe.moments else None
        rows.append(
            [
                probe.plant.label,
                f"{probe.plant.t0:.0f}",
                f"[{best.t0:.0f}, {best.t1:.0f}]" if best else "-",
                f"{best.score:.3f}" if best else "-",
                best.modality if best else "-",
                str(probe.rank) if probe.rank is not None else f"not in top {TOP_K}",
            ]
        )
    headers = ["planted", "at (s)", "best moment (s)", "score", "modality", "rank of planted token"]
    lines.append(format_table(headers, rows))
    found = sum(p.rank == 1 for p in result.probes)
    lines.append(f"\n{found} of {len(result.probes)} planted vectors found at rank 1")
    return "\n".join(lines)


class ProgressLine:
    """A one-line progress display on stderr.

    On a terminal it redraws one line; elsewhere (CI logs, pipes) it prints a line per quarter so that logs
    stay short. The project needs no progress-bar dependency for this.
    """

    def __init__(self, label: str, unit: str, stream: IO[str] | None = None) -> None:
        self.label, self.unit = label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self.quarter = -1

    def update(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.started
        text = f"{self.label}: {done:,}/{total:,} {self.unit} ({100 * done / total:3.0f}%) {elapsed:.1f} s"
        if self.tty:
            self.stream.write("\r" + text)
        elif (quarter := 4 * done // total) > self.quarter:
            self.quarter = quarter
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ----------------------------------------------------------------------------------------------- ingest


def _cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.tools import MemoryView, ViewError

    prompt = args.prompt.strip()
    if not prompt:
        raise UsageError("the prompt is empty")
    if len(prompt) > SEARCH_PROMPT_LIMIT:
        raise UsageError(
            f"the prompt is {len(prompt):,} characters long; the limit is {SEARCH_PROMPT_LIMIT:,}"
        )
    if not 1 <= args.k <= 1000:
        raise UsageError(f"-k must be between 1 and 1000, got {args.k}")
    _require_catalog(settings)
    _quiet_model_loading(settings.perception.threads)
    with MemoryView.from_data_dir(
        settings.data_dir, settings.perception, settings.store, read_only=True
    ) as view:
        known = [s.name for s in view.store.catalog.streams()]
        if args.stream and args.stream not in known:
            raise UsageError(f"no stream named {args.stream!r} in {settings.data_dir}")
        try:
            hits = view.search(prompt, stream=args.stream, k=args.k)
        except ViewError as exc:
            raise UsageError(str(exc)) from None
        if not hits:
            _refuse_all_damaged(view.store, [args.stream] if args.stream else known)
    moments = [
        {"stream": h.stream, "t0": h.t0, "t1": h.t1, "score": h.score, "modality": h.modality,
         "evidence": h.evidence}
        for h in hits
    ]  # fmt: skip
    if args.json:
        print(json.dumps({"moments": moments}))
        return 0
    if not moments:
        print("no moments: the memory holds no committed checkpoint yet")
        return 0
    rows = [
        [m["stream"], f"{m['t0']:.1f}", f"{m['t1']:.1f}", f"{m['score']:.3f}", m["modality"],
         "; ".join(m["evidence"])[:70] or "-"]
        for m in moments
    ]  # fmt: skip
    print(format_table(["stream", "t0 (s)", "t1 (s)", "score", "modality", "evidence"], rows))
    return 0


def _cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.names import validate_stream_name
    from vsalmonn.memory_store.redact import redact
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.perception.config import StreamSpec
    from vsalmonn.perception.decode import probe
    from vsalmonn.perception.identity import SourceMismatch
    from vsalmonn.perception.ingest import check_source
    from vsalmonn.perception.media import DecodeError
    from vsalmonn.perception.sources import check_file_source, classify, refuse_non_media

    source: str = args.source
    shown = redact(source)  # what messages say: the URL without its credentials
    kind = classify(source)
    if args.stream is not None and not args.stream.strip():
        raise UsageError("bad stream name: --stream must not be empty")
    name = args.stream or (Path(source.rstrip("/")).stem if kind in ("file", "folder") else None)
    if not name:
        raise UsageError(f"{shown}: give the stream a name with --stream NAME")
    try:
        name = validate_stream_name(name)
    except ValueError as exc:
        raise UsageError(f"bad stream name: {exc}") from None
    if args.once and kind != "folder":
        raise UsageError("--once applies to a folder only")
    if kind == "file":
        try:
            check_file_source(source)  # symlink loops, devices, FIFOs: their own reason, before probing
            refuse_non_media(probe(source))  # no media fails here, before the encoders take seconds to load
        except DecodeError as exc:
            raise UsageError(str(exc)) from None
    spec = StreamSpec(name=name, source=source, kind=kind)
    with MemoryStore.open(settings.data_dir, settings.store) as store:
        _refuse_before_writing(store, name)
    _quiet_model_loading(settings.perception.threads)
    with (
        MemoryStore.open(settings.data_dir, settings.store) as store,
        open_plugins(settings, store) as plugins,
    ):
        how = None
        if kind == "file":
            try:  # refused before anything is written: the store stays exactly as it was
                how, _ = check_source(store, name, Path(source.removeprefix("file://")))
            except SourceMismatch as exc:
                raise UsageError(str(exc)) from None
        daemon = make_daemon(settings, store, [spec], once=args.once, plugins=plugins)
        with _stop_on_signals() as stop:
            daemon.start()
            runner = daemon.runners[0]
            show = _progress_display(runner.stats, kind)
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


def _cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.agent.local_model import ModelError
    from vsalmonn.agent.models import parse_llm
    from vsalmonn.tools import VideoMemoryToolkit
    from vsalmonn.tools.timefmt import hms

    question = " ".join(args.question.split())
    if not question:
        raise UsageError("the question is empty")
    config = settings.agent if not args.llm else settings.agent.model_copy(update={"llm": args.llm})
    try:
        parse_llm(config.llm)
    except ModelError as exc:
        raise UsageError(str(exc)) from None
    _require_catalog(settings)
    _quiet_model_loading(settings.perception.threads)
    toolkit = VideoMemoryToolkit.from_data_dir(
        settings.data_dir, settings.perception, settings.store, read_only=True
    )
    plugins = open_plugins(settings, toolkit.store)
    try:
        known = [s.name for s in toolkit.store.catalog.streams()]
        if args.stream and args.stream not in known:
            raise UsageError(f"no stream named {args.stream!r} in {settings.data_dir}")
        try:
            agent = make_agent(settings, toolkit, plugins=plugins, llm=config.llm)
        except ModelError as exc:
            raise UsageError(str(exc)) from None

        def write(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        try:
            answer = agent.ask(question, stream=args.stream, on_token=None if args.json else write)
        except ModelError as exc:  # a model folder that is no model fails when it is first used
            raise UsageError(str(exc)) from None
        _refuse_tool_error(answer)
    finally:
        plugins.close()
        toolkit.close()
    if args.json:
        print(answer.model_dump_json())
        return 0
    print()
    for c in answer.citations:
        print(f"  [{c.stream} {hms(c.t0)}-{hms(c.t1)}] ({c.t0:.1f}-{c.t1:.1f} s)")
    return 0


def _refuse_tool_error(answer: Any) -> None:
    """UsageError when the answer is only a tool's error (retrieve-then-answer found no evidence because the
    search itself failed): a script must not take "no such stream" or a bad argument for an answer."""
    steps = answer.steps or []
    if len(steps) == 1 and steps[0].get("status") == "error" and answer.answer == steps[0].get("result"):
        raise UsageError(" ".join(str(answer.answer).split()))


def _refuse_all_damaged(store: Any, names: Sequence[str]) -> None:
    """UsageError when streams have checkpoints but every one of them failed its checksum when read."""
    damaged = []
    for name in names:
        infos = store.checkpoints(name)
        failed = store.failed.get(infos[0].stream_id, set()) if infos else set()
        if infos and all(i.seq in failed for i in infos):
            damaged.append(name)
    if damaged:
        raise UsageError(
            f"every checkpoint of stream {', '.join(map(repr, damaged))} fails its checksum; "
            "see 'vsalmonn store check'"
        )


def _require_catalog(settings: Settings) -> None:
    """UsageError unless the data directory holds a catalog (a mistyped --data must not create one)."""
    from vsalmonn.memory_store.catalog import Catalog, CatalogError
    from vsalmonn.memory_store.store import CATALOG_FILE, StoreError, refuse_lost_catalog

    if settings.store.catalog_url is None:
        try:  # a catalog lost (missing, 0 bytes) over checkpoint groups is not "nothing ingested"
            refuse_lost_catalog(settings.data_dir, settings.data_dir / CATALOG_FILE)
        except StoreError as exc:
            raise UsageError(str(exc)) from None
    try:
        Catalog.for_data_dir(
            settings.data_dir, settings.store.catalog_url, busy_timeout_s=settings.store.busy_timeout_s,
            create=False, read_only=True,
        ).close()  # fmt: skip
    except CatalogError as exc:
        if (settings.data_dir / CATALOG_FILE).exists() or settings.store.catalog_url is not None:
            raise UsageError(f"{exc} (see 'vsalmonn store check')") from None
        raise UsageError(f"{exc} (nothing has been ingested into {settings.data_dir})") from None


def _cmd_plugins_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_plugins(settings, None) as plugins:
        infos = [p.as_dict() for p in plugins.plugins()]
    known = {i["name"] for i in infos}
    for name in BUILTIN_PLUGINS:  # built-ins not enabled are not candidates: list them as off
        if name not in known:
            infos.append(
                {"name": name, "version": __version__, "dist": "vsalmonn", "state": "off", "hooks": []}
            )
    infos.sort(key=lambda i: i["name"])
    if args.json:
        print(json.dumps({"plugins": infos}, default=str))
        return 0
    if not infos:
        print("no plugins")
        return 0
    rows = [
        [i["name"], str(i.get("version") or "-"), i["state"], ", ".join(i.get("hooks") or []) or "-"]
        for i in infos
    ]
    print(format_table(["plugin", "version", "state", "hooks"], rows))
    return 0


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.plugins.builtin.exports import export

    if args.output is not None and args.output.is_dir():
        raise UsageError(f"cannot write {args.output}: it is a directory; give a file name")
    _require_catalog(settings)
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


def _cmd_daemon(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.store import MemoryStore

    if not settings.streams:
        raise UsageError("no streams to run: add [[streams]] tables (name, source) to the --config file")
    _quiet_model_loading(settings.perception.threads)
    with (
        MemoryStore.open(settings.data_dir, settings.store) as store,
        open_plugins(settings, store) as plugins,
    ):
        try:
            daemon = make_daemon(settings, store, settings.streams, plugins=plugins)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        with _stop_on_signals() as stop:
            log.warning("daemon: %d stream(s) in %s", len(settings.streams), settings.data_dir)
            code = daemon.run(stop)
    for runner in daemon.runners:
        if runner.stats.state in ("failed", "skipped"):
            print(
                f"{PROG}: stream {runner.spec.name} {runner.stats.state}: {runner.stats.last_error}",
                file=sys.stderr,
            )
    return code


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.perception.daemon import read_status

    _require_catalog(settings)
    with MemoryStore.open(settings.data_dir, settings.store, read_only=True) as store:
        entries = read_status(store)
        _add_sizes(store, entries)
    stale_after = max(10.0, 5 * settings.daemon.status_every_s)
    for entry in entries:
        if entry.get("state") not in (None, "done", "stopped", "failed", "skipped", "idle", "new"):
            entry["stale"] = entry.get("age_s", 0.0) > stale_after
    if args.json:
        print(json.dumps({"streams": entries}))
        return 0
    if not entries:
        print(f"no streams in {settings.data_dir}")
        return 0
    rows = []
    for e in entries:
        checkpoint = e.get("checkpoint")
        state = e["state"] + (f" (no report for {_ago(e['age_s'])})" if e.get("stale") else "")
        rows.append(
            [
                e["stream"], e.get("kind") or "-", state,
                _position(e.get("position"), e.get("duration")),
                f"{e['rate']:.1f}x" if e.get("rate") is not None else "-",
                f"{e['lag_s']:.1f}" if e.get("lag_s") is not None else "-",
                str(e.get("drops", 0)),
                f"#{checkpoint['seq']} {_ago(checkpoint['age_s'])} ago" if checkpoint else "-",
                str(e.get("errors", 0)) + (f": {e['last_error'][:60]}" if e.get("last_error") else ""),
            ]
        )  # fmt: skip
    headers = ["stream", "kind", "state", "position", "rate", "lag (s)", "drops", "checkpoint", "errors"]
    print(format_table(headers, rows))
    _print_sizes(entries)
    return 0


SIZE_COLUMNS = {
    "labels": "labels", "transcript": "transcript", "events": "events", "thumbnails": "thumbnails",
    "transcript_files": "transcript files", "checkpoints": "checkpoints",
}  # fmt: skip


def _add_sizes(store: Any, entries: list[dict[str, Any]]) -> None:
    """Rows (files, checkpoints) and bytes per kind of stored data, for each stream (`entry["sizes"]`)."""
    from sqlalchemy import select

    from vsalmonn.memory_store.models import Stream
    from vsalmonn.memory_store.retention import stream_sizes

    with store.catalog.session() as s:
        ids = {name: sid for name, sid in s.execute(select(Stream.name, Stream.id))}
    for entry in entries:
        if entry["stream"] in ids:
            sizes = stream_sizes(store.catalog, store.data_dir, ids[entry["stream"]], entry["stream"])
            entry["sizes"] = {kind: size.model_dump() for kind, size in sizes.items()}


def _print_sizes(entries: list[dict[str, Any]]) -> None:
    rows = [
        [e["stream"]]
        + [f"{e['sizes'][k]['rows']:,} / {_megabytes(e['sizes'][k]['bytes'])}" for k in SIZE_COLUMNS]
        for e in entries
        if "sizes" in e
    ]
    if rows:
        print()
        print("stored (rows or files / size):")
        print(format_table(["stream", *SIZE_COLUMNS.values()], rows))


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _position(position: float | None, duration: float | None) -> str:
    from vsalmonn.tools.timefmt import hms

    if position is None:
        return "-"
    return f"{hms(position)} / {hms(duration)}" if duration else hms(position)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT while the block runs (the previous handlers come back after)."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.warning("%s received: checkpointing and stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _progress_display(stats: Any, kind: str) -> Callable[..., None]:
    """A function that redraws the progress of one stream on stderr: a tqdm bar for a file (position,
    rate as a multiple of real time, ETA), a status line for the others; on a terminal only."""
    from tqdm import tqdm

    bar: Any = None

    def show(final: bool = False) -> None:
        nonlocal bar
        if stats.position is None:
            return
        if bar is None:
            total = stats.duration if kind == "file" else None
            bar = tqdm(
                total=total, initial=stats.position, unit="s", dynamic_ncols=True, disable=None,
                desc=f"ingesting {stats.source}" if kind == "file" else stats.source,
                bar_format=(
                    "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
                    if total else "{desc}: {n:.0f} s [{elapsed}{postfix}]"
                ),
            )  # fmt: skip
        bar.n = stats.position
        rate = stats.rate
        extra = [f"{rate:.1f}x real time"] if rate else []
        if kind in ("url", "device"):
            extra += [stats.state, f"lag {stats.lag_s or 0.0:.1f} s", f"{stats.drops} dropped"]
        if kind == "folder" and "file" in stats.detail:
            extra.append(str(stats.detail["file"]))
        bar.set_postfix_str(", ".join(extra), refresh=False)
        bar.refresh()
        if final:
            bar.close()

    return show


def _quiet_model_loading(threads: int) -> None:
    """Process-wide settings that belong to the program, not to a library: torch's thread count, and no
    progress bars from transformers or chatter from faster-whisper on a terminal that shows our own."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, logging.getLogger().level))


# ------------------------------------------------------------------------------------------------ store


def _add_store_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    store = commands.add_parser(
        "store",
        parents=[common],
        help="check the store against its disk, or rebuild a lost catalog from the checkpoint groups",
        description=(
            "check: verify every checkpoint group on disk and compare with the catalog (writes nothing; "
            "exit 1 when something is wrong). rebuild: when the catalog is missing, empty or unreadable, "
            "move it aside and catalogue the checkpoint groups that verify again (transcript rows, labels "
            "and events are not in the groups and cannot come back)."
        ),
    )
    actions = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", parents=[common], help="verify groups and catalog; writes nothing")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(handler=_cmd_store_check)
    rebuild = actions.add_parser(
        "rebuild", parents=[common], help="re-catalogue checkpoint groups after the catalog was lost"
    )
    rebuild.set_defaults(handler=_cmd_store_rebuild)


def _cmd_store_check(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.repair import check_store

    if not settings.data_dir.is_dir():
        raise UsageError(f"no data directory {settings.data_dir}")
    report = check_store(settings.data_dir, settings.store.catalog_url)
    healthy = report.catalog_ok and not report.damaged and not report.missing and not report.uncatalogued
    if args.json:
        print(
            json.dumps(
                {
                    "catalog": report.catalog, "ok": healthy,
                    "groups": [
                        {"stream_id": g.stream_id, "path": str(g.path), "seq": g.seq, "ok": g.ok,
                         "reason": g.reason}
                        for g in report.groups
                    ],
                    "missing": report.missing,
                }
            )
        )  # fmt: skip
    else:
        print("\n".join(report.lines()))
    return 0 if healthy else 1


def _cmd_store_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.catalog import CatalogError
    from vsalmonn.memory_store.repair import rebuild_catalog

    try:
        result = rebuild_catalog(settings.data_dir, settings.store.catalog_url)
    except CatalogError as exc:
        raise UsageError(str(exc)) from None
    print("\n".join(result.lines()))
    return 0


def _add_streams_commands(commands: Any, common: argparse.ArgumentParser) -> None:
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
    delete.set_defaults(handler=_cmd_streams_delete)


def _stream_files(settings: Settings, name: str) -> list[Path]:
    """A stream's files outside the memory folder: the plugins' thumbnails and live transcript."""
    from vsalmonn.memory_store.retention import plugin_paths

    thumbs, transcript = plugin_paths(settings.data_dir, name)
    return [thumbs] if transcript is None else [thumbs, transcript]


def _cmd_streams_delete(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.deletion import delete_stream, stream_footprint
    from vsalmonn.memory_store.store import MemoryStore, StreamBusyError, stream_busy

    _require_catalog(settings)
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


def _add_memory_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    memory = commands.add_parser(
        "memory", parents=[common], help="a stream's memory as one portable, checksummed file"
    )
    actions = memory.add_subparsers(dest="memory_command", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export", parents=[common], help="write a stream's newest verified checkpoint and its rows to FILE"
    )
    export.add_argument("stream", metavar="NAME", help="the stream's name")
    export.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="the file to write")
    export.set_defaults(handler=_cmd_memory_export)
    load = actions.add_parser("import", parents=[common], help="bring an exported memory into this store")
    load.add_argument("file", type=Path, metavar="FILE", help="a file `memory export` wrote")
    load.add_argument("--stream", metavar="NAME", help="the stream's name here (default: its own)")
    load.set_defaults(handler=_cmd_memory_import)


def _cmd_memory_export(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.portable import PortableError, export_stream
    from vsalmonn.memory_store.store import MemoryStore

    _require_catalog(settings)
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


def _cmd_memory_import(args: argparse.Namespace, settings: Settings) -> int:
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


# ------------------------------------------------------------------------------------------------ bench


def _cmd_train_memory(args: argparse.Namespace, settings: Settings) -> int:
    import tomllib

    from pydantic import ValidationError
    from tqdm import tqdm

    from vsalmonn.memory_store.slow_weights import save_slow_weights
    from vsalmonn.memory_store.training import TrainConfig, train
    from vsalmonn.perception.pipeline import Encoders
    from vsalmonn.perception.training_pool import PoolConfig, load_or_build_pool

    path = (
        args.train_config
        or Path(__file__).resolve().parent / "memory_store" / "weights" / "train-memory.toml"
    )
    try:
        raw = tomllib.loads(path.read_text())
        data = PoolConfig(**{**raw.get("data", {}), **({"media": args.media} if args.media else {})})
        overrides = {k: v for k, v in (("steps", args.steps), ("device", args.device)) if v is not None}
        config = TrainConfig(**{**raw.get("train", {}), **overrides})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read the training config {path}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UsageError(f"training config {path}: {where}: {first['msg']}") from None
    perception = settings.perception
    names = f"{perception.vision_encoder}/{perception.text_encoder}"
    folder = settings.data_dir / "train"
    _quiet_model_loading(perception.threads)
    try:
        pool = load_or_build_pool(
            data,
            names,
            folder,
            lambda: Encoders.from_config(
                perception.model_copy(update={"speech_encoder": "none"}), settings.data_dir
            ),
        )
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = folder / f"train-{stamp}.jsonl"
    bar = tqdm(total=config.steps, desc="training θ", unit="stream", file=sys.stderr)

    def progress(step: int, entry: dict[str, Any]) -> None:
        shown = {"loss": f"{entry['loss']:.3f}"}
        if "val_recall5" in entry:
            shown["val@5"] = f"{entry['val_recall5']:.0f}% (untrained {entry['val_recall5_untrained']:.0f}%)"
        bar.set_postfix(shown, refresh=False)
        bar.update()

    try:
        with bar:
            result = train(pool, config, log_path=log_path, progress=progress)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    vision, text = perception.vision_encoder, perception.text_encoder
    output = args.output or folder / f"ttt-{vision}-{text}.safetensors"
    memory = result.memory
    info = save_slow_weights(
        output,
        result.state,
        vision_encoder=vision,
        text_encoder=text,
        dim=memory.dim,
        heads=memory.heads,
        mlp_ratio=memory.mlp_ratio,
        trained={
            "train": config.model_dump(mode="json"),
            "data": data.model_dump(mode="json"),
            "pool": pool.info,
            "seconds": round(result.seconds, 1),
            "final": result.history[-1] if result.history else None,
            "vsalmonn": __version__,
        },
    )
    print(f"slow weights written to {output} (checksum {info.checksum[:12]}; log {log_path})")
    return 0


def _cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    module = load_benchmark(args.name)
    plot = getattr(module, "plot", None)
    if args.plot is not None and not callable(plot):
        raise UsageError(f"benchmark {args.name!r} makes no plots")
    result = module.run(quick=args.quick)
    print(json.dumps(result) if args.json else module.render(result))
    if args.plot is not None:
        args.plot.mkdir(parents=True, exist_ok=True)
        for path in plot(result, args.plot):
            log.info("plot written: %s", path)
            print(f"plot: {path}", file=sys.stderr)
    return 0


def available_benchmarks(bench_dir: Path = BENCH_DIR) -> list[str]:
    """Names of bench/*.py except helpers (a leading underscore); empty outside a source checkout."""
    return sorted(p.stem for p in bench_dir.glob("*.py") if not p.name.startswith("_"))


def load_benchmark(name: str, bench_dir: Path = BENCH_DIR) -> ModuleType:
    """Import bench/NAME.py as ``vsalmonn_bench.NAME``; UsageError when absent or not a benchmark.

    bench/ lives beside the package in a source checkout and is not installed: an installed wheel has none.
    """
    if not (bench_dir / "__init__.py").is_file():
        raise UsageError(f"benchmarks need a source checkout; no bench/ folder at {bench_dir}")
    names = available_benchmarks(bench_dir)
    if name not in names:
        raise UsageError(f"unknown benchmark {name!r}; available: {', '.join(names) or 'none'}")
    _import_bench_package(bench_dir)
    module = importlib.import_module(f"{BENCH_PACKAGE}.{name}")
    if not (callable(getattr(module, "run", None)) and callable(getattr(module, "render", None))):
        raise UsageError(f"bench/{name}.py defines no run(quick) and render(result)")
    return module


def _import_bench_package(bench_dir: Path) -> None:
    """Register bench/ as package ``vsalmonn_bench``: its scripts then share helpers by relative import."""
    if BENCH_PACKAGE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        BENCH_PACKAGE, bench_dir / "__init__.py", submodule_search_locations=[str(bench_dir)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[BENCH_PACKAGE] = package
    spec.loader.exec_module(package)


# ------------------------------------------------------------------------------------------------- text


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table; columns whose cells are all numbers are right-aligned so that digits line up."""
    columns = list(zip(headers, *rows, strict=True))
    widths = [max(len(cell) for cell in column) for column in columns]
    numeric = [_numeric_column(column[1:]) for column in columns]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _numeric_column(cells: Sequence[str]) -> bool:
    """True when the column holds numbers, blanks ("" or "-") aside, and at least one number."""
    filled = [c for c in cells if c not in ("", "-")]
    return bool(filled) and all(_is_number(c) for c in filled)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True
