"""``vsalmonn bench live``: a live camera-like source through the real daemon: lag and drops at 1 FPS.

DESIGN §5: live sources never fall behind; when encoding cannot keep up the newest frames win and the drop is
counted. This measures whether, on this machine, a live stream with speech is kept up with at all:

- **The source**: an MPEG-TS file (H.264 + AAC) served over HTTP on 127.0.0.1 by the checkout's
  ``tests/stream_server.StreamServer``, which releases the bytes at the pace of the packets' times (real time,
  as a camera or an encoder would send them). Video: ``../shared/media/vtest.avi`` (street footage, 768x576,
  10 fps) looped, a keyframe every second; audio: 48 kHz mono with the ``../shared/media/speech`` prompts
  placed about every 15 s (12-18 s apart, each trimmed to its voice, in a fixed shuffled order) over a faint
  noise floor, so Whisper runs on most live windows. Built once and cached under ``<data>/bench/``.
- **The daemon**: `Daemon` in this process with one `StreamSpec` for the URL (FFmpeg options ``probesize``
  32768 and ``analyzeduration`` 500000 for a fast start), the default `PerceptionConfig` (1 FPS, 360 px,
  EfficientNet-Lite0, Whisper-base with VAD, MiniLM; 2 threads), `MemoryConfig` and `DaemonConfig` (10 s live
  windows, a checkpoint every 60 s, status every 2 s) and a store in a temporary folder. The encoders are
  loaded before the daemon starts (load time reported apart).
- **The measure**: once the first frame is written, a warm-up of 15 s, then every 0.5 s for the period
  (5 min; ``--quick``: 60 s) the stream's `StreamStats`: ``lag_s`` (wall time of writing minus the wall time
  at which the newest written frame was received), ``drops``, ``frames``, ``segments``, its state.

Reported: ``lag_s`` p50 / p95 / max over the samples, drops during the period (and during the warm-up), frames
written per second, transcript segments, the longest time without a write of frames, the load
average. ``lag_s`` is measured against the newest frame of each write, so a stall (the stream's thread busy
transcribing while frames queue) shows in it only as a short spike. So a watcher thread also polls the frame
counter every 50 ms to see each write with its ``lag_s``, from which (see `_figures`): the oldest frame's wait
per write, and the memory's staleness (the age of its newest frame) at each 0.5 s sample. Targets (DESIGN §5
on a 2-core CPU): ``lag_s`` ≤ 2 s at every sample of the period; the oldest frame's wait ≤ 2 s at every write
of it; no drops in it.
"""

from __future__ import annotations

import os
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from vsalmonn.cli.output import format_table, quiet_model_loading
from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import DaemonConfig, PerceptionConfig, StreamSpec
from vsalmonn.perception.daemon import Daemon
from vsalmonn.perception.pipeline import Encoders

from ._harness import (
    STREET,
    PromptTrack,
    bench_data_dir,
    cached_speech_clip,
    checkout_module,
    environment,
    render_environment,
    render_load_span,
    render_targets,
    render_verdict,
    shared_media,
    street_frames,
    target,
)

CLIP_VERSION = 1  # part of the cached clip's name: bump when the recipe below changes
CLIP_FPS, CLIP_AUDIO_RATE = 10, 48_000
PROMPT_ORDER_SEED, PLACEMENT_SEED = 4, 6
FIRST_PROMPT_S, PROMPT_EVERY_S = 5.0, (12.0, 18.0)
FAST_START = {"probesize": "32768", "analyzeduration": "500000"}
STREAM = "cam"

WARMUP_S = 15.0
SAMPLE_S = 0.5
WATCH_S = 0.05  # how often the write watcher polls the frame counter
PERIOD_S = {"full": 300.0, "quick": 60.0}
FIRST_FRAME_WITHIN_S = 60.0
MARGIN_S = 30.0  # the clip outlasts warm-up + period by this much: connecting, the first frame, stopping

TARGET_LAG_S = 2.0


