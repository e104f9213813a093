"""``vsalmonn plugins list``: every plugin, installed or built in, with its state and hooks."""

from __future__ import annotations

import argparse
import json

from vsalmonn import __version__
from vsalmonn.app import BUILTIN_PLUGINS, open_plugins
from vsalmonn.cli.output import format_table
from vsalmonn.settings import Settings


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    plugins = commands.add_parser(
        "plugins",
        parents=[common],
        help="the plugins: installed, built in, loaded or not",
        description="List the plugins: entry points of group vsalmonn.plugins and the built-in ones.",
    )
    actions = plugins.add_subparsers(dest="plugins_command", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list", parents=[common], help="name, version, state and hooks of every plugin"
    )
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(handler=run_list)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_plugins(settings, None) as plugins:
        infos = [p.as_dict() for p in plugins.plugins()]
    known = {i["name"] for i in infos}
    for name in BUILTIN_PLUGINS:  # built-ins not enabled are not candidates: list them as off
        if name not in known:
            infos.append(
                {"name": name, "version": __version__, "dist": "vsalmonn", "state": "off", "hooks": []}
            )
    infos.sort(key=lambda i: i["name"])
    if args.json:
        print(json.dumps({"plugins": infos}, default=str))
        return 0
    if not infos:
        print("no plugins")
        return 0
    rows = [
        [i["name"], str(i.get("version") or "-"), i["state"], ", ".join(i.get("hooks") or []) or "-"]
        for i in infos
    ]
    print(format_table(["plugin", "version", "state", "hooks"], rows))
    return 0
