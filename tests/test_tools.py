"""The LangChain tools over a real store: a LangGraph agent, bad arguments, artifacts, reloading.

The store is the session's spoken clip (tests/talk_store.py: a 40 s clip with three spoken prompts at known
times, ingested with the real default encoders), this module's copy; tests that write copy it again first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from sqlalchemy import func, select

from vsalmonn.memory_store.models import Checkpoint, Event, FrameLabel, Stream, TranscriptSegment
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.ingest import Encoders, ingest_file
from vsalmonn.tools import MemoryView, VideoMemoryToolkit, ViewError, hms

from . import media
from .talk_store import MEMORY, PERCEPTION, Ingested

SPAN = re.compile(r"(\d\d):(\d\d):(\d\d)-(\d\d):(\d\d):(\d\d) \((\d+\.\d)-(\d+\.\d) s\)")
TOOL_NAMES = ["search_video_memory", "get_transcript", "describe_moment", "list_streams", "list_events"]


@pytest.fixture
def toolkit(ingested: Ingested, encoders: Encoders) -> Iterator[VideoMemoryToolkit]:
    store = MemoryStore(ingested.data)
    kit = VideoMemoryToolkit(store=store, text_encoder=encoders.text)
    yield kit
    kit.close()
    store.close()


def tools_of(kit: VideoMemoryToolkit) -> dict[str, BaseTool]:
    return {t.name: t for t in kit.get_tools()}


def call(tool: BaseTool, args: dict[str, Any], call_id: str = "call-1") -> ToolMessage:
    """The tool run as a model's tool call: a ToolMessage with content and artifact."""
    out = tool.invoke({"name": tool.name, "args": args, "id": call_id, "type": "tool_call"})
    assert isinstance(out, ToolMessage)
    return out


def spans(text: str) -> list[tuple[str, str, float, float]]:
    """Every "HH:MM:SS-HH:MM:SS (a-b s)" in `text` as (clock start, clock end, seconds start, seconds end)."""
    return [
        (f"{m[1]}:{m[2]}:{m[3]}", f"{m[4]}:{m[5]}:{m[6]}", float(m[7]), float(m[8]))
        for m in SPAN.finditer(text)
    ]


def assert_clock_matches(span: tuple[str, str, float, float]) -> None:
    assert span[0] == hms(span[2]) and span[1] == hms(span[3]), span


