"""Refusals several commands make before they read a store: a data directory with no catalog must not be
taken for an empty memory, nor created by a mistyped --data; a time window that cannot be read."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from vsalmonn.cli.output import UsageError
from vsalmonn.settings import Settings

if TYPE_CHECKING:
    from vsalmonn.tools.wallclock import TimeArg


def require_catalog(settings: Settings) -> None:
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
            settings.data_dir, settings.store.catalog_target(), busy_timeout_s=settings.store.busy_timeout_s,
            create=False, read_only=True,
        ).close()  # fmt: skip
    except CatalogError as exc:
        if (settings.data_dir / CATALOG_FILE).exists() or settings.store.catalog_url is not None:
            raise UsageError(f"{exc} (see 'vsalmonn store check')") from None
        raise UsageError(f"{exc} (nothing has been ingested into {settings.data_dir})") from None


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """``--start``, ``--end`` and ``--since``: the moments a command looks at (`tools.wallclock` forms)."""
    parser.add_argument("--start", metavar="TIME", help="only moments that end at or after TIME")
    parser.add_argument("--end", metavar="TIME", help="only moments that begin at or before TIME")
    parser.add_argument(
        "--since", metavar="SPAN|TIME", help="only moments since a span back from now (1h) or TIME"
    )


def window_arguments(args: argparse.Namespace) -> tuple[TimeArg | None, TimeArg | None]:
    """`--start`/`--since` and `--end` as the view takes them (`tools.wallclock`); UsageError, one line."""
    from vsalmonn.tools.wallclock import ordered, parse_since, parse_time

    if args.since is not None and args.start is not None:
        raise UsageError("give --since or --start, not both")
    try:
        start = parse_since(args.since) if args.since is not None else None
        if args.start is not None:
            start = parse_time(args.start, "--start")
        end = parse_time(args.end, "--end") if args.end is not None else None
        ordered(start, end)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return start, end
