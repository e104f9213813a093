"""``vsalmonn mcp``: the memory's tools and transcripts for an MCP client over stdio (docs/serve.md, "MCP").

A desktop client starts this command and talks JSON-RPC on its stdin and stdout; so nothing else may reach
stdout: logging goes to stderr, and while serving the SDK points stdout's descriptor at stderr too.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from vsalmonn.cli.checks import require_catalog
from vsalmonn.cli.output import quiet_model_loading
from vsalmonn.settings import Settings


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    mcp = commands.add_parser(
        "mcp",
        parents=[common],
        help="serve the memory's tools to an MCP client over stdio (for desktop assistants)",
        description=(
            "Serve the agent's tools (search, transcripts, moments, streams, events, plugin tools) and each "
            "stream's transcript as a resource over the Model Context Protocol on stdin/stdout. Read-only."
        ),
    )
    mcp.set_defaults(handler=run_mcp)


def run_mcp(args: argparse.Namespace, settings: Settings) -> int:
    import anyio

    from vsalmonn.app import make_view, shared_text_encoder
    from vsalmonn.serve.mcp import MemoryTools, build_server, serve_stdio

    require_catalog(settings)  # a mistyped --data: one line and exit 2, before a client waits on us
    with contextlib.redirect_stdout(sys.stderr):  # whatever loading prints must not precede the protocol
        quiet_model_loading(settings.perception.threads)
        encoder = shared_text_encoder(settings)  # one text model for the search tool and the plugins
        view = make_view(settings, read_only=True, text_encoder=encoder)
        memory = MemoryTools(settings, lambda: view, encoder)
        try:
            memory.tools()  # plugins open here, on the main thread, as `vsalmonn ask` opens them
        except BaseException:
            view.close()
            raise
    try:
        anyio.run(serve_stdio, build_server(memory))
    finally:
        memory.close()
        view.close()
    return 0
