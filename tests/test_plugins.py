"""The plugin API: guarded hook calls (failures, overruns), discovery, settings, events and their sinks."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel
from sqlalchemy import select

from vsalmonn.memory_store.models import Event
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.plugins import EventRecord, PluginConfig, PluginError, PluginManager, hookimpl
from vsalmonn.plugins.events import (
    EVENT_HEADER,
    ID_HEADER,
    SIGNATURE_HEADER,
    EventBus,
    JsonlSink,
    WebhookSink,
    WebhookVerificationError,
    verify_webhook,
)

FRAME = np.zeros((36, 64, 3), np.uint8)
TOKENS = np.ones((3, 8), np.float32)


def frame_kwargs(t: float, stream: str = "cam") -> dict[str, Any]:
    return {"stream": stream, "t": t, "frame": FRAME, "tokens": TOKENS, "labels": (("person", 0.9),)}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MemoryStore]:
    with MemoryStore(tmp_path / "data") as store:
        store.catalog.ensure_stream("cam")
        yield store


def events(store: MemoryStore, kind: str | None = None) -> list[Event]:
    with store.catalog.session() as session:
        query = select(Event).order_by(Event.id)
        if kind is not None:
            query = query.where(Event.kind == kind)
        return list(session.scalars(query))


class Counter:
    def __init__(self) -> None:
        self.frames: list[float] = []

    @hookimpl
    def on_frame(self, t: float) -> None:
        self.frames.append(t)


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def on_frame(self, stream: str, t: float, frame: np.ndarray) -> None:
        self.calls += 1
        raise RuntimeError(f"cannot look at {frame.shape}")


# ----- failures ---------------------------------------------------------------------------------------------


def test_a_plugin_failing_in_a_row_is_disabled_and_the_others_still_run(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    manager = PluginManager(PluginConfig(max_failures=3), store=store)
    broken, counter = Broken(), Counter()
    manager.register(broken, "broken")
    manager.register(counter, "counter")
    with caplog.at_level(logging.ERROR, logger="vsalmonn.plugins.manager"):
        for t in range(6):
            assert manager.call("on_frame", **frame_kwargs(float(t))) == []  # never raises

    assert counter.frames == [0, 1, 2, 3, 4, 5]
    assert broken.calls == 3  # not called once disabled
    assert "plugin broken: hook on_frame failed: RuntimeError: cannot look at (36, 64, 3)" in caplog.text
    stats = manager.stats()["broken"]
    assert stats["disabled"] and stats["failures"] == 3 and stats["calls"] == 3
    assert "RuntimeError" in stats["last_error"]
    assert manager.stats()["counter"]["failures"] == 0
    (info,) = [p for p in manager.plugins() if p.name == "broken"]
    assert info.state == "disabled" and info.hooks == ("on_frame",)

    (row,) = events(store, "plugin.disabled")
    assert row.source == "broken" and row.t == 2.0
    assert row.stream_id == store.catalog.stream("cam").id
    assert row.payload["plugin"] == "broken" and row.payload["hook"] == "on_frame"
    assert row.payload["failures"] == 3

    manager.reset("broken")  # back, with fresh counters
    manager.call("on_frame", **frame_kwargs(9.0))
    assert broken.calls == 4 and manager.stats()["broken"]["state"] == "active"
    manager.close()


def test_a_success_resets_the_failure_count() -> None:
    class Flaky:
        calls = 0

        @hookimpl
        def on_frame(self) -> None:
            self.calls += 1
            if self.calls % 2:
                raise ValueError("odd")

    manager = PluginManager(PluginConfig(max_failures=2))
    flaky = Flaky()
    manager.register(flaky, "flaky")
    for t in range(10):
        manager.call("on_frame", **frame_kwargs(float(t)))
    stats = manager.stats()["flaky"]
    assert flaky.calls == 10 and stats["failures"] == 5 and not stats["disabled"]


def test_failures_of_other_hooks_are_counted(store: MemoryStore) -> None:
    class Everywhere:
        @hookimpl
        def on_transcript(self, segment: Any) -> None:
            raise KeyError(segment)

        @hookimpl
        def on_checkpoint(self, seq: int) -> None:
            raise OSError("disk full")

        @hookimpl
        def on_memory_write(self, count: int) -> None:
            pass

    manager = PluginManager(PluginConfig(max_failures=5), store=store)
    manager.register(Everywhere(), "everywhere")
    for seq in range(3):
        manager.call("on_transcript", stream="cam", segment="hello")
        manager.call("on_checkpoint", stream="cam", seq=seq, t_end=10.0, path="x")
        manager.call("on_memory_write", stream="cam", modality="visual", t0=0.0, t1=1.0, count=4)
    stats = manager.stats()["everywhere"]
    assert stats["failures"] == 6 and stats["calls"] == 9 and not stats["disabled"]
    assert stats["hooks"]["on_transcript"]["failures"] == 3
    assert stats["hooks"]["on_checkpoint"]["last_error"] == "OSError: disk full"
    assert stats["hooks"]["on_memory_write"]["failures"] == 0
    with pytest.raises(TypeError, match="missing arguments"):  # the caller's bug, not a plugin's
        manager.call("on_checkpoint", stream="cam")
    with pytest.raises(TypeError, match="no hook"):
        manager.call("on_nothing")


# ----- overruns ---------------------------------------------------------------------------------------------


class Sleeper:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    @hookimpl
    def on_frame(self) -> None:
        self.calls += 1
        time.sleep(self.seconds)


def test_a_gross_overrun_skips_the_hook_at_once(store: MemoryStore) -> None:
    manager = PluginManager(PluginConfig(budget_ms=5, overrun_limit=50), store=store)
    sleeper, counter = Sleeper(0.3), Counter()
    manager.register(sleeper, "sleeper")
    manager.register(counter, "counter")
    started = time.perf_counter()
    for t in range(5):
        manager.call("on_frame", **frame_kwargs(float(t)))
    assert time.perf_counter() - started < 1.0  # the 0.3 s were lost once, not five times
    assert sleeper.calls == 1 and counter.frames == [0, 1, 2, 3, 4]
    stats = manager.stats()["sleeper"]
    assert stats["skipped"] == ["on_frame"] and stats["overruns"] == 1 and not stats["disabled"]
    (info,) = [p for p in manager.plugins() if p.name == "sleeper"]
    assert info.state == "active" and info.skipped == ("on_frame",)
    (row,) = events(store, "plugin.skipped")
    assert row.source == "sleeper" and row.t == 0.0 and row.payload["hook"] == "on_frame"
    assert row.payload["elapsed_ms"] >= 300 and row.payload["budget_ms"] == 5


def test_repeated_overruns_are_reported_then_skipped(caplog: pytest.LogCaptureFixture) -> None:
    config = PluginConfig(budget_ms=1, overrun_limit=3, overrun_factor=10_000, warn_every_s=60)
    manager = PluginManager(config)
    sleeper = Sleeper(0.01)
    manager.register(sleeper, "sleeper")
    with caplog.at_level(logging.WARNING, logger="vsalmonn.plugins.manager"):
        for t in range(6):
            manager.call("on_frame", **frame_kwargs(float(t)))
    assert sleeper.calls == 3
    warnings = [r for r in caplog.records if "took" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited
    assert "plugin sleeper: hook on_frame took" in warnings[0].getMessage()
    assert "3 calls in a row over budget" in caplog.text
    assert manager.stats()["sleeper"]["overruns"] == 3


def test_other_hooks_overrunning_are_reported_not_skipped() -> None:
    class SlowPrompt:
        @hookimpl
        def agent_system_prompt(self) -> str:
            time.sleep(0.01)
            return "Cite times."

    manager = PluginManager(PluginConfig(hook_budget_ms=1, overrun_limit=1, overrun_factor=2))
    manager.register(SlowPrompt(), "slow")
    for _ in range(3):
        assert manager.system_prompt(settings=None) == "Cite times."
    stats = manager.stats()["slow"]
    assert stats["overruns"] == 3 and stats["skipped"] == []


# ----- agent hooks, settings, events ------------------------------------------------------------------------


def test_system_prompt_parts_and_answer_post_processing() -> None:
    class Polite:
        @hookimpl
        def agent_system_prompt(self, settings: Any) -> str:
            return f"Be polite to {settings}."

        @hookimpl
        def on_answer(self, answer: dict[str, Any]) -> dict[str, Any]:
            return {**answer, "answer": answer["answer"] + " Thank you."}

    class Confused:
        @hookimpl
        def agent_system_prompt(self) -> None:
            return None

        @hookimpl
        def on_answer(self) -> str:
            return "not a dict"

    manager = PluginManager()
    manager.register(Polite(), "polite")
    manager.register(Confused(), "confused")
    assert manager.system_prompt("Ann") == "Be polite to Ann."
    answer = {"answer": "At 00:01.", "citations": [], "steps": []}
    out = manager.answer("when?", answer)
    assert out["answer"] == "At 00:01. Thank you." and answer["answer"] == "At 00:01."


class Alerts:
    """A plugin with a settings model that raises events through its emitter."""

    class Settings(BaseModel):
        word: str
        cooldown_s: float = 60.0

    def __init__(self) -> None:
        self.seen: list[EventRecord] = []

    @hookimpl
    def plugin_settings_model(self) -> type[BaseModel]:
        return self.Settings

    @hookimpl
    def configure(self, config: Settings, emit: Any) -> None:
        self.config = config
        self.emit = emit

    @hookimpl
    def on_transcript(self, stream: str, segment: dict[str, Any]) -> None:
        if self.config.word in segment["text"]:
            self.emit("alert.word", f"heard {self.config.word!r}", stream=stream, t=segment["t0"], word="x")

    @hookimpl
    def on_event(self, event: EventRecord) -> None:
        self.seen.append(event)
        self.emit("echo", "raised inside on_event: stored, not dispatched again")


def test_settings_emit_and_on_event(store: MemoryStore, tmp_path: Path) -> None:
    config = PluginConfig(
        settings={"alerts": {"word": "fire"}},
        sinks={"alerts": [{"type": "jsonl", "path": "alerts.jsonl"}], "*": [{"type": "log"}]},
    )
    manager = PluginManager(config, store=store, data_dir=tmp_path / "data")
    alerts = Alerts()
    manager.register(alerts, "alerts")
    assert alerts.config.word == "fire" and alerts.config.cooldown_s == 60

    manager.call("on_transcript", stream="cam", segment={"t0": 12.5, "text": "fire in the hall"})
    manager.call("on_transcript", stream="nowhere", segment={"t0": 1.0, "text": "fire again"})
    assert [e.kind for e in alerts.seen] == ["alert.word", "alert.word"]  # the echoes are not dispatched
    rows = events(store)
    assert [r.kind for r in rows] == ["alert.word", "echo", "alert.word", "echo"]
    assert rows[0].stream_id == store.catalog.stream("cam").id and rows[0].t == 12.5
    assert rows[0].payload == {"word": "x"} and rows[0].source == "alerts"
    assert rows[2].stream_id is None and rows[2].payload["stream"] == "nowhere"  # not a catalog stream
    assert alerts.seen[0].id == rows[0].id

    lines = (tmp_path / "data" / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["alert.word", "echo", "alert.word", "echo"]
    assert json.loads(lines[0])["stream"] == "cam"
    manager.close()

    with pytest.raises(PluginError, match=r"\[plugins.settings.alerts\] word: Field required"):
        PluginManager().register(Alerts(), "alerts")


def test_plugins_that_cannot_be_registered() -> None:
    class Unknown:
        @hookimpl
        def on_frmae(self) -> None: ...

    class Wrapper:
        @hookimpl(wrapper=True)
        def on_frame(self) -> Any:
            return (yield)

    class BadArgs:
        @hookimpl
        def on_frame(self, image: Any) -> None: ...

    class FailsToConfigure:
        @hookimpl
        def configure(self) -> None:
            raise RuntimeError("no licence")

    class Optional:
        @hookimpl(optionalhook=True)
        def on_future_thing(self) -> None: ...

    manager = PluginManager()
    with pytest.raises(PluginError, match="unknown hook on_frmae"):
        manager.register(Unknown(), "unknown")
    with pytest.raises(PluginError, match="wrappers are not supported"):
        manager.register(Wrapper(), "wrapper")
    with pytest.raises(PluginError, match="image"):
        manager.register(BadArgs(), "badargs")
    with pytest.raises(PluginError, match="configure failed: RuntimeError: no licence"):
        manager.register(FailsToConfigure(), "nolicence")
    manager.register(Optional(), "optional")
    with pytest.raises(PluginError, match="registered already"):
        manager.register(Counter(), "optional")
    assert [p.name for p in manager.plugins()] == ["optional"]
    assert manager.call("on_frame", **frame_kwargs(0.0)) == []


# ----- sinks ------------------------------------------------------------------------------------------------


def test_jsonl_sink_writes_one_valid_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "events.jsonl"
    sink = JsonlSink(path, fsync=True)
    threads = [
        threading.Thread(
            target=lambda i=i: sink.deliver(EventRecord(kind="k", message=f"m{i}\nnext", payload={"i": i}))
        )
        for i in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = [EventRecord.model_validate_json(line) for line in path.read_text().splitlines()]
    assert sorted(r.payload["i"] for r in records) == list(range(20))
    assert all(r.message.endswith("\nnext") and r.created_at.tzinfo is not None for r in records)


class Receiver(BaseHTTPRequestHandler):
    statuses: list[int]
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        status = self.statuses.pop(0) if self.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[Receiver]]]:
    handler = type("Handler", (Receiver,), {"statuses": [500], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_retries_and_signs(receiver: tuple[str, type[Receiver]]) -> None:
    url, handler = receiver
    sink = WebhookSink(url, "s3cret", timeout_s=2, retries=3, backoff_s=0.01)
    record = EventRecord(kind="alert.person", message="someone at the gate", stream="cam", t=3.0)
    started = time.perf_counter()
    sink.deliver(record)
    assert time.perf_counter() - started < 0.05  # queued, not sent on the caller's thread
    sink.close(timeout=5)

    assert sink.delivered == 1 and sink.failed == 0
    assert len(handler.received) == 2  # 500, then 200
    (h1, b1), (h2, b2) = handler.received
    assert b1 == b2 and h1[ID_HEADER] == h2[ID_HEADER]
    assert h2[EVENT_HEADER] == "alert.person" and h2["Content-Type"] == "application/json"
    assert verify_webhook("s3cret", h2, b2) == h2[ID_HEADER]
    with pytest.raises(WebhookVerificationError):
        verify_webhook("wrong", h2, b2)
    with pytest.raises(WebhookVerificationError):
        verify_webhook("s3cret", h2, b2 + b" ")
    with pytest.raises(WebhookVerificationError, match="missing header"):
        verify_webhook("s3cret", {k: v for k, v in h2.items() if k != SIGNATURE_HEADER}, b2)
    assert EventRecord.model_validate_json(b2).message == "someone at the gate"


def test_webhook_gives_up_on_4xx_and_after_retries(receiver: tuple[str, type[Receiver]]) -> None:
    url, handler = receiver
    handler.statuses[:] = [400, 503, 503]
    sink = WebhookSink(url, None, retries=1, backoff_s=0.01)
    sink.deliver(EventRecord(kind="a"))  # 400: not retried
    sink.deliver(EventRecord(kind="b"))  # 503, 503: gives up after one retry
    sink.close(timeout=5)
    assert sink.failed == 2 and sink.delivered == 0 and len(handler.received) == 3
    assert SIGNATURE_HEADER not in handler.received[0][0]

    unreachable = WebhookSink("http://127.0.0.1:9/", "k", timeout_s=0.5, retries=1, backoff_s=0.01)
    unreachable.deliver(EventRecord(kind="c"))
    unreachable.close(timeout=5)
    assert unreachable.failed == 1


def test_events_reach_the_sinks_of_their_source(
    store: MemoryStore, receiver: tuple[str, type[Receiver]], tmp_path: Path
) -> None:
    url, handler = receiver
    handler.statuses[:] = []
    sinks = {
        "broken": [{"type": "webhook", "url": url, "secret": "k", "backoff_s": 0.01}],
        "*": [{"type": "jsonl", "path": str(tmp_path / "all.jsonl")}],
    }
    manager = PluginManager(PluginConfig(max_failures=1, sinks=sinks), store=store)
    manager.register(Broken(), "broken")
    manager.call("on_frame", **frame_kwargs(4.0))  # disabled at once: its event goes to its webhook
    manager.emit("stream.failed", "camera gone", source="daemon", stream="cam")  # to the default sink
    manager.close()
    ((headers, body),) = handler.received
    assert headers[EVENT_HEADER] == "plugin.disabled"
    assert verify_webhook("k", headers, body)
    (line,) = (tmp_path / "all.jsonl").read_text().splitlines()
    assert json.loads(line)["kind"] == "stream.failed"
    assert [r.kind for r in events(store)] == ["plugin.disabled", "stream.failed"]


def test_the_bus_survives_a_broken_catalog(caplog: pytest.LogCaptureFixture) -> None:
    class Down:
        def stream(self, name: str) -> None:
            raise ConnectionError("database is down")

    bus = EventBus(Down())
    with caplog.at_level(logging.WARNING):
        record = bus.event("x", "still delivered", stream="cam", obj=object())
    assert record is not None and record.id is None and record.payload["obj"].startswith("<object")
    assert "could not store event x" in caplog.text


# ----- discovery --------------------------------------------------------------------------------------------


DEMO = """
from vsalmonn.plugins import hookimpl

