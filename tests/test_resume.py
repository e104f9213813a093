"""Resume after SIGKILL at random instants equals an uninterrupted run, in every container (issue 14).

The ingest runs as the user runs it (`vsalmonn ingest` in its own process), is killed with SIGKILL at instants
drawn from a seeded RNG after each of its first checkpoints, and is started again until it completes. The
frame labels and transcript rows must then be exactly those of an uninterrupted run of the same file: nothing
lost between the checkpoint's offset and a distant keyframe (MPEG-TS seeks by bytes), nothing written twice.
Slow (about a minute per container): `pytest -m slow tests/test_resume.py`.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from vsalmonn.memory_store.store import MemoryStore

from .test_daemon import cli, newest_offset
from .test_ingest import labels_and_lines, needs_media, speech_clip

CONFIG = (
    '[perception]\nlanguage = "en"\n[memory]\nvisual_slots = 1024\naudio_slots = 256\n'
    "[daemon]\nwindow_s = 10\ncheckpoint_every_s = 10\nstatus_every_s = 0.5\n"
)


def ingest(data: Path, clip: Path, config: Path, cwd: Path) -> None:
    run = cli("--config", str(config), "--data", str(data), "ingest", str(clip), "--stream", "talk", cwd=cwd)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err


@needs_media
@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".ts", ".mkv", ".mp4"])
def test_sigkill_at_random_instants_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, suffix: str
) -> None:
    clip, _ = speech_clip(tmp_path / f"talk{suffix}", gop=175)  # keyframes at 0 and 35 s only
    config = tmp_path / "v.toml"
    config.write_text(CONFIG)
    whole = tmp_path / "whole"
    ingest(whole, clip, config, tmp_path)
    with MemoryStore(whole) as store:
        expected = labels_and_lines(store, "talk")
    assert len(expected[0]) == 40

    rng = random.Random(f"resume{suffix}")
    data = tmp_path / "killed"
    kills = 0
    for reached in (10.0, 20.0, 30.0):
        run = cli(
            "--config",
            str(config),
            "--data",
            str(data),
            "ingest",
            str(clip),
            "--stream",
            "talk",
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 180
            while newest_offset(data, "talk") < reached and run.poll() is None:
                assert time.monotonic() < deadline, f"no checkpoint past {reached} s"
                time.sleep(0.05)
            time.sleep(
                rng.uniform(0.0, 1.5)
            )  # somewhere in the next window: encoding, writing, checkpointing
            if run.poll() is None:
                run.send_signal(signal.SIGKILL)
                kills += 1
        finally:
            run.communicate(timeout=30)
    assert kills >= 2, "the runs finished before they could be killed"
    ingest(data, clip, config, tmp_path)
    with MemoryStore(data) as store:
        assert store.checkpoints("talk")[0].source_state == {"done": True}
        assert labels_and_lines(store, "talk") == expected
