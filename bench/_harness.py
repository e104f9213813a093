"""Helpers shared by the benchmarks: timing, the machine's description, targets and tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from vsalmonn.cli import format_table


def environment() -> dict[str, Any]:
    """What the figures depend on besides the code; recorded with every result so numbers can be compared."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux); platform.processor() elsewhere, which is often empty."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls.

    The warm-up absorbs one-off costs (allocator growth, lazy initialisation, first-touch page faults) that
    a long-running stream pays once, not per call.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def median(values: list[float]) -> float:
    """The median: unlike the mean, one call slowed by another process does not move it."""
    return statistics.median(values)


def target(name: str, value: float, bound: float, unit: str, at_least: bool) -> dict[str, Any]:
    """One target row: the measured value, its bound and whether it holds."""
    ok = value >= bound if at_least else value <= bound
    return {"name": name, "value": value, "target": bound, "unit": unit, "at_least": at_least, "pass": ok}


def render_environment(env: dict[str, Any]) -> str:
    return (
        f"torch {env['torch']}, {env['threads']} threads, {env['cores']} cores, {env['cpu']}, "
        f"Python {env['python']}"
    )


def render_targets(targets: list[dict[str, Any]]) -> str:
    rows = [
        [
            t["name"],
            f"{t['value']:,.0f}" if abs(t["value"]) >= 1000 else f"{t['value']:.2f}",
            f"{'≥' if t['at_least'] else '≤'} {t['target']:,g} {t['unit']}",
            "pass" if t["pass"] else "FAIL",
        ]
        for t in targets
    ]
    return format_table(["target", "measured", "bound", "result"], rows)
