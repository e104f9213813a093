"""glibc malloc tuning of the daemon (`vsalmonn.perception.allocator`): effective on glibc, inert elsewhere,
never raising."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from vsalmonn.memory_store.config import DataRetention
from vsalmonn.memory_store.retention import RetentionSchedule
from vsalmonn.perception import allocator
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.pipeline import StreamSink

glibc = pytest.mark.skipif(not allocator.is_glibc(), reason="needs glibc")


def _rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1)) / 1024  # type: ignore[union-attr]


@pytest.fixture
def no_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_looked_up", True)
    monkeypatch.setattr(allocator, "_libc", None)


@pytest.fixture
def fresh_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_last_trim", -float("inf"))


@glibc
def test_trim_returns_freed_heap_pages_to_the_kernel(fresh_interval: None) -> None:
    """Blocks freed below a live one stay resident (the heap only shrinks from its top) until a trim."""
    kept: list[bytes] = []

    def churn() -> None:  # on its own thread, as the pipeline's temporaries are: another arena
        blocks = [bytes(4000) for _ in range(40_000)]  # 160 MB of malloc'd blocks (over pymalloc's limit)
        kept.append(blocks[-1])  # the newest stays alive: the heap's top is not free
        del blocks

    thread = threading.Thread(target=churn)
    thread.start()
    thread.join()
    before = _rss_mb()
    assert allocator.trim()
    assert before - _rss_mb() > 50, "malloc_trim released less than 50 MB of 160 MB freed"


@glibc
def test_limit_arenas_is_set_on_glibc_unless_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert allocator.limit_arenas(8)  # as many as a 1-core default: harmless to the test process
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not allocator.limit_arenas(8)


def test_everything_is_a_no_op_off_glibc(no_glibc: None, fresh_interval: None) -> None:
    assert not allocator.is_glibc()
    assert not allocator.limit_arenas()
    assert not allocator.trim()
    allocator.trim_after_commit(object())


def test_a_failing_libc_never_raises(monkeypatch: pytest.MonkeyPatch, fresh_interval: None) -> None:
    def broken(*_args: object) -> int:
        raise OSError("no such symbol")

    monkeypatch.setattr(allocator, "_looked_up", True)
    monkeypatch.setattr(allocator, "_libc", SimpleNamespace(malloc_trim=broken, mallopt=broken))
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert not allocator.limit_arenas()
    assert not allocator.trim()
    allocator.trim_after_commit(object())


def test_trims_after_commits_at_most_once_per_interval(
    monkeypatch: pytest.MonkeyPatch, fresh_interval: None
) -> None:
    calls: list[int] = []

    def trim(_pad: int) -> int:
        calls.append(_pad)
        return 1

    monkeypatch.setattr(allocator, "_looked_up", True)
    monkeypatch.setattr(allocator, "_libc", SimpleNamespace(malloc_trim=trim))
    for _ in range(5):
        allocator.trim_after_commit(object())
    assert calls == [0]
    monkeypatch.setattr(allocator, "_last_trim", allocator._last_trim - allocator.MIN_INTERVAL_S)
    allocator.trim_after_commit(object())
    assert calls == [0, 0]


def test_stream_sinks_trim_after_each_commit() -> None:
    writer = SimpleNamespace(on_commit=[], stream_id="id", name="s")
    store = SimpleNamespace(catalog=None, data_dir=Path("."), data_retention=DataRetention())
    for _ in range(2):  # a second sink on the same writer (a watched folder's next file) adds nothing
        StreamSink(
            store=store, writer=writer, memory=None, encoders=None,  # type: ignore[arg-type]
            perception=PerceptionConfig(), window_s=30.0,
        )  # fmt: skip
    # Trimming, and the data retention of tests/test_retention.py, once each.
    assert writer.on_commit[0] == allocator.trim_after_commit
    assert [type(f) for f in writer.on_commit[1:]] == [RetentionSchedule]
