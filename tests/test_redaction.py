"""Credentials in source URLs are used to connect and shown nowhere: not on stderr, in `status`, in the
catalog's rows, in event sinks, nor in what the tools tell a language model (issue 14)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vsalmonn.memory_store.redact import MASK, is_secret_key, redact, redact_data, redact_url
from vsalmonn.settings import DATA_ENV

from . import media
from .stream_server import StreamServer
from .test_cli import vsalmonn

# ----- the function -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:pw@cam.local:554/live", "rtsp://***@cam.local:554/live"),
        ("http://user@host/x", "http://***@host/x"),
        ("http://a:p@ss@host/x", "http://***@host/x"),  # an unescaped @ in the password
        ("https://host/x?token=abc&fps=5", "https://host/x?token=***&fps=5"),
        ("https://host/x?TOKEN=abc&Access_Token=d", "https://host/x?TOKEN=***&Access_Token=***"),
        (
            "https://s3.example/b/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=ff&X-Amz-Expires=60",
            "https://s3.example/b/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=***",
        ),
        (
            "http://h/p?api_key=1&apikey=2&key=3&keyframe=4",
            "http://h/p?api_key=***&apikey=***&key=***&keyframe=4",
        ),
        (
            "http://h/p?password=1&passwd=2&pwd=3&secret=4",
            "http://h/p?password=***&passwd=***&pwd=***&secret=***",
        ),
        (
            "http://h/p?sig=1&signature=2&auth=3&session=4",
            "http://h/p?sig=***&signature=***&auth=***&session=***",
        ),
        ("http://h/cb#access_token=xyz&state=1", "http://h/cb#access_token=***&state=1"),
        ("http://h/p?token=&flag", "http://h/p?token=&flag"),  # nothing to hide
        ("http://h:8080/live.ts", "http://h:8080/live.ts"),
        ("udp://239.0.0.1:1234", "udp://239.0.0.1:1234"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # idempotent


def test_urls_inside_a_message_are_redacted_and_the_rest_kept() -> None:
    error = (
        "http://admin:pw@10.0.0.5/cam?token=T0K: Server returned 401 Unauthorized (authorization failed); "
        "retrying rtsp://u:p@other/x, then 'https://h/?sig=S'"
    )
    assert redact(error) == (
        "http://***@10.0.0.5/cam?token=***: Server returned 401 Unauthorized (authorization failed); "
        "retrying rtsp://***@other/x, then 'https://h/?sig=***'"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no url here",
        "user:password@host without a scheme",
        "/data/cam-1.mp4",
        "ratio 3:2 @ 5 fps",
        "a=1&token=2",
    ],
)
def test_text_without_urls_is_untouched(text: str) -> None:
    assert redact(text) == text


def test_none_and_nested_data() -> None:
    assert redact(None) is None
    payload = {
        "url": "http://u:p@h/",
        "n": 3,
        "list": ["x", "rtsp://a:b@c/"],
        "inner": {"e": "http://h/?key=k"},
    }
    assert redact_data(payload) == {
        "url": "http://***@h/", "n": 3, "list": ["x", "rtsp://***@c/"], "inner": {"e": "http://h/?key=***"},
    }  # fmt: skip
    assert MASK == "***"
    assert (
        is_secret_key("X-Amz-Security-Token") and is_secret_key("client_secret") and not is_secret_key("fps")
    )


# ----- end to end: nothing shown or stored holds the secrets -----------------------------------------------

USER, PASSWORD, TOKEN = "admin", "Pa55w0rdXyZ", "T0kenQwErTy"
SECRETS = (PASSWORD, TOKEN, f"{USER}:")


def _assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}: {text[:2000]}"


@pytest.fixture(scope="module")
def clip_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("redact") / "live.ts"
    return media.write_media(
        path, video_times=media.uniform_times(3, 5), size=(160, 120), rate=5, gop=5, container_format="mpegts"
    )


def _frames(data: Path) -> int:
    try:
        with sqlite3.connect(data / "catalog.sqlite", timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM frame_labels").fetchone()[0])
    except sqlite3.Error:
        return 0


def _ingest_until_frames(
    cwd: Path, config: Path, data: Path, url: str, stream: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV}
    args = [sys.executable, "-m", "vsalmonn", "--config", str(config), "--data", str(data), "ingest", url]
    with subprocess.Popen(
        [*args, "--stream", stream], cwd=cwd, env=env, text=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and _frames(data) < 2:
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_secrets_in_source_urls_appear_nowhere(tmp_path: Path, clip_ts: Path) -> None:
    secret_query = f"?token={TOKEN}&fps=5"
    data = tmp_path / "data"
    config = tmp_path / "vsalmonn.toml"
    config.write_text(
        '[perception]\nspeech_encoder = "none"\nreconnect_initial_s = 0.05\nreconnect_max_attempts = 2\n'
        "live_timeout_s = 3\n[memory]\nvisual_slots = 64\n"
        '[[plugins.sinks."*"]]\ntype = "jsonl"\npath = "events.jsonl"\n'
    )
    outputs: list[subprocess.CompletedProcess[str]] = []
    with StreamServer(clip_ts, speed=4.0, path=f"/live.ts{secret_query}") as server:
        base = f"http://{USER}:{PASSWORD}@127.0.0.1:{server.port}"
        # One that serves a clip (the credentials must reach the server: it answers only this path), replayed
        # on every reconnect: stopped with SIGINT once frames are in ...
        good = _ingest_until_frames(tmp_path, config, data, f"{base}/live.ts{secret_query}", "cam")
        # ... and one the server refuses (404), whose FFmpeg error names the URL.
        bad = vsalmonn(
            "--config", str(config), "--data", str(data), "ingest", f"{base}/missing.ts{secret_query}",
            "--stream", "gone", cwd=tmp_path, timeout=300,
        )  # fmt: skip
        outputs += [good, bad]
    assert server.connections >= 1
    assert bad.returncode == 2 and "***@127.0.0.1" in bad.stderr, bad.stderr
    for i, run in enumerate(outputs):
        _assert_clean(f"stdout {i}", run.stdout)
        _assert_clean(f"stderr {i}", run.stderr)

    with sqlite3.connect(data / "catalog.sqlite") as db:
        frames = db.execute("SELECT count(*) FROM frame_labels").fetchone()[0]
        last_errors = [e for (e,) in db.execute("SELECT last_error FROM stream_status") if e]
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert frames >= 1, good.stderr  # the good URL was connected to, with its credentials
    assert last_errors and events >= 1

    status = vsalmonn("--data", str(data), "status", cwd=tmp_path, timeout=120)
    status_json = vsalmonn("--data", str(data), "status", "--json", cwd=tmp_path, timeout=120)
    assert status.returncode == 0 and status_json.returncode == 0, status.stderr + status_json.stderr
    assert "127.0.0.1" in status_json.stdout
    for where, text in (("status", status.stdout + status.stderr), ("status --json", status_json.stdout)):
        _assert_clean(where, text)
    json.loads(status_json.stdout)

    with sqlite3.connect(data / "catalog.sqlite") as db:
        _assert_clean("the catalog's dump", "\n".join(db.iterdump()))
    for path in data.glob("catalog.sqlite*"):  # the file itself and its WAL, free pages included
        _assert_clean(path.name, path.read_bytes().decode("latin-1"))
    sink = data / "events.jsonl"
    assert sink.is_file() and sink.read_text().strip()
    _assert_clean("the JSONL sink", sink.read_text())

    from vsalmonn.tools import VideoMemoryToolkit

    with VideoMemoryToolkit.from_data_dir(data) as kit:
        tools = {t.name: t for t in kit.get_tools()}
        streams = str(tools["list_streams"].invoke({}))
        events_out = str(tools["list_events"].invoke({}))
        view_streams = kit.view.streams()
        view_events = kit.view.events(limit=50)
    assert "cam" in streams and "gone" in streams
    assert "***" in streams + events_out
    _assert_clean("list_streams", streams)
    _assert_clean("list_events", events_out)
    _assert_clean("the view's streams", repr(view_streams))
    _assert_clean("the view's events", repr(view_events))


def test_every_log_record_and_error_line_of_the_cli_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """A message nobody redacted at its call site (a library's, a traceback) is cleaned by the log filter."""
    import logging

    from vsalmonn.memory_store.redact import RedactingFilter

    record = logging.LogRecord(
        "lib", logging.ERROR, __file__, 1, "cannot open %s", ("rtsp://u:pw@cam/s?token=t0k",), None
    )
    try:
        raise OSError("refused: http://admin:hunter2@host/x")
    except OSError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "pw@" not in text and "t0k" not in text and "hunter2" not in text, text
    assert "rtsp://" in text and "cam/s" in text
