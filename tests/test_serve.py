"""`vsalmonn serve`'s REST API: a real uvicorn server on 127.0.0.1 (a free port), talked to with httpx.

The store is this module's copy of the session's spoken clip (tests/talk_store.py: a 40 s clip with three
spoken prompts, ingested with the real encoders); the server only reads it. Answers are checked against
what the CLI's ``--json`` prints.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from vsalmonn.memory_store.rows.events import add_event
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.ingest import Encoders
from vsalmonn.serve.server import bind, make_server
from vsalmonn.settings import Settings, describe_settings, load_settings
from vsalmonn.tools import MemoryView

from . import media
from .talk_store import PERCEPTION, Ingested
from .test_cli import assert_one_line_error, in_process, vsalmonn
from .test_daemon import cli, write_config

TOKEN = "s3cret-token"


@contextmanager
def serving(settings: Settings, text_encoder: Any = None, **options: Any) -> Iterator[httpx.Client]:
    """A live uvicorn server of `settings` on 127.0.0.1 at a free port, and an httpx client of it
    (`options`: more keywords of `make_server`, such as ``chat_model=``)."""
    server = make_server(settings, text_encoder=text_encoder, **options)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def settings_of(data: Path, **serve: Any) -> Settings:
    return Settings(data_dir=data, perception=PERCEPTION, serve=serve)


@pytest.fixture(scope="module")
def client(ingested: Ingested, encoders: Encoders) -> Iterator[httpx.Client]:
    with serving(settings_of(ingested.data), encoders.text) as c:
        yield c


def one_line_detail(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail, detail
    for fragment in fragments:
        assert fragment in detail, detail
    return detail


def without_ages(value: Any) -> Any:
    """Status entries less what changes from one second to the next (ages, staleness)."""
    if isinstance(value, dict):
        return {k: without_ages(v) for k, v in value.items() if k not in ("age_s", "stale")}
    if isinstance(value, list):
        return [without_ages(v) for v in value]
    return value


def test_health_streams_and_openapi(client: httpx.Client, ingested: Ingested, capsys: Any) -> None:
    assert client.get("/health/live").json() == {"status": "live"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["committed"] == 1, ready.text
    served = client.get("/api/streams")
    assert served.status_code == 200
    cli = in_process(capsys, "--data", str(ingested.data), "status", "--json")
    assert cli.returncode == 0, cli.stderr
    assert without_ages(served.json()) == without_ages(json.loads(cli.stdout))
    assert [e["stream"] for e in served.json()["streams"]] == ["talk"]
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/health/live", "/health/ready", "/api/streams", "/api/search", "/api/events"):
        assert route in paths
    assert "/api/streams/{name}/transcript" in paths
    assert (
        "access-control-allow-origin"
        not in client.get("/api/streams", headers={"Origin": "http://x"}).headers
    )


def test_search_is_the_json_of_search_json(client: httpx.Client, ingested: Ingested, capsys: Any) -> None:
    served = client.get("/api/search", params={"q": "goodbye", "k": 3})
    assert served.status_code == 200, served.text
    cli = in_process(capsys, "--data", str(ingested.data), "search", "goodbye", "--json", "-k", "3")
    assert cli.returncode == 0, cli.stderr
    ours, theirs = served.json(), json.loads(cli.stdout)
    assert set(ours) == set(theirs) == {"moments"}
    assert len(ours["moments"]) == len(theirs["moments"]) == 3
    for a, b in zip(ours["moments"], theirs["moments"], strict=True):
        assert a.keys() == b.keys()
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)  # thread counts may differ in the last bits
        assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}
    top = ours["moments"][0]
    assert top["t0"] - 2 <= ingested.said_at["goodbye"] <= top["t1"] + 2
    one_stream = client.get("/api/search", params={"q": "goodbye", "k": 1, "stream": "talk"}).json()
    assert one_stream["moments"][0]["stream"] == "talk"
    window = client.get("/api/search", params={"q": "goodbye", "k": 5, "start": 25, "end": 40}).json()
    assert window["moments"] and all(m["t1"] >= 25 and m["t0"] <= 40 for m in window["moments"])
    as_clock = client.get("/api/search", params={"q": "goodbye", "k": 5, "start": "0:25", "end": "00:00:40"})
    assert as_clock.json() == window  # HH:MM:SS is stream time


def test_concurrent_requests_all_succeed(client: httpx.Client) -> None:
    """The routes run in FastAPI's thread pool: one view, read by several requests at once."""
    from concurrent.futures import ThreadPoolExecutor

    paths = ["/api/search?q=goodbye&k=2", "/api/streams", "/api/events", "/api/streams/talk/transcript"] * 4
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda p: client.get(p).status_code, paths))
    assert codes == [200] * len(paths)


