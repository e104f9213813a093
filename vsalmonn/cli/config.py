"""`vsalmonn config show`: the effective settings, one row per key, and where each value came from.

A deployment that sets some keys in its TOML file, some in the environment of a service unit and one by a flag
has no other way to see which of them won; the answer is printed exactly as `load_settings` composed it.
"""

from __future__ import annotations

import argparse
import json
import sys

from vsalmonn.cli.output import format_table
from vsalmonn.settings import Settings, describe_settings


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    config = commands.add_parser(
        "config", parents=[common], help="the effective settings and where each came from"
    )
    actions = config.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        parents=[common],
        help="every setting with its value and source (default, file, env, flag)",
        description="Every setting with its effective value and its source: default, derived, the TOML "
        "file, a VSALMONN_* environment variable or the --data flag. Secrets print as **********.",
    )
    show.add_argument("--json", action="store_true", help="a JSON list of {key, value, source}")
    show.set_defaults(handler=run_show)


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    rows = describe_settings(getattr(args, "config", None), getattr(args, "data", None))
    if args.json:
        json.dump([row.model_dump(mode="json") for row in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    table = [[row.key, json.dumps(row.value, ensure_ascii=False), row.source] for row in rows]
    print(format_table(["key", "value", "source"], table))
    return 0
