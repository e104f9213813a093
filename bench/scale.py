"""``vsalmonn bench scale``: what running past one machine costs (issue 19, docs/scale.md).

Three parts:

1. **Ray's overhead on one node.** The same two streams (the continuous-speech clip of `bench throughput`,
   ingested twice as two streams) through the local backend (one process: two stream threads sharing one set
   of encoders, `PerceptionConfig.threads` threads) and through the Ray backend on a local Ray started here
   (two actors of `ray_num_cpus` = 1 each, one torch thread each, each with its own encoders). Each backend's
   encoders are loaded before its clock starts (the actors' through `RayDaemon.start(prepare=True)`); the
   figure is stream seconds ingested per wall second, all streams together, and the overhead is how much less
   the Ray backend ingests than the local one. Target (issue 19): ≤ 10 %.
2. **Checkpoints in object storage.** A hook, `checkpoint_figure`: when bench/_scale_store.py exists (the S3
   checkpoint helper's module), its `measure_checkpoint(quick) -> dict` is run and its
   `render_checkpoint(result) -> list[str]` printed here; absent, the part says so.
3. **A paper estimate** of streams per node and nodes for 1,000 cameras at 1 FPS, from what the actors
   measured of themselves: CPU seconds per stream second (the actor process's CPU time over the stream's
   duration, every thread counted) on continuous speech (the worst case: Whisper runs all the time) and on the
   street footage without audio (a camera without sound), and the actor's peak resident memory. A node is
   taken as full at 80 % of its cores and 80 % of its memory, whichever binds first; a camera at 1 FPS needs
   its CPU seconds per second of wall time, since a live stream arrives at real time.

The data directory is the settings' one (the speech clip is cached there as `bench throughput` caches it);
each backend writes its stores into a temporary folder. Needs Ray (`pip install 'vsalmonn[ray]'`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from vsalmonn.cli.output import UsageError, format_table, quiet_model_loading
from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import DaemonConfig, PerceptionConfig, StreamSpec
from vsalmonn.perception.daemon import Daemon
from vsalmonn.perception.pipeline import Encoders
from vsalmonn.settings import Settings

from ._harness import (
    STREET,
    bench_data_dir,
    duration,
    environment,
    render_environment,
    render_load_span,
    render_targets,
    render_verdict,
    shared_media,
    target,
)
from .throughput import _speech_clip

log = logging.getLogger(__name__)

STREAMS = 2
TARGET_OVERHEAD_PCT = 10.0
CAMERAS = 1000
NODE_SHARE = 0.8  # of a node's cores and memory given to streams: the rest for the OS, Ray and bursts
NODES = ((2, 23), (16, 64), (64, 256))  # (cores, GB): this machine's size, and two common server sizes
DAEMON = DaemonConfig(ray_num_cpus=1.0, status_every_s=1.0)
STORE_HOOK = "_scale_store"  # bench/_scale_store.py: measure_checkpoint(quick), render_checkpoint(result)


def run(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    loadavg_start = os.getloadavg()
    shared = shared_media("scale")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("bench scale needs Ray: pip install 'vsalmonn[ray]'") from None
    data_dir = bench_data_dir()
    clip, _ = _speech_clip(shared, data_dir / "bench", 60.0 if quick else 150.0)
    perception, memory = PerceptionConfig(), MemoryConfig()
    quiet_model_loading(perception.threads)
    with tempfile.TemporaryDirectory(prefix="vsalmonn-scale-") as tmp:
        root = Path(tmp)
        local = _local(clip, root / "local", perception, memory, data_dir)
        on_ray = _ray({"speech": clip, "street": shared / STREET}, root / "ray", perception, memory, data_dir)
    speech = on_ray["speech"]
    overhead = 100 * (1 - speech["throughput"] / local["throughput"])
    cpu_overhead = cpu_overhead_pct(local, speech)
    targets = [
        target("Ray's overhead, 2 streams, one node", overhead, TARGET_OVERHEAD_PCT, "%", at_least=False)
    ]
    checkpoint = checkpoint_figure(quick)
    if checkpoint is not None:  # its own target (S3 write ≤ 2x local) counts toward the verdict too
        targets += checkpoint["targets"]
    return {
        "benchmark": "scale",
        "quick": quick,
        "environment": environment(),
        "clip": {"path": str(clip), "duration_s": duration(clip)},
        "street": {"path": str(shared / STREET), "duration_s": duration(shared / STREET)},
        "local": local,
        "ray": on_ray,
        "overhead_pct": overhead,
        "cpu_overhead_pct": cpu_overhead,
        "checkpoint": checkpoint,
        "estimate": estimate(on_ray),
        "loadavg": {"start": list(loadavg_start), "end": list(os.getloadavg())},
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "seconds": time.perf_counter() - started,
    }


# -- 1: local against Ray on one node ---------------------------------------------------------------------


def _specs(clip: Path) -> list[StreamSpec]:
    return [StreamSpec(name=f"cam-{i}", source=str(clip)) for i in range(STREAMS)]


def _local(
    clip: Path, root: Path, perception: PerceptionConfig, memory: MemoryConfig, data_dir: Path
) -> dict[str, Any]:
    loading = time.perf_counter()
    encoders = Encoders.from_config(perception, data_dir)
    load_s = time.perf_counter() - loading
    with MemoryStore(root / "data") as store:
        daemon = Daemon(
            _specs(clip), store=store, perception=perception, memory=memory, config=DAEMON, encoders=encoders
        )
        cpu, wall = time.process_time(), time.perf_counter()
        code = daemon.run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        states = sorted({r.stats.state for r in daemon.runners})
    if code != 0 or states != ["done"]:
        raise RuntimeError(f"local backend: streams ended {states}")
    stream_s = STREAMS * duration(clip)
    return {
        "load_s": load_s, "wall_s": wall, "stream_s": stream_s, "throughput": stream_s / wall,
        "cpu_per_stream_s": cpu / stream_s, "threads": perception.threads,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def _ray(
    clips: dict[str, Path], root: Path, perception: PerceptionConfig, memory: MemoryConfig, data_dir: Path
) -> dict[str, Any]:
    """Each clip as two streams on a local Ray (started once, stopped at the end)."""
    import ray

    from vsalmonn.ray_backend import RayDaemon, actor_threads

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", configure_logging=False)
    out: dict[str, Any] = {"cpus": ray.cluster_resources().get("CPU", 0)}
    try:
        for name, clip in clips.items():
            settings = Settings(
                data_dir=root / name, perception=perception, memory=memory,
                daemon=DAEMON.model_copy(update={"backend": "ray"}), streams=_specs(clip),
            )  # fmt: skip
            out["actor_threads"] = actor_threads(settings)
            with MemoryStore.open(settings.data_dir, settings.store) as store:
                daemon = RayDaemon(settings, store=store)
                daemon.start(prepare=True)
                if not daemon.wait(1800):
                    raise RuntimeError("Ray backend: streams still running after 30 min")
                wall = time.perf_counter() - daemon.running_since
                daemon.shutdown()
            results = [s.result or {} for s in daemon.streams.values()]
            states = sorted({str(r.get("state")) for r in results})
            if states != ["done"]:
                raise RuntimeError(f"Ray backend: streams ended {states}: {results}")
            seconds = duration(clip)
            out[name] = {
                "load_s": daemon.load_s, "wall_s": wall, "stream_s": STREAMS * seconds,
                "throughput": STREAMS * seconds / wall,
                "cpu_per_stream_s": [r["cpu_s"] / seconds for r in results],
                "peak_rss_mb": [r["peak_rss_mb"] for r in results],
            }  # fmt: skip
    finally:
        ray.shutdown()
    return out


def cpu_overhead_pct(local: dict[str, Any], speech: dict[str, Any]) -> float:
    """How much more CPU a stream second costs in an actor than in the local daemon, in %: Ray's overhead
    apart from the parallelism it adds (the throughput ratio mixes both)."""
    on_ray = sum(speech["cpu_per_stream_s"]) / len(speech["cpu_per_stream_s"])
    return 100 * (on_ray / local["cpu_per_stream_s"] - 1)


# -- 2: the object-storage checkpoint hook ---------------------------------------------------------------


def checkpoint_figure(quick: bool) -> dict[str, Any] | None:
    """HOOK for the S3 checkpoint figure: bench/_scale_store.py's `measure_checkpoint(quick)`, if it exists.

    That module (the S3 checkpoint helper's) measures a checkpoint write to a loopback S3 against the local
    disk of `bench checkpoint` (target: ≤ 2x); its result is shown by its `render_checkpoint(result)`. None
    when the module is not in this checkout.
    """
    module = _store_module()
    return None if module is None else module.measure_checkpoint(quick)


def _store_module() -> Any:
    name = f"{__package__}.{STORE_HOOK}" if __package__ else STORE_HOOK
    try:
        found = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        found = None
    return None if found is None else importlib.import_module(name)


def _render_checkpoint(result: dict[str, Any] | None) -> list[str]:
    module = _store_module()
    if result is None or module is None:
        return [
            f"checkpoints in object storage: not measured here (no bench/{STORE_HOOK}.py in this checkout)"
        ]
    return list(module.render_checkpoint(result))


# -- 3: the paper estimate -------------------------------------------------------------------------------


def estimate(on_ray: dict[str, Any]) -> dict[str, Any]:
    """Streams per node and nodes for `CAMERAS` cameras at 1 FPS, for each clip's measured costs."""
    out: dict[str, Any] = {"cameras": CAMERAS, "share": NODE_SHARE, "cases": []}
    for name in ("speech", "street"):
        measured = on_ray[name]
        cpu = max(measured["cpu_per_stream_s"])  # the costlier stream: a node must carry its worst
        rss_gb = max(measured["peak_rss_mb"]) / 1024
        for cores, gb in NODES:
            by_cpu = math.floor(NODE_SHARE * cores / cpu)
            by_memory = math.floor(NODE_SHARE * gb / rss_gb)
            per_node = min(by_cpu, by_memory)
            out["cases"].append(
                {
                    "clip": name, "cpu_per_stream_s": cpu, "rss_gb": rss_gb, "cores": cores, "gb": gb,
                    "by_cpu": by_cpu, "by_memory": by_memory, "per_node": per_node,
                    "bound": "CPU" if by_cpu <= by_memory else "memory",
                    "nodes": math.ceil(CAMERAS / per_node) if per_node else None,
                }
            )  # fmt: skip
    return out


# -- the table -------------------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    local, on_ray, speech = result["local"], result["ray"], result["ray"]["speech"]
    rows = [
        [
            f"local ({local['threads']} threads, shared encoders)", f"{local['stream_s']:.0f}",
            f"{local['wall_s']:.1f}", f"{local['throughput']:.2f}", f"{local['cpu_per_stream_s']:.3f}",
            f"{local['peak_rss_mb']:,.0f} (process)",
        ],
        [
            f"ray ({STREAMS} actors x 1 CPU, {on_ray['actor_threads']} thread each)",
            f"{speech['stream_s']:.0f}", f"{speech['wall_s']:.1f}", f"{speech['throughput']:.2f}",
            " / ".join(f"{c:.3f}" for c in speech["cpu_per_stream_s"]),
            " / ".join(f"{m:,.0f}" for m in speech["peak_rss_mb"]),
        ],
    ]  # fmt: skip
    street = on_ray["street"]
    cases = [
        [
            c["clip"], f"{c['cores']} cores, {c['gb']} GB", f"{c['cpu_per_stream_s']:.3f}",
            f"{c['rss_gb']:.2f}", f"{c['by_cpu']}", f"{c['by_memory']}", f"{c['per_node']} ({c['bound']})",
            f"{c['nodes']}",
        ]
        for c in result["estimate"]["cases"]
    ]  # fmt: skip
    return "\n".join(
        [
            f"bench scale{' (quick)' if result['quick'] else ''}: {STREAMS} streams of "
            f"{result['clip']['duration_s']:.0f} s of continuous speech ({result['clip']['path']}), one node",
            render_environment(result["environment"]),
            "",
            format_table(
                ["backend", "stream s", "wall s", "stream s / s", "CPU s / stream s", "peak RSS MB"], rows
            ),
            f"Ray's overhead: {result['overhead_pct']:.1f} % of the local backend's ingest throughput "
            f"(negative: Ray ingested more: the local daemon's streams take turns on one set of encoders, "
            f"the actors run side by side); CPU per stream second "
            f"{cpu_overhead_pct(local, speech):+.1f} % on Ray; actors' encoder load "
            + ", ".join(f"{s:.1f}" for s in speech["load_s"])
            + f" s (not timed); street footage, no audio, on Ray: {street['throughput']:.2f} stream s / s, "
            + " / ".join(f"{c:.3f}" for c in street["cpu_per_stream_s"])
            + " CPU s / stream s",
            "",
            *_render_checkpoint(result.get("checkpoint")),
            "",
            f"paper estimate, {CAMERAS:,} cameras at 1 FPS, one actor per camera, nodes used to "
            f"{100 * NODE_SHARE:.0f} % of cores and memory:",
            format_table(
                [
                    "clip",
                    "node",
                    "CPU s / stream s",
                    "GB / stream",
                    "by CPU",
                    "by memory",
                    "per node",
                    "nodes",
                ],
                cases,
            ),
            render_load_span(result["loadavg"]),
            "",
            render_targets(result["targets"]),
            "",
            render_verdict(result),
        ]
    )
