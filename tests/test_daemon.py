"""The perception daemon with real encoders, a real catalog and store: many streams, bad input, a watched
folder, a live source on loopback, status from another process, and kills at any point.

Every wait has a deadline, so a daemon that hangs fails a test instead of stalling the suite.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.models import Event, FrameLabel, IngestFile, Stream, TranscriptSegment
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import DaemonConfig, PerceptionConfig, StreamSpec
from vsalmonn.perception.daemon import Daemon, read_status
from vsalmonn.perception.pipeline import Encoders
from vsalmonn.plugins import PluginConfig, PluginManager, hookimpl
from vsalmonn.settings import DATA_ENV
from vsalmonn.tools import MemoryView

from . import media
from .stream_server import StreamServer
from .test_ingest import SHARED, needs_media, speech_clip, words_at

MEMORY = MemoryConfig(visual_slots=1024, audio_slots=256)
# Quick reconnects that give up, so that a refused URL ends its stream within seconds.
PERCEPTION = PerceptionConfig(
    language="en", reconnect_initial_s=0.1, reconnect_max_s=0.5, reconnect_max_attempts=3, live_timeout_s=5.0
)
DAEMON = DaemonConfig(window_s=4, live_window_s=4, checkpoint_every_s=4, status_every_s=0.3, settle_s=1.0)
FAST = {"probesize": "32768", "analyzeduration": "500000"}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> Encoders:
    return Encoders.from_config(PERCEPTION, tmp_path_factory.mktemp("models"))


def until(check: Callable[[], bool], within_s: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        time.sleep(every)


def make_daemon(store: MemoryStore, specs: list[StreamSpec], encoders: Encoders, **kw: object) -> Daemon:
    kw.setdefault("config", DAEMON)
    kw.setdefault("perception", PERCEPTION)
    return Daemon(specs, store=store, memory=MEMORY, encoders=encoders, **kw)  # type: ignore[arg-type]


def by_name(store: MemoryStore) -> dict[str, dict[str, object]]:
    return {e["stream"]: e for e in read_status(store)}


# -- many streams, bad input ---------------------------------------------------------------------------------


def bad_and_good_sources(root: Path) -> dict[str, tuple[str, str]]:
    """Sources by stream name, each with the state the daemon must end it in."""
    good = media.write_media(root / "good.mp4", video_times=media.uniform_times(6, 5), rate=5)
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    text = root / "notes.mp4"
    text.write_text("a shopping list, not a video\n" * 40)
    long = media.write_media(
        root / "long.mkv", video_times=media.uniform_times(12, 5), rate=5, container_format="matroska"
    )
    speech_only = root / "speech.m4a"
    track, _ = media.speech_track([(SHARED / "speech" / "tt-weasels.wav", 1.0)], 5.0, 48_000)
    media.write_media(speech_only, audio=track, container_format="mp4")
    huge = media.write_media(
        root / "8k.avi", video_times=[0.0, 1.0], size=(7680, 4320), video_codec="mjpeg",
        container_format="avi", yuv=media.code_yuv420,
    )  # fmt: skip
    return {
        "good": (str(good), "done"),
        "video-only": (str(long), "done"),
        "audio-only": (str(speech_only), "done"),
        "eight-k": (str(huge), "done"),
        "empty": (str(empty), "failed"),
        "text": (str(text), "failed"),
        "truncated": (str(media.truncate(long, root / "cut.mkv", 0.5)), "failed"),
        "unsupported": (str(media.write_unsupported_codec(root / "qzqz.avi")), "skipped"),
        "subtitles": (str(media.write_subtitles_only(root / "subs.mkv")), "skipped"),
        "refused": (f"http://127.0.0.1:{_closed_port()}/live.ts", "failed"),
        "no-camera": ("/dev/video99", "failed"),  # a capture device that is not there (v4l2)
    }


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@needs_media
def test_bad_streams_fail_or_skip_with_a_reason_and_the_others_finish(
    tmp_path: Path, encoders: Encoders
) -> None:
    sources = bad_and_good_sources(tmp_path)
    specs = [StreamSpec(name=name, source=src) for name, (src, _) in sources.items()]
    with MemoryStore(tmp_path / "data") as store:
        daemon = make_daemon(store, specs, encoders)
        code = daemon.run()
        assert code == 1, "some streams failed, and nobody asked the daemon to stop"
        status = by_name(store)
        for name, (source, expected) in sources.items():
            entry = status[name]
            assert entry["state"] == expected, (name, entry)
            if expected == "done":
                assert entry["errors"] == 0 and store.checkpoints(name)[0].source_state["done"], name
            else:
                error = str(entry["last_error"])
                assert "\n" not in error and source in error, (name, error)
        assert "refused" in str(status["refused"]["last_error"])
        assert status["good"]["frames"] == 6 and status["video-only"]["frames"] == 12
        assert status["eight-k"]["frames"] == 2
        assert status["audio-only"]["segments"] >= 1 and status["audio-only"]["frames"] == 0
        # the truncated file kept what could be decoded, committed as final
        cut = store.checkpoints("truncated")[0]
        assert cut.source_state["done"] and "truncated" in cut.source_state["error"]
        assert 2 <= status["truncated"]["frames"] < 12
        with store.catalog.session() as s:
            kinds = {(e.kind, n) for e, n in s.execute(select(Event, Stream.name).join(Stream))}
        assert ("stream.failed", "empty") in kinds and ("stream.skipped", "unsupported") in kinds


# -- a watched folder ----------------------------------------------------------------------------------------


def clip(path: Path, seconds: int, first: int) -> bytes:
    """A video-only clip whose frames show codes `first`, `first + 1`, ...; returns its bytes."""
    media.write_media(path, video_times=media.uniform_times(seconds, 2), rate=2)
    return path.read_bytes()


def test_a_watched_folder_takes_each_file_once_in_order(tmp_path: Path, encoders: Encoders) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    made = tmp_path / "made"
    made.mkdir()
    data = {name: clip(made / name, 4, 0) for name in ("cam-1.mp4", "cam-2.mp4", "cam-10.mp4")}
    perception = PERCEPTION.model_copy(update={"speech_encoder": "none"})
    spec = StreamSpec(name="drop", source=str(folder))
    with MemoryStore(tmp_path / "data") as store:
        daemon = make_daemon(store, [spec], encoders, perception=perception)
        daemon.start()
        try:
            (folder / "cam-1.mp4").write_bytes(data["cam-1.mp4"])
            slow = data["cam-2.mp4"]
            with (folder / "cam-2.mp4").open("wb") as fh:  # written over ~3 s, as a recorder would
                for i in range(0, len(slow), len(slow) // 6 + 1):
                    fh.write(slow[i : i + len(slow) // 6 + 1])
                    fh.flush()
                    if i == 0:
                        (folder / "cam-10.mp4").write_bytes(data["cam-10.mp4"])  # ready first, must wait
                    time.sleep(0.5)

            def all_done() -> bool:
                with store.catalog.session() as s:
                    return s.scalar(select(func.count()).where(IngestFile.status == "done")) == 3

            until(all_done, 60, "three files ingested")
        finally:
            daemon.shutdown()
        with store.catalog.session() as s:
            rows = s.scalars(select(IngestFile).order_by(IngestFile.stream_offset)).all()
            times = list(s.scalars(select(FrameLabel.t).order_by(FrameLabel.id)))
        assert [Path(r.path).name for r in rows] == ["cam-1.mp4", "cam-2.mp4", "cam-10.mp4"]
        assert [r.stream_offset for r in rows] == pytest.approx([0.0, 4.0, 8.0], abs=0.6)
        assert len(times) == 3 * 4 and all(b > a for a, b in itertools.pairwise(times)), times
        assert store.checkpoints("drop")[0].t_end == pytest.approx(12.0, abs=0.6)

        # a second run over the same folder finds nothing new; a new file goes after the others
        (folder / "cam-11.mp4").write_bytes(data["cam-1.mp4"])
        again = make_daemon(store, [spec], encoders, perception=perception, once=True)
        assert again.run() == 0
        with store.catalog.session() as s:
            rows = s.scalars(select(IngestFile).order_by(IngestFile.stream_offset)).all()
            assert s.scalar(select(func.count()).select_from(FrameLabel)) == 4 * 4
        assert Path(rows[-1].path).name == "cam-11.mp4" and rows[-1].stream_offset == pytest.approx(
            12, abs=0.6
        )


# -- reconciling the running set (SIGHUP) ------------------------------------------------------------------


def test_a_reload_starts_added_streams_stops_removed_ones_and_leaves_the_rest(
    tmp_path: Path, encoders: Encoders, caplog: pytest.LogCaptureFixture
) -> None:
    """`Daemon.run`'s reload (what SIGHUP sets in `vsalmonn daemon`): a removed stream stops with its
    checkpoint committed, an added one starts, an unchanged one runs on in the same thread, a changed one is
    started again, and settings that cannot be read change nothing (one line). The daemon process itself,
    signals and all: tests/test_daemon_sighup.py (slow)."""
    film = media.write_media(tmp_path / "film.mp4", video_times=media.uniform_times(600, 1), rate=1)
    folders = {name: tmp_path / name for name in ("w2", "w3", "w4")}
    for i, folder in enumerate(folders.values()):
        folder.mkdir()
        clip(folder / "a.mp4", 3 + i, 0)
    spec = {n: StreamSpec(name=n, source=str(f)) for n, f in folders.items()}
    spec["film"] = StreamSpec(name="film", source=str(film))
    wanted: list[object] = [[spec["film"], spec["w2"]]]

    def read_specs() -> list[StreamSpec]:
        if isinstance(wanted[-1], Exception):
            raise wanted[-1]
        return wanted[-1]  # type: ignore[return-value]

    perception = PERCEPTION.model_copy(update={"speech_encoder": "none"})
    config = DAEMON.model_copy(update={"checkpoint_every_s": 1000, "poll_s": 0.2, "settle_s": 0.2})
    stop, reload = threading.Event(), threading.Event()
    with MemoryStore(tmp_path / "data") as store:
        daemon = make_daemon(store, wanted[0], encoders, perception=perception, config=config)  # type: ignore[arg-type]
        running = threading.Thread(target=daemon.run, args=(stop, reload, read_specs), daemon=True)
        running.start()

        def files_done(name: str) -> bool:
            found = store.checkpoints(name)
            return bool(found) and bool((found[0].source_state or {}).get("file_done"))

        def reloaded(specs: object) -> None:
            refusals = len(refused())
            wanted.append(specs)
            reload.set()
            if isinstance(specs, list) and len({s.name for s in specs}) == len(specs):
                until(lambda: daemon.specs == specs, 30, "the reload done")
            else:
                until(lambda: len(refused()) > refusals, 30, "the reload refused")

        def refused() -> list[str]:
            return [r.getMessage() for r in caplog.records if "settings not reloaded" in r.getMessage()]

        try:
            until(lambda: "film" in by_name(store) and (by_name(store)["film"].get("position") or 0) > 5
                  and files_done("w2"), 60, "film mid-file, w2's file in")  # fmt: skip
            film_runner, w2_runner = daemon.active["film"], daemon.active["w2"]
            caplog.set_level(logging.ERROR, logger="vsalmonn.perception.daemon")
            reloaded(ValueError("bad settings: line 3"))
            reloaded([spec["w2"], spec["w2"]])
            assert refused() == [
                "SIGHUP: settings not reloaded, streams unchanged: bad settings: line 3",
                "SIGHUP: settings not reloaded, streams unchanged: stream names must be unique; repeated: w2",
            ]
            assert daemon.active == {"film": film_runner, "w2": w2_runner} and film_runner.is_alive()

            reloaded([spec["w2"], spec["w3"]])
            assert not film_runner.is_alive() and film_runner.stats.state == "stopped"
            assert 5.0 <= (store.checkpoints("film")[0].source_offset or 0) < 600, "committed on its stop"
            assert daemon.active["w2"] is w2_runner and w2_runner.is_alive()
            until(lambda: files_done("w3"), 60, "w3's file in")
            assert by_name(store)["film"]["state"] == "stopped"

            w3_runner = daemon.active["w3"]
            reloaded([spec["w2"], StreamSpec(name="w3", source=str(folders["w4"]))])  # w3 changed
            assert not w3_runner.is_alive() and daemon.active["w3"] is not w3_runner
            assert daemon.active["w3"].is_alive() and daemon.active["w2"] is w2_runner
        finally:
            stop.set()
            running.join(30)
        assert not running.is_alive()
        assert {e["stream"]: e["state"] for e in read_status(store)} == dict.fromkeys(
            ("film", "w2", "w3"), "stopped"
        )


# -- a live source on loopback -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("live") / "live.ts"
    return media.write_media(
        path, video_times=media.uniform_times(60, 10), size=(160, 120), gop=10,
        audio=media.tone(60, 48_000), container_format="mpegts",
    )  # fmt: skip


def test_a_live_stream_keeps_up_and_reconnects(tmp_path: Path, encoders: Encoders, live_ts: Path) -> None:
    perception = PERCEPTION.model_copy(update={"reconnect_max_attempts": None, "reconnect_give_up_s": 30.0})
    with StreamServer(live_ts) as server, MemoryStore(tmp_path / "data") as store:
        spec = StreamSpec(name="cam", source=server.url, options=FAST)
        daemon = make_daemon(store, [spec], encoders, perception=perception)
        daemon.start()
        runner = daemon.runners[0]
        try:
            until(lambda: runner.stats.frames >= 6, 30, "six frames from the live stream")
            lags = []
            for _ in range(8):  # steady state: a frame a second, each written within a second or two
                time.sleep(0.5)
                lags.append(runner.stats.lag_s)
            assert max(lag for lag in lags if lag is not None) <= 2.0, lags
            assert runner.stats.drops == 0
            server.stop()
            time.sleep(2.0)
            frames = runner.stats.frames
            server.start()
            until(lambda: runner.stats.frames >= frames + 3, 30, "frames after the server came back")
            assert runner.stats.detail["reconnects"] >= 1 and server.connections >= 2
            until(lambda: by_name(store).get("cam", {}).get("state") == "running", 5, "status row")
        finally:
            assert daemon.shutdown()
        last = store.checkpoints("cam")[0]
        assert last.source_state is not None and last.source_state["epoch"] > 0
        # The epoch is what the tools give as the stream's wall clock: its stream time 0.
        (summary,) = MemoryView(store).streams()
        assert summary.epoch is not None
        assert summary.epoch.timestamp() == pytest.approx(last.source_state["epoch"], abs=1e-5)
        assert by_name(store)["cam"]["epoch"] == summary.epoch.isoformat()
        assert by_name(store)["cam"]["state"] == "stopped"


# -- other processes: status, SIGTERM, SIGKILL ---------------------------------------------------------------


def cli(*args: str, cwd: Path, **kw: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV}
    return subprocess.Popen(
        [sys.executable, "-m", "vsalmonn", *args], cwd=cwd, env=env, text=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw,  # type: ignore[call-overload]
    )  # fmt: skip


def write_config(path: Path, streams: dict[str, str], **daemon: object) -> Path:
    lines = ["[perception]", 'language = "en"', "[memory]", "visual_slots = 1024", "audio_slots = 256"]
    lines += ["[daemon]", *(f"{k} = {v}" for k, v in daemon.items())]
    for name, source in streams.items():
        lines += ["[[streams]]", f'name = "{name}"', f'source = "{source}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def newest_offset(data: Path, stream: str) -> float:
    if not (data / "catalog.sqlite").exists():
        return -1.0
    with MemoryStore(data) as store:
        found = store.checkpoints(stream)
        return float(found[0].source_offset or 0.0) if found else -1.0


@needs_media
def test_sigkill_mid_file_then_restart_continues_without_duplicates(tmp_path: Path) -> None:
    talk, expected = speech_clip(tmp_path / "talk.mp4")
    config = write_config(
        tmp_path / "v.toml", {"talk": str(talk)}, window_s=10, checkpoint_every_s=10, status_every_s=0.5
    )
    data = tmp_path / "data"
    first = cli("--config", str(config), "--data", str(data), "daemon", cwd=tmp_path)
    try:
        until(lambda: newest_offset(data, "talk") >= 10.0, 120, "a first checkpoint", every=0.2)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(10)
    killed_at = newest_offset(data, "talk")
    assert 10.0 <= killed_at < 40.0, "killed mid-file"

    status = subprocess.run(
        [sys.executable, "-m", "vsalmonn", "--data", str(data), "status", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    entry = json.loads(status.stdout)["streams"][0]
    assert entry["stream"] == "talk" and entry["state"] == "running" and entry["checkpoint"]["seq"] >= 1

    second = cli("--config", str(config), "--data", str(data), "daemon", cwd=tmp_path)
    _, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    with MemoryStore(data) as store:
        last = store.checkpoints("talk")[0]
        assert last.source_state == {"done": True} and last.source_offset >= 39.0
        words = words_at(store)
        for word in expected:
            assert sum(w == word for w, _ in words) == 1, f"{word!r} once in {words}"
        with store.catalog.session() as s:
            rows = s.execute(select(TranscriptSegment.t0, TranscriptSegment.text)).all()
            label_times = list(s.scalars(select(FrameLabel.t).order_by(FrameLabel.t)))
        assert len(rows) == len(set(rows)), "no transcript row twice"
        assert len(label_times) == len(set(label_times)) == 40, "each frame's labels once"


def test_sigterm_checkpoints_every_stream_and_exits_zero_quickly(tmp_path: Path, live_ts: Path) -> None:
    long = media.write_media(tmp_path / "long.mp4", video_times=media.uniform_times(600, 1), rate=1)
    with StreamServer(live_ts) as server:
        config = write_config(
            tmp_path / "v.toml", {"film": str(long), "cam": server.url}, window_s=5, checkpoint_every_s=1000,
            status_every_s=0.5,
        )  # fmt: skip
        data = tmp_path / "data"
        daemon = cli("--config", str(config), "--data", str(data), "daemon", cwd=tmp_path)
        try:
            until(
                lambda: (
                    (data / "catalog.sqlite").exists()
                    and {e.get("state") for e in _status(data)} == {"running"}
                    and all((e.get("position") or 0) > 5 for e in _status(data))
                ),
                120,
                "both streams running",
                every=0.3,
            )
            daemon.send_signal(signal.SIGTERM)
            started = time.monotonic()
            daemon.wait(15)
            took = time.monotonic() - started
        finally:
            if daemon.poll() is None:
                daemon.kill()
        assert daemon.returncode == 0, daemon.stderr.read() if daemon.stderr else ""
        assert took < 10.0
    with MemoryStore(data) as store:
        assert store.checkpoints("film") and store.checkpoints("cam"), "each stream committed on the way out"
        assert 5.0 <= (store.checkpoints("film")[0].source_offset or 0) < 600
    assert {e["state"] for e in _status(data)} == {"stopped"}


def _status(data: Path) -> list[dict[str, object]]:
    with MemoryStore(data) as store:
        return read_status(store)


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    stray = [t for t in threading.enumerate() if t not in before and t.name.startswith("stream-")]
    for t in stray:
        t.join(5)
    assert not [t for t in stray if t.is_alive()], "a stream thread outlived its daemon"


def test_a_segment_of_several_sentences_becomes_one_per_sentence() -> None:
    from vsalmonn.perception.encoders import Segment, Word
    from vsalmonn.perception.pipeline import split_sentences

    words = [Word("The", 10.7, 10.9), Word("call", 10.9, 11.2), Word("ends.", 11.2, 11.8)]
    words += [Word("You", 17.8, 18.0), Word("are", 18.0, 18.2), Word("muted.", 18.2, 19.1)]
    segment = Segment(10.7, 19.1, "The call ends. You are muted.", tuple(words), "en")
    first, second = split_sentences(segment)
    assert (first.t0, first.t1, first.text) == (10.7, 11.8, "The call ends.")
    assert (second.t0, second.t1, second.text, second.language) == (17.8, 19.1, "You are muted.", "en")
    assert split_sentences(Segment(0.0, 1.0, "No words.")) == [Segment(0.0, 1.0, "No words.")]


class SlowVision:
    """The real vision encoder made slower than the stream: a live source must drop, not fall behind."""

    def __init__(self, inner: object, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds
        self.name, self.dim = inner.name, inner.dim  # type: ignore[attr-defined]

    def encode(self, frames: list[object]) -> list[object]:
        time.sleep(self.seconds * len(frames))
        return self.inner.encode(frames)  # type: ignore[attr-defined, no-any-return]


def test_a_live_stream_that_cannot_keep_up_drops_the_oldest_and_counts(
    tmp_path: Path, encoders: Encoders, live_ts: Path
) -> None:
    slow = Encoders(vision=SlowVision(encoders.vision, 1.0), text=encoders.text, speech=None)  # type: ignore[arg-type]
    perception = PERCEPTION.model_copy(update={"live_queue": 4, "speech_encoder": "none"})
    with StreamServer(live_ts, speed=4.0) as server, MemoryStore(tmp_path / "data") as store:
        daemon = make_daemon(
            store, [StreamSpec(name="cam", source=server.url, options=FAST)], slow, perception=perception
        )
        daemon.start()
        runner = daemon.runners[0]
        try:
            until(lambda: runner.stats.drops >= 3, 40, "drops counted")
            until(
                lambda: (by_name(store).get("cam", {}).get("drops") or 0) >= 3, 5, "drops in the status row"
            )
            assert runner.stats.lag_s is not None and runner.stats.lag_s < 10.0, "newest frames win"
        finally:
            assert daemon.shutdown()


class Raising:
    @hookimpl
    def on_frame(self, stream: str, t: float) -> None:
        raise RuntimeError(f"broken plugin at {t}")


class Sleeping:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def on_frame(self, stream: str, t: float) -> None:
        self.calls += 1
        time.sleep(10.0)


def test_plugins_that_raise_or_hang_never_stop_ingestion(tmp_path: Path, encoders: Encoders) -> None:
    clip = media.write_media(tmp_path / "clip.mp4", video_times=media.uniform_times(8, 5), rate=5)
    with MemoryStore(tmp_path / "data") as store:
        plugins = PluginManager(PluginConfig(max_failures=3), store=store, data_dir=tmp_path / "data")
        sleeping = Sleeping()
        plugins.register(Raising(), "raising")
        plugins.register(sleeping, "sleeping")
        perception = PERCEPTION.model_copy(update={"speech_encoder": "none"})
        daemon = make_daemon(
            store,
            [StreamSpec(name="clip", source=str(clip))],
            encoders,
            perception=perception,
            plugins=plugins,
        )
        started = time.monotonic()
        assert daemon.run() == 0
        assert time.monotonic() - started < 60
        assert by_name(store)["clip"]["state"] == "done" and by_name(store)["clip"]["frames"] == 8
        stats = plugins.stats()
        assert stats["raising"]["disabled"] and stats["raising"]["failures"] == 3
        assert sleeping.calls == 1, "a hook far over its budget is skipped after its first call"
        with store.catalog.session() as s:
            kinds = {(e.kind, e.source) for e in s.scalars(select(Event))}
        assert ("plugin.disabled", "raising") in kinds and ("plugin.skipped", "sleeping") in kinds
