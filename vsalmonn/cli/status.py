"""``vsalmonn status``: what the processes ingesting streams last reported, and what each stream stores."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vsalmonn.cli.checks import require_catalog
from vsalmonn.cli.output import format_table
from vsalmonn.settings import Settings

SIZE_COLUMNS = {
    "labels": "labels", "transcript": "transcript", "screen_text": "screen text", "events": "events",
    "thumbnails": "thumbnails",
    "transcript_files": "transcript files", "checkpoints": "checkpoints",
}  # fmt: skip


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    status = commands.add_parser(
        "status",
        parents=[common],
        help="streams, positions, rates, lag, drops, checkpoints and errors",
        description="What the processes ingesting streams last reported, read from the catalog.",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.perception.runners.registry import SOURCE_KINDS
    from vsalmonn.reports import status_entries

    require_catalog(settings)
    with MemoryStore.open(settings.data_dir, settings.store, read_only=True) as store:
        entries = status_entries(store, settings)
    if args.json:
        print(json.dumps({"streams": entries}))
        return 0
    if not entries:
        print(f"no streams in {settings.data_dir}")
        return 0
    rows = []
    for e in entries:
        checkpoint = e.get("checkpoint")
        state = e["state"] + (f" (no report for {_ago(e['age_s'])})" if e.get("stale") else "")
        rows.append(
            [
                e["stream"], SOURCE_KINDS.label(e.get("kind")), state,
                _position(e.get("position"), e.get("duration")),
                f"{e['rate']:.1f}x" if e.get("rate") is not None else "-",
                f"{e['lag_s']:.1f}" if e.get("lag_s") is not None else "-",
                str(e.get("drops", 0)),
                f"#{checkpoint['seq']} {_ago(checkpoint['age_s'])} ago" if checkpoint else "-",
                str(e.get("errors", 0)) + (f": {e['last_error'][:60]}" if e.get("last_error") else ""),
            ]
        )  # fmt: skip
    headers = ["stream", "kind", "state", "position", "rate", "lag (s)", "drops", "checkpoint", "errors"]
    print(format_table(headers, rows))
    _print_sizes(entries)
    return 0


def _print_sizes(entries: list[dict[str, Any]]) -> None:
    rows = [
        [e["stream"]]
        + [f"{e['sizes'][k]['rows']:,} / {_megabytes(e['sizes'][k]['bytes'])}" for k in SIZE_COLUMNS]
        for e in entries
        if "sizes" in e
    ]
    if rows:
        print()
        print("stored (rows or files / size):")
        print(format_table(["stream", *SIZE_COLUMNS.values()], rows))


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _position(position: float | None, duration: float | None) -> str:
    from vsalmonn.tools.timefmt import hms

    if position is None:
        return "-"
    return f"{hms(position)} / {hms(duration)}" if duration else hms(position)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
