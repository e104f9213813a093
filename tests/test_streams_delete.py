"""`vsalmonn streams delete NAME --yes`: every row and file of one stream goes, others stay."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from vsalmonn.memory_store.models import (
    Checkpoint,
    Event,
    Evidence,
    FrameLabel,
    IngestFile,
    MomentRecord,
    Stream,
    StreamStatus,
    TranscriptSegment,
)
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.plugins.builtin.surveillance import safe_name

from . import media
from .test_bad_inputs import FAST, _run, _tree_digest
from .test_cli import assert_one_line_error, in_process

PROMPT = "coloured bars"


def _search(data: Path, stream: str) -> list[dict[str, object]]:
    import json

    result = _run("--data", str(data), "search", PROMPT, "--stream", stream, "--json", "-k", "3")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["moments"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data dir, config) with streams `keep` and `gone` ingested through the CLI, plus plugin files."""
    root = tmp_path_factory.mktemp("streams-delete")
    clip = media.write_media(root / "clip.mp4", video_times=media.uniform_times(8, 5), rate=5)
    config = root / "fast.toml"
    config.write_text(FAST)
    data = root / "data"
    for name in ("keep", "gone"):
        result = _run("--config", str(config), "--data", str(data), "ingest", str(clip), "--stream", name)
        assert result.returncode == 0, result.stderr
    for name in ("keep", "gone"):  # what the surveillance and meeting plugins write beside the memory
        thumbs = data / "thumbs" / safe_name(name)
        thumbs.mkdir(parents=True)
        (thumbs / "motion-0000001.000.jpg").write_bytes(b"jpeg")
        (data / "transcripts").mkdir(exist_ok=True)
        (data / "transcripts" / f"{name}.txt").write_text("hello\n")
    with MemoryStore(data) as store:
        from vsalmonn.plugins.events import EventBus

        EventBus(store).event("alert.person", "someone", stream="gone")
    return data, config


@pytest.fixture
def data(built: tuple[Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(built[0], copy)
    return copy


def _rows(data: Path, name: str) -> dict[str, int]:
    with MemoryStore(data) as store, store.catalog.session() as s:
        stream_id = s.scalar(select(Stream.id).where(Stream.name == name))
        if stream_id is None:
            return {}
        counts = {
            model.__tablename__: s.scalar(
                select(func.count()).select_from(model).where(model.stream_id == stream_id)
            )
            for model in (
                Checkpoint,
                TranscriptSegment,
                FrameLabel,
                MomentRecord,
                Event,
                IngestFile,
                StreamStatus,
            )
        }
        counts["evidence"] = s.scalar(
            select(func.count())
            .select_from(Evidence)
            .join(MomentRecord, Evidence.moment_id == MomentRecord.id)
            .where(MomentRecord.stream_id == stream_id)
        )
        counts["stream_id"] = stream_id  # type: ignore[assignment]
        return counts


def test_delete_removes_every_row_and_file_of_the_stream_only(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    before = _rows(data, "gone")
    assert before["checkpoints"] and before["frame_labels"] and before["events"]
    kept_search = _search(data, "keep")
    kept_rows = _rows(data, "keep")
    stream_dir = data / "memory" / str(before["stream_id"])
    assert stream_dir.is_dir()

    result = in_process(capsys, "--data", str(data), "streams", "delete", "gone", "--yes")
    assert result.returncode == 0, result.stderr
    assert "deleted stream gone" in result.stdout

    assert _rows(data, "gone") == {}
    with MemoryStore(data) as store, store.catalog.session() as s:  # nothing dangles under the old id
        for model in (
            Checkpoint,
            TranscriptSegment,
            FrameLabel,
            MomentRecord,
            Event,
            IngestFile,
            StreamStatus,
        ):
            assert not s.scalar(
                select(func.count()).select_from(model).where(model.stream_id == before["stream_id"])
            )
    assert not stream_dir.exists()
    assert not (data / "thumbs" / "gone").exists() and not (data / "transcripts" / "gone.txt").exists()
    assert (data / "thumbs" / "keep").is_dir() and (data / "transcripts" / "keep.txt").is_file()
    assert _rows(data, "keep") == kept_rows and _search(data, "keep") == kept_search
    assert_one_line_error(
        in_process(capsys, "--data", str(data), "search", PROMPT, "--stream", "gone"), "no stream named"
    )
    # the name is free again: a new ingest starts the stream afresh
    assert_one_line_error(
        in_process(capsys, "--data", str(data), "streams", "delete", "gone", "--yes"), "no stream named"
    )


def test_without_yes_it_only_says_what_would_go(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    digest = _tree_digest(data)
    result = in_process(capsys, "--data", str(data), "streams", "delete", "gone")
    rows = _rows(data, "gone")
    assert_one_line_error(
        result,
        "would delete stream gone",
        f"{rows['checkpoints']} checkpoints",
        f"{rows['frame_labels']} frame_labels",
        "checkpoint group(s)",
        "thumbs",
        "--yes",
    )
    assert _tree_digest(data) == digest


def test_refused_while_another_writer_holds_the_stream(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    with MemoryStore(data) as store, store.writer("gone"):
        digest = _tree_digest(data)
        result = in_process(capsys, "--data", str(data), "streams", "delete", "gone", "--yes")
        assert_one_line_error(result, "stream gone is being written by another process")
        assert _tree_digest(data) == digest
    assert _rows(data, "gone")["checkpoints"]


def test_the_library_call_refuses_a_busy_stream_too(data: Path) -> None:
    from vsalmonn.memory_store.deletion import delete_stream
    from vsalmonn.memory_store.store import StreamBusyError

    with (
        MemoryStore(data) as store,
        store.writer("gone"),
        MemoryStore(data) as other,
        pytest.raises(StreamBusyError),
    ):
        delete_stream(other, "gone")
    assert _rows(data, "gone")["checkpoints"]
    with MemoryStore(data) as store:
        assert delete_stream(store, "absent") is None
