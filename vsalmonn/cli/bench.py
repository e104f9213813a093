"""``vsalmonn bench NAME``: one benchmark of the checkout's bench/ folder, as a table or JSON."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from types import ModuleType

from vsalmonn.cli.output import UsageError
from vsalmonn.settings import Settings

log = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
BENCH_PACKAGE = "vsalmonn_bench"
"""Name under which bench/ is imported: never plain ``bench``, which could shadow a user's own module."""


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="run a benchmark of bench/ (needs a source checkout)",
        description="Run bench/NAME.py and print its table, or one JSON object with --json.",
    )
    names = available_benchmarks()
    bench.add_argument("name", metavar="NAME", help=f"one of: {', '.join(names) or 'none here'}")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    bench.add_argument(
        "--plot",
        metavar="DIR",
        type=Path,
        help="also write the benchmark's plots (PNG, needs the 'bench' extra) into DIR",
    )
    bench.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    module = load_benchmark(args.name)
    plot = getattr(module, "plot", None)
    if args.plot is not None and not callable(plot):
        raise UsageError(f"benchmark {args.name!r} makes no plots")
    result = module.run(quick=args.quick)
    print(json.dumps(result) if args.json else module.render(result))
    if args.plot is not None:
        args.plot.mkdir(parents=True, exist_ok=True)
        for path in plot(result, args.plot):
            log.info("plot written: %s", path)
            print(f"plot: {path}", file=sys.stderr)
    return 0


def available_benchmarks(bench_dir: Path = BENCH_DIR) -> list[str]:
    """Names of bench/*.py except helpers (a leading underscore); empty outside a source checkout."""
    return sorted(p.stem for p in bench_dir.glob("*.py") if not p.name.startswith("_"))


def load_benchmark(name: str, bench_dir: Path = BENCH_DIR) -> ModuleType:
    """Import bench/NAME.py as ``vsalmonn_bench.NAME``; UsageError when absent or not a benchmark.

    bench/ lives beside the package in a source checkout and is not installed: an installed wheel has none.
    """
    if not (bench_dir / "__init__.py").is_file():
        raise UsageError(f"benchmarks need a source checkout; no bench/ folder at {bench_dir}")
    names = available_benchmarks(bench_dir)
    if name not in names:
        raise UsageError(f"unknown benchmark {name!r}; available: {', '.join(names) or 'none'}")
    _import_bench_package(bench_dir)
    module = importlib.import_module(f"{BENCH_PACKAGE}.{name}")
    if not (callable(getattr(module, "run", None)) and callable(getattr(module, "render", None))):
        raise UsageError(f"bench/{name}.py defines no run(quick) and render(result)")
    return module


def _import_bench_package(bench_dir: Path) -> None:
    """Register bench/ as package ``vsalmonn_bench``: its scripts then share helpers by relative import."""
    if BENCH_PACKAGE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        BENCH_PACKAGE, bench_dir / "__init__.py", submodule_search_locations=[str(bench_dir)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[BENCH_PACKAGE] = package
    spec.loader.exec_module(package)
