"""``vsalmonn bench memory``: peak resident memory of the whole pipeline against stream length (DESIGN §10).

Each run is one ``python -m vsalmonn --config CFG --data DIR ingest CLIP --stream s`` subprocess: decoding,
the default encoders (EfficientNet-Lite0, Whisper-base with VAD, MiniLM), the memory, the catalog and the
checkpoints, exactly as a user runs it (``ingest`` runs the daemon's `StreamRunner` for one stream). Two
memories, side by side for every length:

- **bounded**: the `MemoryConfig()` defaults (16,384 visual + 4,096 audio slots, merge, TTT with ``hf_cg``);
- **unbounded**: the same with budgets of 2^20 visual and 2^16 audio slots, more than any stream here writes
  (3 h at 1 FPS is 10,800 frames x 5 tokens = 54,000 visual tokens, and one audio token per transcript
  segment), so the bank never reduces and keeps every token. A `Bank` allocates only the slots in use (it
  grows by concatenation, nothing is sized by the budget), so the large budget costs nothing by itself. The
  final checkpoint is read back to check that slots used equal tokens written.

The child's ``VmRSS`` and ``VmHWM`` are read from ``/proc/PID/status`` every 0.5 s, its stream position from
the catalog's ``stream_status`` row (reported every 0.5 s: the run's config sets ``status_every_s``), and its
exact peak from ``wait4``'s ``ru_maxrss`` when it exits. Reported per (mode, length): that peak, the largest
sampled VmRSS and the last VmHWM read, the RSS when the stream reached 25/50/75/100 % (and the peak up to
there), wall time and speed (stream seconds over the process's wall time, model loading included).

Streams are built once and cached under ``<data>/bench/`` (``$VSALMONN_DATA``, else ``./vsalmonn-data``):
``../shared/media/vtest.avi`` (street footage) looped, every 5th frame (2 fps), 480x360, H.264; a 16 kHz mono
AAC track with the ``../shared/media/speech`` prompts (each trimmed to its voice, in a fixed shuffled order)
placed 20-30 s apart over a faint noise floor, so Whisper runs all along. Lengths: 10 min, 1 h, 3 h
(``--quick``: 1 min and 5 min; ``$VSALMONN_BENCH_MEMORY_LENGTHS``, seconds separated by commas, picks others).
Each run gets a fresh data directory under ``<data>/bench/`` (removed afterwards) whose ``models`` folder
links to ``<data>/models`` (the joined Whisper files, the label embeddings).

Targets: peak RSS of the daemon with one stream ≤ 2.5 GB; bounded peak RSS of the longest stream
over the shortest ≤ 1.05, while the unbounded one grows (checked when the longest stream overflows the
default budgets; a 10-minute stream does not fill the bounded bank: it fills after 16,384 / 5 s ≈ 55 min).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vsalmonn.cli import UsageError, format_table
from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import PerceptionConfig

from ._harness import (
    STREET,
    PromptTrack,
    bench_data_dir,
    cached_speech_clip,
    environment,
    render_environment,
    render_loadavg,
    render_targets,
    shared_media,
    street_frames,
    target,
)

CLIP_VERSION = 1  # part of the cached clips' names: bump when the recipe below changes
CLIP_FPS, CLIP_EVERY, CLIP_SIZE, CLIP_AUDIO_RATE = 2, 5, (480, 360), 16_000
PROMPT_ORDER_SEED, PLACEMENT_SEED = 4, 5
FIRST_PROMPT_S, PROMPT_EVERY_S = 5.0, (20.0, 30.0)

LENGTHS = {"full": (600.0, 3600.0, 10800.0), "quick": (60.0, 300.0)}
LENGTHS_ENV = "VSALMONN_BENCH_MEMORY_LENGTHS"
UNBOUNDED = {"visual_slots": 1 << 20, "audio_slots": 1 << 16}
MODES = {"bounded": MemoryConfig(), "unbounded": MemoryConfig(**UNBOUNDED)}
STREAM = "s"
SAMPLE_S = 0.5
STATUS_EVERY_S = 0.5
QUARTERS = (0.25, 0.5, 0.75, 1.0)
TRACE_POINTS = 200  # samples kept per run in the JSON result (evenly thinned)

TARGET_PEAK_MB = 2500.0
TARGET_RATIO = 1.05


def run(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    loadavg_start = os.getloadavg()
    shared = shared_media("memory")
    if not hasattr(os, "wait4") or not Path("/proc/self/status").is_file():
        raise UsageError("bench memory needs Linux (/proc/PID/status and wait4)")
    data_dir = bench_data_dir().resolve()
    _prepare_models(data_dir)
    lengths = _lengths(quick)
    clips = {seconds: _clip(shared, data_dir / "bench", seconds) for seconds in lengths}
    runs = []
    for seconds in lengths:  # both memories at one length one after the other: a busy spell hits both
        for mode in MODES:
            try:
                runs.append(_measure(mode, seconds, clips[seconds], data_dir))
            except RuntimeError as exc:  # recorded, and the other runs go on: a long run is costly to lose
                runs.append({"mode": mode, "stream_s": seconds, "error": str(exc)})
            _progress(runs[-1])
    targets = _targets([r for r in runs if "error" not in r], lengths)
    errors = [f"{r['mode']} {_length(r['stream_s'])}: {r['error']}" for r in runs if "error" in r]
    return {
        "benchmark": "memory",
        "quick": quick,
        "environment": environment(),
        "lengths_s": list(lengths),
        "modes": {name: _budgets(cfg) for name, cfg in MODES.items()},
        "clips": {f"{s:.0f}": info for s, info in clips.items()},
        "runs": runs,
        "targets": targets,
        "errors": errors,
        "all_pass": all(t["pass"] for t in targets) and not errors,
        "loadavg": {"start": list(loadavg_start), "end": list(os.getloadavg())},
        "seconds": time.perf_counter() - started,
    }


def _tokens_visual(run: dict[str, Any]) -> int:
    """Visual tokens the run wrote: from its final checkpoint, else from its length (1 + regions² a frame)."""
    if "tokens_visual" in run["memory"]:
        return int(run["memory"]["tokens_visual"])
    perception = PerceptionConfig()
    return round(run["duration_s"] * perception.fps) * (1 + perception.regions**2)


def _lengths(quick: bool) -> tuple[float, ...]:
    """The stream lengths to measure: `LENGTHS`, or the seconds listed in $VSALMONN_BENCH_MEMORY_LENGTHS
    (comma-separated, e.g. ``600,10800``), for a run that must fit a time budget."""
    listed = os.environ.get(LENGTHS_ENV, "").strip()
    if not listed:
        return LENGTHS["quick" if quick else "full"]
    try:
        lengths = tuple(sorted({float(x) for x in listed.split(",") if x.strip()}))
    except ValueError:
        raise UsageError(f"{LENGTHS_ENV}={listed!r}: expected seconds separated by commas") from None
    if len(lengths) < 2 or lengths[0] < 30:
        raise UsageError(f"{LENGTHS_ENV}={listed!r}: give at least two lengths of 30 s or more")
    return lengths


def _progress(run: dict[str, Any]) -> None:
    """One line on stderr per run (the result comes at the end, and the full runs take an hour)."""
    if "error" in run:
        line = f"error: {run['error']}"
    else:
        line = f"peak {run['peak_mb']:,.0f} MB, {run['wall_s']:.0f} s, {run['speed']:.1f}x real time"
    print(f"bench memory: {run['mode']} {_length(run['stream_s'])}: {line}", file=sys.stderr, flush=True)


def _budgets(cfg: MemoryConfig) -> dict[str, int]:
    return {"visual_slots": cfg.visual_slots, "audio_slots": cfg.audio_slots}


def _targets(runs: list[dict[str, Any]], lengths: tuple[float, ...]) -> list[dict[str, Any]]:
    """The targets that the successful `runs` allow (a failed run is reported as an error instead)."""
    by = {(r["mode"], r["stream_s"]): r for r in runs}
    short, long = min(lengths), max(lengths)
    bounded = [r for r in runs if r["mode"] == "bounded"]
    span = f"{_length(long)} / {_length(short)}"
    out = []
    if bounded:
        peak = max(r["peak_mb"] for r in bounded)
        out.append(target("peak RSS, daemon with one stream (bounded)", peak, TARGET_PEAK_MB, "MB", False))
    if ("bounded", long) not in by or ("bounded", short) not in by:
        return out
    ratio_bounded = by["bounded", long]["peak_mb"] / by["bounded", short]["peak_mb"]
    out.append(target(f"bounded: peak RSS {span}", ratio_bounded, TARGET_RATIO, "", at_least=False))
    if ("unbounded", long) not in by or ("unbounded", short) not in by:
        return out
    if _tokens_visual(by["unbounded", long]) > MODES["bounded"].visual_slots:
        # only then does keeping everything differ from the bounded bank
        ratio_unbounded = by["unbounded", long]["peak_mb"] / by["unbounded", short]["peak_mb"]
        out.append(
            target(
                f"unbounded: peak RSS {span}, above the bounded ratio",
                ratio_unbounded,
                round(ratio_bounded, 3),
                "",
                at_least=True,
            )
        )
    return out


# -- the streams ---------------------------------------------------------------------------------------------


def _clip(shared: Path, folder: Path, seconds: float) -> dict[str, Any]:
    """The cached stream of `seconds` (built if absent) and what it holds."""
    return cached_speech_clip(
        folder / f"memory-{seconds:.0f}s-v{CLIP_VERSION}.mp4",
        seconds,
        track=lambda: PromptTrack(
            shared, seconds, CLIP_AUDIO_RATE, every_s=PROMPT_EVERY_S, first_s=FIRST_PROMPT_S,
            order_seed=PROMPT_ORDER_SEED, placement_seed=PLACEMENT_SEED,
        ),
        frames=lambda: street_frames(shared / STREET, every=CLIP_EVERY, size=CLIP_SIZE, cache=True),
        fps=CLIP_FPS,
        size=CLIP_SIZE,
        video_options={"preset": "veryfast", "crf": "28", "g": str(10 * CLIP_FPS)},
        video=f"{CLIP_SIZE[0]}x{CLIP_SIZE[1]}, {CLIP_FPS} fps, H.264",
        audio_rate=CLIP_AUDIO_RATE,
    )  # fmt: skip


# -- one run -------------------------------------------------------------------------------------------------


def _prepare_models(data_dir: Path) -> None:
    """Join the Whisper files into `<data>/models` now (first run only), not inside a measured child."""
    from vsalmonn.perception.models import whisper_base_dir

    whisper_base_dir(data_dir)


def _config_text(cfg: MemoryConfig) -> str:
    lines = [f"[daemon]\nstatus_every_s = {STATUS_EVERY_S}\n"]
    if cfg != MemoryConfig():
        lines.append(f"[memory]\nvisual_slots = {cfg.visual_slots}\naudio_slots = {cfg.audio_slots}\n")
    return "\n".join(lines)


def _proc_status(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a process in MB, or None once it is gone (or a zombie, which has neither)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M))
    if "VmRSS" not in values:
        return None
    return int(values["VmRSS"]) / 1024, int(values.get("VmHWM", 0)) / 1024


def _position(db: Path) -> tuple[float | None, str | None]:
    """The stream's reported position and state from the catalog (None before the first report)."""
    if not db.is_file():
        return None, None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        try:
            row = con.execute("SELECT position, state FROM stream_status").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None, None
    return (row[0], row[1]) if row else (None, None)


