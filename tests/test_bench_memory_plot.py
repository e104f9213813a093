"""`vsalmonn bench memory`'s plots and figures, from a small hand-made result (no run needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vsalmonn.cli.bench import load_benchmark

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(mode: str, stream_s: float, base: float, slots: int, tokens: int) -> dict[str, Any]:
    trace = [[i * 1.0, base + (i % 5) * 10.0, stream_s * i / 19] for i in range(20)]
    arrays = slots * 384 * 4 / 1e6
    return {
        "mode": mode,
        "stream_s": stream_s,
        "duration_s": stream_s,
        "budgets": {"visual_slots": 16384 if mode == "bounded" else 1 << 20, "audio_slots": 4096},
        "peak_mb": base + 60.0,
        "sampled_max_mb": base + 40.0,
        "steady_mb": base + 35.0,
        "second_half_max_mb": base + 40.0,
        "second_half_median_mb": base + 20.0,
        "vmhwm_mb": base + 60.0,
        "quarters": [
            {"fraction": f, "t": 1.0, "rss_mb": base, "peak_mb": base, "position": f * stream_s}
            for f in (0.25, 0.5, 0.75, 1.0)
        ],
        "wall_s": stream_s / 8,
        "startup_s": 5.0,
        "speed": 8.0,
        "memory": {
            "tokens_visual": tokens,
            "tokens_audio": 30,
            "slots_visual": slots,
            "slots_audio": 30,
            "budget_visual": 16384,
            "budget_audio": 4096,
            "checkpoint_mb": arrays / 2,
            "arrays_mb": arrays,
            "checkpoints_kept": 3,
        },
        "trace": trace,
        "checkpoint_trace": [[60.0 * k, arrays * k / 3, arrays * k / 6, tokens * k // 3] for k in (1, 2, 3)],
    }


def _result() -> dict[str, Any]:
    runs = [
        _run("bounded", 600.0, 1300.0, 3000, 3000),
        _run("unbounded", 600.0, 1310.0, 3000, 3000),
        _run("bounded", 10800.0, 1320.0, 16384, 54000),
        _run("unbounded", 10800.0, 1400.0, 54000, 54000),
        {"mode": "bounded", "stream_s": 3600.0, "error": "ingest exited with status 1"},  # a failed run
    ]
    return {
        "benchmark": "memory",
        "quick": False,
        "lengths_s": [600.0, 3600.0, 10800.0],
        "modes": {"bounded": {"visual_slots": 16384, "audio_slots": 4096},
                  "unbounded": {"visual_slots": 1 << 20, "audio_slots": 1 << 16}},
        "runs": runs,
    }  # fmt: skip


def test_plot_writes_png_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    memory = load_benchmark("memory")
    paths = memory.plot(_result(), tmp_path / "img")
    assert paths, "no plot written"
    for path in paths:
        assert path.parent == tmp_path / "img"
        assert path.name.startswith("memory") and path.suffix == ".png"
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_targets_use_the_steady_rss_and_the_memory_footprint() -> None:
    memory = load_benchmark("memory")
    result = _result()
    runs = [r for r in result["runs"] if "error" not in r]
    targets = {t["name"]: t for t in memory._targets(runs, (600.0, 3600.0, 10800.0))}
    steady = targets["bounded: steady RSS (p95 of 2nd half) 3 h / 10 min"]
    assert steady["value"] == pytest.approx(1355.0 / 1335.0) and steady["pass"]
    growth = targets["unbounded: memory footprint 3 h / 10 min"]
    assert growth["value"] == pytest.approx(18.0) and growth["pass"]
    assert targets["peak RSS, daemon with one stream (bounded)"]["value"] == pytest.approx(1380.0)


def test_second_half_percentile_ignores_the_start() -> None:
    memory = load_benchmark("memory")
    rss = [(0.0, 5000.0, None), (1.0, 4000.0, 10.0)] + [(2.0 + i, 1000.0 + i, 50.0 + i) for i in range(101)]
    assert memory._second_half(rss, 100.0, 100) == 1100.0
    assert memory._second_half(rss, 100.0, 50) == 1050.0
    assert memory._second_half([], 100.0, 95) is None
