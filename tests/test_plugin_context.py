"""The plugin context (store, settings, shared text encoder, data directory, emit); the one hook-call path.

The last test is the deployment the context was made for: a PostgreSQL catalog named only in a settings
file, the meeting monitor and an event sink enabled, a real clip with speech ingested through the composition
root (`vsalmonn.app`, what the CLI runs): its events and minutes are in PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, select

from vsalmonn.app import make_daemon, open_plugins
from vsalmonn.memory_store.catalog import Catalog
from vsalmonn.memory_store.models import Event, Stream, TranscriptSegment
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import StreamSpec
from vsalmonn.plugins import PluginConfig, PluginManager, hookimpl
from vsalmonn.plugins.builtin.meeting_monitor import KEYWORD_EVENT, MINUTES_EVENT, MeetingMonitor
from vsalmonn.plugins.builtin.surveillance import Surveillance
from vsalmonn.plugins.context import PluginContext, Shared
from vsalmonn.settings import load_settings

from . import media
from .conftest import sqlite_url
from .postgres import PostgresServer
from .test_ingest import SHARED, needs_media
from .words import normalise

FRAME = np.zeros((36, 64, 3), np.uint8)


def frame_kwargs(t: float) -> dict[str, Any]:
    return {"stream": "cam", "t": t, "frame": FRAME, "tokens": np.ones((2, 8), np.float32), "labels": ()}


class Keeps:
    """A plugin that keeps its context, and one written before contexts existed beside it."""

    @hookimpl
    def configure(self, context: PluginContext) -> None:
        self.context = context


class Old:
    @hookimpl
    def configure(self, config: Any, emit: Any, data_dir: Path | None) -> None:
        self.configured = (config, data_dir)


class CountingText:
    """A text encoder factory's product that counts how often it was made."""

    made = 0
    name, dim = "counting", 4

    def __init__(self) -> None:
        CountingText.made += 1

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.tile(np.eye(4, dtype=np.float32)[0], (len(texts), 1))


