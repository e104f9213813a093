"""``vsalmonn store check|rebuild``: the store against its disk, and a lost catalog rebuilt."""

from __future__ import annotations

import argparse
import json

from vsalmonn.cli.output import UsageError
from vsalmonn.settings import Settings


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    store = commands.add_parser(
        "store",
        parents=[common],
        help="check the store against its disk, or rebuild a lost catalog from the checkpoint groups",
        description=(
            "check: verify every checkpoint group on disk and compare with the catalog (writes nothing; "
            "exit 1 when something is wrong). rebuild: when the catalog is missing, empty or unreadable, "
            "move it aside and catalogue the checkpoint groups that verify again (transcript rows, labels "
            "and events are not in the groups and cannot come back)."
        ),
    )
    actions = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", parents=[common], help="verify groups and catalog; writes nothing")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(handler=run_check)
    rebuild = actions.add_parser(
        "rebuild", parents=[common], help="re-catalogue checkpoint groups after the catalog was lost"
    )
    rebuild.set_defaults(handler=run_rebuild)


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.repair import check_store

    if not settings.data_dir.is_dir():
        raise UsageError(f"no data directory {settings.data_dir}")
    report = check_store(settings.data_dir, settings.store.catalog_target())
    healthy = report.catalog_ok and not report.damaged and not report.missing and not report.uncatalogued
    if args.json:
        print(
            json.dumps(
                {
                    "catalog": report.catalog, "ok": healthy,
                    "groups": [
                        {"stream_id": g.stream_id, "path": str(g.path), "seq": g.seq, "ok": g.ok,
                         "reason": g.reason}
                        for g in report.groups
                    ],
                    "missing": report.missing,
                }
            )
        )  # fmt: skip
    else:
        print("\n".join(report.lines()))
    return 0 if healthy else 1


def run_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.catalog import CatalogError
    from vsalmonn.memory_store.repair import rebuild_catalog

    try:
        result = rebuild_catalog(settings.data_dir, settings.store.catalog_target())
    except CatalogError as exc:
        raise UsageError(str(exc)) from None
    print("\n".join(result.lines()))
    return 0
