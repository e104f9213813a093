"""`vsalmonn bench needle`'s parts: the needles' placement, how a needle is scored, the frames and the plot.

The full benchmark encodes hours of footage; these tests run its pieces on small inputs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vsalmonn.cli.bench import load_benchmark
from vsalmonn.cli.output import UsageError
from vsalmonn.memory_store import MemoryConfig, StreamMemory

from .media import SHARED_MEDIA

needle = load_benchmark("needle")
ns = sys.modules["vsalmonn_bench._needle_streams"]
DIM = 384
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_needle_times_keep_their_distance_and_fit_the_stream() -> None:
    rng = np.random.default_rng(3)
    lengths = [float(x) for x in rng.integers(3, 9, 24)]
    starts = ns._needle_times(rng, 600.0, lengths)
    ends = [s + n for s, n in zip(starts, lengths, strict=True)]
    assert starts[0] >= ns.FIRST_S
    assert ends[-1] <= 600.0 - ns.MIN_GAP_S + 1e-6
    assert all(b - a >= ns.MIN_GAP_S - 1e-6 for a, b in zip(ends, starts[1:], strict=False))
    assert ns._needle_times(np.random.default_rng(3), 600.0, lengths) != starts  # the rng moved on
    with pytest.raises(ValueError, match="do not fit"):
        ns._needle_times(rng, 100.0, lengths)


def _stream(seconds: int, needle_at: int) -> ns.NeedleStream:
    """A stream of near-identical "street" frames (5 tokens each) with one distinct 3-second needle."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal(DIM).astype(np.float32)
    visual = base + 0.05 * rng.standard_normal((seconds, 5, DIM)).astype(np.float32)  # (F, 5, d)
    odd = rng.standard_normal(DIM).astype(np.float32)
    visual[needle_at : needle_at + 3] = odd + 0.05 * rng.standard_normal((3, 5, DIM))
    visual /= np.linalg.norm(visual, axis=-1, keepdims=True)
    spoken = rng.standard_normal((2, DIM)).astype(np.float32)
    target = ns.Needle("visual", "odd", "the odd one", float(needle_at), float(needle_at + 3))
    said = ns.Needle("spoken", "hello", "hello", 40.0, 42.0)
    return ns.NeedleStream(
        name="tiny",
        seconds=float(seconds),
        seed=0,
        needles=[target, said],
        visual=visual,
        frame_t=np.arange(seconds, dtype=np.float64),
        audio=spoken,
        audio_t0=np.asarray([40.0, 90.0]),
        audio_t1=np.asarray([42.0, 92.0]),
        queries=np.stack([odd, spoken[0]]),
        info={},
    )


def _config(policy: str, **kw: object) -> MemoryConfig:
    return MemoryConfig(
        visual_slots=64, audio_slots=8, policy=policy, audio_policy=policy, mini_batch=64, **kw
    )


def test_a_novel_needle_survives_merge_and_discard_but_not_fifo() -> None:
    stream = _stream(300, needle_at=20)  # 1,500 visual tokens into 64 slots
    for policy in ("merge", "discard"):
        found, cost = needle._measure(stream, StreamMemory(_config(policy, ttt=False)))
        assert [r["rank"] for r in found] == [1, 1], policy
        assert cost["visual_slots"] == 64 and cost["visual_tokens"] == 1500
    found, _ = needle._measure(stream, StreamMemory(_config("fifo", ttt=False)))
    assert found[0]["rank"] is None  # the newest 64 tokens are the last 13 s
    assert found[1]["rank"] == 1  # two sentences fit the audio bank
    found, _ = needle._measure(stream, StreamMemory(_config("merge", ttt=True, optimizer="gd")))
    assert found[0]["rank"] == 1


def test_a_moment_beside_the_tolerance_is_a_miss() -> None:
    stream = _stream(120, needle_at=60)  # the odd frames are at 60-63 s
    everything = MemoryConfig(visual_slots=4096, audio_slots=8, ttt=False)  # no reduction: exact spans

    def rank(t0: float) -> int | None:
        truth = ns.Needle("visual", "odd", "q", t0, t0 + 3)
        moved = ns.NeedleStream(**{**stream.__dict__, "needles": [truth, stream.needles[1]]})
        found, _ = needle._measure(moved, StreamMemory(everything))
        return found[0]["rank"]

    assert rank(60.0) == 1
    assert rank(67.0) == 1  # the moment ends at 63 s, within 5 s of 67 s
    # The best moment (60-63 s) misses these truths; a weaker one, some street frame, may still fall inside.
    assert rank(68.5) != 1
    assert rank(51.5) != 1  # ends at 54.5 s, more than 5 s before 60 s