FRAMES = []


@hookimpl
def on_frame(t):
    FRAMES.append(t)


class Other:
    @hookimpl
    def agent_system_prompt(self):
        return "from Other"
"""


@pytest.fixture
def demo_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution `vsalmonn-demo` 0.1 declaring entry point `demo = demo_plugin`, on sys.path."""
    site = tmp_path / "site"
    info = site / "vsalmonn_demo-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vsalmonn-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vsalmonn.plugins]\ndemo = demo_plugin\n")
    (site / "demo_plugin.py").write_text(DEMO)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "demo_plugin", raising=False)
    yield site
    sys.modules.pop("demo_plugin", None)


def test_entry_points_are_discovered_and_loaded(demo_dist: Path) -> None:
    manager = PluginManager()
    manager.load()
    (info,) = [p for p in manager.plugins() if p.name == "demo"]
    assert info.state == "active" and info.version == "0.1" and info.dist == "vsalmonn-demo"
    assert info.value == "demo_plugin" and info.hooks == ("on_frame",)
    manager.call("on_frame", **frame_kwargs(7.0))
    assert sys.modules["demo_plugin"].FRAMES == [7.0]
    manager.load()  # again: nothing loaded twice
    manager.call("on_frame", **frame_kwargs(8.0))
    assert sys.modules["demo_plugin"].FRAMES == [7.0, 8.0]


