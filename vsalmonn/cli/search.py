"""``vsalmonn search PROMPT``: the reader's moments for a prompt, from the newest committed checkpoints."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from vsalmonn.cli.checks import require_catalog, window_arguments
from vsalmonn.cli.output import UsageError, format_table, quiet_model_loading
from vsalmonn.settings import Settings
from vsalmonn.tools.checks import QUERY_MAX

SEARCH_PROMPT_LIMIT = QUERY_MAX
"""As the agent's search tool and the view (tools.checks.QUERY_MAX); the text encoder reads only its first
~64 words, but a question the agent searches with may be longer."""


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    search = commands.add_parser(
        "search",
        parents=[common],
        help="the reader's moments for a prompt, from the newest committed checkpoint",
        description=(
            "Search the memory of one stream or of all with a text prompt. Times are stream seconds; a live "
            "stream's moments also show their wall-clock time. --start, --end and --since take stream "
            "seconds, HH:MM:SS (stream time) or an ISO 8601 date-time (wall clock, naive means UTC; live "
            "streams only); --since also takes a span back from now (90s, 30m, 1h, 2d)."
        ),
    )
    search.add_argument("prompt", metavar="PROMPT", help="what to look for, in words")
    search.add_argument("--stream", metavar="NAME", help="one stream (default: every stream)")
    search.add_argument("-k", type=int, default=5, metavar="N", help="moments to return (default 5)")
    search.add_argument("--start", metavar="TIME", help="only moments that end at or after TIME")
    search.add_argument("--end", metavar="TIME", help="only moments that begin at or before TIME")
    search.add_argument(
        "--since",
        metavar="SPAN|TIME",
        help="only moments since a span back from now (1h) or TIME; not with --start",
    )
    search.add_argument("--json", action="store_true", help="print one JSON object")
    search.set_defaults(handler=run_search)


def run_search(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.app import make_view
    from vsalmonn.reports import search_result
    from vsalmonn.tools import ViewError

    prompt = args.prompt.strip()
    if not prompt:
        raise UsageError("the prompt is empty")
    if len(prompt) > SEARCH_PROMPT_LIMIT:
        raise UsageError(
            f"the prompt is {len(prompt):,} characters long; the limit is {SEARCH_PROMPT_LIMIT:,}"
        )
    if not 1 <= args.k <= 1000:
        raise UsageError(f"-k must be between 1 and 1000, got {args.k}")
    start, end = window_arguments(args)
    require_catalog(settings)
    quiet_model_loading(settings.perception.threads)
    with make_view(settings, read_only=True) as view:
        known = [s.name for s in view.store.catalog.streams()]
        if args.stream and args.stream not in known:
            raise UsageError(f"no stream named {args.stream!r} in {settings.data_dir}")
        try:
            result = search_result(view, prompt, stream=args.stream, k=args.k, start=start, end=end)
        except ViewError as exc:
            raise UsageError(str(exc)) from None
    moments = result.model_dump()["moments"]
    if args.json:
        print(json.dumps(result.model_dump(mode="json")))
        return 0
    if not moments:
        print("no moments: the memory holds no committed checkpoint yet")
        return 0
    wall = any(m["wall_t0"] is not None for m in moments)
    rows = [
        [m["stream"], f"{m['t0']:.1f}", f"{m['t1']:.1f}"]
        + ([_clock(m["wall_t0"])] if wall else [])
        + [f"{m['score']:.3f}", m["modality"], "; ".join(m["evidence"])[:70] or "-"]
        for m in moments
    ]
    head = ["stream", "t0 (s)", "t1 (s)"] + (["wall clock (UTC)"] if wall else [])
    print(format_table([*head, "score", "modality", "evidence"], rows))
    return 0


def _clock(when: datetime | None) -> str:
    return "-" if when is None else when.strftime("%Y-%m-%d %H:%M:%S")
