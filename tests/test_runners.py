"""Source kinds as registered runners: one registry for the built-in kinds and the plugins', and each kind's
own recognition and progress text; a plugin's source kind run end to end through the daemon."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import DaemonConfig, PerceptionConfig, StreamSpec
from vsalmonn.perception.daemon import Daemon, read_status
from vsalmonn.perception.media import Frame
from vsalmonn.perception.pipeline import Encoders, StreamStats
from vsalmonn.perception.runners.plugin import PluginKind, PluginSource
from vsalmonn.perception.runners.registry import SOURCE_KINDS, builtin_kinds
from vsalmonn.perception.sources import classify
from vsalmonn.plugins import PluginConfig, PluginManager, hookimpl

PERCEPTION = PerceptionConfig(language="en", speech_encoder="none")
DAEMON = DaemonConfig(window_s=4, live_window_s=4, checkpoint_every_s=4, status_every_s=0.3)
MEMORY = MemoryConfig(visual_slots=256, audio_slots=64)


def test_the_registry_tells_every_builtin_kind_apart(tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "clip.mp4"): "file",
        str(tmp_path / "missing.mp4"): "file",
        "file:///tmp/clip.mp4": "file",
        str(tmp_path): "folder",
        "rtsp://cam/stream": "url",
        "https://host/live.m3u8": "url",
        "/dev/video0": "device",
        "v4l2:/dev/video2": "device",
        "/dev/videos": "file",
    }
    for source, kind in cases.items():
        assert SOURCE_KINDS.classify(source).name == kind, source
        assert classify(source) == kind, source  # the old entry point asks the same registry
    assert SOURCE_KINDS.resolve(StreamSpec(name="x", source=str(tmp_path), kind="file")).name == "file"
    assert [k.name for k in SOURCE_KINDS] == ["device", "url", "folder", "file"]
    with pytest.raises(KeyError, match="known: device, url, folder, file"):
        SOURCE_KINDS.get("carrier-pigeon")


def test_a_plugins_scheme_goes_through_the_same_lookup_and_wins() -> None:
    kinds = builtin_kinds()
    kinds.register("mqtt", lambda source, config, data_dir: iter(()))
    kind = kinds.resolve(StreamSpec(name="m", source="mqtt://broker/topic", kind="url"))
    assert isinstance(kind, PluginKind) and kind.name == "mqtt" and kind.catalog_kind == "url"
    assert kinds.classify("mqtt://broker/topic") is kind and kinds.get("mqtt") is kind
    assert kinds.resolve(StreamSpec(name="r", source="rtsp://cam/x")).name == "url"
    assert kinds.label("mqtt") == "mqtt (plugin)" and kinds.label("folder") == "folder"
    assert kinds.label(None) == "-" and kinds.label("gone") == "gone"
    # each daemon has its own registry: the built-in one never learns a plugin's scheme
    assert SOURCE_KINDS.classify("mqtt://broker/topic").name == "url"


def test_each_kind_writes_its_own_progress_line(tmp_path: Path) -> None:
    stats = StreamStats(source="clip.mp4", state="running", duration=120.0, lag_s=0.44, drops=3)
    stats.advance(0.0, now=0.0)
    stats.advance(10.0, now=2.0)  # 5x real time
    stats.detail["file"] = "cam-0002.mp4"
    file, folder = SOURCE_KINDS.get("file"), SOURCE_KINDS.get("folder")
    url, device = SOURCE_KINDS.get("url"), SOURCE_KINDS.get("device")
    assert file.progress_total(stats) == 120.0 and file.progress_title(stats) == "ingesting clip.mp4"
    assert file.describe_progress(stats) == "5.0x real time"
    assert folder.progress_total(stats) is None and folder.progress_title(stats) == "clip.mp4"
    assert folder.describe_progress(stats) == "5.0x real time, cam-0002.mp4"
    for live in (url, device):
        assert live.live and live.progress_total(stats) is None
        assert live.describe_progress(stats) == "5.0x real time, running, lag 0.4 s, 3 dropped"
    assert folder.watches and not file.watches and not url.watches
    assert file.default_stream_name(str(tmp_path / "a.b.mp4")) == "a.b"
    assert folder.default_stream_name(str(tmp_path / "cams") + "/") == "cams"
    assert url.default_stream_name("rtsp://cam/x") is None


class _Items:
    """A plugin's source object: frames one second apart, and a close() that breaks."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = 0

    def __iter__(self) -> Iterator[Frame]:
        image = np.full((72, 96, 3), 90, np.uint8)
        for i in range(self.n):
            yield Frame(float(i), image.copy())

    def close(self) -> None:
        self.closed += 1
        raise RuntimeError("broker\nwent away")