def test_transcript_and_events(client: httpx.Client, ingested: Ingested, encoders: Encoders) -> None:
    served = client.get("/api/streams/talk/transcript", params={"start": 0, "end": 40})
    assert served.status_code == 200, served.text
    with MemoryView(MemoryStore(ingested.data), encoders.text, owns_store=True) as view:
        expected = view.transcript("talk", 0.0, 40.0).model_dump(mode="json")
        events = view.events(kind="alert").model_dump(mode="json")
    assert served.json() == expected
    text = " ".join(line["text"] for line in served.json()["lines"]).lower()
    assert "goodbye" in text
    whole = client.get("/api/streams/talk/transcript").json()  # end defaults to all that is committed
    assert whole["lines"] == expected["lines"] and whole["end"] == whole["covered_until"]

    alerts = client.get("/api/events", params={"kind": "alert"}).json()
    assert alerts == events and [e["message"] for e in alerts["events"]] == ["keyword 'goodbye'"]
    assert len(client.get("/api/events", params={"kind": "alert", "since": "18"}).json()["events"]) == 1
    assert client.get("/api/events", params={"kind": "alert", "since": "19"}).json()["events"] == []
    since_wall = client.get("/api/events", params={"since": "2000-01-01T00:00:00"}).json()
    assert [e["message"] for e in since_wall["events"] if e["kind"] == "alert"] == ["keyword 'goodbye'"]


@pytest.mark.parametrize(
    ("path", "params", "status", "fragment"),
    [
        ("/api/search", {"q": "x", "stream": "nope"}, 404, "no stream named 'nope'"),
        ("/api/streams/nope/transcript", {"start": 0, "end": 5}, 404, "no stream named 'nope'"),
        ("/api/search", {"q": "goodbye", "k": 0}, 422, "k"),
        ("/api/search", {"q": "goodbye", "k": 101}, 422, "k"),
        ("/api/search", {"q": "w" * 2001}, 422, "q"),
        ("/api/search", {}, 422, "q"),
        ("/api/search", {"q": "   "}, 422, "query is empty"),
        ("/api/streams/talk/transcript", {"start": 20, "end": 10}, 422, "after end"),
        ("/api/search", {"q": "goodbye", "start": 20, "end": 10}, 422, "after end"),
        ("/api/search", {"q": "goodbye", "end": -1}, 422, "end"),
        ("/api/streams/talk/transcript", {"start": "soon"}, 422, "start: 'soon' is not a time"),
        ("/api/search", {"q": "goodbye", "start": "2026-12-03T14:00"}, 422, "no stream has a wall-clock"),
        ("/api/events", {"since": "yesterday"}, 422, "since"),
    ],
)
def test_bad_arguments_are_one_line_json_errors(
    client: httpx.Client, path: str, params: dict[str, Any], status: int, fragment: str
) -> None:
    one_line_detail(client.get(path, params=params), status, fragment)


def test_thumbnails_are_served_from_the_data_directory_only(client: httpx.Client, ingested: Ingested) -> None:
    folder = ingested.data / "thumbs" / "talk"
    folder.mkdir(parents=True, exist_ok=True)
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    (folder / "alert-18.5.png").write_bytes(image)
    (folder / "notes.txt").write_text("not an image")
    (ingested.data / "secret.png").write_bytes(image)  # in the data directory but outside thumbs/
    got = client.get("/api/thumbnails/talk/alert-18.5.png")
    assert got.status_code == 200 and got.content == image
    assert got.headers["content-type"] == "image/png"
    for bad in ("talk/missing.png", "talk/notes.txt", "talk", "../secret.png", "talk/../../secret.png",
                "%2e%2e/secret.png", "..%2Fsecret.png", "/etc/passwd"):  # fmt: skip
        one_line_detail(client.get(f"/api/thumbnails/{bad}"), 404)


