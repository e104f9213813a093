"""The watched folder: real files in tmp_path, real watchdog events, real settling.

Every wait has a generous deadline and no test asserts how long anything took, only what was released and in
which order, so a loaded machine makes these slower, never red. Where timing matters (a slow writer) the
writer pauses far less between writes than `settle_s`.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vsalmonn.perception.folder import MEDIA_SUFFIXES, FolderError, FolderWatcher, natural_key

DEADLINE_S = 15.0  # the longest any test waits for something that should come within a second or two


def collect(
    watcher: FolderWatcher, count: int, on_release: Callable[[Path], None] | None = None
) -> list[Path]:
    """Files released by `watcher` until there are `count` of them (or the deadline passes)."""
    got: list[Path] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < count and time.monotonic() < deadline:
        for path in watcher.ready(timeout=0.5):
            if on_release is not None:
                on_release(path)
            got.append(path)
    return got


def names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def released_by_event(watcher: FolderWatcher, make_file: Callable[[], object]) -> list[Path]:
    """What one `ready()` call, already waiting when `make_file()` runs, returns.

    With `poll_s` far beyond the deadline, only a file-system event can wake that call in time.
    """
    got: list[Path] = []
    waiter = threading.Thread(target=lambda: got.extend(watcher.ready(timeout=DEADLINE_S)), daemon=True)
    waiter.start()
    time.sleep(0.3)  # let it scan the folder and go to sleep first
    make_file()
    waiter.join(timeout=DEADLINE_S + 5)
    return got


def test_slow_writer_keeps_its_place_and_each_file_is_released_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second, third = tmp_path / "seg-1.mp4", tmp_path / "seg-2.mp4", tmp_path / "seg-3.mp4"
    chunk = b"x" * 4096
    chunks = 16
    second_done = threading.Event()

    def write_slowly() -> None:
        with open(second, "ab") as f:
            for i in range(chunks):  # about 3 s in all, pausing far less than settle_s between writes
                f.write(chunk)
                f.flush()
                if i == chunks - 1:
                    second_done.set()
                else:
                    time.sleep(0.2)

    with FolderWatcher(tmp_path, settle_s=1.5, poll_s=0.2) as watcher:
        first.write_bytes(b"a" * 1000)
        second.write_bytes(b"")
        writer = threading.Thread(target=write_slowly, daemon=True)
        writer.start()
        third.write_bytes(b"c" * 1000)

        seen_done: dict[str, bool] = {}
        got = collect(watcher, 3, lambda p: seen_done.setdefault(p.name, second_done.is_set()))
        writer.join(timeout=DEADLINE_S)

        assert names(got) == ["seg-1.mp4", "seg-2.mp4", "seg-3.mp4"]
        # the slow file was released only once complete, and the third waited for it
        assert seen_done["seg-2.mp4"] and seen_done["seg-3.mp4"]
        assert got[1].stat().st_size == chunks * len(chunk)
        assert all(p.is_absolute() for p in got)
        assert watcher.pending == []

        # released files are never released again, even when rewritten or replaced
        with caplog.at_level(logging.DEBUG, logger="vsalmonn.perception.folder"):
            with open(first, "ab") as f:
                f.write(b"more")
            replacement = tmp_path / "new.tmp"
            replacement.write_bytes(b"other")
            os.replace(replacement, third)
            assert watcher.ready(timeout=2.5) == []
        assert "not releasing it again" in caplog.text


def test_natural_order(tmp_path: Path) -> None:
    for name in ["cam-10.mp4", "cam-2.mp4", "Cam-3.MP4", "cam-1.mkv", "cam-02b.ts", "a/"]:
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(b"data")
    with FolderWatcher(tmp_path, settle_s=0) as watcher:
        assert names(watcher.scan_once()) == [
            "cam-1.mkv",
            "cam-2.mp4",
            "cam-02b.ts",
            "Cam-3.MP4",
            "cam-10.mp4",
        ]
        assert watcher.scan_once() == []

    assert sorted(["x10", "x9", "X1", "x"], key=natural_key) == ["x", "X1", "x9", "x10"]
    assert natural_key("2024-05-01T10-00-09.ts") < natural_key("2024-05-01T10-00-10.ts")


def test_ignores_hidden_temporary_and_non_media_files(tmp_path: Path) -> None:
    for name in [
        "good.mp4",
        "Loud.WAV",
        ".hidden.mp4",
        "clip.mp4.part",
        "clip.tmp",
        "clip.mp4.crdownload",
        "notes.txt",
        "backup.mp4~",
        "noext",
    ]:
        (tmp_path / name).write_bytes(b"data")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.mp4").write_bytes(b"data")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "secret.mp4").write_bytes(b"data")
    (tmp_path / "folder.mp4").mkdir()  # a folder with a media name is not a file

    with FolderWatcher(tmp_path, settle_s=0) as watcher:
        assert names(watcher.scan_once()) == ["good.mp4", "Loud.WAV"]
    with FolderWatcher(tmp_path, settle_s=0, recursive=True) as watcher:
        released = watcher.scan_once()
        assert [p.relative_to(tmp_path.resolve()).as_posix() for p in released] == [
            "good.mp4",
            "Loud.WAV",
            "sub/inner.mp4",
        ]
    with FolderWatcher(tmp_path, settle_s=0, suffixes=frozenset({"txt", ".MP4"})) as watcher:
        assert names(watcher.scan_once()) == ["good.mp4", "notes.txt"]
    assert ".mp4" in MEDIA_SUFFIXES and ".opus" in MEDIA_SUFFIXES


def test_skip_callback_is_honoured_and_asked_once_per_file(tmp_path: Path) -> None:
    for name in ["a-1.mp4", "a-2.mp4", "a-3.mp4"]:
        (tmp_path / name).write_bytes(b"data")
    asked: list[str] = []

    def skip(path: Path) -> bool:
        asked.append(path.name)
        return path.name == "a-1.mp4"

    with FolderWatcher(tmp_path, settle_s=0, skip=skip) as watcher:
        assert names(watcher.scan_once()) == ["a-2.mp4", "a-3.mp4"]
        (tmp_path / "a-4.mp4").write_bytes(b"data")
        assert names(watcher.scan_once()) == ["a-4.mp4"]
        assert watcher.scan_once() == []
    assert sorted(asked) == ["a-1.mp4", "a-2.mp4", "a-3.mp4", "a-4.mp4"]


def test_late_earlier_name_is_still_released_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FolderWatcher(tmp_path, settle_s=0) as watcher:
        (tmp_path / "seg-5.mp4").write_bytes(b"data")
        assert names(watcher.scan_once()) == ["seg-5.mp4"]
        (tmp_path / "seg-4.mp4").write_bytes(b"data")
        with caplog.at_level(logging.WARNING, logger="vsalmonn.perception.folder"):
            assert names(watcher.scan_once()) == ["seg-4.mp4"]
        assert "seg-4.mp4: arrived after seg-5.mp4 was released" in caplog.text


def test_settling_counts_from_first_sight_and_empty_files_are_released(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with FolderWatcher(tmp_path, settle_s=0.5, poll_s=0.1) as watcher:
        assert watcher.scan_once() == []  # just seen: not settled yet
        assert watcher.pending == ["empty.mp4"]
        assert names(collect(watcher, 1)) == ["empty.mp4"]
        assert watcher.pending == []


def test_missing_folder_raises_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(FolderError) as missing:
        FolderWatcher(tmp_path / "no\nsuch")
    assert "does not exist" in str(missing.value) and "\n" not in str(missing.value)
    assert isinstance(missing.value, ValueError)

    (tmp_path / "file.mp4").write_bytes(b"data")
    with pytest.raises(FolderError, match="is not a folder"):
        FolderWatcher(tmp_path / "file.mp4")
    with pytest.raises(ValueError):
        FolderWatcher(tmp_path, poll_s=0)


def test_close_wakes_a_blocked_ready_and_ends_iteration(tmp_path: Path) -> None:
    watcher = FolderWatcher(tmp_path, settle_s=0.1, poll_s=30.0)
    results: list[list[Path]] = []
    iterated: list[Path] = []
    waiter = threading.Thread(target=lambda: results.append(watcher.ready(None)), daemon=True)
    iterator = threading.Thread(target=lambda: iterated.extend(watcher), daemon=True)
    waiter.start()
    iterator.start()
    time.sleep(0.3)
    watcher.close()
    waiter.join(timeout=DEADLINE_S)
    iterator.join(timeout=DEADLINE_S)
    assert not waiter.is_alive() and not iterator.is_alive()
    assert results == [[]] and iterated == []
    assert watcher.closed
    assert watcher.ready(timeout=0) == [] and watcher.scan_once() == []
    watcher.close()  # idempotent


def test_events_wake_the_watcher_between_polls(tmp_path: Path) -> None:
    with FolderWatcher(tmp_path, settle_s=0.2, poll_s=60.0) as watcher:
        assert watcher.ready(timeout=0.2) == []  # starts the watch
        assert names(released_by_event(watcher, (tmp_path / "clip.mp4").touch)) == ["clip.mp4"]


def test_file_renamed_into_the_folder_is_picked_up(tmp_path: Path) -> None:
    partial = tmp_path / "clip.mp4.part"
    with FolderWatcher(tmp_path, settle_s=0.3, poll_s=0.1) as watcher:
        partial.write_bytes(b"data" * 100)
        assert watcher.ready(timeout=1.0) == []
        assert watcher.pending == []
        partial.rename(tmp_path / "clip.mp4")
        assert names(collect(watcher, 1)) == ["clip.mp4"]


def test_folder_that_disappears_is_polled_until_it_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "seg-1.mp4").write_bytes(b"data")
    with FolderWatcher(folder, settle_s=0.2, poll_s=0.1) as watcher:
        assert names(collect(watcher, 1)) == ["seg-1.mp4"]
        with caplog.at_level(logging.WARNING, logger="vsalmonn.perception.folder"):
            shutil.rmtree(folder)
            assert watcher.ready(timeout=0.5) == []
        assert "the folder disappeared" in caplog.text
        folder.mkdir()
        (folder / "seg-2.mp4").write_bytes(b"data")
        assert names(collect(watcher, 1)) == ["seg-2.mp4"]
        # the watch is set up again on the returned folder: events come without polling
        watcher.poll_s = 60.0
        assert names(released_by_event(watcher, (folder / "seg-3.mp4").touch)) == ["seg-3.mp4"]
