"""Running the REST API: uvicorn on the configured address, refusing an open address without a token."""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING

from vsalmonn.serve.config import ServeConfig, is_loopback
from vsalmonn.settings import Settings

if TYPE_CHECKING:
    import uvicorn
    from langchain_core.language_models import BaseChatModel

    from vsalmonn.plugins.context import Shared
    from vsalmonn.tools.encoding import TextEncoder

log = logging.getLogger(__name__)


def open_bind_refusal(config: ServeConfig) -> str | None:
    """Why `config` must not be served (an address beyond loopback with no token), or None when it may."""
    if config.token is None and not is_loopback(config.host):
        return (
            f"refusing to listen on {config.host} without a token: set serve.token "
            "(VSALMONN_SERVE__TOKEN) or listen on 127.0.0.1"
        )
    if config.token is not None and not config.token.get_secret_value().strip():
        return "serve.token is empty; give a token or leave it unset"
    return None


def make_server(
    settings: Settings,
    *,
    text_encoder: TextEncoder | Shared | None = None,
    chat_model: BaseChatModel | None = None,
    log_level: str = "warning",
) -> uvicorn.Server:
    """A uvicorn server of the app for `settings` (`server.run()` serves until stopped; `run(sockets=...)`
    serves on sockets the caller bound, as the tests do with port 0); `chat_model`: see `create_app`."""
    import uvicorn

    from vsalmonn.serve.api import create_app

    app = create_app(settings, text_encoder=text_encoder, chat_model=chat_model)
    config = uvicorn.Config(
        app, host=settings.serve.host, port=settings.serve.port, log_level=log_level, access_log=False,
        lifespan="on", timeout_graceful_shutdown=5,  # the last resort: feeds end by `stopping` below
    )  # fmt: skip
    server = uvicorn.Server(config)
    # An open event feed ends as soon as the server is asked to stop: uvicorn's shutdown waits for open
    # responses and, after its graceful timeout, cancels them with a traceback in the log. The lifespan's
    # shutdown comes only after that wait, so this flag is the server's own.
    app.state.stopping = lambda: server.should_exit
    return server


class ServeError(ValueError):
    """The server cannot start as configured; the message is one line."""


def listen(config: ServeConfig) -> socket.socket:
    """The socket `config` asks for, bound and listening; ServeError for an open address without a token or
    an address that cannot be bound (in use, not this machine's)."""
    refusal = open_bind_refusal(config)
    if refusal is not None:
        raise ServeError(refusal)
    try:
        return bind(config.host, config.port)
    except OSError as exc:
        raise ServeError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Background:
    """A server run in a thread beside other work (`vsalmonn daemon --serve`); `stop()` ends it.

    uvicorn installs no signal handlers off the main thread, so the process's own handling of SIGTERM and
    SIGINT (the daemon's checkpoint-and-exit) stays in charge.
    """

    def __init__(self, server: uvicorn.Server, sock: socket.socket) -> None:

        self._server, self._sock = server, sock
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="serve", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port` (0: any free port), IPv6 when the host is an IPv6 address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections whose socket says it is TCP, and
    # without it every response waits ~40 ms (Nagle against the client's delayed ACK) for its second write
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


__all__ = ["Background", "ServeError", "bind", "listen", "make_server", "open_bind_refusal", "url_of"]