def test_configure_gets_the_context_and_old_plugins_still_load(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", environ={})
    CountingText.made = 0
    with MemoryStore(settings.data_dir) as store:
        manager = PluginManager(
            store=store, data_dir=settings.data_dir, settings=settings, text_encoder=Shared(CountingText)
        )
        keeps, old = Keeps(), Old()
        manager.register(keeps, "keeps")
        manager.register(old, "old")
        assert old.configured == ({}, settings.data_dir)
        context = keeps.context
        assert context.store is store and context.settings is settings
        assert context.data_dir == settings.data_dir
        assert CountingText.made == 0  # not made until asked for
        assert context.text_encoder is context.text_encoder is manager.context.text_encoder
        assert CountingText.made == 1
        record = context.emit("keeps.hello", "from the context", stream="cam", t=1.5)
        assert record is not None and record.source == "keeps" and record.id is not None
        manager.close()
    bare = PluginManager()  # a plugin used standalone: nothing to give
    bare.register(keeps := Keeps(), "keeps")
    assert keeps.context.store is None and keeps.context.text_encoder is None
    assert keeps.context.settings is None and keeps.context.data_dir is None


def test_surveillance_embeds_its_queries_with_the_shared_text_encoder(tmp_path: Path) -> None:
    config = PluginConfig(settings={"surveillance": {"people": {"enabled": False}, "queries": ["a truck"]}})
    shared = CountingText()
    manager = PluginManager(config, data_dir=tmp_path, text_encoder=shared)
    plugin = Surveillance()
    manager.register(plugin, "surveillance")
    assert plugin.text_encoder is shared  # not a second model
    given = CountingText()
    own = Surveillance(text_encoder=given)  # one given to the plugin itself wins
    PluginManager(config, data_dir=tmp_path, text_encoder=shared).register(own, "surveillance")
    assert own.text_encoder is given
    manager.close()


def test_the_meeting_monitor_reads_the_contexts_store_and_opens_none_of_its_own(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with MemoryStore(data, Catalog(sqlite_url(tmp_path / "elsewhere.sqlite"))) as store:
        stream_id = store.catalog.ensure_stream("room").id
        with store.catalog.transaction() as session:
            session.add(TranscriptSegment(stream_id=stream_id, t0=1.0, t1=3.0, text="We agreed on Friday."))
        config = PluginConfig(settings={"meeting_monitor": {"llm": "extractive"}})
        manager = PluginManager(config, store=store, data_dir=data)
        manager.register(MeetingMonitor(), "meeting_monitor")
        manager.call("on_stream_end", stream="room", state="done")
        with store.catalog.session() as session:
            kinds = [e.kind for e in session.scalars(select(Event))]
        assert kinds == [MINUTES_EVENT]
        manager.close()
    assert not (data / "catalog.sqlite").exists()  # the data directory's default catalog was never made

    alone = PluginManager(config, data_dir=data)  # no store: no minutes, said, nothing opened
    monitor = MeetingMonitor()
    alone.register(monitor, "meeting_monitor")
    assert monitor.finish_stream("room") is None
    assert not (data / "catalog.sqlite").exists()


def test_every_hook_call_goes_through_pluggy_and_its_tracing(tmp_path: Path) -> None:
    class Raises:
        @hookimpl
        def on_frame(self) -> None:
            raise RuntimeError("bad frame")

    class Counts:
        def __init__(self) -> None:
            self.frames: list[float] = []

        @hookimpl
        def on_frame(self, t: float) -> None:
            self.frames.append(t)

        @hookimpl
        def on_answer(self, answer: dict[str, Any]) -> dict[str, Any]:
            return {**answer, "answer": answer["answer"] + "!"}

    manager = PluginManager(PluginConfig(max_failures=2))
    manager.register(Raises(), "raises")
    manager.register(counts := Counts(), "counts")
    traced: list[str] = []
    manager.pm.trace.root.setwriter(traced.append)
    undo = manager.pm.enable_tracing()
    for t in range(3):
        assert manager.call("on_frame", **frame_kwargs(float(t))) == []
    assert manager.answer("q", {"answer": "a", "citations": [], "steps": []})["answer"] == "a!"
    undo()
    assert counts.frames == [0.0, 1.0, 2.0]
    assert sum("on_frame" in line for line in traced) >= 3 and any("on_answer" in line for line in traced)
    assert manager.stats()["raises"]["disabled"] and manager.stats()["raises"]["calls"] == 2
    assert [name for name, _ in manager.call_each("on_frame", **frame_kwargs(3.0))] == ["counts"]


def _speech_clip(path: Path) -> tuple[Path, float]:
    """An 8 s clip saying "goodbye" at 2 s; the clip and the word's onset."""
    track, (onset,) = media.speech_track([(SHARED / "speech" / "vm-goodbye.wav", 2.0)], 8.0, 48_000)
    media.write_media(path, video_times=media.uniform_times(8.0, 5), rate=5, audio=track)
    return path, onset


@pytest.mark.postgresql
@needs_media
def test_a_settings_file_naming_postgresql_gets_the_meeting_monitors_events_and_minutes(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    database = postgres_server.create_database()
    url = postgres_server.url(database)
    clip, onset = _speech_clip(tmp_path / "standup.mp4")
    config = tmp_path / "vsalmonn.toml"
    config.write_text(
        f'[store]\ncatalog_url = "{url}"\n\n[perception]\nlanguage = "en"\n\n'
        '[plugins]\nenabled = ["meeting_monitor"]\n\n'
        '[plugins.settings.meeting_monitor]\nkeywords = ["goodbye"]\nllm = "extractive"\n\n'
        '[[plugins.sinks.meeting_monitor]]\ntype = "jsonl"\npath = "meeting.jsonl"\n'
    )
    settings = load_settings(config=config, data_dir=tmp_path / "data", environ={})  # no URL from the env
    spec = StreamSpec(name="standup", source=str(clip), kind="file")
    try:
        with (
            MemoryStore.open(settings.data_dir, settings.store) as store,
            open_plugins(settings, store) as plugins,
        ):
            assert make_daemon(settings, store, [spec], plugins=plugins).run() == 0
        assert not (settings.data_dir / "catalog.sqlite").exists()

        engine = create_engine(url)  # what is in PostgreSQL, read without vsalmonn
        try:
            with engine.connect() as conn:
                (stream_id,) = conn.execute(select(Stream.id).where(Stream.name == "standup")).one()
                rows = conn.execute(
                    select(Event.kind, Event.source, Event.t.label("at"), Event.payload)
                    .where(Event.stream_id == stream_id)
                    .order_by(Event.id)
                ).all()
                said = conn.execute(
                    select(TranscriptSegment.text).where(TranscriptSegment.stream_id == stream_id)
                )
                words = {normalise(w) for (text,) in said for w in text.split()}
        finally:
            engine.dispose()
        assert "goodbye" in words
        by_kind = {row.kind: row for row in rows}
        keyword, minutes = by_kind[KEYWORD_EVENT], by_kind[MINUTES_EVENT]
        assert keyword.source == "meeting_monitor" and keyword.payload["keyword"] == "goodbye"
        assert abs(keyword.at - onset) <= 2.0
        assert minutes.source == "meeting_monitor" and minutes.payload["method"] == "extractive"
        assert "goodbye" in minutes.payload["summary"].lower()  # it quotes the transcript
        assert Path(minutes.payload["path"]).is_file()

        sunk = [
            json.loads(line)["kind"]
            for line in (settings.data_dir / "meeting.jsonl").read_text().splitlines()
        ]
        assert KEYWORD_EVENT in sunk and MINUTES_EVENT in sunk
    finally:
        postgres_server.drop_database(database)
