"""``vsalmonn ask QUESTION``: the agent's answer, streamed to stdout, with its cited times."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vsalmonn.app import make_agent, make_toolkit, open_plugins, shared_text_encoder
from vsalmonn.cli.checks import add_window_arguments, require_catalog, window_arguments
from vsalmonn.cli.output import UsageError, quiet_model_loading
from vsalmonn.settings import Settings


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    ask = commands.add_parser(
        "ask",
        parents=[common],
        help="the agent's answer to a question, with cited times",
        description=(
            "Answer a question about the streams in the memory. The embedded model (SmolLM2-135M) answers "
            "from the reader's evidence; --llm ollama:MODEL or openai:MODEL lets a larger model call the "
            "tools. The answer streams to stdout as it is written; --json prints one object at the end. "
            "--start, --end and --since keep the question to a window: stream seconds, HH:MM:SS, an ISO "
            "8601 wall-clock time (live streams), or for --since a span back from now (1h)."
        ),
    )
    ask.add_argument("question", metavar="QUESTION", help="what to ask, in words")
    ask.add_argument("--stream", metavar="NAME", help="one stream (default: every stream)")
    add_window_arguments(ask)
    ask.add_argument(
        "--llm",
        metavar="PROVIDER:MODEL",
        help="smollm2 (default), gemma3, hf:/folder, ollama:MODEL or openai:MODEL",
    )
    ask.add_argument("--json", action="store_true", help='print {"answer", "citations", "steps"}')
    ask.set_defaults(handler=run_ask)


def run_ask(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.agent.local_model import ModelError
    from vsalmonn.agent.models import parse_llm
    from vsalmonn.tools.timefmt import hms

    question = " ".join(args.question.split())
    if not question:
        raise UsageError("the question is empty")
    config = settings.agent if not args.llm else settings.agent.model_copy(update={"llm": args.llm})
    try:
        parse_llm(config.llm)
    except ModelError as exc:
        raise UsageError(str(exc)) from None
    start, end = window_arguments(args)
    require_catalog(settings)
    quiet_model_loading(settings.perception.threads)
    encoder = shared_text_encoder(settings)  # one text model for the search tool and the plugins
    toolkit = make_toolkit(settings, read_only=True, text_encoder=encoder)
    plugins = open_plugins(settings, toolkit.store, text_encoder=encoder)
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
            answer = agent.ask(
                question, stream=args.stream, start=start, end=end, on_token=None if args.json else write
            )
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
    """UsageError when the answer is only a tool's error (`vsalmonn.reports.tool_error`)."""
    from vsalmonn.reports import tool_error

    error = tool_error(answer)
    if error is not None:
        raise UsageError(error)
