"""Bad inputs and faults, one kind per test (issue 14, section 3): each gives one line on stderr and exit 2
(or works, for readers of a store they cannot write), and a store ingested before it still loads and
searches the same afterwards.

One small real store is ingested once per module through the CLI (a 12-frame clip, no speech); each test
works on its own copy (shutil.copytree), so the tests stay fast and independent.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vsalmonn.cli import main
from vsalmonn.memory_store.store import MemoryStore

from . import media
from .test_cli import Outcome, assert_one_line_error, in_process, vsalmonn

STREAM = "sample"
FAST = '[perception]\nspeech_encoder = "none"\n[memory]\nvisual_slots = 64\n'
PROMPT = "coloured bars"


def _run(*args: str) -> Outcome:
    """main(ARGS) in this process with stdout/stderr captured (for module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def _search(data: Path) -> list[dict[str, object]]:
    result = _run("--data", str(data), "search", PROMPT, "--stream", STREAM, "--json", "-k", "3")
    assert result.returncode == 0, result.stderr
    moments = json.loads(result.stdout)["moments"]
    return [{**m, "score": round(float(m["score"]), 4)} for m in moments]


def _tree_digest(root: Path) -> str:
    """Every file under `root` (names and bytes): the store as it is on disk."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name.endswith(("-wal", "-shm")) or path.name == ".writer.lock":
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, object]]]:
    """(data dir, config file, baseline search) of one store ingested through the real CLI."""
    root = tmp_path_factory.mktemp("bad-inputs")
    clip = media.write_media(root / "clip.mp4", video_times=media.uniform_times(12, 5), rate=5)
    config = root / "fast.toml"
    config.write_text(FAST)
    first = vsalmonn(
        "--config", str(config), "--data", str(root / "data"), "ingest", str(clip), "--stream", STREAM,
        cwd=root, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    return root / "data", config, _search(root / "data")


@pytest.fixture
def data(built: tuple[Path, Path, list[dict[str, object]]], tmp_path: Path) -> Path:
    """This test's own copy of the built store."""
    copy = tmp_path / "data"
    shutil.copytree(built[0], copy)
    return copy


@pytest.fixture
def config(built: tuple[Path, Path, list[dict[str, object]]]) -> Path:
    return built[1]


def assert_same_store(data: Path, built: tuple[Path, Path, list[dict[str, object]]]) -> None:
    """The store still loads and searches as it did before the bad input."""
    assert _search(data) == built[2]


def _ingest(capsys: pytest.CaptureFixture[str], data: Path, config: Path, *args: str) -> Outcome:
    return in_process(capsys, "--config", str(config), "--data", str(data), "ingest", *args)


# ----------------------------------------------------------------------------------------- sources


def _text(d: Path) -> Path:
    return _write(d / "notes.txt", (Path(__file__).parent.parent / "README.md").read_bytes())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(d: Path) -> Path:
    whole = media.write_media(d / "whole.mp4", video_times=media.uniform_times(4, 5), rate=5)
    return media.truncate(whole, d / "cut.mp4", 0.3)


def _symlink_loop(d: Path) -> Path:
    (d / "a.mp4").symlink_to(d / "b.mp4")
    (d / "b.mp4").symlink_to(d / "a.mp4")
    return d / "a.mp4"


def _fifo(d: Path) -> Path:
    os.mkfifo(d / "pipe.mp4")
    return d / "pipe.mp4"


def _folder_as_file(d: Path) -> str:
    (d / "clip.mp4").mkdir()
    return f"file://{d / 'clip.mp4'}"


SOURCES: list[tuple[str, Callable[[Path], Path | str], str]] = [
    ("empty", lambda d: _write(d / "empty.mp4", b""), "empty file"),
    ("zero-length-ts", lambda d: _write(d / "zero.ts", b""), "empty file"),
    ("random-bytes", lambda d: _write(d / "noise.mp4", os.urandom(64 * 1024)), "not a readable media file"),
    ("text-named-mp4", lambda d: _write(d / "notes.mp4", b"not a video at all\n"), "notes.mp4"),
    ("txt-file", _text, "a text file, not a media file"),
    ("truncated", _truncated, "cut.mp4"),
    ("missing", lambda d: d / "missing.mp4", "no such file"),
    ("file-url-missing", lambda d: f"file://{d / 'missing.mp4'}", "no such file"),
    ("directory-as-file", _folder_as_file, "is a directory"),
    ("symlink-loop", _symlink_loop, "symbolic link loop"),
    ("dev-zero", lambda d: "/dev/zero", "a character device"),
    ("file-url-dev-zero", lambda d: "file:///dev/zero", "a character device"),
    ("fifo", _fifo, "a FIFO"),
]


@pytest.mark.parametrize(("kind", "make", "fragment"), SOURCES, ids=[s[0] for s in SOURCES])
def test_bad_source(
    capsys: pytest.CaptureFixture[str], built, data: Path, config: Path, tmp_path: Path,
    kind: str, make: Callable[[Path], Path | str], fragment: str,
) -> None:  # fmt: skip
    source = make(tmp_path)
    assert_one_line_error(_ingest(capsys, data, config, str(source), "--stream", "bad"), fragment)
    assert_same_store(data, built)


def test_a_name_with_spaces_and_unicode_ingests(
    capsys: pytest.CaptureFixture[str],
    built,
    data: Path,
    config: Path,
    tmp_path: Path,
) -> None:
    clip = media.write_media(tmp_path / "Kamera Eingang 1 – 会议室.mp4", video_times=[0.0, 0.2], rate=5)
    result = _ingest(capsys, data, config, str(clip))
    assert result.returncode == 0, result.stderr
    with MemoryStore.open(data, read_only=True) as store:
        assert "Kamera Eingang 1 – 会议室" in [s.name for s in store.catalog.streams()]


# ----------------------------------------------------------------------------------------- names

NAMES = [
    ("cyrillic-a", "s\u0430mple", "looks like the existing stream"),
    ("zero-width-space", "sam\u200bple", "invisible format character"),
    ("case-only", "SAMPLE", "looks like the existing stream"),
    ("empty", "", "must not be empty"),
    ("whitespace", "   ", "empty"),
    ("path", "../up", "path separator"),
    ("bidi-override", "cam\u202eel", "bidirectional"),
    ("newline", "a\nb", "control character"),
    ("too-long", "x" * 300, "limit is"),
]


@pytest.mark.parametrize(("kind", "name", "fragment"), NAMES, ids=[n[0] for n in NAMES])
def test_hostile_stream_name_in_ingest(
    capsys: pytest.CaptureFixture[str], built, data: Path, config: Path, tmp_path: Path,
    kind: str, name: str, fragment: str,
) -> None:  # fmt: skip
    clip = media.write_media(tmp_path / "c.mp4", video_times=[0.0, 0.2], rate=5)
    assert_one_line_error(_ingest(capsys, data, config, str(clip), "--stream", name), fragment)
    assert_same_store(data, built)


@pytest.mark.parametrize("command", ["search", "ask", "export"])
@pytest.mark.parametrize("name", ["s\u0430mple", "sam\u200bple", "../x", "a\nb"])
def test_hostile_stream_name_in_every_reader(
    capsys: pytest.CaptureFixture[str],
    built,
    data: Path,
    command: str,
    name: str,
) -> None:
    args = {
        "search": ["search", PROMPT, "--stream", name],
        "ask": ["ask", "what is shown?", "--stream", name],
        "export": ["export", name],
    }[command]
    result = in_process(capsys, "--data", str(data), *args)
    assert_one_line_error(result)
    assert_same_store(data, built)


SEARCHES = [
    ("k-zero", ["-k", "0"], "-k"),
    ("k-1e9", ["-k", str(10**9)], "-k"),
    ("k-not-a-number", ["-k", "many"], "invalid int value"),
    ("prompt-1mb", ["--prompt-1mb"], "limit is 2,000"),
    ("prompt-empty", ["--prompt-empty"], "prompt is empty"),
]


@pytest.mark.parametrize(("kind", "extra", "fragment"), SEARCHES, ids=[s[0] for s in SEARCHES])
def test_bad_search_arguments(
    capsys: pytest.CaptureFixture[str], built, data: Path,
    kind: str, extra: list[str], fragment: str,
) -> None:  # fmt: skip
    prompt = {"--prompt-1mb": "bars " * 200_000, "--prompt-empty": "   "}.get(extra[0], PROMPT)
    args = [] if extra[0].startswith("--prompt") else extra
    assert_one_line_error(in_process(capsys, "--data", str(data), "search", prompt, *args), fragment)
    assert_same_store(data, built)


def test_an_8k_frame_and_an_audio_only_file_ingest(
    capsys: pytest.CaptureFixture[str],
    built,
    data: Path,
    config: Path,
    tmp_path: Path,
) -> None:
    big = media.write_media(
        tmp_path / "big.mp4", video_times=[0.0, 0.5], rate=2, size=(7680, 4320), yuv=media.code_yuv420
    )
    assert _ingest(capsys, data, config, str(big), "--stream", "big").returncode == 0
    audio = media.write_media(tmp_path / "voice.m4a", audio=media.tone(2.0, 48_000))
    result = _ingest(capsys, data, config, str(audio), "--stream", "voice")
    assert result.returncode in (0, 2) and "Traceback" not in result.stderr
    if result.returncode == 2:
        assert_one_line_error(result)
    moments = [m for m in _search(data) if m["stream"] == STREAM]
    assert moments == [m for m in built[2] if m["stream"] == STREAM][: len(moments)]


# ----------------------------------------------------------------------------------------- settings

SETTINGS = [
    ("binary", b"\x00\xff\xfe\x89PNG\r\n\x1a\n" + bytes(range(256)), "not a TOML file"),
    ("malformed", b"[memory\n", "invalid TOML"),
    ("unknown-key", b"[memory]\nslots = 3\n", "memory.slots: unknown key"),
    ("wrong-type", b'[memory]\nvisual_slots = "many"\n', "memory.visual_slots"),
    ("slots-1e9", b"[memory]\nvisual_slots = 1_000_000_000\n", "less than or equal"),
    ("audio-slots-1e9", b"[memory]\naudio_slots = 1_000_000_000\n", "memory.audio_slots"),
    ("negative", b"[memory]\nvisual_slots = -1\n", "greater than 0"),
]


@pytest.mark.parametrize(("kind", "text", "fragment"), SETTINGS, ids=[s[0] for s in SETTINGS])
@pytest.mark.parametrize("command", ["ingest", "search", "status"])
def test_bad_settings(
    capsys: pytest.CaptureFixture[str], built, data: Path, tmp_path: Path,
    kind: str, text: bytes, fragment: str, command: str,
) -> None:  # fmt: skip
    bad = tmp_path / "bad.toml"
    bad.write_bytes(text)
    args = {"ingest": ["ingest", str(tmp_path)], "search": ["search", PROMPT], "status": ["status"]}[command]
    assert_one_line_error(in_process(capsys, "--config", str(bad), "--data", str(data), *args), fragment)
    assert_same_store(data, built)


@pytest.mark.parametrize("target", ["/etc/passwd", "tmpfile"])
@pytest.mark.parametrize("command", ["ingest", "search", "status"])
def test_data_naming_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, target: str, command: str
) -> None:
    path = Path(target) if target.startswith("/") else tmp_path / "afile"
    if not path.exists():
        path.write_text("x")
    before = path.read_bytes()
    args = {"ingest": ["ingest", str(tmp_path)], "search": ["search", PROMPT], "status": ["status"]}[command]
    assert_one_line_error(in_process(capsys, "--data", str(path), *args), "is not a directory")
    assert path.read_bytes() == before