def test_a_rotation_moves_each_needle_with_its_frames_and_sentences() -> None:
    stream = _stream(300, needle_at=20)
    first, *turns = ns.rotations(stream, 4)
    assert first is stream and len(turns) == 3
    for turn in turns:
        cut = turn.info["cut_s"]
        assert not any(n.t0 - ns.CUT_MARGIN_S <= cut <= n.t1 + ns.CUT_MARGIN_S for n in stream.needles)
        odd, said = turn.needles
        assert odd.t0 == (20 - cut) % 300 and odd.t1 - odd.t0 == 3
        np.testing.assert_array_equal(turn.visual[int(odd.t0)], stream.visual[20])
        assert said.t0 in turn.audio_t0.tolist() and np.all(np.diff(turn.audio_t0) >= 0)
        i = turn.audio_t0.tolist().index(said.t0)
        np.testing.assert_array_equal(turn.audio[i], stream.audio[0])
        found, _ = needle._measure(
            turn, StreamMemory(MemoryConfig(visual_slots=4096, audio_slots=8, ttt=False))
        )
        assert [r["rank"] for r in found] == [1, 1]
    assert len({t.info["cut_s"] for t in turns}) == 3


def test_windows_write_in_the_pipelines_order() -> None:
    stream = _stream(100, needle_at=20)
    windows = list(needle._windows(stream))
    assert len(windows) == 4  # 30 s windows over 100 s
    first_visual, first_audio = windows[0]
    assert [w[0].shape[0] for w in first_visual] == [80, 70]  # 16 frames, then the window's other 14
    assert first_audio is None
    assert windows[1][1] is not None and windows[1][1][1].tolist() == [40.0]
    assert windows[3][1] is not None and windows[3][1][1].tolist() == [90.0]
    t0 = np.concatenate([t for v, _ in windows for _, t, _, _ in v])
    assert t0.shape[0] == 500 and np.all(np.diff(t0) >= 0)
    # each frame's 5 tokens carry their place in the frame (global, then the 2x2 regions) for 3-D RoPE
    where = np.concatenate([p for v, _ in windows for _, _, _, p in v])  # (500, 2)
    assert where.shape == (500, 2) and where[:5].tolist() == [
        [0, 0],
        [-0.5, -0.5],
        [-0.5, 0.5],
        [0.5, -0.5],
        [0.5, 0.5],
    ]


def test_summary_targets_and_tables_from_rows() -> None:
    rows, writes = [], []
    for setting in needle.settings():
        for i in range(10):
            rank = 1 if (setting.startswith(("merge", "discard", "unbounded")) or i < 4) else None
            rows.append(
                {"setting": setting, "seconds": 600.0, "stream": "s", "kind": "visual" if i % 2 else "spoken",
                 "rank": rank, "width_s": 1.0 if rank else None, "age_s": 10.0 * i}
            )  # fmt: skip
        cost = {"write_s": 1.0, "read_ms": 2.0, "visual_slots": 10, "visual_tokens": 20}
        writes.append({"setting": setting, "seconds": 600.0, "stream": "s", **cost})
    summary = needle._summary(rows, writes)
    assert summary["merge/off@600"]["recall@5"] == 100.0
    assert summary["fifo/gd@600"]["recall@1"] == 40.0
    targets = {t["name"].split(": ", 1)[1]: t for t in needle._targets(summary, 600.0)}
    assert all(t["pass"] for t in targets.values())
    headers, table = needle.ablation(summary, [600.0])
    assert headers == ["memory", "10 min"] and table[0] == ["merge", "100 / 100"]
    result = {
        "quick": True,
        "environment": {"torch": "x", "threads": 2, "cores": 2, "cpu": "c", "python": "3"},
        "loadavg": {"start": [0, 0, 0], "end": [0, 0, 0]},
        "wall_s": 1.0,
        "streams": [{"name": "s", "needles": 10, "visual_tokens": 20, "audio_tokens": 1}],
        "summary": summary,
        "targets": list(targets.values()),
    }
    assert "merge + TTT hf_cg" in needle.render(result)
    assert "merge + TTT trained (hf_cg)" in needle.render(result)
    trained = {t["name"]: t for t in needle._trained_targets(summary, [600.0])}
    assert set(trained) == {f"10 min: {p}/{m}+trained - {p}/off, recall@5" for p in ("merge", "discard")
                            for m in ("gd", "hf_cg", "hf_cg_newton")}  # fmt: skip
    assert not any(t["pass"] for t in trained.values())  # no gain over the plain policy: 0 < 3 points


