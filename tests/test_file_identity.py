"""A file is known by more than its stream's name: the same file is skipped, one that grew is read on, a
different one under an existing name is refused with one line and the store left as it was (issue 14)."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from vsalmonn.perception.identity import HEAD_BYTES, FileIdentity, relation

from . import media
from .test_cli import assert_one_line_error, in_process

CONFIG = '[perception]\nspeech_encoder = "none"\n[memory]\nvisual_slots = 64\n'


def _ingest(capsys: pytest.CaptureFixture[str], tmp_path: Path, source: Path, *extra: str):
    config = tmp_path / "vsalmonn.toml"
    if not config.exists():
        config.write_text(CONFIG)
    return in_process(
        capsys, "--config", str(config), "--data", str(tmp_path / "data"), "ingest", str(source), *extra
    )


def _snapshot(data: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """The whole catalog as SQL text, and every file of the data directory with its size."""
    with sqlite3.connect(data / "catalog.sqlite") as db:
        dump = list(db.iterdump())
    files = sorted(
        (str(p.relative_to(data)), p.stat().st_size)
        for p in data.rglob("*")
        if p.is_file() and not p.name.startswith("catalog.sqlite")
    )
    return dump, files


def _frame_times(data: Path, stream: str) -> list[float]:
    with sqlite3.connect(data / "catalog.sqlite") as db:
        rows = db.execute(
            "SELECT t FROM frame_labels JOIN streams ON streams.id = frame_labels.stream_id WHERE name = ? "
            "ORDER BY t",
            (stream,),
        ).fetchall()
    return [t for (t,) in rows]


# Sampled frames are 1 s apart; a resume (MPEG-TS included, whose seeks are checked) loses none of them.
MAX_GAP_S = 1.5


def _assert_continuous(times: list[float], until: float) -> None:
    """Sampled at 1 FPS from 0 to at least `until`: nothing read twice, no stretch left out."""
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[0] == 0.0 and max(times) >= until, times
    assert all(0.5 < g <= MAX_GAP_S + 1e-6 for g in gaps), times


# ----- the comparison itself --------------------------------------------------------------------------------


def test_relation_tells_same_grown_and_different_files(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    head = bytes(range(256)) * 8192  # 2 MiB: longer than the hashed head
    path.write_bytes(head)
    stored = FileIdentity.of(path)
    assert stored.head_bytes == HEAD_BYTES and stored.size == len(head)
    assert relation(stored, path) == "same"
    path.write_bytes(head + b"more")
    assert relation(stored, path) == "grew"
    path.write_bytes(head[:-1])
    assert relation(stored, path) == "different"  # shorter
    path.write_bytes(b"X" + head[1:])
    assert relation(stored, path) == "different"  # same size, another head


def test_a_small_file_that_grows_past_the_head_is_still_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "small.bin"
    path.write_bytes(b"abc")
    stored = FileIdentity.of(path)
    assert stored.head_bytes == 3
    path.write_bytes(b"abc" + b"d" * (2 * HEAD_BYTES))
    assert relation(stored, path) == "grew"


# ----- through the CLI --------------------------------------------------------------------------------------


def test_a_different_file_with_an_existing_streams_name_is_refused_and_nothing_changes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = media.write_media(tmp_path / "a" / "clip.mp4", video_times=media.uniform_times(4, 5), rate=5)
    other = media.write_media(tmp_path / "b" / "clip.mp4", video_times=media.uniform_times(6, 5), rate=5)
    done = _ingest(capsys, tmp_path, first)
    assert done.returncode == 0, done.stderr
    assert "4 frames" in done.stdout
    again = _ingest(capsys, tmp_path, first)
    assert again.returncode == 0 and "ingested completely already" in again.stdout
    before = _snapshot(tmp_path / "data")

    refused = _ingest(capsys, tmp_path, other)
    assert_one_line_error(refused, "stream clip", "--stream NAME", str(other), "different file")
    assert _snapshot(tmp_path / "data") == before

    # A moved copy of the same file is still the same file.
    moved = tmp_path / "b" / "moved.mp4"
    moved.write_bytes(first.read_bytes())
    same = _ingest(capsys, tmp_path, moved, "--stream", "clip")
    assert same.returncode == 0 and "ingested completely already" in same.stdout
    assert len(_frame_times(tmp_path / "data", "clip")) == 4

    own = _ingest(capsys, tmp_path, other, "--stream", "clip-b")
    assert own.returncode == 0, own.stderr
    assert "6 frames" in own.stdout
    assert len(_frame_times(tmp_path / "data", "clip")) == 4


def test_a_file_that_grew_after_its_ingest_is_read_on_from_where_it_ended(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # An MPEG-TS recording still being written: its first half is a playable file with the same head.
    whole = media.write_media(
        tmp_path / "full.ts", video_times=media.uniform_times(12, 5), rate=5, container_format="mpegts", gop=5
    ).read_bytes()
    recording = tmp_path / "rec.ts"
    recording.write_bytes(whole[: (len(whole) // 2) // 188 * 188])
    first = _ingest(capsys, tmp_path, recording)
    assert first.returncode in (0, 2), first.stderr  # the cut may end in a broken packet: kept as far as read
    times_first = _frame_times(tmp_path / "data", "rec")
    assert 3 <= len(times_first) <= 7 and max(times_first) < 7.0, times_first

    recording.write_bytes(whole)
    grown = _ingest(capsys, tmp_path, recording)
    assert grown.returncode == 0, grown.stderr
    assert "grew" in grown.stdout and "ingested completely already" not in grown.stdout
    times = _frame_times(tmp_path / "data", "rec")
    assert times[: len(times_first)] == times_first
    _assert_continuous(times, until=10.5)

    again = _ingest(capsys, tmp_path, recording)
    assert again.returncode == 0 and "ingested completely already" in again.stdout
    assert _frame_times(tmp_path / "data", "rec") == times


def test_a_watched_folder_reads_on_a_grown_file_and_anew_a_replaced_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (tmp_path / "vsalmonn.toml").write_text(CONFIG + "[daemon]\nsettle_s = 0.2\npoll_s = 0.2\n")
    whole = media.write_media(
        tmp_path / "full.ts", video_times=media.uniform_times(12, 5), rate=5, container_format="mpegts", gop=5
    ).read_bytes()
    replaced = folder / "a.mp4"
    media.write_media(replaced, video_times=media.uniform_times(4, 5), rate=5)
    growing = folder / "b.ts"
    growing.write_bytes(whole[: (len(whole) // 2) // 188 * 188])
    first = _ingest(capsys, tmp_path, folder, "--once")
    assert first.returncode == 0, first.stderr
    n_first = len(_frame_times(tmp_path / "data", "drop"))
    assert 7 <= n_first <= 11, n_first

    unchanged = _ingest(capsys, tmp_path, folder, "--once")
    assert unchanged.returncode == 0, unchanged.stderr
    assert len(_frame_times(tmp_path / "data", "drop")) == n_first

    media.write_media(tmp_path / "other.mp4", video_times=media.uniform_times(3, 5), rate=5)
    replaced.write_bytes((tmp_path / "other.mp4").read_bytes())
    growing.write_bytes(whole)
    second = _ingest(capsys, tmp_path, folder, "--once")
    assert second.returncode == 0, second.stderr
    times = _frame_times(tmp_path / "data", "drop")
    # The replacement (3 frames) in full, then the recording's tail (6 to 12 s of it), nothing twice.
    assert len(times) >= n_first + 3 + 4, (n_first, times)
    _assert_continuous(times, until=n_first + 3 + 4.5)
    with sqlite3.connect(tmp_path / "data" / "catalog.sqlite") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM events")]
    assert "file.replaced" in kinds


def test_a_stream_from_before_revision_0004_is_known_by_its_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    clip = media.write_media(tmp_path / "clip.mp4", video_times=media.uniform_times(3, 5), rate=5)
    assert _ingest(capsys, tmp_path, clip).returncode == 0
    with sqlite3.connect(tmp_path / "data" / "catalog.sqlite") as db:
        db.execute("UPDATE streams SET source_identity = NULL")
    again = _ingest(capsys, tmp_path, clip)
    assert again.returncode == 0 and "ingested completely already" in again.stdout
    (tmp_path / "b").mkdir()
    other = media.write_media(tmp_path / "b" / "clip.mp4", video_times=media.uniform_times(3, 5), rate=5)
    assert_one_line_error(_ingest(capsys, tmp_path, other), "stream clip", "--stream NAME")