def test_a_plugin_sources_faulty_close_is_logged_with_stream_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    items = _Items(0)
    source = PluginSource(items, stream="cam-7")
    with caplog.at_level(logging.WARNING, logger="vsalmonn.perception.runners.plugin"):
        source.close()
    assert items.closed == 1
    [record] = [r for r in caplog.records if r.name == "vsalmonn.perception.runners.plugin"]
    assert record.levelno == logging.WARNING
    assert (
        record.getMessage()
        == "stream cam-7: the plugin's source failed to close: RuntimeError: broker went away"
    )


class _SynthPlugin:
    def __init__(self) -> None:
        self.made: list[_Items] = []
        self.opened: list[tuple[str, Any]] = []

    @hookimpl
    def register_sources(self, register: Any) -> None:
        register("synth", self.factory)

    def factory(self, source: str, config: PerceptionConfig, data_dir: Path) -> _Items:
        self.opened.append((source, data_dir))
        self.made.append(_Items(6))
        return self.made[-1]


def test_a_plugins_source_kind_runs_through_the_daemon_and_its_close_fault_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    plugin = _SynthPlugin()
    with MemoryStore(data) as store:
        plugins = PluginManager(PluginConfig(), store=store, data_dir=data)
        plugins.register(plugin, "synth")
        encoders = Encoders.from_config(PERCEPTION, tmp_path / "models")
        daemon = Daemon(
            [StreamSpec(name="cam", source="synth://lobby")],
            store=store, perception=PERCEPTION, memory=MEMORY, config=DAEMON, encoders=encoders,
            plugins=plugins,
        )  # fmt: skip
        assert daemon.kinds.get("synth").label == "synth (plugin)"
        with caplog.at_level(logging.WARNING):
            assert daemon.run() == 0
        [runner] = daemon.runners
        assert runner.source_kind.name == "synth" and runner.stats.state == "done"
        assert plugin.opened == [("synth://lobby", data)] and plugin.made[0].closed == 1
        [status] = read_status(store)
        assert status["kind"] == "url" and status["frames"] == 6
        assert status["checkpoint"] is not None, (
            "what the plugin's source gave is committed despite its close"
        )
    faults = [r.getMessage() for r in caplog.records if "failed to close" in r.getMessage()]
    assert faults == ["stream cam: the plugin's source failed to close: RuntimeError: broker went away"]


def test_a_kind_checks_its_source_before_any_encoder_loads(tmp_path: Path) -> None:
    from vsalmonn.perception.media import DecodeError

    file, folder = SOURCE_KINDS.get("file"), SOURCE_KINDS.get("folder")
    with pytest.raises(DecodeError, match="a character device, not a media file"):
        file.check("/dev/zero")
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"line {i}: these are notes, not a video\n" for i in range(400)))
    with pytest.raises(DecodeError, match="a text file, not a media file"):
        file.check(str(notes))
    folder.check(str(tmp_path))  # nothing to check before a folder's files arrive
    with MemoryStore(tmp_path / "data") as store:
        assert file.check_resume(store, "new", str(notes)) is None, "nothing committed yet"
        assert folder.check_resume(store, "new", str(tmp_path)) is None
