"""The built-in meeting monitor: transcript exports (WebVTT, SRT, Markdown), keyword alerts, minutes, a tool.

The exports and the alerts run on a track built from ../shared/media/speech (three real spoken prompts at
known times), ingested with the real encoders; the minutes use scripted fake chat models (one slow test uses
the embedded SmolLM2).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from sqlalchemy import select

from vsalmonn.memory_store.models import Event, TranscriptSegment
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.encoders.base import Segment, Word
from vsalmonn.perception.ingest import Encoders, ingest_file
from vsalmonn.plugins import PluginConfig, PluginManager
from vsalmonn.plugins.builtin.meeting_monitor import (
    KEYWORD_EVENT,
    MINUTES_EVENT,
    MeetingMonitor,
    MeetingSettings,
    parse_minutes,
    write_minutes,
)
from vsalmonn.tools import exports
from vsalmonn.tools.exports import Minutes, export, to_markdown, to_srt, to_vtt, transcript_rows
from vsalmonn.tools.timefmt import hms

from .test_ingest import MEMORY, PERCEPTION, SHARED, speech_clip, words_at
from .words import normalise

SPEECH = SHARED / "speech"
NAME = "meeting_monitor"

# ----- strict parsers of the two subtitle formats -----------------------------------------------------------

_VTT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})"
_SRT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d),(\d{3})"


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _check_cues(cues: list[tuple[float, float, str]]) -> None:
    for start, end, text in cues:
        assert end > start, f"cue {start}-{end} ends before it starts"
        assert text.strip() and "-->" not in text
    for (_, end, _), (start, _, _) in itertools.pairwise(cues):
        assert start >= end, "cues overlap or go back in time"


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """The cues of a WebVTT file, which must be valid: header, blank-line separated cues, timing lines."""
    assert text.startswith("WEBVTT") and text.endswith("\n")
    blocks = text.rstrip("\n").split("\n\n")
    header = blocks[0].split("\n")[0]
    assert header == "WEBVTT" or header.startswith(("WEBVTT ", "WEBVTT\t")), header
    cues = []
    timing = re.compile(rf"^{_VTT_TIME} --> {_VTT_TIME}(?: .*)?$")
    for block in blocks[1:]:
        lines = block.split("\n")
        assert all(lines), f"empty line inside a cue: {block!r}"
        if "-->" not in lines[0]:  # a cue identifier
            lines = lines[1:]
        match = timing.match(lines[0])
        assert match, f"bad cue timing line {lines[0]!r}"
        body = "\n".join(lines[1:])
        assert not re.search(r"&(?!amp;|lt;|gt;|nbsp;|lrm;|rlm;|#\d+;)", body), f"unescaped & in {body!r}"
        assert "<" not in body.replace("&lt;", ""), f"raw < in {body!r}"
        cues.append((_seconds(*match.groups()[:4]), _seconds(*match.groups()[4:]), body))
    _check_cues(cues)
    return cues


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    """The cues of a SubRip file, which must be valid: numbered from 1, timing lines, text, blank line."""
    assert text == "" or text.endswith("\n")
    cues = []
    timing = re.compile(rf"^{_SRT_TIME} --> {_SRT_TIME}$")
    for n, block in enumerate(text.rstrip("\n").split("\n\n") if text.strip() else [], 1):
        lines = block.split("\n")
        assert lines[0] == str(n), f"cue {n} numbered {lines[0]!r}"
        match = timing.match(lines[1])
        assert match, f"bad cue timing line {lines[1]!r}"
        assert len(lines) > 2 and all(lines[2:])
        cues.append((_seconds(*match.groups()[:4]), _seconds(*match.groups()[4:]), "\n".join(lines[2:])))
    _check_cues(cues)
    return cues


def events(store: MemoryStore, kind: str) -> list[Event]:
    with store.catalog.session() as session:
        return list(session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def add_rows(store: MemoryStore, stream: str, lines: list[tuple[float, float, str]]) -> None:
    stream_id = store.catalog.ensure_stream(stream).id
    with store.catalog.transaction() as session:
        session.add_all(TranscriptSegment(stream_id=stream_id, t0=a, t1=b, text=text) for a, b, text in lines)


def fake_model(*replies: str) -> GenericFakeChatModel:
    """A chat model that answers with `replies` in turn, and raises when asked once more."""
    return GenericFakeChatModel(messages=iter([AIMessage(content=r) for r in replies]))


MEETING = [
    (2.0, 6.0, "Thanks for joining, today we plan the launch."),
    (10.0, 14.0, "We agreed to launch on Friday."),
    (20.0, 25.0, "Bob will write the release notes by Thursday."),
    (30.0, 33.0, "Thanks everyone, goodbye."),
]
REPLY = """Here are the minutes.
**SUMMARY:** The team planned the launch.
DECISIONS:
- Launch on Friday.
ACTIONS:
1. Bob writes the release notes by Thursday.
- none
"""

# ----- the ingested speech track ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MemoryStore, dict[str, float]]]:
    """The 40 s clip of test_ingest ingested as stream "talk"; the store and each key word's placed time."""
    if not SPEECH.is_dir():
        pytest.skip(f"shared speech folder {SPEECH} is absent")
    tmp = tmp_path_factory.mktemp("meeting")
    encoders = Encoders.from_config(PERCEPTION, tmp / "models")
    clip, expected = speech_clip(tmp / "talk.mp4")
    with MemoryStore(tmp / "data") as store:
        ingest_file(
            clip, "talk", store=store, encoders=encoders, perception=PERCEPTION, memory_config=MEMORY,
            window_s=10, checkpoint_every_s=40,
        )  # fmt: skip
        yield store, expected


