"""``vsalmonn serve``: the committed memory over HTTP, a REST API for other programs (docs/serve.md)."""

from __future__ import annotations

import argparse
import socket
import sys

from vsalmonn.cli.output import PROG, UsageError
from vsalmonn.settings import Settings


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="serve the memory over HTTP (a REST API and MCP at /mcp; loopback unless a token is set)",
        description=(
            "Serve search, transcripts, events and status of the committed memory as a REST API, and the "
            "agent's tools over MCP (streamable HTTP) at /mcp."
        ),
    )
    serve.add_argument("--host", metavar="ADDR", help="address to listen on (default: serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, metavar="N", help="TCP port (default: serve.port, 8765; 0: any)")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.serve.server import make_server

    settings = with_serve_flags(settings, args.host, args.port)
    sock = listen_or_refuse(settings)
    with sock:
        make_server(settings).run(sockets=[sock])
    return 0


def with_serve_flags(settings: Settings, host: str | None, port: int | None) -> Settings:
    """The settings with ``--host``/``--port`` over the ``[serve]`` table; UsageError for a bad value."""
    if port is not None and not 0 <= port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, got {port}")
    if host is not None and not host.strip():
        raise UsageError("--host is empty")
    update = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    return settings.model_copy(update={"serve": settings.serve.model_copy(update=update)})


def listen_or_refuse(settings: Settings) -> socket.socket:
    """The listening socket of ``[serve]``, said on stderr; UsageError for an open address without a token."""
    from vsalmonn.serve.server import ServeError, listen, url_of

    try:
        sock = listen(settings.serve)
    except ServeError as exc:
        raise UsageError(str(exc)) from None
    auth = "token required" if settings.serve.token is not None else "no token"
    url = url_of(sock)
    line = f"{PROG}: serving {settings.data_dir} on {url} (MCP: {url}/mcp; {auth})"
    print(line, file=sys.stderr, flush=True)
    return sock
