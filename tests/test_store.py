"""The commit protocol: checkpoints that survive kills, damage, retention and concurrent readers."""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select

from vsalmonn.memory_store import StreamMemory
from vsalmonn.memory_store.catalog import Catalog
from vsalmonn.memory_store.models import Checkpoint
from vsalmonn.memory_store.store import MemoryStore, RetentionPolicy, StreamBusyError

from . import store_worker
from .test_memory import assert_states_equal

WORKER = Path(store_worker.__file__)
ROOT = WORKER.parent.parent


def fed_memory(chunks: range, seed: int = 0) -> StreamMemory:
    memory = StreamMemory(store_worker.config())
    for i in chunks:
        store_worker.feed(memory, i, seed)
    return memory


def test_commit_then_load_latest(tmp_path: Path) -> None:
    memory = fed_memory(range(5))
    with MemoryStore(tmp_path) as store, store.writer("cam", config=memory.config) as writer:
        first = writer.commit(memory.state_dict(), source_offset=5.0)
        store_worker.feed(memory, 5, 0)
        second = writer.commit(memory.state_dict(), source_offset=6.0, source_state={"file": "b.mp4"})
        assert (first.seq, second.seq) == (1, 2)
        state, info = store.load_latest("cam")
        assert info == second and info.source_state == {"file": "b.mp4"}
        assert info.t_start == 0.0 and info.t_end == pytest.approx(5 * 12 + 95 / 8 + 0.125)
        assert info.tokens_visual == 6 * store_worker.CHUNK
        assert_states_equal(memory.state_dict(), state)
        assert [c.seq for c in store.checkpoints("cam")] == [2, 1]
        assert info.path.is_dir() and info.path.parent.name == writer.stream_id
        reopened, _ = store.open_memory("cam")
        assert_states_equal(memory.state_dict(), reopened.state_dict())
        assert store.load_latest("nobody") is None


def test_one_writer_per_stream(tmp_path: Path) -> None:
    with MemoryStore(tmp_path) as store, store.writer("cam"):
        with pytest.raises(StreamBusyError, match="cam"):
            store.writer("cam")
        with store.writer("other"):
            pass
    with MemoryStore(tmp_path) as store, store.writer("cam"):
        pass  # released on close


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 500])
def test_stream_names_are_validated(tmp_path: Path, name: str) -> None:
    with MemoryStore(tmp_path) as store, pytest.raises(ValueError):
        store.writer(name)


def test_writer_removes_uncommitted_groups(tmp_path: Path) -> None:
    memory = fed_memory(range(3))
    with MemoryStore(tmp_path) as store:
        with store.writer("cam") as writer:
            committed = writer.commit(memory.state_dict())
            stream_dir = writer.dir
        (stream_dir / ".tmp-00000002-deadbeef.zarr").mkdir()
        (stream_dir / "00000002.zarr").mkdir()  # renamed, but killed before its row
        (stream_dir / "00000002.zarr" / "zarr.json").write_text("{}")
        with store.writer("cam") as writer:
            names = sorted(p.name for p in stream_dir.iterdir() if p.is_dir())
            assert names == [committed.path.name]
            assert writer.commit(memory.state_dict()).seq == 2