def test_vtt_and_srt_exports_are_valid_with_the_prompts_at_their_times(
    talk: tuple[MemoryStore, dict[str, float]],
) -> None:
    store, expected = talk
    said = words_at(store)
    for fmt, parse in (("vtt", parse_vtt), ("srt", parse_srt)):
        cues = parse(export(store, "talk", fmt))
        assert len(cues) >= 3
        for word, at in expected.items():
            hits = [(a, b) for a, b, text in cues if word in {normalise(w) for w in text.split()}]
            assert hits, f"{fmt}: {word!r} in no cue: {cues}"
            start, end = hits[0]
            assert start - 2 <= at <= end + 2, f"{fmt}: {word!r} in a cue at {start}-{end} s, placed at {at}"
            spoken = next(t for w, t in said if w == word)  # the recogniser's own time of the word
            assert start - 1e-3 <= spoken <= end + 1e-3


def test_markdown_export_lists_every_line_with_its_time(talk: tuple[MemoryStore, dict[str, float]]) -> None:
    store, _ = talk
    rows = transcript_rows(store, "talk")
    assert [r.t0 for r in rows] == sorted(r.t0 for r in rows) and len(rows) >= 3
    md = export(store, "talk", "md")
    assert md.startswith("# Transcript: talk\n")
    for row in rows:
        assert f"- [{hms(row.t0)}] {row.text}" in md
    assert "Minutes" not in md  # none saved for this stream


def test_keyword_alert_at_the_time_the_word_was_said(
    talk: tuple[MemoryStore, dict[str, float]], tmp_path: Path
) -> None:
    store, expected = talk
    config = PluginConfig(settings={NAME: {"keywords": ["goodbye", "nobody says this"]}})
    manager = PluginManager(config, store=store, data_dir=tmp_path)
    manager.register(MeetingMonitor(), NAME)
    rows = transcript_rows(store, "talk")
    for row in rows:
        words = tuple(Word(w["w"], w["t0"], w["t1"], w.get("p")) for w in (row.words or {}).get("words", []))
        manager.call("on_transcript", stream="talk", segment=Segment(row.t0, row.t1, row.text, words))
    assert manager.stats()[NAME]["failures"] == 0
    (alert,) = events(store, KEYWORD_EVENT)
    assert alert.source == NAME and alert.stream_id == store.catalog.stream("talk").id
    assert abs(alert.t - expected["goodbye"]) <= 2.0
    assert alert.payload["keyword"] == "goodbye" and "oodbye" in alert.payload["text"]
    live = (tmp_path / "transcripts" / "talk.txt").read_text().splitlines()
    assert live == [f"[{hms(r.t0)}] {r.text}" for r in rows]
    manager.close()


# ----- exports of rows of our own ---------------------------------------------------------------------------


def _rows(*lines: tuple[float, float, str]) -> list[TranscriptSegment]:
    return [TranscriptSegment(t0=a, t1=b, text=text) for a, b, text in lines]


