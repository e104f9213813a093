"""``vsalmonn store check|rebuild|gc``: store against disk, lost catalog rebuilt, garbage deleted."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from vsalmonn.cli.output import UsageError
from vsalmonn.settings import Settings

if TYPE_CHECKING:
    from vsalmonn.memory_store.objects import GroupStore


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    store = commands.add_parser(
        "store",
        parents=[common],
        help="check the store against its disk, rebuild a lost catalog, or delete groups without a row",
        description=(
            "check: verify every checkpoint group of the store (on disk, or in S3 with [store] "
            "checkpoints_url) and compare with the catalog (writes nothing; exit 1 when something is wrong). "
            "rebuild: when the catalog is missing, empty or unreadable, move it aside and catalogue the "
            "checkpoint groups that verify again (transcript rows, labels and events are not in the groups "
            "and cannot come back)."
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
    gc = actions.add_parser(
        "gc",
        parents=[common],
        help="delete checkpoint groups that no catalog row names (abandoned writes), locally or in S3",
        description=(
            "A checkpoint write that failed or was killed leaves a group without a row: garbage, which the "
            "stream's next writer removes when it starts. This removes it now, for every stream, leaving "
            "alone streams whose writer runs on this machine and groups younger than --min-age (a writer on "
            "another node may still be writing them)."
        ),
    )
    gc.add_argument(
        "--min-age",
        type=float,
        default=None,
        metavar="SECONDS",
        help="only groups whose newest part is at least this old (default: [store] gc_grace_s)",
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    gc.set_defaults(handler=run_gc)


def _groups(settings: Settings) -> GroupStore:
    """Where the settings keep checkpoint groups (a folder, or an S3 prefix), reachable: the refusal of a dead
    object store is one line (exit 2) before anything is read."""
    from vsalmonn.memory_store.objects import open_groups

    groups = open_groups(settings.store, settings.data_dir)
    groups.probe()
    return groups


def run_gc(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.store import MemoryStore

    if args.min_age is not None and args.min_age < 0:
        raise UsageError(f"--min-age {args.min_age} is negative")
    min_age = settings.store.gc_grace_s if args.min_age is None else args.min_age
    with MemoryStore.open(settings.data_dir, settings.store) as store:
        removed = store.collect_garbage(min_age_s=min_age, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for location in removed:
        print(f"{verb} {location}")
    print(f"{verb} {len(removed)} checkpoint group(s) without a catalog row from {store.groups.url}")
    return 0


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.repair import check_store

    if not settings.data_dir.is_dir() and settings.store.catalog_url is None:
        raise UsageError(f"no data directory {settings.data_dir}")
    report = check_store(
        settings.data_dir, settings.store.catalog_target(), _groups(settings), settings.store.gc_grace_s
    )
    healthy = report.catalog_ok and not report.damaged and not report.missing and not report.uncatalogued
    if args.json:
        print(
            json.dumps(
                {
                    "catalog": report.catalog, "ok": healthy,
                    "groups": [
                        {"stream_id": g.stream_id, "path": g.where, "seq": g.seq, "ok": g.ok,
                         "reason": g.reason, "catalogued": g.catalogued}
                        for g in report.groups
                    ],
                    "missing": report.missing, "in_flight": report.in_flight, "store": report.where,
                }
            )
        )  # fmt: skip
    else:
        print("\n".join(report.lines()))
    return 0 if healthy else 1


def run_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.memory_store.catalog import CatalogError
    from vsalmonn.memory_store.repair import rebuild_catalog

    groups = _groups(settings)
    try:
        result = rebuild_catalog(settings.data_dir, settings.store.catalog_target(), groups)
    except CatalogError as exc:
        raise UsageError(str(exc)) from None
    print("\n".join(result.lines()))
    return 0
