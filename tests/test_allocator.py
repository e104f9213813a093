"""glibc malloc tuning of the daemon (`vsalmonn.perception.allocator`): effective on glibc, inert elsewhere,
never raising."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
    assert not allocator.hold_freed_blocks()
    assert not allocator.tune()
    assert not allocator.trim()
    allocator.trim_after_commit(object())


def test_a_failing_libc_never_raises(monkeypatch: pytest.MonkeyPatch, fresh_interval: None) -> None:
    def broken(*_args: object) -> int:
        raise OSError("no such symbol")

    monkeypatch.setattr(allocator, "_looked_up", True)
    monkeypatch.setattr(allocator, "_libc", SimpleNamespace(malloc_trim=broken, mallopt=broken))
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    assert not allocator.limit_arenas()
    assert not allocator.hold_freed_blocks()
    assert not allocator.tune()
    assert not allocator.trim()
    allocator.trim_after_commit(object())


@pytest.fixture
def mallopt_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """A libc whose mallopt records its calls and succeeds; no threshold variables in the environment."""
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    monkeypatch.setattr(allocator, "_looked_up", True)
    monkeypatch.setattr(allocator, "_libc", SimpleNamespace(mallopt=mallopt))
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_hold_freed_blocks_sets_the_trim_threshold_then_the_mmap_threshold(
    mallopt_calls: list[tuple[int, int]],
) -> None:
    """Both or neither: a fixed mmap threshold with the trim threshold left at glibc's static 128 KB gives
    pages back at every free (hf_cg ran 2.3x slower so)."""
    assert allocator.hold_freed_blocks()
    assert mallopt_calls == [(-1, allocator.TRIM_THRESHOLD_MB << 20), (-3, allocator.MMAP_THRESHOLD_MB << 20)]
    mallopt_calls.clear()
    assert allocator.tune()
    assert sorted(mallopt_calls) == sorted(
        [
            (-8, allocator.ARENAS),
            (-1, allocator.TRIM_THRESHOLD_MB << 20),
            (-3, allocator.MMAP_THRESHOLD_MB << 20),
        ]
    )


@pytest.mark.parametrize("name", ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"])
def test_an_operators_threshold_leaves_both_alone(
    mallopt_calls: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "1048576")
    assert not allocator.hold_freed_blocks()
    assert mallopt_calls == []


def test_writing_commands_tune_malloc_and_queries_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from vsalmonn import cli

    tuned: list[bool] = []
    monkeypatch.setattr(allocator, "tune", lambda: tuned.append(True) or True)
    for command in ("ingest", "daemon", "bench", "train-memory", "demo"):
        cli.tune_malloc(command)
    assert len(tuned) == 5
    for command in sorted(cli.QUERY_COMMANDS):
        cli.tune_malloc(command)
    assert len(tuned) == 5


# Minor page faults per hf_cg mini-batch in a fresh process, with glibc's defaults or `tune`.
_FAULTS = """
import resource, sys
from vsalmonn.perception import allocator
if sys.argv[1] == "tuned":
    assert allocator.tune()
import torch
from vsalmonn.memory_store.ttt import TTTConfig, TTTLayer
torch.manual_seed(0)
layer = TTTLayer(TTTConfig(dim=384, heads=8, mini_batch=1024, optimizer="hf_cg", cg_max_iter=4))
state = layer.init_state(batch=1)
with torch.no_grad():
    for step in range(12):
        if step == 4:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        _, state = layer(torch.nn.functional.normalize(torch.randn(1, 1024, 384), dim=-1), state)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8)
"""


@glibc
def test_tuned_malloc_spares_hf_cg_its_page_faults() -> None:
    """The reason `tune` exists, measured as the kernel counts it (not timed): with glibc's defaults each
    mini-batch maps its large temporaries afresh (thousands of faults here); tuned, it reuses freed heap."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    faults = {}
    for mode in ("plain", "tuned"):
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=120,
        )
        faults[mode] = float(out.stdout.strip().splitlines()[-1])
    assert faults["plain"] > 1000, faults  # the problem is real on this machine's glibc
    assert faults["tuned"] < faults["plain"] / 5, faults


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