@pytest.mark.parametrize(
    ("enabled", "disabled", "state"),
    [
        (["demo"], [], "active"),
        ([], ["demo"], "off"),
        ([], ["*"], "off"),
        (["demo"], ["*"], "active"),
        (["demo"], ["demo"], "off"),
        (["something-else:x"], [], "off"),
    ],
)
def test_settings_select_plugins(
    demo_dist: Path, enabled: list[str], disabled: list[str], state: str
) -> None:
    manager = PluginManager(PluginConfig(enabled=enabled, disabled=disabled))
    manager.load()
    (info,) = [p for p in manager.plugins() if p.name == "demo"]
    assert info.state == state
    assert ("demo_plugin" in sys.modules) == (state == "active")


def test_modules_named_in_the_settings_and_builtins(demo_dist: Path, store: MemoryStore) -> None:
    config = PluginConfig(enabled=["demo_plugin:Other", "no_such_module", "builtin"])
    manager = PluginManager(config, store=store)
    manager.load(extra={"builtin": Counter(), "unwanted": Counter()})
    infos = {p.name: p for p in manager.plugins()}
    assert infos["demo_plugin:Other"].state == "active"  # a class: instantiated
    assert infos["demo_plugin:Other"].hooks == ("agent_system_prompt",)
    assert infos["demo"].state == "off" and infos["unwanted"].state == "off"
    assert infos["builtin"].state == "active" and infos["builtin"].dist == "vsalmonn"
    assert infos["no_such_module"].state == "failed"
    assert "not an installed plugin nor an importable module" in infos["no_such_module"].error
    assert manager.system_prompt(None) == "from Other"
    (row,) = events(store, "plugin.failed")
    assert row.source == "no_such_module"
    assert infos["demo"].as_dict()["version"] == "0.1"