def test_unreachable_postgresql(
    capsys: pytest.CaptureFixture[str],
    built,
    data: Path,
    tmp_path: Path,
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bad = tmp_path / "pg.toml"
    bad.write_text(
        FAST + f'[store]\ncatalog_url = "postgresql://u:secret@127.0.0.1:{port}/db"\nbusy_timeout_s = 2\n'
    )
    for args in (["ingest", str(tmp_path)], ["status"], ["daemon"]):
        result = in_process(capsys, "--config", str(bad), "--data", str(data), *args)
        assert_one_line_error(result)
        assert "secret" not in result.stderr
    assert_same_store(data, built)


# ----------------------------------------------------------------------------------------- catalog


def _zero(catalog: Path) -> None:
    catalog.write_bytes(b"")


def _garbage(catalog: Path) -> None:
    catalog.write_bytes(os.urandom(8192))


def _half(catalog: Path) -> None:
    catalog.write_bytes(catalog.read_bytes()[: 4096 + 100])


def _gone(catalog: Path) -> None:
    catalog.unlink()


CATALOGS = [
    ("zero-bytes", _zero, "empty"),
    ("garbage", _garbage, "catalog"),
    ("truncated", _half, "catalog"),
    ("deleted", _gone, "missing"),
]


@pytest.mark.parametrize(("kind", "damage", "fragment"), CATALOGS, ids=[c[0] for c in CATALOGS])
def test_damaged_catalog_is_refused_then_rebuilt(
    capsys: pytest.CaptureFixture[str], built, data: Path, config: Path, tmp_path: Path,
    kind: str, damage: Callable[[Path], None], fragment: str,
) -> None:  # fmt: skip
    damage(data / "catalog.sqlite")
    groups = _tree_digest(data / "memory")
    clip = media.write_media(tmp_path / "c.mp4", video_times=[0.0, 0.2], rate=5)
    for args in (["status"], ["search", PROMPT], ["export", STREAM]):
        result = in_process(capsys, "--data", str(data), *args)
        assert_one_line_error(result)
        assert "nothing has been ingested" not in result.stderr
    assert_one_line_error(_ingest(capsys, data, config, str(clip), "--stream", STREAM))
    daemon = tmp_path / "daemon.toml"
    daemon.write_text(config.read_text() + f'[[streams]]\nname = "{STREAM}"\nsource = "{clip}"\n')
    assert_one_line_error(in_process(capsys, "--config", str(daemon), "--data", str(data), "daemon"))
    assert _tree_digest(data / "memory") == groups, "no checkpoint group was touched"
    check = in_process(capsys, "--data", str(data), "store", "check")
    assert check.returncode == 1 and "store rebuild" in check.stdout
    rebuilt = in_process(capsys, "--data", str(data), "store", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"stream {STREAM}" in rebuilt.stdout and "not recoverable" in rebuilt.stdout
    assert in_process(capsys, "--data", str(data), "store", "check").returncode == 0
    # the memory searches as before; the frame labels behind each moment's evidence lived in the catalog only
    without_labels = [{**m, "evidence": []} for m in built[2]]
    assert [{**m, "evidence": []} for m in _search(data)] == without_labels
    assert "frame labels" in rebuilt.stdout


def test_rebuild_refuses_a_healthy_catalog(
    capsys: pytest.CaptureFixture[str],
    built,
    data: Path,
) -> None:
    assert in_process(capsys, "--data", str(data), "store", "check").returncode == 0
    assert_one_line_error(in_process(capsys, "--data", str(data), "store", "rebuild"), "nothing to rebuild")
    assert_same_store(data, built)


# ----------------------------------------------------------------------------------------- checkpoints


def _groups(data: Path) -> list[Path]:
    """The store's checkpoint groups, newest first."""
    return sorted((data / "memory").glob("*/*.zarr"), key=lambda p: p.name, reverse=True)


def _flip_chunk(group: Path) -> None:
    chunk = max((p for p in group.rglob("c/*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))


def _bad_metadata(group: Path) -> None:
    (group / "zarr.json").write_text("{ not json")


def _drop_group(group: Path) -> None:
    shutil.rmtree(group)


CHECKPOINTS = [("chunk", _flip_chunk), ("metadata", _bad_metadata), ("missing-group", _drop_group)]


@pytest.mark.parametrize(("kind", "damage"), CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_corrupt_newest_checkpoint(
    capsys: pytest.CaptureFixture[str], data: Path, kind: str, damage: Callable[[Path], None]
) -> None:
    groups = _groups(data)
    count = len(groups)
    for group in groups:  # damage each, newest first, until none is left (a missing group: the newest only)
        damage(group)
        if kind == "missing-group":
            break
    before = _tree_digest(data)
    result = in_process(capsys, "--data", str(data), "search", PROMPT)
    if count == 1 or kind != "missing-group":
        assert_one_line_error(result, "fails its checksum")
    else:
        assert result.returncode == 0
    assert _tree_digest(data) == before, "a reader changed nothing"
    check = in_process(capsys, "--data", str(data), "store", "check")
    assert check.returncode == 1


# ----------------------------------------------------------------------------------------- the disk


@contextlib.contextmanager
def _mounted(kind: str, target: Path, source: Path | None = None, size: str = "4m") -> Iterator[None]:
    target.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        cmds = [["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)]]
    else:
        assert source is not None
        cmds = [
            ["mount", "--bind", str(source), str(target)],
            ["mount", "-o", "remount,ro,bind", str(target)],
        ]
    for cmd in cmds:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", str(target)], capture_output=True, check=False)
            pytest.skip(f"cannot {' '.join(cmd[:3])} here ({done.stderr.strip() or 'not permitted'})")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def test_read_only_store_is_read_and_refuses_ingest(
    capsys: pytest.CaptureFixture[str],
    built,
    data: Path,
    config: Path,
    tmp_path: Path,
) -> None:
    ro = tmp_path / "ro"
    with _mounted("ro", ro, source=data):
        with pytest.raises(OSError):
            (ro / "probe").write_text("x")  # really read-only, even for root
        assert _search(ro) == built[2]
        status = in_process(capsys, "--data", str(ro), "status", "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["streams"][0]["stream"] == STREAM
        export = in_process(capsys, "--data", str(ro), "export", STREAM)
        assert export.returncode == 0, export.stderr
        assert in_process(capsys, "--data", str(ro), "store", "check").returncode == 0
        clip = media.write_media(tmp_path / "c.mp4", video_times=[0.0, 0.2], rate=5)
        assert_one_line_error(_ingest(capsys, ro, config, str(clip), "--stream", "other"))
        assert sorted(p.name for p in ro.iterdir()) == sorted(p.name for p in data.iterdir())
    assert_same_store(data, built)


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_a_reader_that_cannot_write_the_folder(built, data: Path) -> None:
    """A non-root user on a store it may read but not write (a backup, another user's store)."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run as another user")
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="vsalmonn-nobody-"))
    try:
        _as_nobody_reads(shared, data)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert_same_store(data, built)


def _as_nobody_reads(shared: Path, data: Path) -> None:
    shared.chmod(0o755)
    data = Path(shutil.copytree(data, shared / "data"))
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    probe = subprocess.run(
        [*NOBODY, sys.executable, "-c", "import vsalmonn"],
        capture_output=True, text=True, check=False, cwd="/",
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot import vsalmonn here: {probe.stderr.strip()[-200:]}")
    result = subprocess.run(
        [*NOBODY, sys.executable, "-m", "vsalmonn",
         "--data", str(data), "status", "--json"],
        capture_output=True, text=True, check=False, cwd="/", timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["streams"][0]["stream"] == STREAM


def test_full_disk(
    capsys: pytest.CaptureFixture[str],
    built,
    data: Path,
    config: Path,
    tmp_path: Path,
) -> None:
    size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    disk = tmp_path / "disk"
    with _mounted("tmpfs", disk, size=f"{size // 1024 + 2048}k"):
        shutil.copytree(data, disk / "data")
        with contextlib.suppress(OSError), (disk / "filler").open("wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
        with pytest.raises(OSError):
            (disk / "more").write_bytes(b"\0" * 65536)
        assert _search(disk / "data") == built[2]
        assert in_process(capsys, "--data", str(disk / "data"), "status").returncode == 0
        clip = media.write_media(tmp_path / "c.mp4", video_times=media.uniform_times(2, 5), rate=5)
        result = _ingest(capsys, disk / "data", config, str(clip), "--stream", "other")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        (disk / "filler").unlink()
        assert _search(disk / "data") == built[2]


# ----------------------------------------------------------------------------------------- writers


def test_two_ingests_into_one_stream(
    capsys: pytest.CaptureFixture[str],
    built,
    data: Path,
    config: Path,
    tmp_path: Path,
) -> None:
    from sqlalchemy import func, select

    from vsalmonn.memory_store.models import Event

    clip = media.write_media(tmp_path / "c.mp4", video_times=[0.0, 0.2], rate=5)
    with MemoryStore.open(data) as store:
        with store.catalog.session() as s:
            events = s.scalar(select(func.count()).select_from(Event))
        with store.writer(STREAM):  # another process's ingest, as far as the lock goes
            result = _ingest(capsys, data, config, str(clip), "--stream", STREAM)
        with store.catalog.session() as s:
            assert s.scalar(select(func.count()).select_from(Event)) == events, "no stream.failed event"
    assert_one_line_error(result, "being written by another process")
    assert_same_store(data, built)


def test_a_daemon_refused_a_stream_being_written_leaves_its_status_and_events_alone(
    capsys: pytest.CaptureFixture[str], built, data: Path, config: Path, tmp_path: Path
) -> None:
    """Past the CLI's early check (two daemons racing): the refusal is logged, never stored."""
    from sqlalchemy import func, select

    from vsalmonn.memory_store.models import Event, StreamStatus

    clip = media.write_media(tmp_path / "c.mp4", video_times=[0.0, 0.2], rate=5)
    daemon = tmp_path / "daemon.toml"
    daemon.write_text(config.read_text() + f'[[streams]]\nname = "busy"\nsource = "{clip}"\n')

    def stored() -> tuple[int, list[tuple[object, ...]]]:
        with MemoryStore.open(data) as store, store.catalog.session() as s:
            rows = [(r.state, r.last_error) for r in s.scalars(select(StreamStatus))]
            return s.scalar(select(func.count()).select_from(Event)) or 0, rows

    with MemoryStore.open(data) as store, store.writer("busy"):
        pass  # the stream exists, as it would once the other writer started
    before = stored()
    with MemoryStore.open(data) as store, store.writer("busy"):  # another process's, as far as the lock goes
        result = in_process(capsys, "--config", str(daemon), "--data", str(data), "daemon")
    assert result.returncode == 1 and "being written by another process" in result.stderr, result
    assert stored() == before
    assert_same_store(data, built)


def test_a_file_deleted_during_its_ingest(
    capsys: pytest.CaptureFixture[str], built, data: Path, config: Path, tmp_path: Path
) -> None:
    """The open file is read to its end (Linux keeps a deleted file's data while it is open); the next
    ingest of the vanished path is one line, and the store holds the whole file."""
    from .test_daemon import cli, newest_offset

    clip = media.write_media(tmp_path / "gone.mp4", video_times=media.uniform_times(120, 1), rate=1)
    slow = tmp_path / "slow.toml"
    slow.write_text(config.read_text() + "[daemon]\nwindow_s = 10\ncheckpoint_every_s = 10\n")
    run = cli(
        "--config", str(slow), "--data", str(data), "ingest", str(clip), "--stream", "gone", cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 120
        while newest_offset(data, "gone") < 0 and run.poll() is None:
            assert time.monotonic() < deadline, "no first checkpoint"
            time.sleep(0.05)
        clip.unlink()
        _, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    with MemoryStore(data) as store:
        newest = store.checkpoints("gone")[0]
        assert newest.source_state == {"done": True} and newest.source_offset >= 119.0
    again = _ingest(capsys, data, slow, str(clip), "--stream", "gone")
    assert_one_line_error(again, "gone.mp4")
    assert_same_store(data, built)


def test_export_to_a_directory_leaves_nothing(
    capsys: pytest.CaptureFixture[str],
    built,
    data: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(
        in_process(capsys, "--data", str(data), "export", STREAM, "-o", str(out)), "directory"
    )
    assert not (tmp_path / "out.tmp").exists()
    assert_same_store(data, built)


def test_ask_with_a_folder_that_is_no_model(
    capsys: pytest.CaptureFixture[str],
    built,
    data: Path,
) -> None:
    result = in_process(capsys, "--data", str(data), "ask", "what is shown?", "--llm", "hf:/etc")
    assert_one_line_error(result, "/etc")
    assert_same_store(data, built)


# ----------------------------------------------------------------------------------------- live sources


class _Garbage(threading.Thread):
    """A TCP server on 127.0.0.1 that answers every connection with `reply` (None: accept and stay silent)."""

    def __init__(self, reply: bytes | None) -> None:
        super().__init__(daemon=True)
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                if self.reply is None:
                    self.held.append(conn)
                    continue
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    conn.sendall(self.reply)
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


LIVE = [
    ("refused-port", "refused"),
    ("http-garbage", b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n" + os.urandom(20000)),
    ("not-http", b"\x00\x01garbage that is no HTTP at all\r\n\r\n"),
    ("never-answers", None),
]


@pytest.mark.parametrize(("kind", "reply"), LIVE, ids=[k for k, _ in LIVE])
def test_live_source_that_never_gives_media(
    capsys: pytest.CaptureFixture[str], built, data: Path, tmp_path: Path,
    kind: str, reply: bytes | str | None,
) -> None:  # fmt: skip
    import time

    bad = tmp_path / "live.toml"
    bad.write_text(
        FAST.replace(
            "[perception]\n",
            "[perception]\nlive_timeout_s = 2\nreconnect_initial_s = 0.1\nreconnect_max_attempts = 2\n"
            "reconnect_give_up_s = 6\n",
        )
    )
    server = None
    if reply == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    else:
        server = _Garbage(reply if isinstance(reply, bytes) else None)
        server.start()
        port = server.port
    started = time.monotonic()
    try:
        result = _ingest(capsys, data, bad, f"http://127.0.0.1:{port}/live.ts", "--stream", "cam")
    finally:
        if server is not None:
            server.close()
    assert time.monotonic() - started < 60, "a bounded give-up time"
    assert_one_line_error(result, "127.0.0.1")
    assert_same_store(data, built)


# ----------------------------------------------------------------------------------------- tool arguments

TOOL_ARGS = [
    ("k-zero", "search_video_memory", {"query": "bars", "k": 0}),
    ("k-huge", "search_video_memory", {"query": "bars", "k": 10**9}),
    ("k-string", "search_video_memory", {"query": "bars", "k": "five"}),
    ("query-1mb", "search_video_memory", {"query": "x" * 1_000_000}),
    ("query-not-text", "search_video_memory", {"query": ["bars"]}),
    ("nan-start", "search_video_memory", {"query": "bars", "start": float("nan")}),
    ("inf-end", "search_video_memory", {"query": "bars", "end": float("inf")}),
    ("start-after-end", "search_video_memory", {"query": "bars", "start": 10.0, "end": 2.0}),
    ("negative-time", "search_video_memory", {"query": "bars", "start": -5.0}),
    ("hostile-stream", "search_video_memory", {"query": "bars", "stream": "s\u0430mple\u200b"}),
]


@pytest.mark.parametrize(("kind", "tool", "args"), TOOL_ARGS, ids=[t[0] for t in TOOL_ARGS])
def test_bad_tool_arguments(built, data: Path, kind: str, tool: str, args: dict[str, object]) -> None:
    from vsalmonn.tools import VideoMemoryToolkit

    with VideoMemoryToolkit.from_data_dir(data, read_only=True) as toolkit:
        tools = {t.name: t for t in toolkit.get_tools()}
        name = tool if tool in tools else next(n for n in tools if "search" in n)
        result = tools[name].invoke({"type": "tool_call", "name": name, "args": args, "id": "1"})
    assert result.status == "error", result
    text = str(result.content)
    assert len(text) < 2000 and "\n" not in text.strip() and "Traceback" not in text
    assert_same_store(data, built)


def test_the_search_tool_says_every_checkpoint_fails_its_checksum(data: Path) -> None:
    from vsalmonn.tools import VideoMemoryToolkit

    for group in _groups(data):
        _flip_chunk(group)
    with VideoMemoryToolkit.from_data_dir(data, read_only=True) as toolkit:
        tool = next(t for t in toolkit.get_tools() if t.name == "search_video_memory")
        result = tool.invoke({"type": "tool_call", "name": tool.name, "args": {"query": PROMPT}, "id": "1"})
    assert "fails its checksum" in str(result.content)
    assert "no committed checkpoint yet" not in str(result.content)