def test_cues_are_clamped_escaped_and_timed_to_the_millisecond() -> None:
    rows = _rows(
        (1.0, 4.0, "first <b> & last"),
        (3.0, 5.5, "overlaps the first"),  # starts before the previous cue ends
        (6.0, 6.0, "no duration"),
        (6.02, 7.0, "starts inside the repaired one"),
        (8.0, 9.0, "   "),  # nothing said: no cue
        (3725.5, 3727.25, "an hour\n\nlater  -->"),
    )
    vtt = to_vtt(rows)
    cues = parse_vtt(vtt)
    assert [(a, b) for a, b, _ in cues] == [
        (1.0, 4.0), (4.0, 5.5), (6.0, 6.1), (6.1, 7.0), (3725.5, 3727.25),
    ]  # fmt: skip
    assert "first &lt;b&gt; &amp; last" in vtt and "01:02:05.500 --> 01:02:07.250" in vtt
    assert "an hour later --&gt;" in vtt
    srt = to_srt(rows)
    assert [(a, b) for a, b, _ in parse_srt(srt)] == [(a, b) for a, b, _ in cues]
    assert srt.startswith("1\n00:00:01,000 --> 00:00:04,000\nfirst <b> & last\n\n2\n")
    assert to_vtt([]) == "WEBVTT\n" and parse_srt(to_srt([])) == []
    md = to_markdown(rows, title="Transcript: x")
    assert "- [01:02:05] an hour later -->" in md and "   " not in md


def test_unknown_stream_and_format_are_one_line_errors(tmp_path: Path) -> None:
    with MemoryStore(tmp_path / "data") as store:
        add_rows(store, "room", MEETING)
        with pytest.raises(ValueError, match=r"^no stream named 'nope'; known: room$"):
            export(store, "nope", "vtt")
        with pytest.raises(ValueError, match="unknown export format 'txt'; choose one of vtt, srt, md"):
            export(store, "room", "txt")


# ----- keyword alerts ---------------------------------------------------------------------------------------


def test_keywords_match_whole_words_any_case_with_a_cooldown(tmp_path: Path) -> None:
    with MemoryStore(tmp_path / "data") as store:
        store.catalog.ensure_stream("room")
        config = PluginConfig(settings={NAME: {"keywords": ["Goodbye", "budget"], "cooldown_s": 30}})
        manager = PluginManager(config, store=store, data_dir=tmp_path)
        manager.register(MeetingMonitor(), NAME)

        def say(t0: float, text: str) -> None:
            words = tuple(Word(w, t0 + 0.5 * i, t0 + 0.5 * i + 0.4) for i, w in enumerate(text.split()))
            manager.call("on_transcript", stream="room", segment=Segment(t0, t0 + 3, text, words))

        say(10.0, "Well, goodbye everyone.")  # alert at the word: 10.5
        say(15.0, "GOODBYE again!")  # 5 s later: within the cooldown
        say(20.0, "Many goodbyes and a goodbyeish farewell")  # not the whole word
        say(41.0, "The budget, then goodbye.")  # budget: first; goodbye: 31 s after the first alert
        alerts = sorted((e.t, e.payload["keyword"]) for e in events(store, KEYWORD_EVENT))
        assert alerts == [(10.5, "Goodbye"), (41.5, "budget"), (42.5, "Goodbye")]
        manager.close()


def test_settings_refuse_what_cannot_work() -> None:
    assert MeetingSettings(keywords=["  action   item ", "Action item", "x"]).keywords == ["action item", "x"]
    for bad in ({"keywords": [" "]}, {"cooldown_s": -1}, {"keyword": ["x"]}):
        with pytest.raises(ValueError):
            MeetingSettings.model_validate(bad)


# ----- minutes ----------------------------------------------------------------------------------------------


def test_a_reply_in_the_format_is_parsed_leniently() -> None:
    assert parse_minutes(REPLY) == (
        "The team planned the launch.",
        ["Launch on Friday."],
        ["Bob writes the release notes by Thursday."],
    )
    assert parse_minutes("## Summary\nWe met.\n\n## Action items\n* Ann: mail the notes\n") == (
        "We met.", [], ["Ann: mail the notes"],
    )  # fmt: skip
    assert parse_minutes("Actions speak louder. Nothing else.") is None
    assert parse_minutes("SUMMARY:\nDECISIONS:\n- x") is None  # no summary


def test_minutes_from_a_model_reply_and_the_extractive_fallback() -> None:
    rows = _rows(*MEETING)
    minutes = write_minutes(rows, "room", fake_model(REPLY))
    assert minutes == Minutes(
        stream="room", summary="The team planned the launch.", decisions=["Launch on Friday."],
        action_items=["Bob writes the release notes by Thursday."], method="model", covered_until=33.0,
    )  # fmt: skip

    fallback = write_minutes(rows, "room", fake_model("I am a small model and I like launches."))
    assert fallback.method == "extractive" and fallback.covered_until == 33.0
    assert "Thanks for joining" in fallback.summary and "goodbye" in fallback.summary
    assert fallback.decisions == ["[00:00:10] We agreed to launch on Friday."]
    assert fallback.action_items == ["[00:00:20] Bob will write the release notes by Thursday."]
    assert write_minutes(rows, "room", None) == fallback  # no model at all
    assert write_minutes([], "room", fake_model()).summary == "Nothing was said."


