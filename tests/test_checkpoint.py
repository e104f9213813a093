"""Zarr checkpoint groups: exact round trips, and damage that the checksum must catch."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from vsalmonn.memory_store import StreamMemory
from vsalmonn.memory_store.checkpoint import CheckpointError, read_group, write_group

from .test_memory import assert_states_equal, small_config, write_script


def written_memory() -> StreamMemory:
    mem = StreamMemory(small_config())
    write_script(mem, 3, range(8))
    return mem


def test_memory_state_round_trips_exactly(tmp_path: Path) -> None:
    mem = written_memory()
    state = mem.state_dict()
    info = write_group(tmp_path / "g", state)
    loaded, checksum = read_group(tmp_path / "g", info.checksum)
    assert checksum == info.checksum
    assert_states_equal(state, loaded)
    resumed = StreamMemory(mem.config)
    resumed.load_state_dict(loaded)
    write_script(mem, 3, range(8, 12))
    write_script(resumed, 3, range(8, 12))
    assert_states_equal(mem.state_dict(), resumed.state_dict())
    assert info.bytes_stored > 0 and info.bytes_raw > 0


def test_odd_values_round_trip(tmp_path: Path) -> None:
    state = {
        "bf16": torch.randn(5, 3).bfloat16(),
        "empty": torch.empty(0, 7),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "ints": torch.arange(10, dtype=torch.int64),
        "flags": torch.tensor([True, False]),
        "nested": {"inf": -math.inf, "nan": math.nan, "name": "cam/1", "list": [1, 2.5, None], "empty": {}},
    }
    info = write_group(tmp_path / "g", state)
    loaded, _ = read_group(tmp_path / "g", info.checksum)
    assert_states_equal(state, loaded)


def test_writing_over_an_existing_group_is_refused(tmp_path: Path) -> None:
    write_group(tmp_path / "g", {"x": torch.ones(3)})
    with pytest.raises(Exception, match="exist"):
        write_group(tmp_path / "g", {"x": torch.zeros(3)})
    loaded, _ = read_group(tmp_path / "g")
    assert torch.equal(loaded["x"], torch.ones(3))


def chunk_files(group: Path) -> list[Path]:
    return sorted(p for p in group.rglob("*") if p.is_file() and p.name != "zarr.json")


@pytest.mark.parametrize("where", ["chunk", "metadata"])
def test_flipped_bytes_are_caught(tmp_path: Path, where: str) -> None:
    info = write_group(tmp_path / "g", written_memory().state_dict())
    if where == "chunk":
        target = max(chunk_files(tmp_path / "g"), key=lambda p: p.stat().st_size)
    else:
        target = tmp_path / "g" / "zarr.json"
    data = bytearray(target.read_bytes())
    i = len(data) // 2
    data[i] ^= 0x04  # one bit, in the middle
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checksum|unreadable"):
        read_group(tmp_path / "g", info.checksum)


def test_a_missing_chunk_or_group_is_caught(tmp_path: Path) -> None:
    info = write_group(tmp_path / "g", written_memory().state_dict())
    max(chunk_files(tmp_path / "g"), key=lambda p: p.stat().st_size).unlink()
    with pytest.raises(CheckpointError):
        read_group(tmp_path / "g", info.checksum)
    with pytest.raises(CheckpointError, match="missing"):
        read_group(tmp_path / "nothing", info.checksum)


FORMAT_1 = Path(__file__).parent / "data" / "checkpoint_format1.zarr"
FORMAT_1_CHECKSUM = "a53a98babe4083bcbeb9cd0e83e451fd6477255e801efa144314804c6e000c8c"


def format_1_state() -> dict[str, object]:
    """The state in tests/data/checkpoint_format1.zarr, written by vsalmonn at commit 25172a5 (format 1:
    every array on its own, chunks of 4,096 rows)."""
    g = torch.Generator().manual_seed(7)
    return {
        "bank": {
            "values": torch.randn(40, 6, generator=g),
            "ids": torch.arange(40, dtype=torch.int64),
            "t": torch.linspace(0, 3.9, 40, dtype=torch.float64),
        },
        "bf16": torch.randn(5, 3, generator=g).bfloat16(),
        "empty": torch.empty(0, 7),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "flags": torch.tensor([True, False, True]),
        "half": torch.randn(4, generator=g).half(),
        "nested": {"inf": -math.inf, "name": "cam/1", "list": [1, 2.5, None], "empty": {}},
    }


def test_format_1_groups_still_load_and_checksums_do_not_depend_on_the_layout(tmp_path: Path) -> None:
    from vsalmonn.memory_store.checkpoint import read_group_attrs

    assert read_group_attrs(FORMAT_1)["vsalmonn_format"] == "vsalmonn.memory/1"
    loaded, checksum = read_group(FORMAT_1, FORMAT_1_CHECKSUM)
    assert checksum == FORMAT_1_CHECKSUM
    assert_states_equal(format_1_state(), loaded)
    # today's layout (small arrays packed) of the same content: the same checksum, far fewer objects
    info = write_group(tmp_path / "g", format_1_state())
    assert info.checksum == FORMAT_1_CHECKSUM
    assert read_group_attrs(tmp_path / "g")["vsalmonn_format"] == "vsalmonn.memory/2"
    assert_states_equal(format_1_state(), read_group(tmp_path / "g", FORMAT_1_CHECKSUM)[0])
    files = sorted(
        p.relative_to(tmp_path / "g").as_posix() for p in (tmp_path / "g").rglob("*") if p.is_file()
    )
    old = [p for p in FORMAT_1.rglob("*") if p.is_file()]
    assert files == [
        "p1/c/0", "p1/zarr.json", "p2/c/0", "p2/zarr.json", "p4/c/0", "p4/zarr.json",
        "p8/c/0", "p8/zarr.json", "zarr.json",
    ] and len(old) == 16  # fmt: skip


def test_a_pack_shorter_than_its_manifest_is_caught(tmp_path: Path) -> None:
    import zarr

    info = write_group(tmp_path / "g", format_1_state())
    pack = zarr.open_array(tmp_path / "g" / "p8", mode="r")
    data = pack[:]
    shutil.rmtree(tmp_path / "g" / "p8")
    short = zarr.create_array(tmp_path / "g" / "p8", shape=(data.size - 1,), dtype=data.dtype)
    short[:] = data[:-1]
    with pytest.raises(CheckpointError, match="unreadable"):
        read_group(tmp_path / "g", info.checksum)
