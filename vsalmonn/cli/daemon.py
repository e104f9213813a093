"""``vsalmonn daemon``: every [[streams]] table of the settings, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import sys

from vsalmonn.app import make_daemon, open_plugins
from vsalmonn.cli.output import PROG, UsageError, quiet_model_loading
from vsalmonn.cli.signals import stop_on_signals
from vsalmonn.settings import Settings

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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
    daemon.set_defaults(handler=run_daemon)


def run_daemon(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.store import MemoryStore

    if not settings.streams:
        raise UsageError("no streams to run: add [[streams]] tables (name, source) to the --config file")
    quiet_model_loading(settings.perception.threads)
    with (
        MemoryStore.open(settings.data_dir, settings.store) as store,
        open_plugins(settings, store) as plugins,
    ):
        try:
            daemon = make_daemon(settings, store, settings.streams, plugins=plugins)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        with stop_on_signals() as stop:
            log.warning("daemon: %d stream(s) in %s", len(settings.streams), settings.data_dir)
            code = daemon.run(stop)
    for runner in daemon.runners:
        if runner.stats.state in ("failed", "skipped"):
            print(
                f"{PROG}: stream {runner.spec.name} {runner.stats.state}: {runner.stats.last_error}",
                file=sys.stderr,
            )
    return code