def flip_a_byte(group: Path) -> None:
    target = max((p for p in group.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x10
    target.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped", "missing"])
def test_damaged_newest_checkpoint_falls_back_to_the_one_before(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    memory = fed_memory(range(3))
    with MemoryStore(tmp_path) as store:
        with store.writer("cam") as writer:
            writer.commit(memory.state_dict(), source_offset=3.0)
            good = memory.state_dict()
            store_worker.feed(memory, 3, 0)
            newest = writer.commit(memory.state_dict(), source_offset=4.0)
        if damage == "flipped":
            flip_a_byte(newest.path)
        else:
            import shutil

            shutil.rmtree(newest.path)
        with caplog.at_level(logging.WARNING):
            state, info = store.load_latest("cam")
        assert info.seq == 1 and info.source_offset == 3.0
        assert_states_equal(good, state)
        assert any("skipping checkpoint 2" in r.getMessage() for r in caplog.records)


def test_retention_keeps_the_last_k_and_respects_bytes_and_age(tmp_path: Path) -> None:
    memory = fed_memory(range(2))
    retention = RetentionPolicy(keep_last=3)
    with MemoryStore(tmp_path, retention=retention) as store, store.writer("cam") as writer:
        infos = [writer.commit(memory.state_dict()) for _ in range(5)]
        assert [c.seq for c in store.checkpoints("cam")] == [5, 4, 3]
        assert not infos[0].path.exists() and not infos[1].path.exists() and infos[2].path.exists()
        store.retention = RetentionPolicy(keep_last=3, max_bytes=int(infos[-1].bytes_stored * 1.5))
        writer.commit(memory.state_dict())
        assert [c.seq for c in store.checkpoints("cam")] == [6]
        store.retention = RetentionPolicy(keep_last=5, max_age_s=0.5)
        writer.commit(memory.state_dict())
        time.sleep(0.6)
        writer.commit(memory.state_dict())
        assert [c.seq for c in store.checkpoints("cam")] == [8], "the newest is kept, older than 0.5 s go"
        remaining = sorted(p.name for p in writer.dir.iterdir() if p.is_dir())
        assert remaining == ["00000008.zarr"]


def test_background_checkpoint_captures_the_state_at_submit(tmp_path: Path) -> None:
    memory = fed_memory(range(6))
    with MemoryStore(tmp_path) as store, store.writer("cam") as writer:
        expected = memory.state_dict()
        writer.submit(memory, source_offset=6.0)
        for i in range(6, 12):  # ingestion goes on while the checkpoint is written
            store_worker.feed(memory, i, 0)
        writer.wait()
        state, info = store.load_latest("cam")
        assert info.source_offset == 6.0
        assert_states_equal(expected, state)
        assert writer.last_pause_s < 0.5


def test_background_failure_is_raised_on_the_next_call(tmp_path: Path) -> None:
    class Broken:
        def state_dict(self, *, copy: bool = True) -> dict[str, torch.Tensor]:
            return {"bad/key": torch.zeros(1)}  # a key that cannot name an array: the write fails

    with MemoryStore(tmp_path) as store, store.writer("cam") as writer:
        writer.submit(Broken())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="cannot name an array"):
            writer.wait()
        writer.wait()  # the error is reported once
        assert store.checkpoints("cam") == []
        assert not [p for p in writer.dir.iterdir() if p.is_dir()], "the failed group is removed"


def run_worker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def count_rows(store: MemoryStore) -> tuple[int, int]:
    with store.catalog.session() as s:
        rows = s.scalar(select(func.count()).select_from(Checkpoint)) or 0
        distinct = s.scalar(select(func.count(func.distinct(Checkpoint.seq)))) or 0
    return rows, distinct


def test_killed_writers_recover_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """SIGKILL at random instants; every time the store opens cleanly and resuming gives the same end."""
    chunks, seed = 40, 7
    expected = store_worker.reference_state(chunks, seed)
    rng = random.Random(1234)
    resumed_from = []
    for trial in range(5):
        data = tmp_path / f"trial{trial}"
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), "write", str(data), f"--chunks={chunks}", f"--seed={seed}",
             "--interval=0.25", "--delay=0.05"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        # Wait for the worker to hold its writer lock (after importing torch, which takes a variable time
        # on a busy machine), then kill it at a random instant of its roughly 2.5 s of writing.
        deadline = time.monotonic() + 60
        while not list(data.glob("memory/*/.writer.lock")) and proc.poll() is None:
            assert time.monotonic() < deadline, "the worker never opened its store"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.1, 2.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with MemoryStore(data) as store:
            loaded = store.load_latest(store_worker.STREAM)
            offset = int(loaded[1].source_offset or 0) if loaded else 0
            if loaded:
                StreamMemory(store_worker.config()).load_state_dict(loaded[0])
            rows, distinct = count_rows(store)
            assert rows == distinct, f"trial {trial}: duplicate checkpoint rows"
        resumed_from.append(offset)
        result = store_worker.run_writer(data, chunks=chunks, seed=seed, interval=0.25, delay=0.0)
        assert result["resumed_at"] == offset
        with MemoryStore(data) as store:
            state, info = store.load_latest(store_worker.STREAM)
            assert info.source_offset == chunks
            assert_states_equal(expected, state, f"trial {trial} (killed at chunk {offset})")
            leftovers = [p.name for p in (data / "memory").rglob(".tmp-*")]
            assert not leftovers, f"trial {trial}: temporary groups left behind: {leftovers}"
    assert any(resumed_from), f"no kill landed after a checkpoint: {resumed_from}"


def test_readers_never_see_a_torn_checkpoint_while_one_process_writes(tmp_path: Path) -> None:
    """One writer and four readers for 30 s: no 'database is locked', no torn state."""
    seconds = 30
    writer = subprocess.Popen(
        [sys.executable, str(WORKER), "write", str(tmp_path), "--chunks=100000", "--interval=0.2",
         "--delay=0.01"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    readers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "read", str(tmp_path), f"--seconds={seconds}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [r.communicate(timeout=seconds + 60) for r in readers]
    writer.send_signal(signal.SIGTERM)
    writer.communicate(timeout=30)
    for (out, err), proc in zip(outputs, readers, strict=True):
        assert proc.returncode == 0, f"reader failed: {err.strip().splitlines()[-1:]}"
        assert "database is locked" not in err
        result = json.loads(out)
        assert result["loads"] > 10 and result["distinct_checkpoints"] > 3, result


def test_commit_protocol_on_each_catalog_backend(tmp_path: Path, catalog: Catalog) -> None:
    """The same commits, fall-back and retention with the catalog on SQLite and on PostgreSQL."""
    memory = fed_memory(range(4))
    store = MemoryStore(tmp_path, catalog=catalog, retention=RetentionPolicy(keep_last=2))
    with store.writer("lobby", config=memory.config) as writer:
        infos = [writer.commit(memory.state_dict(), source_offset=float(i)) for i in range(3)]
    assert [c.seq for c in store.checkpoints("lobby")] == [3, 2]
    assert not infos[0].path.exists()
    flip_a_byte(infos[2].path)
    state, info = store.load_latest("lobby")
    assert info.seq == 2
    assert_states_equal(memory.state_dict(), state)


def test_retention_never_deletes_the_newest_verified_checkpoint(tmp_path: Path) -> None:
    """With the two newest checkpoints corrupt, resume falls back to the oldest: retention must not delete
    that only good fallback before a new one is committed, and the corrupt ones do not count as kept."""
    memory = fed_memory(range(2))
    with (
        MemoryStore(tmp_path, retention=RetentionPolicy(keep_last=3)) as store,
        store.writer("cam") as writer,
    ):
        infos = [writer.commit(memory.state_dict(), source_offset=float(i)) for i in range(3)]
    flip_a_byte(infos[2].path)
    flip_a_byte(infos[1].path)
    with MemoryStore(tmp_path, retention=RetentionPolicy(keep_last=3)) as store:
        _state, resumed = store.load_latest("cam")
        assert resumed.seq == 1
        assert store.failed[resumed.stream_id] == {2, 3}
        with store.writer("cam") as writer:
            store.retention = RetentionPolicy(keep_last=1, max_bytes=1)  # a policy that keeps only one
            writer.apply_retention()  # before any new commit: the good #1 stays, the damaged go
            assert [c.seq for c in store.checkpoints("cam")] == [1]
            new = writer.commit(memory.state_dict(), source_offset=9.0)
            assert [c.seq for c in store.checkpoints("cam")] == [new.seq], "now the new one is the fallback"
        _state, info = store.load_latest("cam")
        assert info.seq == new.seq and info.source_offset == 9.0


def test_read_only_store_reads_and_refuses_writes(tmp_path: Path) -> None:
    from vsalmonn.memory_store.catalog import CatalogError

    memory = fed_memory(range(2))
    with MemoryStore(tmp_path) as store, store.writer("cam") as writer:
        writer.commit(memory.state_dict())
    with MemoryStore.open(tmp_path, read_only=True) as store:
        assert store.catalog.read_only
        assert store.load_latest("cam") is not None
        with pytest.raises(CatalogError, match="read-only"):
            store.catalog.ensure_stream("other")


def test_writing_open_refuses_a_lost_catalog_over_groups(tmp_path: Path) -> None:
    from vsalmonn.memory_store.repair import check_store, rebuild_catalog
    from vsalmonn.memory_store.store import StoreError

    memory = fed_memory(range(2))
    with MemoryStore(tmp_path) as store, store.writer("cam") as writer:
        writer.commit(memory.state_dict(), source_offset=2.5)
        expected = memory.state_dict()
    (tmp_path / "catalog.sqlite").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreError, match="store rebuild"):
        MemoryStore.open(tmp_path)
    assert not check_store(tmp_path).catalog_ok
    result = rebuild_catalog(tmp_path)
    assert [(name, n) for name, _id, n in result.streams] == [("cam", 1)]
    with MemoryStore.open(tmp_path) as store:
        state, info = store.load_latest("cam")
    assert info.source_offset == 2.5
    assert_states_equal(expected, state)
