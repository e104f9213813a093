"""``vsalmonn daemon``: every [[streams]] table of the settings, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import TYPE_CHECKING

from vsalmonn.app import make_daemon, open_plugins
from vsalmonn.cli.output import PROG, UsageError, quiet_model_loading
from vsalmonn.cli.signals import reload_on_sighup, stop_on_signals
from vsalmonn.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from vsalmonn.perception.config import StreamSpec
    from vsalmonn.serve.server import Background

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    daemon = commands.add_parser(
        "daemon",
        parents=[common],
        help="run every stream of the settings until SIGTERM/SIGINT",
        description=(
            "Run the [[streams]] of the settings, each from its last committed checkpoint, reporting "
            "status into the catalog (see 'vsalmonn status'). SIGTERM or SIGINT checkpoints every stream "
            "and exits 0; SIGHUP reads the settings again and starts added [[streams]], stops removed "
            "ones (checkpointed) and restarts changed ones."
        ),
    )
    daemon.add_argument(
        "--serve", action="store_true", help="serve the REST API too, in this process ([serve] table)"
    )
    daemon.add_argument("--host", metavar="ADDR", help="with --serve: address to listen on")
    daemon.add_argument("--port", type=int, metavar="N", help="with --serve: TCP port (0: any)")
    daemon.set_defaults(handler=run_daemon)


def run_daemon(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.store import MemoryStore

    if not settings.streams:
        raise UsageError("no streams to run: add [[streams]] tables (name, source) to the --config file")
    if not args.serve and (args.host is not None or args.port is not None):
        raise UsageError("--host and --port go with --serve")
    served = _listen(args, settings) if args.serve else None  # refused before any model loads
    if settings.daemon.backend == "ray":
        return _run_on_ray(args, settings, served)
    quiet_model_loading(settings.perception.threads)
    with (
        MemoryStore.open(settings.data_dir, settings.store) as store,
        open_plugins(settings, store) as plugins,
    ):
        try:
            daemon = make_daemon(settings, store, settings.streams, plugins=plugins)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        serving = _serve(*served) if served is not None else None
        try:
            with stop_on_signals() as stop, reload_on_sighup() as again:
                log.warning("daemon: %d stream(s) in %s", len(settings.streams), settings.data_dir)
                code = daemon.run(stop, again, lambda: _streams_again(args, settings))
        finally:
            if serving is not None:
                serving.stop()
    for runner in daemon.runners:
        if runner.stats.state in ("failed", "skipped"):
            print(
                f"{PROG}: stream {runner.spec.name} {runner.stats.state}: {runner.stats.last_error}",
                file=sys.stderr,
            )
    return code


def _streams_again(args: argparse.Namespace, running: Settings) -> list[StreamSpec]:
    """The [[streams]] of the settings read again (SIGHUP: the same --config file and environment).

    Only the streams are reconciled: the encoders, the store and the plugins of a running daemon stay as
    they are, so a change anywhere else is said (one line) and takes effect at the next start. An empty
    list is refused (SettingsError): a daemon stopping every stream on a half-saved file helps nobody.
    """
    settings = load_settings(config=getattr(args, "config", None), data_dir=getattr(args, "data", None))
    if not settings.streams:
        raise SettingsError("no [[streams]] in the settings read again")
    if settings.model_dump(exclude={"streams"}) != running.model_dump(exclude={"streams"}):
        log.warning("SIGHUP: settings other than [[streams]] changed; they take effect at the next start")
    return list(settings.streams)


def _run_on_ray(
    args: argparse.Namespace, settings: Settings, served: tuple[Settings, socket.socket] | None
) -> int:
    """The streams as Ray actors (vsalmonn.ray_backend); this process stays as the driver until they end.

    SIGHUP reads the settings again (the same --config file and environment) and reconciles the streams.
    """
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.ray_backend import RayBackendError, RayDaemon

    def reload() -> Settings:
        return load_settings(config=getattr(args, "config", None), data_dir=getattr(args, "data", None))

    with MemoryStore.open(settings.data_dir, settings.store) as store:
        try:
            daemon = RayDaemon(settings, store=store, reload=reload)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        try:
            daemon.connect()  # before our signal handlers: ray.init sets a SIGTERM handler of its own
        except RayBackendError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 2
        serving = _serve(*served) if served is not None else None
        try:
            with stop_on_signals() as stop, reload_on_sighup() as again:
                log.warning("daemon (ray): %d stream(s) in %s", len(daemon.specs), settings.data_dir)
                code = daemon.run(stop, again)
        finally:
            if serving is not None:
                serving.stop()
    for name, state, error in daemon.outcomes():
        if state in ("failed", "skipped"):
            print(f"{PROG}: stream {name} {state}: {error}", file=sys.stderr)
    return code


def _listen(args: argparse.Namespace, settings: Settings) -> tuple[Settings, socket.socket]:
    from vsalmonn.cli.serve import listen_or_refuse, with_serve_flags

    settings = with_serve_flags(settings, args.host, args.port)
    return settings, listen_or_refuse(settings)


def _serve(settings: Settings, sock: socket.socket) -> Background:
    """The REST API in a thread of this process: it reads the committed checkpoints the daemon writes, as a
    separate `vsalmonn serve` would."""
    from vsalmonn.serve.server import Background, make_server

    return Background(make_server(settings), sock)
