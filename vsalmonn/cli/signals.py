"""Stopping a long-running command (ingest of a live source, the daemon) cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
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


@contextlib.contextmanager
def reload_on_sighup() -> Iterator[threading.Event]:
    """An event set by SIGHUP while the block runs: the daemon then reads its settings again."""
    reload = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.warning("SIGHUP received: reading the settings again")
        reload.set()

    previous = signal.signal(signal.SIGHUP, handler)
    try:
        yield reload
    finally:
        signal.signal(signal.SIGHUP, previous)