def run(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    loadavg_start = os.getloadavg()
    shared = shared_media("live", checkout=("media", "stream_server"))
    stream_server = checkout_module("stream_server")
    data_dir = bench_data_dir().resolve()
    period = PERIOD_S["quick" if quick else "full"]
    clip = _clip(shared, data_dir / "bench", WARMUP_S + period + MARGIN_S)

    perception, memory_config, daemon_config = PerceptionConfig(), MemoryConfig(), DaemonConfig()
    quiet_model_loading(perception.threads)
    load_started = time.perf_counter()
    encoders = Encoders.from_config(perception, data_dir)
    load_s = time.perf_counter() - load_started

    with (
        tempfile.TemporaryDirectory(prefix="vsalmonn-bench-live-") as tmp,
        MemoryStore(Path(tmp)) as store,
        stream_server.StreamServer(Path(clip["path"])) as server,
    ):
        spec = StreamSpec(name=STREAM, source=server.url, options=FAST_START)
        daemon = Daemon(
            [spec], store=store, perception=perception, memory=memory_config, config=daemon_config,
            encoders=encoders, data_dir=data_dir,
        )  # fmt: skip
        connect_started = time.monotonic()
        daemon.start()
        runner = daemon.runners[0]
        stats = runner.stats
        try:
            while stats.frames == 0:
                if not runner.is_alive() or time.monotonic() - connect_started > FIRST_FRAME_WITHIN_S:
                    raise RuntimeError(
                        f"no frame from {server.url} within {FIRST_FRAME_WITHIN_S:.0f} s "
                        f"(state {stats.state}, last error: {stats.last_error})"
                    )
                time.sleep(0.05)
            first_frame_s = time.monotonic() - connect_started
            warmup = {"drops_start": stats.drops, "frames_start": stats.frames}
            time.sleep(WARMUP_S)
            with _WriteWatcher(stats) as watcher:
                samples = _sample(runner, period, watcher)
        finally:
            stopped_cleanly = daemon.shutdown()
        connections = server.connections
        detail = dict(stats.detail)
        checkpoints = len(store.checkpoints(STREAM))
    figures = _figures(samples, watcher.writes, perception.fps)
    figures["drops_warmup"] = samples[0]["drops"] - warmup["drops_start"]
    targets = [
        target(
            "lag (lag_s), every sample of the period", figures["lag_max_s"], TARGET_LAG_S, "s", at_least=False
        ),
        target(
            "oldest frame's wait, every write of the period",
            figures["oldest_frame_wait_max_s"] or 0.0,
            TARGET_LAG_S,
            "s",
            at_least=False,
        ),
        target("drops during the period", figures["drops"], 0, "items", at_least=False),
    ]
    return {
        "benchmark": "live",
        "quick": quick,
        "environment": environment(),
        "clip": clip,
        "source": {"url": "http://127.0.0.1/live.ts (StreamServer, real time)", "options": FAST_START},
        "config": {
            "fps": perception.fps,
            "short_side": perception.short_side,
            "live_window_s": daemon_config.live_window_s,
            "live_queue": perception.live_queue,
            "speech_encoder": perception.speech_encoder,
        },
        "load_s": load_s,
        "first_frame_s": first_frame_s,
        "warmup_s": WARMUP_S,
        "period_s": period,
        "sample_s": SAMPLE_S,
        **figures,
        "reconnects": detail.get("reconnects", 0),
        "connections": connections,
        "checkpoints": checkpoints,
        "stopped_cleanly": stopped_cleanly,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "samples": samples,
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "loadavg": {"start": list(loadavg_start), "end": list(os.getloadavg())},
        "seconds": time.perf_counter() - started,
    }


# -- the stream ----------------------------------------------------------------------------------------------


def _clip(shared: Path, folder: Path, seconds: float) -> dict[str, Any]:
    """The cached MPEG-TS of `seconds` (built if absent) and what it holds."""
    street = shared / STREET
    with av.open(str(street)) as container:
        context = container.streams.video[0].codec_context
        size = (context.width, context.height)
    return cached_speech_clip(
        folder / f"live-{seconds:.0f}s-v{CLIP_VERSION}.ts",
        seconds,
        track=lambda: PromptTrack(
            shared, seconds, CLIP_AUDIO_RATE, every_s=PROMPT_EVERY_S, first_s=FIRST_PROMPT_S,
            order_seed=PROMPT_ORDER_SEED, placement_seed=PLACEMENT_SEED,
        ),
        frames=lambda: street_frames(street),
        fps=CLIP_FPS,
        size=size,
        video_options={"preset": "veryfast", "g": str(CLIP_FPS), "keyint_min": str(CLIP_FPS)},
        video=f"{size[0]}x{size[1]}, {CLIP_FPS} fps, H.264, a keyframe every second",
        audio_rate=CLIP_AUDIO_RATE,
        container_format="mpegts",
    )  # fmt: skip


# -- sampling ------------------------------------------------------------------------------------------------


class _WriteWatcher(threading.Thread):
    """Sees every write of frames (the runner's ``frames`` counter every `WATCH_S`) and pairs it with the
    ``lag_s`` the sink computed for it, which is set a few ms after the counter: so it is read at the poll
    after the one that saw the write. ``writes``: (seconds since `started` when seen, frames written, their
    lag_s)."""

    def __init__(self, stats: Any) -> None:
        super().__init__(name="bench-write-watcher", daemon=True)
        self.stats = stats
        self.writes: list[tuple[float, int, float]] = []
        self.started = time.monotonic()
        self._stop_event = threading.Event()

    def run(self) -> None:
        stats = self.stats
        last, seen = stats.frames, None
        while not self._stop_event.wait(WATCH_S):
            if seen is not None and stats.lag_s is not None:
                self.writes.append((seen[0], seen[1], float(stats.lag_s)))
                seen = None
            frames = stats.frames
            if frames > last:
                seen = (time.monotonic() - self.started, frames - last)
            last = frames

    def __enter__(self) -> _WriteWatcher:
        self.started = time.monotonic()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join()


def _sample(runner: Any, period: float, watcher: _WriteWatcher) -> list[dict[str, Any]]:
    """The runner's counters every `SAMPLE_S` for `period` seconds (on a fixed grid of ticks)."""
    stats = runner.stats
    samples = []
    started = watcher.started
    tick = started
    while True:
        now = time.monotonic()
        samples.append(
            {
                "t": now - started,
                "lag_s": stats.lag_s,
                "drops": stats.drops,
                "frames": stats.frames,
                "segments": stats.segments,
                "state": stats.state,
            }
        )
        if now - started >= period or not runner.is_alive():
            return samples
        tick += SAMPLE_S
        time.sleep(max(0.0, tick - time.monotonic()))


def _figures(
    samples: list[dict[str, Any]], writes: list[tuple[float, int, float]], fps: float
) -> dict[str, Any]:
    """Lag as the daemon reports it, and two views of it that a stall cannot hide (see the module's docs).

    ``lag_s`` is taken when a batch of frames is written, against the *newest* frame of the batch: after a
    stall (the stream's thread busy with Whisper while frames queue up) the batch's oldest frames waited
    longer than it says. So, from the writes the watcher saw: the **oldest frame's wait** of each write,
    ``lag_s + (frames - 1) / fps`` (the frames of a live source are 1 / fps apart in wall time), and the
    **staleness** of the memory at each 0.5 s sample, the age of its newest frame: the ``lag_s`` of the last
    write plus the time since it (±`WATCH_S`).
    """
    lags = np.array([s["lag_s"] for s in samples if s["lag_s"] is not None], dtype=float)
    if not lags.size or not writes:
        raise RuntimeError(f"no frame was written during the period (state: {samples[-1]['state']})")
    first, last = samples[0], samples[-1]
    span = last["t"] - first["t"]
    times = [t for t, _, _ in writes]  # seconds from the same start as the samples'
    oldest = np.array([lag + (n - 1) / fps for _, n, lag in writes])
    stale, w = [], -1
    for s in samples:
        while w + 1 < len(writes) and writes[w + 1][0] <= s["t"]:
            w += 1
        if w >= 0:
            stale.append(writes[w][2] + s["t"] - writes[w][0])
    staleness = np.array(stale)
    gaps = np.diff([first["t"], *times, last["t"]])
    states: dict[str, int] = {}
    for s in samples:
        states[s["state"]] = states.get(s["state"], 0) + 1
    return {
        "measured_s": span,
        "lag_samples": int(lags.size),
        "lag_p50_s": float(np.percentile(lags, 50)),
        "lag_p95_s": float(np.percentile(lags, 95)),
        "lag_max_s": float(lags.max()),
        "lag_over_target": int((lags > TARGET_LAG_S).sum()),
        "writes_seen": len(writes),
        "frames_per_write_max": max(n for _, n, _ in writes),
        "oldest_frame_wait_p50_s": _pct(oldest, 50),
        "oldest_frame_wait_p95_s": _pct(oldest, 95),
        "oldest_frame_wait_max_s": _pct(oldest, 100),
        "oldest_frame_wait_over_target": int((oldest > TARGET_LAG_S).sum()),
        "staleness_p50_s": _pct(staleness, 50),
        "staleness_p95_s": _pct(staleness, 95),
        "staleness_max_s": _pct(staleness, 100),
        "drops": last["drops"] - first["drops"],
        "frames": last["frames"] - first["frames"],
        "frames_per_s": (last["frames"] - first["frames"]) / span if span > 0 else 0.0,
        "segments": last["segments"] - first["segments"],
        "longest_wait_for_frames_s": float(gaps.max()),
        "states": states,
        "writes": [[round(t, 3), n, round(lag, 3)] for t, n, lag in writes],
    }


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


# -- the table -----------------------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    clip, la = result["clip"], result["loadavg"]
    rows = [
        ["lag_s p50 (s)", _num(result["lag_p50_s"])],
        ["lag_s p95 (s)", _num(result["lag_p95_s"])],
        ["lag_s max (s)", _num(result["lag_max_s"])],
        [
            f"samples with lag_s > {TARGET_LAG_S:g} s",
            f"{result['lag_over_target']} of {result['lag_samples']}",
        ],
        [
            "oldest frame's wait per write, p50 / p95 / max (s)",
            " / ".join(_num(result[f"oldest_frame_wait_{q}_s"]) for q in ("p50", "p95", "max")),
        ],
        [
            f"writes whose oldest frame waited > {TARGET_LAG_S:g} s",
            f"{result['oldest_frame_wait_over_target']} of {result['writes_seen']}",
        ],
        [
            "staleness of the memory, p50 / p95 / max (s)",
            " / ".join(_num(result[f"staleness_{q}_s"]) for q in ("p50", "p95", "max")),
        ],
        ["drops during the period", str(result["drops"])],
        ["drops during the warm-up", str(result["drops_warmup"])],
        ["frames written", str(result["frames"])],
        ["frames per second", f"{result['frames_per_s']:.3f}"],
        ["transcript segments", str(result["segments"])],
        [
            "writes of frames seen; most frames in one",
            f"{result['writes_seen']}; {result['frames_per_write_max']}",
        ],
        ["longest time without a write of frames (s)", f"{result['longest_wait_for_frames_s']:.2f}"],
        ["states seen (samples)", ", ".join(f"{k} {v}" for k, v in result["states"].items())],
        ["reconnects", str(result["reconnects"])],
    ]
    cfg = result["config"]
    return "\n".join(
        [
            f"bench live{' (quick)' if result['quick'] else ''}: a live HTTP MPEG-TS source through the "
            f"daemon, {cfg['fps']:g} FPS, {cfg['live_window_s']:g} s live windows, speech encoder "
            f"{cfg['speech_encoder']}",
            render_environment(result["environment"]),
            f"source: {clip['path']} ({clip['video']}; {clip['audio']}, {clip['prompts']} prompts, "
            f"{100 * clip['voiced_fraction']:.0f} % voiced"
            + (f"; built in {clip['built_s']:.0f} s" if clip["built_s"] else "; cached")
            + ")",
            f"encoders loaded in {result['load_s']:.1f} s; first frame written "
            f"{result['first_frame_s']:.1f} s after the start; warm-up {result['warmup_s']:g} s; "
            f"measured {result['measured_s']:.0f} s, sampled every {result['sample_s']:g} s",
            "",
            format_table(["measure", "value"], rows),
            "",
            f"{result['checkpoints']} checkpoints kept; stopped cleanly: {result['stopped_cleanly']}; "
            f"peak RSS of this process {result['peak_rss_mb']:,.0f} MB",
            render_load_span(la),
            "",
            render_targets(result["targets"]),
            "",
            render_verdict(result),
        ]
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
