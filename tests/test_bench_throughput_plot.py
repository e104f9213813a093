"""`vsalmonn bench throughput --plot`: the figure from a small hand-made result (no run needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vsalmonn.cli.bench import load_benchmark

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_draws_every_stage_and_the_breakdown(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    throughput = load_benchmark("throughput")
    detail = {"speech_s": 2.0, "vision_s": 3.0, "text_s": 0.1, "rest_s": 0.5}
    stages = [
        {
            "key": f"{stage}/{media}",
            "label": label,
            "media": media,
            "stream_s": 60.0,
            "speed": 20.0,
            "speed_min": 18.0,
            "speed_max": 22.0,
            "detail": detail,
        }
        for stage, media, label in throughput.STAGES
    ]
    result = {
        "quick": True,
        "stages": stages,
        "targets": [{"target": 10.0}, {"target": 4.0}],
        "environment": {"cores": 2, "threads": 2},
        "loadavg": {"start": [0.5, 0.4, 0.3]},
    }
    paths = throughput.plot(result, tmp_path)
    assert [p.name for p in paths] == ["throughput.png"]
    assert paths[0].read_bytes()[:8] == PNG_MAGIC and paths[0].stat().st_size > 10_000
