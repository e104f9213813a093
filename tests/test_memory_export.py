"""`vsalmonn memory export` / `memory import`: a stream's memory as one portable, checksummed file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from . import media
from .test_cli import assert_one_line_error, in_process, vsalmonn

FAST = '[perception]\nspeech_encoder = "none"\n[memory]\nvisual_slots = 64\n'


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data dir, config) of a store holding stream 'clip', ingested through the real CLI."""
    root = tmp_path_factory.mktemp("export")
    clip = media.write_media(root / "clip.mp4", video_times=media.uniform_times(12, 5), rate=5)
    config = root / "fast.toml"
    config.write_text(FAST)
    done = vsalmonn(
        "--config", str(config), "--data", str(root / "data"), "ingest", str(clip), cwd=root, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return root / "data", config


def search(capsys: pytest.CaptureFixture[str], data: Path, stream: str) -> list[tuple[float, float, str]]:
    found = in_process(capsys, "--data", str(data), "search", "coloured bars", "--stream", stream, "--json")
    assert found.returncode == 0, found.stderr
    return [(m["t0"], m["t1"], m["modality"]) for m in json.loads(found.stdout)["moments"]]


def test_export_then_import_elsewhere_and_under_a_new_name_reads_the_same(
    capsys: pytest.CaptureFixture[str], ingested: tuple[Path, Path], tmp_path: Path
) -> None:
    data, config = ingested
    out = tmp_path / "clip.vsm"
    done = in_process(capsys, "--data", str(data), "memory", "export", "clip", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["clip.vsm"], "no temporary file left"
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["stream"] == "clip" and manifest["rows"]["frame_labels"] == 12

    expected = search(capsys, data, "clip")
    assert expected
    other = tmp_path / "other"
    loaded = in_process(capsys, "--config", str(config), "--data", str(other), "memory", "import", str(out))
    assert loaded.returncode == 0, loaded.stderr
    assert search(capsys, other, "clip") == expected
    again = in_process(capsys, "--config", str(config), "--data", str(other), "memory", "import", str(out))
    assert_one_line_error(again, "exists already")
    renamed = in_process(
        capsys,
        "--config",
        str(config),
        "--data",
        str(other),
        "memory",
        "import",
        str(out),
        "--stream",
        "copy",
    )
    assert renamed.returncode == 0, renamed.stderr
    assert search(capsys, other, "copy") == expected


def test_a_damaged_or_foreign_file_is_refused_and_the_store_is_unchanged(
    capsys: pytest.CaptureFixture[str], ingested: tuple[Path, Path], tmp_path: Path
) -> None:
    data, config = ingested
    out = tmp_path / "clip.vsm"
    assert in_process(capsys, "--data", str(data), "memory", "export", "clip", "-o", str(out)).returncode == 0
    with zipfile.ZipFile(out) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    victim = next(n for n in members if n.startswith("rows/frame_labels"))
    members[victim] = members[victim].replace(b"0", b"1", 1)
    damaged = tmp_path / "damaged.vsm"
    with zipfile.ZipFile(damaged, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    other = tmp_path / "other"
    refused = in_process(
        capsys, "--config", str(config), "--data", str(other), "memory", "import", str(damaged)
    )
    assert_one_line_error(refused, "fails its checksum")
    text = tmp_path / "notes.vsm"
    text.write_text("not a zip\n")
    refused = in_process(capsys, "--config", str(config), "--data", str(other), "memory", "import", str(text))
    assert_one_line_error(refused, "not a vsalmonn memory export")
    foreign = tmp_path / "foreign.toml"
    foreign.write_text(FAST + 'encoders = "clip/clip"\n')
    refused = in_process(capsys, "--config", str(foreign), "--data", str(other), "memory", "import", str(out))
    assert_one_line_error(refused, "encoders")
    status = in_process(capsys, "--data", str(other), "status", "--json")
    assert not json.loads(status.stdout or '{"streams": []}').get("streams"), status


def test_export_to_a_folder_or_an_unknown_stream_is_one_line(
    capsys: pytest.CaptureFixture[str], ingested: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = ingested
    folder = in_process(capsys, "--data", str(data), "memory", "export", "clip", "-o", str(tmp_path))
    assert_one_line_error(folder, "directory")
    unknown = in_process(capsys, "--data", str(data), "memory", "export", "nosuch", "-o", str(tmp_path / "x"))
    assert_one_line_error(unknown, "nosuch")
    assert list(tmp_path.iterdir()) == []
