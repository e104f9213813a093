"""``vsalmonn serve``: the committed memory over HTTP, a REST API for other programs (docs/serve.md)."""

from __future__ import annotations

import argparse
import sys

from vsalmonn.cli.output import PROG, UsageError
from vsalmonn.settings import Settings


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="serve the memory over HTTP (a REST API; loopback unless a token is set)",
        description="Serve search, transcripts, events and status of the committed memory as a REST API.",
    )
    serve.add_argument("--host", metavar="ADDR", help="address to listen on (default: serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, metavar="N", help="TCP port (default: serve.port, 8765; 0: any)")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.serve.server import bind, make_server, open_bind_refusal

    update = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, got {args.port}")
    if args.host is not None and not args.host.strip():
        raise UsageError("--host is empty")
    settings = settings.model_copy(update={"serve": settings.serve.model_copy(update=update)})
    refusal = open_bind_refusal(settings.serve)
    if refusal is not None:
        raise UsageError(refusal)
    try:
        sock = bind(settings.serve.host, settings.serve.port)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {settings.serve.host}:{settings.serve.port}: {exc.strerror or exc}"
        ) from None
    host, port = sock.getsockname()[:2]
    auth = "token required" if settings.serve.token is not None else "no token"
    where = f"http://{host}:{port}"
    print(f"{PROG}: serving {settings.data_dir} on {where} ({auth})", file=sys.stderr, flush=True)
    with sock:
        make_server(settings).run(sockets=[sock])
    return 0