def test_a_long_transcript_is_shown_in_chunks_and_merged() -> None:
    rows = _rows(*MEETING)
    second = "SUMMARY: Then they said goodbye.\nDECISIONS:\n- Launch on Friday.\nACTIONS:\n- none"
    model = fake_model(REPLY, second)
    minutes = write_minutes(rows, "room", model, chunk_chars=110)
    assert minutes.summary == "The team planned the launch. Then they said goodbye."
    assert minutes.decisions == ["Launch on Friday."]  # merged: said twice, listed once
    with pytest.raises(StopIteration):  # both replies used: two calls
        model.invoke("more?")


def test_minutes_saved_announced_reused_and_offered_as_a_tool(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with MemoryStore(data) as store:
        add_rows(store, "room", MEETING)
        store.catalog.ensure_stream("silent")
        manager = PluginManager(store=store, data_dir=data)
        monitor = MeetingMonitor(model=fake_model(REPLY))  # one reply: a second writing would fail
        manager.register(monitor, NAME)
        tools: list[Any] = []
        manager.call("register_tools", register=tools.append, view=SimpleNamespace(store=store))
        (tool,) = tools
        assert tool.name == "meeting_minutes"

        manager.call("on_stream_end", stream="silent", state="done")  # nothing said: no minutes
        manager.call("on_stream_end", stream="room", state="done")
        assert manager.stats()[NAME]["failures"] == 0
        md, js = exports.minutes_paths(data, "room")
        assert md.read_text().startswith("# Minutes: room\n") and js.is_file()
        assert not exports.minutes_paths(data, "silent")[0].exists()
        (event,) = events(store, MINUTES_EVENT)
        assert event.source == NAME and event.t == 33.0 and event.payload["method"] == "model"
        assert event.payload["decisions"] == ["Launch on Friday."]

        text = tool.invoke({"stream": "room"})  # the transcript has not grown: the saved minutes
        assert "Launch on Friday." in text and "## Action items" in text
        assert "## Minutes: room" in export(store, "room", "md")

        add_rows(store, "room", [(40.0, 44.0, "One more thing: we decided on blue.")])
        call = {"name": "meeting_minutes", "args": {"stream": "room"}, "id": "1", "type": "tool_call"}
        result = tool.invoke(call)  # grown, and the model has no reply left: extractive minutes
        assert result.artifact["method"] == "extractive" and "decided on blue" in result.content
        assert exports.load_minutes(data, "room").covered_until == 44.0
        assert len(events(store, MINUTES_EVENT)) == 2

        bad = tool.invoke({**call, "args": {"stream": "nope"}})
        assert bad.status == "error" and bad.content.startswith("no stream named 'nope'")
        bad = tool.invoke({**call, "args": {"stream": "a/b"}})
        assert bad.status == "error" and "path separator" in bad.content
        manager.close()


def test_the_module_itself_loads_as_a_plugin(tmp_path: Path) -> None:
    config = PluginConfig(enabled=[NAME], settings={NAME: {"keywords": ["x"], "llm": "extractive"}})
    manager = PluginManager(config, data_dir=tmp_path)
    (info,) = manager.load(extra={NAME: "vsalmonn.plugins.builtin.meeting_monitor"})
    assert info.state == "active"
    assert {"on_transcript", "on_stream_end", "register_tools", "configure"} <= set(info.hooks)
    bad = PluginManager(PluginConfig(enabled=[NAME], settings={NAME: {"cooldown_s": "soon"}}))
    (info,) = bad.load(extra={NAME: "vsalmonn.plugins.builtin.meeting_monitor"})
    assert info.state == "failed" and "cooldown_s" in (info.error or "")
    manager.close()
    bad.close()


@pytest.mark.slow
def test_minutes_by_the_embedded_model(tmp_path: Path) -> None:
    """SmolLM2-135M rarely keeps to the format: either way the minutes must say something."""
    from vsalmonn.agent.config import AgentConfig
    from vsalmonn.agent.models import chat_model

    model = chat_model(AgentConfig(max_new_tokens=120), tmp_path)
    minutes = write_minutes(_rows(*MEETING), "room", model)
    assert minutes.summary.strip() and minutes.covered_until == 33.0
    assert minutes.method in ("model", "extractive")