def test_the_event_stream_sends_an_event_written_while_connected(
    client: httpx.Client, ingested: Ingested
) -> None:
    def read_events(response: httpx.Response, want: int) -> list[dict[str, str]]:
        events: list[dict[str, str]] = []
        current: dict[str, str] = {}
        for line in response.iter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                    if len(events) == want:
                        return events
                current = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                current[field] = value
        return events

    with MemoryStore(ingested.data) as store:
        stream_id = store.catalog.stream("talk").id
        with client.stream("GET", "/api/events/stream", timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = add_event(
                store.catalog, kind="test.sse", stream_id=stream_id, t=3.0, message="hello feed"
            )
            (got,) = read_events(response, 1)
        assert (got["id"], got["event"]) == (str(first), "test.sse")
        assert (
            json.loads(got["data"])["message"] == "hello feed" and json.loads(got["data"])["stream"] == "talk"
        )
        second = add_event(store.catalog, kind="test.sse", message="while away")
        with client.stream("GET", "/api/events/stream", headers={"Last-Event-ID": str(first)}) as response:
            (missed,) = read_events(response, 1)  # a reconnect resumes after the last id it saw
        assert missed["id"] == str(second) and json.loads(missed["data"])["message"] == "while away"


def test_an_open_event_feed_ends_when_the_server_stops(ingested: Ingested, encoders: Encoders) -> None:
    server = make_server(settings_of(ingested.data), text_encoder=encoders.text)
    sock = bind("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        until = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < until, "the server did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/events/stream"
        with httpx.Client(timeout=30) as http, http.stream("GET", url) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines).startswith(": following events")
            asked = time.monotonic()
            server.should_exit = True  # as SIGTERM does
            rest = list(lines)  # the feed ends by itself: the response is complete, not cut
        thread.join(10)
        took = time.monotonic() - asked
        assert not thread.is_alive() and rest == [""] * len(rest)
        # uvicorn's graceful timeout (5 s) cancels a response it had to wait for, with a traceback
        assert took < 3.0, f"the server took {took:.1f} s to stop with a feed open"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_a_token_guards_every_route_but_health(ingested: Ingested, encoders: Encoders) -> None:
    settings = settings_of(ingested.data, token=TOKEN, cors_origins=["http://dash.local"])
    with serving(settings, encoders.text) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            for path in (
                "/api/streams",
                "/api/events",
                "/api/streams/talk/transcript",
                "/api/thumbnails/a.png",
            ):
                one_line_detail(c.get(path, headers=headers), 401, "token")
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert c.get("/api/streams", headers=good).status_code == 200
        assert c.get("/api/events", headers=good).status_code == 200
        assert c.get("/health/live").status_code == 200
        assert c.get("/health/ready").status_code == 200
        assert "/api/search" in c.get("/openapi.json").json()["paths"]
        assert c.get("/docs").status_code == 404  # its page would load scripts from a CDN
        cors = c.get("/health/live", headers={"Origin": "http://dash.local"})
        assert cors.headers["access-control-allow-origin"] == "http://dash.local"


def test_ready_is_503_with_a_reason_until_a_checkpoint_is_committed(
    tmp_path: Path,
    ingested: Ingested,
    encoders: Encoders,
) -> None:
    with serving(settings_of(tmp_path / "nothing"), encoders.text) as c:
        one_line_detail(c.get("/health/ready"), 503, "no catalog")
        one_line_detail(c.get("/api/streams"), 503, "no catalog")
        assert c.get("/health/live").status_code == 200
        assert not (tmp_path / "nothing").exists()  # a reader creates nothing
        MemoryStore(tmp_path / "nothing").close()  # a catalog now exists, with no stream in it
        one_line_detail(c.get("/health/ready"), 503, "no stream has a committed checkpoint")
        assert c.get("/api/streams").json() == {"streams": []}
    # A server started before anything was ingested becomes ready once a checkpoint lands, without a restart.
    late = tmp_path / "late"
    with serving(settings_of(late), encoders.text) as c:
        one_line_detail(c.get("/health/ready"), 503, "no catalog")
        shutil.copytree(ingested.data, late)
        assert c.get("/health/ready").status_code == 200
        assert c.get("/api/search", params={"q": "goodbye", "k": 1}).json()["moments"][0]["stream"] == "talk"


def test_serve_refuses_an_open_address_without_a_token(tmp_path: Path, capsys: Any) -> None:
    result = vsalmonn("--data", str(tmp_path), "serve", "--host", "0.0.0.0", cwd=tmp_path, timeout=60)
    assert_one_line_error(result, "refusing to listen on 0.0.0.0 without a token", "serve.token")
    assert_one_line_error(in_process(capsys, "serve", "--port", "70000"), "--port")


def test_serve_settings_table() -> None:
    settings = load_settings(environ={"VSALMONN_SERVE__TOKEN": TOKEN, "VSALMONN_SERVE__PORT": "9000"})
    assert settings.serve.token is not None and settings.serve.token.get_secret_value() == TOKEN
    assert (settings.serve.host, settings.serve.port, settings.serve.cors_origins) == ("127.0.0.1", 9000, [])
    shown = {row.key: row for row in describe_settings(environ={"VSALMONN_SERVE__TOKEN": TOKEN})}
    assert (
        shown["serve.token"].value == "**********"
        and shown["serve.token"].source == "env VSALMONN_SERVE__TOKEN"
    )
    assert shown["serve.host"].value == "127.0.0.1" and shown["serve.port"].value == 8765


def test_the_command_serves_until_stopped(ingested: Ingested, tmp_path: Path) -> None:
    """`vsalmonn serve --port 0` as a user runs it: it says where it listens, answers, and stops on SIGTERM
    (uvicorn shuts down, then ends by the signal it caught, as a service manager expects)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vsalmonn", "--data", str(ingested.data), "serve", "--port", "0"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "serving" in line and "http://127.0.0.1:" in line, line
        base = line.split("on ", 1)[1].split(" ", 1)[0]
        assert httpx.get(f"{base}/health/ready", timeout=30).status_code == 200
        streams = httpx.get(f"{base}/api/streams", timeout=30).json()["streams"]
        assert [e["stream"] for e in streams] == ["talk"]
    finally:
        process.terminate()
        code = process.wait(20)
    assert code in (0, -signal.SIGTERM), code
    assert "Traceback" not in process.stderr.read()


def test_daemon_serve_ingests_and_serves_in_one_process(tmp_path: Path) -> None:
    """`vsalmonn daemon --serve`: the API comes up at once, becomes ready when the daemon commits its first
    checkpoint, shows the stream running, and SIGTERM stops both with exit 0."""
    film = media.write_media(tmp_path / "film.mp4", video_times=media.uniform_times(600, 1), rate=1)
    config = write_config(
        tmp_path / "v.toml", {"film": str(film)}, window_s=5, checkpoint_every_s=5, status_every_s=0.5
    )
    data = str(tmp_path / "data")
    daemon = cli("--config", str(config), "--data", data, "daemon", "--serve", "--port", "0", cwd=tmp_path)
    try:
        assert daemon.stderr is not None
        line = daemon.stderr.readline()
        assert "serving" in line and "http://127.0.0.1:" in line, line
        base = line.split("on ", 1)[1].split(" ", 1)[0]
        deadline = time.monotonic() + 120
        while (ready := httpx.get(f"{base}/health/ready", timeout=30)).status_code != 200:
            assert daemon.poll() is None and time.monotonic() < deadline, ready.text
            time.sleep(0.3)
        while (entries := httpx.get(f"{base}/api/streams", timeout=30).json()["streams"])[0][
            "state"
        ] != "running":
            assert time.monotonic() < deadline, entries  # the first status report may follow the checkpoint
            time.sleep(0.3)
        assert [(e["stream"], e["state"]) for e in entries] == [("film", "running")]
        assert entries[0]["checkpoint"]["seq"] >= 1
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, daemon.stderr.read()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    assert_one_line_error(
        vsalmonn("--config", str(config), "--data", data, "daemon", "--serve", "--host", "0.0.0.0",
                 cwd=tmp_path, timeout=60),
        "refusing to listen on 0.0.0.0 without a token",
    )  # fmt: skip


def test_served_connections_send_without_waiting_for_acks() -> None:
    """A socket of `bind` gives asyncio's connections TCP_NODELAY: without it each response's second write
    waited for the client's delayed ACK, 40 ms on every request (found by ``bench serve``)."""
    import asyncio
    import socket

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        sock = bind("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(seen, 10)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