def test_the_reader_only_setting_has_the_shipped_weights_and_no_ttt() -> None:
    """The "off+reader" setting reads through the shipped θ with its TTT layer off; "off" is untrained."""
    from vsalmonn.memory_store import resolve_slow_weights

    config = needle.settings()["merge/off+reader"]
    memory = needle._memory("merge/off+reader", config)
    shipped = resolve_slow_weights(config.model_copy(update={"ttt": True}))
    assert shipped is not None and not memory.config.ttt
    for name, tensor in memory.layer.state_dict().items():
        assert torch.equal(tensor, shipped[name]), name
    plain = needle._memory("merge/off", needle.settings()["merge/off"])
    assert not torch.equal(plain.layer.gate, shipped["gate"])  # the untrained start


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    summary = {}
    for setting in needle.settings():
        for seconds in (600.0, 3600.0):
            summary[f"{setting}@{seconds:g}"] = {"seconds": seconds, "recall@1": 50.0, "recall@5": 80.0}
    paths = needle.plot({"summary": summary, "streams": [{}]}, tmp_path)
    assert [p.name for p in paths] == ["needle-recall.png"]
    assert paths[0].read_bytes()[:8] == PNG_MAGIC


def test_bench_plot_of_a_benchmark_without_plots_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vsalmonn", "--data", str(tmp_path), "bench", "ttt", "--plot", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "makes no plots" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.skipif(not (SHARED_MEDIA / "vtest.avi").is_file(), reason="needs ../shared/media")
def test_frames_put_each_visual_needle_where_its_truth_says() -> None:
    pytest.importorskip("skimage")
    rng = np.random.default_rng(1)
    needles = [
        ns.Needle("visual", "cat", "a cat", 20.0, 23.0),
        ns.Needle("visual", "teapot", "a teapot", 50.0, 54.0),
        ns.Needle("spoken", "x", "x", 30.0, 32.0),
    ]
    frames = list(ns._frames(SHARED_MEDIA, rng, 60.0, needles))
    assert len(frames) == 60 and all(f.shape == (360, 480, 3) and f.dtype == np.uint8 for f in frames)

    def apart(a: int, b: int) -> float:
        return float(np.abs(frames[a][::8, ::8].astype(float) - frames[b][::8, ::8]).mean())

    # A needle's frames (the photograph slowly zoomed, the clip played on) are alike, and unlike the street
    # footage just before and after them.
    for first, last in ((20, 22), (50, 53)):
        inside = max(apart(t, t + 1) for t in range(first, last))
        assert inside < apart(first - 1, first) and inside < apart(last, last + 1)
    # A scene's frames move on (footage), and no two scenes' first frames are the same picture.
    assert not np.array_equal(frames[0], frames[1])


def test_variants_file_adds_rows_with_the_layer_their_weights_were_trained_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vsalmonn.memory_store.config import TTTConfig
    from vsalmonn.memory_store.slow_weights import save_slow_weights
    from vsalmonn.memory_store.ttt import TTTLayer

    trained_under = {"rope": True, "mlp_ratio": 1, "optimizer": "hf_cg_paper", "visual_slots": 7}
    layer = TTTLayer(TTTConfig(rope=True, mlp_ratio=1))
    save_slow_weights(
        tmp_path / "theta.safetensors",
        layer.state_dict(),
        vision_encoder="efficientnet-lite0",
        text_encoder="minilm",
        dim=384,
        heads=8,
        mlp_ratio=1,
        trained={"train": {"memory": trained_under}},
    )
    (tmp_path / "variants.toml").write_text(
        '[ropey]\nslow_weights = "theta.safetensors"\n\n[ropey-gd]\nslow_weights = "theta.safetensors"\n'
        'optimizer = "gd"\npolicies = ["discard"]\n'
    )
    monkeypatch.setenv("VSALMONN_BENCH_NEEDLE_VARIANTS", str(tmp_path / "variants.toml"))
    settings = needle.settings()
    ropey = settings["merge/ropey"]
    # an old file's "hf_cg_paper" is read under today's name, "hf_cg"
    assert (ropey.rope, ropey.mlp_ratio, ropey.optimizer) == (True, 1, "hf_cg")
    assert ropey.visual_slots == needle.VISUAL_SLOTS  # the bench's budget, not the training's
    assert ropey.slow_weights == str((tmp_path / "theta.safetensors").resolve())
    assert settings["discard/ropey-gd"].optimizer == "gd"
    assert "merge/ropey-gd" not in settings and "discard/ropey" in settings
    # the weights load into the memory the row builds
    assert needle._memory("merge/ropey", ropey).config.rope

    monkeypatch.setenv("VSALMONN_BENCH_NEEDLE_ONLY", "merge/off, */ropey")
    assert set(needle.settings()) == {"merge/off", "merge/ropey", "discard/ropey"}
    monkeypatch.setenv("VSALMONN_BENCH_NEEDLE_ONLY", "nothing/*")
    with pytest.raises(UsageError, match="matches no setting"):
        needle.settings()
    monkeypatch.delenv("VSALMONN_BENCH_NEEDLE_ONLY")
    (tmp_path / "variants.toml").write_text('[bad]\nslow_weights = "theta.safetensors"\nrope_base = 0.5\n')
    with pytest.raises(UsageError, match=r"\[bad\] rope_base"):
        needle.settings()
