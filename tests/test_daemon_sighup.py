"""SIGHUP to a `vsalmonn daemon` of the local backend: the settings are read again and the running set
reconciled with their [[streams]] (a removed stream stopped with its checkpoint committed, an added one
started, an unchanged one left running), and a bad edit is one line in the log with nothing changed.

A real daemon process on real clips; video only, with the speech encoder off, so that the daemon loads in
seconds (what is reconciled does not depend on what is encoded). About 20 s on 2 busy cores, so `slow`; the
default suite reconciles a daemon in-process (tests/test_daemon.py, "reconciling the running set").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.daemon import read_status
from vsalmonn.settings import DATA_ENV

from . import media
from .test_daemon import until


def _write(config: Path, data: Path, streams: dict[str, Path]) -> None:
    lines = [
        f'data_dir = "{data}"',
        "[perception]",
        'speech_encoder = "none"',
        "[memory]",
        "visual_slots = 1024",
        "audio_slots = 64",
        "[daemon]",
        "window_s = 4",
        "checkpoint_every_s = 1000",  # a file's only checkpoints: the one on its stop, the one at its end
        "status_every_s = 0.3",
        "poll_s = 0.3",
        "settle_s = 0.3",
    ]
    for name, source in streams.items():
        lines += ["[[streams]]", f'name = "{name}"', f'source = "{source}"']
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _status(data: Path) -> dict[str, dict[str, object]]:
    if not (data / "catalog.sqlite").exists():
        return {}
    with MemoryStore.open(data, read_only=True) as store:
        return {e["stream"]: e for e in read_status(store)}


def _done_files(data: Path, stream: str) -> bool:
    with MemoryStore.open(data, read_only=True) as store:
        newest = store.checkpoints(stream)
    return bool(newest) and bool((newest[0].source_state or {}).get("file_done"))


@pytest.mark.slow  # ~20 s: a daemon process loading its encoders
def test_sighup_reconciles_the_local_daemon_s_streams(tmp_path: Path) -> None:
    film = media.write_media(tmp_path / "film.mp4", video_times=media.uniform_times(600, 1), rate=1)
    folders = {name: tmp_path / name for name in ("w2", "w3")}
    for i, folder in enumerate(folders.values()):
        folder.mkdir()
        media.write_media(folder / "a.mp4", video_times=media.uniform_times(6 + i, 2), rate=2)
    data, config = tmp_path / "data", tmp_path / "vsalmonn.toml"
    _write(config, data, {"film": film, "w2": folders["w2"]})
    log_path = tmp_path / "daemon.log"
    log = log_path.open("w")
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "vsalmonn", "--config", str(config), "daemon"], cwd=tmp_path, env=env,
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def logged(text: str) -> bool:
        return text in log_path.read_text()

    try:
        until(
            lambda: (
                {s: e.get("state") for s, e in _status(data).items()} == {"film": "running", "w2": "running"}
                and (_status(data)["film"].get("position") or 0) > 5
                and _done_files(data, "w2")
            ),
            120,
            "film mid-file and w2's file ingested",
            every=0.3,
        )
        # the status row is written every status_every_s, so it may trail the checkpoint by one write
        until(lambda: _status(data)["w2"]["frames"] == 6, 10, "w2's status at 6 frames (6 s at 1 FPS)")
        frames_w2 = _status(data)["w2"]["frames"]

        config.write_text("[[streams]\nname = broken\n", encoding="utf-8")  # a bad edit: nothing changes
        daemon.send_signal(signal.SIGHUP)
        until(lambda: logged("settings not reloaded"), 30, "the bad edit refused")
        assert {s: e.get("state") for s, e in _status(data).items()} == {"film": "running", "w2": "running"}
        _write(config, data, {"w2": folders["w2"], "w3": folders["w3"]})
        daemon.send_signal(signal.SIGHUP)
        until(
            lambda: (
                {s: e.get("state") for s, e in _status(data).items()}
                == {"film": "stopped", "w2": "running", "w3": "running"}
                and _done_files(data, "w3")
            ),
            120,
            "film stopped, w3 started and its file ingested",
            every=0.3,
        )
        until(lambda: _status(data)["w3"]["frames"] == 7, 10, "w3's status at 7 frames (7 s at 1 FPS)")
        status = _status(data)
        assert status["w2"]["frames"] == frames_w2, "w2 ran on: the same runner, not a restarted one"
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        log.close()
    err = log_path.read_text()
    assert daemon.returncode == 0, err[-3000:]
    with MemoryStore.open(data, read_only=True) as store:
        (last,) = store.checkpoints("film")[:1]
        assert 5.0 <= (last.source_offset or 0) < 600, "film committed where it was stopped"
    assert {s: e["state"] for s, e in _status(data).items()} == dict.fromkeys(("film", "w2", "w3"), "stopped")
    refused = [line for line in err.splitlines() if "settings not reloaded" in line]
    assert len(refused) == 1 and refused[0].startswith("ERROR ") and "streams unchanged" in refused[0], err
    assert "Traceback" not in err
    assert "reconcile: stopping film\n" in err and "reconcile: 2 stream(s), 1 started, 1 stopped" in err, err