def store_snapshot(data: Path) -> tuple[Any, ...]:
    """What a read must never change: the files of the data directory and the catalog's rows.

    The catalog's own files are compared by content (rows), not by bytes: SQLite may fold its WAL into the
    database whenever a connection closes, which changes the files but nothing in them.
    """
    files = sorted(
        (str(p.relative_to(data)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in data.rglob("*")
        if p.is_file() and not p.name.startswith("catalog.sqlite")
    )
    with MemoryStore(data) as store, store.catalog.session() as s:
        checkpoints = s.execute(
            select(Checkpoint.stream_id, Checkpoint.seq, Checkpoint.checksum, Checkpoint.path).order_by(
                Checkpoint.stream_id, Checkpoint.seq
            )
        ).all()
        streams = s.execute(select(Stream.id, Stream.name, Stream.source).order_by(Stream.name)).all()
        tables = (TranscriptSegment, FrameLabel, Event)
        counts = [s.scalar(select(func.count()).select_from(table)) for table in tables]
    return files, [tuple(r) for r in checkpoints], [tuple(r) for r in streams], counts


# ------------------------------------------------------------------------------------------- an agent


class ScriptedChatModel(GenericFakeChatModel):
    """GenericFakeChatModel answers from its script; an agent only needs it to accept tools."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_langgraph_agent_finds_when_goodbye_is_said_with_clock_and_seconds(
    toolkit: VideoMemoryToolkit, ingested: Ingested
) -> None:
    from langgraph.prebuilt import create_react_agent

    at = ingested.said_at["goodbye"]
    script = [
        AIMessage(
            content="",
            tool_calls=[
                {"name": "search_video_memory", "args": {"query": "goodbye", "k": 3}, "id": "search-1"}
            ],
        ),
        AIMessage(
            content="",
            tool_calls=[
                {
                    "name": "get_transcript",
                    "args": {"stream": "talk", "start": max(0.0, at - 5), "end": at + 5},
                    "id": "transcript-1",
                }
            ],
        ),
        AIMessage(content=f"Someone says goodbye at {hms(at)}."),
    ]
    agent = create_react_agent(ScriptedChatModel(messages=iter(script)), toolkit.get_tools())
    result = agent.invoke({"messages": [HumanMessage("When does someone say goodbye?")]})

    replies = {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}
    assert set(replies) == {"search-1", "transcript-1"}
    assert result["messages"][-1].content.startswith("Someone says goodbye")

    search = replies["search-1"]
    assert search.status == "success", search.content
    moments = search.artifact["moments"]
    assert 1 <= len(moments) <= 3
    best = moments[0]
    assert best["stream"] == "talk" and best["t0"] - 2 <= at <= best["t1"] + 2, (at, moments)
    assert any("goodbye" in e.lower() for e in best["evidence"]), best
    first_line = search.content.splitlines()[1]
    found = spans(first_line)
    assert found, first_line
    assert_clock_matches(found[0])
    assert found[0][2] == pytest.approx(best["t0"], abs=0.051) and abs(found[0][2] - at) <= 2.0, first_line

    transcript = replies["transcript-1"]
    assert transcript.status == "success", transcript.content
    line = next(x for x in transcript.content.splitlines() if "goodbye" in x.lower())
    (span,) = spans(line)
    assert_clock_matches(span)
    assert abs(span[2] - at) <= 2.0, line
    assert any(
        "goodbye" in x["text"].lower() and abs(x["t0"] - at) <= 2 for x in transcript.artifact["lines"]
    )


# ------------------------------------------------------------------------------------- each tool, right


def test_each_tool_answers_with_text_and_a_structured_artifact(
    toolkit: VideoMemoryToolkit, ingested: Ingested
) -> None:
    tools = tools_of(toolkit)
    assert list(tools) == TOOL_NAMES
    for tool in tools.values():
        assert tool.description and tool.args_schema is not None
        assert tool.response_format == "content_and_artifact"
    at = ingested.said_at

    # A window keeps only moments overlapping it; each carries its checkpoint and slots.
    msg = call(
        tools["search_video_memory"], {"query": "are we muted", "stream": "talk", "start": 25, "end": 40}
    )
    moments = msg.artifact["moments"]
    assert moments and all(m["t1"] >= 25 and m["t0"] <= 40 for m in moments), moments
    assert any(m["t0"] - 2 <= at["muted"] <= m["t1"] + 2 for m in moments)
    assert {"stream", "t0", "t1", "score", "modality", "evidence", "slot_ids", "checkpoint_seq"} <= set(
        moments[0]
    )
    body = msg.content.splitlines()[1:]  # the first line repeats the question and its window
    assert len(body) == len(moments) and all(len(spans(line)) == 1 for line in body), msg.content

    msg = call(tools["get_transcript"], {"stream": "talk", "start": 0, "end": 40})
    lines = msg.artifact["lines"]
    for word in at:
        hit = [x for x in lines if word in x["text"].lower()]
        assert hit and abs(hit[0]["t0"] - at[word]) <= 2.0, (word, lines)

    msg = call(tools["describe_moment"], {"stream": "talk", "t": at["goodbye"]})
    assert msg.status == "success"
    d = msg.artifact
    assert d["seen"] and all(abs(f["t"] - at["goodbye"]) <= 3 and f["labels"] for f in d["seen"])
    assert any("goodbye" in x["text"].lower() for x in d["said"])
    assert {c["modality"] for c in d["memory"]} <= {"visual", "audio"} and d["memory"]
    assert f"talk at {hms(at['goodbye'])}" in msg.content and "said:" in msg.content

    msg = call(tools["list_streams"], {})
    (talk,) = msg.artifact["streams"]
    assert talk["name"] == "talk" and talk["kind"] == "file" and talk["checkpoint_seq"] >= 1
    assert talk["t_start"] == 0.0 and 39.0 <= talk["covered_until"] <= 41.0
    assert "talk: file" in msg.content and "memory covers 00:00:00-00:00:" in msg.content

    msg = call(tools["list_events"], {"stream": "talk", "kind": "alert", "since": 10})
    (event,) = msg.artifact["events"]
    assert event["kind"] == "alert" and event["t"] == 18.5 and event["stream"] == "talk"
    assert "alert at 00:00:18 (18.5 s)" in msg.content
    msg = call(tools["list_events"], {"kind": "reconnect"})
    assert msg.artifact["events"] == [] and "kinds recorded: alert" in msg.content
    msg = call(tools["list_events"], {"since": "2000-01-01T00:00:00Z"})
    assert len(msg.artifact["events"]) == 1


def test_the_view_works_without_langchain(toolkit: VideoMemoryToolkit, ingested: Ingested) -> None:
    view = toolkit.view
    assert isinstance(view, MemoryView)
    hits = view.search("goodbye", k=2)
    assert hits and hits[0].stream == "talk"
    assert hits[0].t0 - 2 <= ingested.said_at["goodbye"] <= hits[0].t1 + 2
    for bad in ({"query": " "}, {"query": "x", "k": 0}, {"query": "x", "start": 9, "end": 1}):
        with pytest.raises(ViewError):
            view.search(**bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- bad arguments

BAD = [
    ("search_video_memory", {"query": "goodbye", "stream": "nope"}, "no stream named 'nope'; known: talk"),
    ("search_video_memory", {"query": "goodbye", "k": 0}, "k: Input should be greater than or equal to 1"),
    ("search_video_memory", {"query": "goodbye", "k": 10**6}, "k: Input should be less than or equal to 50"),
    ("search_video_memory", {"query": ""}, "query: String should have at least 1 character"),
    ("search_video_memory", {"query": "   "}, "query: String should have at least 1 character"),
    ("search_video_memory", {"query": "x" * 100_000}, "query: String should have at most 2000 characters"),
    ("search_video_memory", {"query": "goodbye", "start": 30, "end": 10}, "must not be after end"),
    (
        "search_video_memory",
        {"query": "goodbye", "start": -1},
        "start: stream seconds must be finite and >= 0",
    ),
    ("search_video_memory", {"query": "goodbye", "start": "0:30", "end": 10}, "must not be after end"),
    (
        "search_video_memory",
        {"query": "goodbye", "stream": "talk", "start": "2026-12-03T14:00:00Z"},
        "start is a wall-clock time, but stream 'talk' has none",
    ),
    ("search_video_memory", {"query": "goodbye", "start": "2026-12-03T14:00"}, "no stream has a wall-clock"),
    ("search_video_memory", {"query": ["goodbye"]}, "query: Input should be a valid string"),
    ("search_video_memory", {"query": "goodbye", "k": "many"}, "k: Input should be a valid integer"),
    ("search_video_memory", {"k": 3}, "query: Field required"),
    ("get_transcript", {"stream": "talk", "start": 30, "end": 10}, "start (30.0 s) must not be after end"),
    (
        "get_transcript",
        {"stream": "talk", "start": "soon", "end": 5},
        "start: 'soon' is not a time; give seconds of stream time (65), stream time as HH:MM:SS",
    ),
    ("get_transcript", {"stream": "talk"}, "start: Field required"),
    ("get_transcript", {"stream": "nope", "start": 0, "end": 5}, "no stream named 'nope'"),
    ("get_transcript", {"stream": "talk", "start": 500, "end": 600}, "past what stream 'talk' has committed"),
    ("describe_moment", {"stream": "talk", "t": -1}, "t: stream seconds must be finite and >= 0"),
    ("describe_moment", {"stream": "talk", "t": "2026-12-03T14:00"}, "t is a wall-clock time, but stream"),
    ("describe_moment", {"stream": "talk", "t": 10**6}, "past what stream 'talk' has committed"),
    ("describe_moment", {"stream": "ta/lk", "t": 3}, "stream: stream name must not contain a path separator"),
    ("describe_moment", {"stream": "x" * 100_000, "t": 3}, "stream name is 100000 characters long"),
    ("describe_moment", {"stream": 7, "t": 3}, "stream: Input should be a valid string"),
    ("list_events", {"verbose": True}, "verbose: not an argument of this tool"),
    ("list_events", {"since": "yesterday"}, "since: give seconds of stream time"),
    ("list_events", {"since": -5}, "since: give seconds of stream time"),
    ("list_events", {"stream": "nope"}, "no stream named 'nope'; known: talk"),
    ("list_events", {"limit": 0}, "limit: Input should be greater than or equal to 1"),
]


@pytest.mark.parametrize(
    ("name", "args", "expected"), BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)]
)
def test_bad_arguments_come_back_as_one_line_the_model_can_act_on(
    toolkit: VideoMemoryToolkit, ingested: Ingested, name: str, args: dict[str, Any], expected: str
) -> None:
    tool = tools_of(toolkit)[name]
    before = store_snapshot(ingested.data)

    out = tool.invoke(args)  # as a plain call: the error text, not an exception
    assert isinstance(out, str) and expected in out, out
    assert "\n" not in out and len(out) < 500 and "Traceback" not in out, out

    msg = call(tool, args)  # as a model's tool call: an error ToolMessage with the same text
    assert msg.status == "error" and msg.content == out and msg.artifact is None

    assert store_snapshot(ingested.data) == before


# ------------------------------------------------------------------------------------------- reloading

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np

    from vsalmonn.memory_store.store import MemoryStore

    data, vector = Path(sys.argv[1]), np.load(sys.argv[2])
    with MemoryStore(data) as store, store.writer("talk") as writer:
        memory, last = store.open_memory("talk")
        memory.write(vector, [45.0], [47.0], modality="audio")
        info = writer.commit(memory.state_dict(), source_offset=50.0, source_state={"done": True})
        print(info.seq)
    """
)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_newer_checkpoint_or_a_new_stream_is_seen_by_the_next_call(
    tmp_path: Path, ingested: Ingested, encoders: Encoders
) -> None:
    data = tmp_path / "data"
    shutil.copytree(ingested.data, data)
    zebra = "the zebra crossing is closed today"
    with MemoryStore(data) as store, VideoMemoryToolkit(store=store, text_encoder=encoders.text) as kit:
        tools = tools_of(kit)
        # A stream the catalog knows but that has committed nothing yet answers as such.
        store.catalog.ensure_stream("pending", source="rtsp://user:secret@camera/live", kind="url")
        msg = call(tools["describe_moment"], {"stream": "pending", "t": 1})
        assert msg.status == "error" and "'pending' has no committed checkpoint yet" in msg.content
        msg = call(tools["search_video_memory"], {"query": "anything", "stream": "pending"})
        assert msg.artifact["moments"] == [] and "no committed checkpoint yet" in msg.content
        listed = call(tools["list_streams"], {})
        assert "rtsp://***@camera/live" in listed.content and "secret" not in listed.content
        assert "pending: url" in listed.content and "not searchable" in listed.content
        seq = listed.artifact["streams"][1]["checkpoint_seq"]
        before = call(tools["search_video_memory"], {"query": zebra, "stream": "talk", "k": 1})
        assert before.artifact["moments"][0]["checkpoint_seq"] == seq

        # The daemon writes catalog rows before the checkpoint that commits them: not visible yet.
        talk = store.catalog.stream("talk")
        assert talk is not None
        with store.catalog.transaction() as s:
            s.add(TranscriptSegment(stream_id=talk.id, t0=45.0, t1=47.0, text=zebra))
        msg = call(tools["get_transcript"], {"stream": "talk", "start": 44, "end": 48})
        assert msg.status == "error" and "committed so far (up to 00:00:40" in msg.content, msg.content

        # Another process commits a newer checkpoint holding the sentence at 45-47 s.
        vector = tmp_path / "zebra.npy"
        import numpy as np

        np.save(vector, encoders.text.encode([zebra]))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run(
            [sys.executable, "-c", WRITER, str(data), str(vector)],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        new_seq = int(done.stdout.split()[-1])
        assert new_seq > seq

        after = call(tools["search_video_memory"], {"query": zebra, "stream": "talk", "k": 1})
        (best,) = after.artifact["moments"]
        assert (best["t0"], best["t1"], best["checkpoint_seq"]) == (45.0, 47.0, new_seq), best
        assert "00:00:45-00:00:47 (45.0-47.0 s)" in after.content and "said: 'the zebra" in after.content
        msg = call(tools["get_transcript"], {"stream": "talk", "start": 44, "end": 48})
        assert msg.status == "success" and zebra in msg.content, msg.content

        # A new stream ingested meanwhile (here: by a second store on the same directory).
        clip = media.write_media(tmp_path / "short.mp4", video_times=media.uniform_times(6, 5), rate=5)
        with MemoryStore(data) as writer_store:
            ingest_file(
                clip, "second", store=writer_store, encoders=encoders, perception=PERCEPTION,
                memory_config=MEMORY, window_s=10, checkpoint_every_s=10,
            )  # fmt: skip
        names = [s["name"] for s in call(tools["list_streams"], {}).artifact["streams"]]
        assert names == ["pending", "second", "talk"]
        msg = call(tools["search_video_memory"], {"query": "a coloured pattern", "stream": "second", "k": 2})
        assert msg.status == "success" and msg.artifact["moments"], msg.content
        assert all(m["stream"] == "second" and m["t1"] <= 7.0 for m in msg.artifact["moments"])


def test_importing_the_package_loads_neither_torch_nor_langchain() -> None:
    code = (
        "import sys; import vsalmonn.tools as t; "
        "assert 'torch' not in sys.modules and 'langchain_core' not in sys.modules, 'heavy import'; "
        "assert t.hms(3723.9) == '01:02:03'; "
        "from vsalmonn.tools import VideoMemoryToolkit; assert 'torch' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("seconds", "clock"), [(0, "00:00:00"), (65.9, "00:01:05"), (3723.2, "01:02:03"), (360000, "100:00:00")]
)
def test_hms(seconds: float, clock: str) -> None:
    assert hms(seconds) == clock


# ------------------------------------------------------------------------------------------- wall clock


def as_live(data: Path, epoch: float) -> None:
    """Recommit stream talk's memory with a live source's epoch, as a live runner's checkpoint keeps it
    (`test_daemon`'s live test checks that a real live ingest writes one)."""
    with MemoryStore(data) as store, store.writer("talk") as writer:
        memory, last = store.open_memory("talk")
        assert last is not None
        writer.commit(memory.state_dict(), source_offset=last.source_offset, source_state={"epoch": epoch})


def test_times_may_be_clock_text_or_the_wall_clock_of_a_live_stream(
    tmp_path: Path, ingested: Ingested, encoders: Encoders
) -> None:
    from datetime import UTC, datetime, timedelta

    data = tmp_path / "data"
    shutil.copytree(ingested.data, data)
    with MemoryStore(data) as store, VideoMemoryToolkit(store=store, text_encoder=encoders.text) as kit:
        tools = tools_of(kit)
        # HH:MM:SS is stream time, read exactly as seconds are.
        by_clock = call(tools["get_transcript"], {"stream": "talk", "start": "00:00:00", "end": "0:40"})
        by_seconds = call(tools["get_transcript"], {"stream": "talk", "start": 0, "end": 40})
        assert by_clock.artifact == by_seconds.artifact and by_clock.artifact["lines"]
        assert by_clock.artifact["epoch"] is None  # a file: no wall clock

    epoch = datetime(2026, 12, 3, 14, 0, 0, tzinfo=UTC)
    as_live(data, epoch.timestamp())
    at = ingested.said_at["goodbye"]
    with MemoryStore(data) as store, VideoMemoryToolkit(store=store, text_encoder=encoders.text) as kit:
        tools = tools_of(kit)
        listed = call(tools["list_streams"], {})
        assert listed.artifact["streams"][0]["epoch"] == "2026-12-03T14:00:00Z"
        assert "live since 2026-12-03 14:00:00 UTC" in listed.content
        window = {"start": (epoch + timedelta(seconds=at - 3)).isoformat(), "end": "2026-12-03T14:00:40Z"}
        found = call(tools["search_video_memory"], {"query": "someone says goodbye", "k": 1, **window})
        (best,) = found.artifact["moments"]
        assert best["t0"] - 2 <= at <= best["t1"] + 2, best
        wall_t0 = datetime.fromisoformat(best["wall_t0"])
        assert wall_t0 == epoch + timedelta(seconds=best["t0"])
        assert f"[wall clock 2026-12-03 {wall_t0:%H:%M:%S}-" in found.content, found.content
        # A wall-clock window before anything was said there holds no goodbye.
        early = {"start": "2026-12-03T14:00:00Z", "end": (epoch + timedelta(seconds=at - 8)).isoformat()}
        before = call(tools["search_video_memory"], {"query": "someone says goodbye", "k": 3, **early})
        # every moment starts inside the window; a frame's slot that overlaps its end may end 1 s later
        end = at - 8 + 0.01
        spans = [(m["t0"], m["t1"]) for m in before.artifact["moments"]]
        assert all(t0 <= end and t1 <= end + 1.0 for t0, t1 in spans), before.artifact
        # A wall-clock instant, as describe_moment takes it.
        seen = call(tools["describe_moment"], {"stream": "talk", "t": "2026-12-03 14:00:18"})
        assert seen.artifact["t"] == 18.0 and seen.artifact["wall"] == "2026-12-03T14:00:18Z"


def test_search_since_a_span_back_from_now(
    tmp_path: Path, ingested: Ingested, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import time

    from .test_cli import in_process

    data = tmp_path / "data"
    shutil.copytree(ingested.data, data)

    def search(*more: str) -> Any:
        return in_process(capsys, "--data", str(data), "search", "goodbye", *more)

    got = search("--since", "1h", "--json")
    assert got.returncode == 2 and "no stream has a wall-clock time" in got.stderr, got
    as_live(data, time.time() - 600)  # a live stream that started 10 minutes ago
    got = search("--since", "1h", "--json")
    assert got.returncode == 0, got
    moments = json.loads(got.stdout)["moments"]
    assert moments and all(m["wall_t0"] is not None for m in moments)
    assert "wall clock (UTC)" in search("--since", "1h").stdout
    got = search("--since", "2m", "--json")  # the last two minutes lie past what the stream committed
    assert got.returncode == 0 and json.loads(got.stdout)["moments"] == [], got
    for bad, reason in (
        (["--since", "soon"], "since: 'soon' is neither a span back from now"),
        (["--start", "0:50", "--end", "10"], "must not be after end"),
        (["--since", "1h", "--start", "3"], "give --since or --start, not both"),
    ):
        got = search(*bad)
        assert got.returncode == 2 and reason in got.stderr and len(got.stderr.strip().splitlines()) == 1, got
