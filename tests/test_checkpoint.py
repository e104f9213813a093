"""Zarr checkpoint groups: exact round trips, and damage that the checksum must catch."""

from __future__ import annotations

import math
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