def _measure(mode: str, seconds: float, clip: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    cfg = MODES[mode]
    (data_dir / "bench").mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"memory-run-{mode}-", dir=data_dir / "bench"))
    try:
        config = run_dir / "bench.toml"
        config.write_text(_config_text(cfg))
        store_dir = run_dir / "data"
        store_dir.mkdir()
        (store_dir / "models").symlink_to((data_dir / "models").resolve(), target_is_directory=True)
        log_path = run_dir / "ingest.log"
        command = [
            sys.executable, "-m", "vsalmonn", "--config", str(config), "--data", str(store_dir),
            "ingest", clip["path"], "--stream", STREAM,
        ]  # fmt: skip
        samples, status, rusage = _sample(command, log_path, store_dir / "catalog.sqlite")
        wall = samples["wall_s"]
        output = log_path.read_text(errors="replace")
        if status != 0:
            tail = "\n".join(output.strip().splitlines()[-5:])
            raise RuntimeError(f"ingest ({mode}, {seconds:.0f} s) exited with status {status}:\n{tail}")
        memory = _memory_after(store_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    reported = re.search(r"([\d.]+)x real time", output)
    stream_s = clip["duration_s"]
    rss = samples["rss"]
    return {
        "mode": mode,
        "stream_s": seconds,
        "duration_s": stream_s,
        "budgets": _budgets(cfg),
        "peak_mb": rusage.ru_maxrss / 1024,  # wait4: the kernel's high-water mark of the whole life
        "sampled_max_mb": max(r for _, r, _ in rss) if rss else None,
        "vmhwm_mb": samples["vmhwm"],
        "quarters": _quarters(rss, stream_s),
        "second_half_max_mb": _second_half_max(rss, stream_s),
        "wall_s": wall,
        "startup_s": samples["startup_s"],
        "speed": stream_s / wall,
        "ingest_speed": float(reported.group(1)) if reported else None,
        "cpu_s": rusage.ru_utime + rusage.ru_stime,
        "samples": len(rss),
        "memory": memory,
        "trace": _thin([[round(t, 1), round(r, 1), p] for t, r, p in rss], TRACE_POINTS),
    }


def _sample(command: list[str], log_path: Path, db: Path) -> tuple[dict[str, Any], int, Any]:
    """Run `command`, sampling its memory and position every `SAMPLE_S`; reap it with wait4 for its peak."""
    rss: list[tuple[float, float, float | None]] = []  # (seconds since start, VmRSS MB, position)
    vmhwm, startup = 0.0, None
    with log_path.open("wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        tick = started
        try:
            while True:
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                now = time.monotonic()
                mem = _proc_status(proc.pid)
                position, _state = _position(db)
                if mem is not None:
                    rss.append((now - started, mem[0], position))
                    vmhwm = max(vmhwm, mem[1])
                if startup is None and position:
                    startup = now - started
                tick += SAMPLE_S
                time.sleep(max(0.0, tick - time.monotonic()))
        except BaseException:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise
        wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rss": rss, "vmhwm": vmhwm, "wall_s": wall, "startup_s": startup}, proc.returncode, rusage


def _quarters(rss: list[tuple[float, float, float | None]], stream_s: float) -> list[dict[str, Any]]:
    """The RSS when the reported position first reached each quarter of the stream, and the peak up to it."""
    out = []
    peak, i = 0.0, 0
    for q in QUARTERS:
        reach = q * stream_s - (1.0 if q == 1.0 else 0.0)  # the last report may stop short of the end
        hit = None
        while i < len(rss):
            t, r, p = rss[i]
            peak = max(peak, r)
            i += 1
            if p is not None and p >= reach:
                hit = (t, r, p)
                break
        if hit is None and rss:  # never reported (a run too short to sample): the last sample
            hit = rss[-1]
        if hit is None:
            out.append({"fraction": q, "t": None, "rss_mb": None, "peak_mb": None, "position": None})
            continue
        out.append({"fraction": q, "t": hit[0], "rss_mb": hit[1], "peak_mb": peak, "position": hit[2]})
    return out


def _second_half_max(rss: list[tuple[float, float, float | None]], stream_s: float) -> float | None:
    """The largest VmRSS sampled once the stream had passed its middle: growth with length, without the
    start-up (model loading, first calls)."""
    late = [r for _, r, p in rss if p is not None and p >= stream_s / 2]
    return max(late) if late else None


def _memory_after(store_dir: Path) -> dict[str, Any]:
    """What the final checkpoint holds: slots in use against tokens written, per modality, and the budgets
    it was made with. Read from the raw state (no `StreamMemory` is built: the library may be newer than
    this process, and a run is not lost over it); {"error": ...} if it cannot be read."""
    try:
        with MemoryStore(store_dir) as store:
            loaded = store.load_latest(STREAM)
            if loaded is None:
                return {"error": f"no checkpoint of stream {STREAM}"}
            state, info = loaded
            kept = len(store.checkpoints(STREAM))
        banks = state["banks"]
        return {
            "tokens_visual": int(state["next_id"]["visual"]),
            "tokens_audio": int(state["next_id"]["audio"]),
            "slots_visual": int(banks["visual"]["id0"].shape[0]),
            "slots_audio": int(banks["audio"]["id0"].shape[0]),
            "budget_visual": int(state["config"]["visual_slots"]),
            "budget_audio": int(state["config"]["audio_slots"]),
            "checkpoint_mb": info.bytes_stored / 1e6,
            "checkpoints_kept": kept,
        }
    except Exception as exc:  # reported with the run's figures, which stand without it
        return {"error": f"{type(exc).__name__}: {exc}"}


def _thin(rows: list[Any], at_most: int) -> list[Any]:
    if len(rows) <= at_most:
        return rows
    idx = np.linspace(0, len(rows) - 1, at_most).round().astype(int)
    return [rows[i] for i in idx]


def _length(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min"


# -- the table -----------------------------------------------------------------------------------------------


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(result: dict[str, Any]) -> str:
    rows = []
    for r in result["runs"]:
        if "error" in r:
            rows.append([r["mode"], _length(r["stream_s"]), "failed", *["-"] * 9])
            continue
        q = {x["fraction"]: x for x in r["quarters"]}
        m = r["memory"]
        rows.append(
            [
                r["mode"],
                _length(r["stream_s"]),
                _mb(r["peak_mb"]),
                _mb(r["sampled_max_mb"]),
                *(_mb(q[f]["rss_mb"]) for f in QUARTERS),
                f"{m['slots_visual']:,} / {m['tokens_visual']:,}" if "error" not in m else "-",
                f"{m['slots_audio']:,} / {m['tokens_audio']:,}" if "error" not in m else "-",
                f"{r['wall_s']:.0f}",
                f"{r['speed']:.1f}",
            ]
        )
    by = {(r["mode"], r["stream_s"]): r for r in result["runs"] if "error" not in r}
    lengths = result["lengths_s"]
    ratios, late = [], []
    for mode in result["modes"]:
        done = [s for s in lengths if (mode, s) in by]
        if not done:
            continue
        base = by[mode, done[0]]["peak_mb"]
        ratios.append(
            f"{mode}: " + ", ".join(f"{_length(s)} {by[mode, s]['peak_mb'] / base:.3f}" for s in done)
        )
        late.append(f"{mode}: " + ", ".join(_mb(by[mode, s]["second_half_max_mb"]) for s in done) + " MB")
    problems = [f"error: {e}" for e in result.get("errors", [])] + [
        f"{r['mode']} {_length(r['stream_s'])}: final checkpoint unreadable: {r['memory']['error']}"
        for r in result["runs"]
        if "error" not in r and "error" in r["memory"]
    ]
    clips = "; ".join(
        f"{_length(float(s))}: {c['prompts']} prompts, {100 * c['voiced_fraction']:.0f} % voiced, "
        f"{c['bytes'] / 1e6:.0f} MB" + (f", built in {c['built_s']:.0f} s" if c["built_s"] else "")
        for s, c in result["clips"].items()
    )
    modes = ", ".join(
        f"{name} {b['visual_slots']:,} visual + {b['audio_slots']:,} audio slots"
        for name, b in result["modes"].items()
    )
    la = result["loadavg"]
    headers = [
        "memory", "stream", "peak MB", "sampled max", "@25 %", "@50 %", "@75 %", "@100 %",
        "visual slots / tokens", "audio slots / tokens", "wall s", "x real time",
    ]  # fmt: skip
    return "\n".join(
        [
            f"bench memory{' (quick)' if result['quick'] else ''}: peak RSS of `vsalmonn ingest` "
            "(the full pipeline) against stream length",
            render_environment(result["environment"]),
            f"memories: {modes}",
            f"streams (street footage 480x360 2 fps + speech prompts every 20-30 s): {clips}",
            "",
            format_table(headers, rows),
            "peak MB: wait4 ru_maxrss; sampled max and @N %: VmRSS every 0.5 s (@N %: when N % of the "
            "stream was first reported); x real time: stream s / wall s, model loading included",
            "",
            "peak RSS relative to the shortest stream: " + "; ".join(ratios),
            "largest VmRSS sampled in the second half of the stream, by length: " + "; ".join(late),
            f"load average (1/5/15 min): {render_loadavg(la['start'])} at start, "
            f"{render_loadavg(la['end'])} at the end",
            "",
            render_targets(result["targets"]),
            *(["", *problems] if problems else []),
            "",
            f"{'all targets met' if result['all_pass'] else 'some targets missed'}; "
            f"ran in {result['seconds']:.0f} s",
        ]
    )
