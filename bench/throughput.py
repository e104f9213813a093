"""``vsalmonn bench throughput``: ingest speed as a multiple of real time, at 1 FPS and 360p.

Measured side by side in one run (each round runs every stage once, in the same order, so that a busy
machine slows all alike), with the default `PerceptionConfig` and `MemoryConfig`:

1. **decode**: `vsalmonn.perception.decode` alone, every item consumed (sampled RGB frames at 1 FPS, short
   side 360; 16 kHz mono chunks where the file has audio): the ceiling. Reported for both clips.
2. **decode + vision**: the frames, in batches of `batch_frames`, through the default vision encoder
   (EfficientNet-Lite0 with label grounding): tokens only.
3. **decode + vision + memory**: the same, each batch's tokens written into a fresh `StreamMemory` (TTT with
   `hf_cg`) as `ingest_file` writes them, flushed at the end.
4. **full pipeline**: `ingest_file` with the default encoders (vision, Whisper-base with VAD, MiniLM) into a
   new store in a temporary folder: windows, transcript rows, checkpoints, the final commit. On the street
   clip (no audio) and on a clip whose audio track is continuous speech. The speech, vision and text encoder
   calls are timed (by thin wrappers, not by changing the library) to show where its time goes.

Media: ``../shared/media/vtest.avi`` (79.5 s of street footage, 768x576, 10 fps, no audio) for 1-3; for 4, a
clip built once and cached under ``<data>/bench/``: the street footage looped, re-encoded as H.264 (10 fps,
768x576) with an AAC track (48 kHz mono) of the ../shared/media/speech prompts back to back (each trimmed to
its voice, 0.25 s apart, in a fixed shuffled order): 150 s (``--quick``: 60 s). The data directory is the
settings' one (``$VSALMONN_DATA``, else ``./vsalmonn-data``); the Whisper files are joined there once and the
label embeddings cached there, as for ``vsalmonn ingest``.

The encoders are loaded once, before any timing (load time reported apart), and warmed up on a batch of
frames and a few seconds of speech; torch uses `PerceptionConfig.threads` threads, set as the CLI sets them.
Speed is the clip's duration over the median wall time of the stage. Also reported: peak resident memory of
the process (``ru_maxrss``) and the load average at start and end. Targets (issue 4, a 2-core CPU): decode +
vision + memory ≥ 10x real time; the full pipeline on continuous speech ≥ 4x real time.
"""

from __future__ import annotations

import math
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from vsalmonn.cli.output import format_table, quiet_model_loading
from vsalmonn.memory_store import MemoryConfig, StreamMemory
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.decode import decode
from vsalmonn.perception.ingest import Encoders, ingest_file
from vsalmonn.perception.media import Frame

from ._harness import (
    STREET,
    bench_data_dir,
    checkout_module,
    duration,
    environment,
    median,
    prompt_paths,
    pyplot,
    render_environment,
    render_load_span,
    render_targets,
    render_verdict,
    save_figure,
    shared_media,
    street_frames,
    target,
    voice,
    write_clip,
)

CLIP_VERSION = 2  # part of the cached clip's name: bump when the recipe below changes
CLIP_FPS, CLIP_AUDIO_RATE = 10, 48_000
PROMPT_GAP_S = 0.25
NOISE_FLOOR = 1e-3
PROMPT_ORDER_SEED = 4

TARGET_VISION_MEMORY = 10.0
TARGET_FULL_SPEECH = 4.0

STAGES = (
    ("decode", "street", "decode only (video)"),
    ("decode", "speech", "decode only (video + audio)"),
    ("vision", "street", "decode + vision"),
    ("vision_memory", "street", "decode + vision + memory"),
    ("full", "street", "full pipeline, no audio"),
    ("full", "speech", "full pipeline, continuous speech"),
)


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"rounds": 1, "speech_s": 60.0}
    return {"rounds": 3, "speech_s": 150.0}


def run(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    loadavg_start = os.getloadavg()
    shared = shared_media("throughput")
    sizes = _settings(quick)
    data_dir = bench_data_dir()
    perception, memory_config = PerceptionConfig(), MemoryConfig()
    street = shared / STREET
    clip, clip_info = _speech_clip(shared, data_dir / "bench", sizes["speech_s"])
    media = {"street": street, "speech": clip}
    durations = {name: duration(path) for name, path in media.items()}

    quiet_model_loading(perception.threads)
    loading = _load_encoders(perception, data_dir)
    encoders: Encoders = loading.pop("encoders")
    rss_after_load = _peak_rss_mb()
    warmup_s = _warm_up(encoders, street, clip, perception)

    walls: dict[str, list[float]] = {_key(s, m): [] for s, m, _ in STAGES}
    details: dict[str, list[dict[str, Any]]] = {_key(s, m): [] for s, m, _ in STAGES}
    for _ in range(sizes["rounds"]):
        for stage, name, _label in STAGES:
            wall, detail = STAGE_RUNNERS[stage](media[name], encoders, perception, memory_config)
            walls[_key(stage, name)].append(wall)
            details[_key(stage, name)].append(detail)

    stages = []
    for stage, name, label in STAGES:
        key = _key(stage, name)
        times = walls[key]
        speeds = [durations[name] / t for t in times]
        stages.append(
            {
                "key": key,
                "stage": stage,
                "media": name,
                "label": label,
                "stream_s": durations[name],
                "wall_s": median(times),
                "wall_s_all": times,
                "speed": durations[name] / median(times),
                "speed_min": min(speeds),
                "speed_max": max(speeds),
                "detail": _median_detail(details[key]),
            }
        )
    by_key = {s["key"]: s for s in stages}
    targets = [
        target(
            "decode + vision + memory",
            by_key["vision_memory/street"]["speed"],
            TARGET_VISION_MEMORY,
            "x real time",
            at_least=True,
        ),
        target(
            "full pipeline, continuous speech",
            by_key["full/speech"]["speed"],
            TARGET_FULL_SPEECH,
            "x real time",
            at_least=True,
        ),
    ]
    return {
        "benchmark": "throughput",
        "quick": quick,
        "environment": environment(),
        "rounds": sizes["rounds"],
        "fps": perception.fps,
        "short_side": perception.short_side,
        "media": {
            "street": {"path": str(street), "duration_s": durations["street"]},
            "speech": {"path": str(clip), "duration_s": durations["speech"], **clip_info},
        },
        "load": loading,
        "warmup_s": warmup_s,
        "stages": stages,
        "peak_rss_mb": {"after_load": rss_after_load, "end": _peak_rss_mb()},
        "loadavg": {"start": list(loadavg_start), "end": list(os.getloadavg())},
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "seconds": time.perf_counter() - started,
    }


def _key(stage: str, media: str) -> str:
    return f"{stage}/{media}"


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the speech clip -----------------------------------------------------------------------------------------


def _speech_track(shared: Path, seconds: float, rate: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Prompts back to back (a fixed shuffled order, repeated if needed) for `seconds`; also what went in."""
    media = checkout_module("media")  # load_wav: the speech prompts as float32 at any rate
    n = round(seconds * rate)
    track = (np.random.default_rng(0).standard_normal(n) * NOISE_FLOOR).astype(np.float32)
    paths = prompt_paths(shared, PROMPT_ORDER_SEED)
    gap = round(PROMPT_GAP_S * rate)
    pos, voiced, used = 0, 0, 0
    for i in range(10 * len(paths)):
        if pos >= n:
            break
        spoken = voice(media.load_wav(paths[i % len(paths)], rate), rate)
        end = min(n, pos + len(spoken))
        track[pos:end] += spoken[: end - pos]
        voiced += end - pos
        used += 1
        pos = end + gap
    return track, {"prompts": used, "voiced_fraction": voiced / n}


def _speech_clip(shared: Path, folder: Path, seconds: float) -> tuple[Path, dict[str, Any]]:
    """The cached clip of `seconds`: the street footage looped, with continuous speech as its audio."""
    path = folder / f"speech-{seconds:.0f}s-v{CLIP_VERSION}.mp4"
    info_path = path.with_suffix(".npy")
    if path.is_file() and info_path.is_file():
        prompts, voiced = np.load(info_path).tolist()
        return path, {"prompts": int(prompts), "voiced_fraction": float(voiced), "built_s": 0.0}
    started = time.perf_counter()
    track, info = _speech_track(shared, seconds, CLIP_AUDIO_RATE)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp.mp4"
    street = shared / STREET
    with av.open(str(street)) as probe_container:
        width = probe_container.streams.video[0].codec_context.width
        height = probe_container.streams.video[0].codec_context.height
    frames = street_frames(street)
    try:
        write_clip(
            tmp,
            frames,
            seconds=seconds,
            fps=CLIP_FPS,
            size=(width, height),
            video_options={"preset": "veryfast", "g": str(5 * CLIP_FPS)},
            audio=lambda start, n: track[start : start + n],
            audio_rate=CLIP_AUDIO_RATE,
        )
    finally:
        frames.close()  # type: ignore[attr-defined]
    np.save(info_path, np.array([info["prompts"], info["voiced_fraction"]]))
    os.replace(tmp, path)
    return path, {**info, "built_s": time.perf_counter() - started}


# -- loading -------------------------------------------------------------------------------------------------


def _load_encoders(perception: PerceptionConfig, data_dir: Path) -> dict[str, Any]:
    """The default encoders, timed: model files prepared (the Whisper join, first run only), then loaded."""
    from vsalmonn.perception.models import whisper_base_dir

    started = time.perf_counter()
    whisper_base_dir(data_dir)
    prepared = time.perf_counter()
    encoders = Encoders.from_config(perception, data_dir)
    loaded = time.perf_counter()
    return {"encoders": encoders, "prepare_s": prepared - started, "load_s": loaded - prepared}


def _warm_up(encoders: Encoders, street: Path, clip: Path, perception: PerceptionConfig) -> float:
    """One batch of real frames through the vision encoder, a few seconds of speech through Whisper."""
    started = time.perf_counter()
    frames: list[np.ndarray] = []
    with decode(street, perception, audio=False) as items:
        for item in items:
            frames.append(item.image)  # type: ignore[union-attr]
            if len(frames) == perception.batch_frames:
                break
    encoders.vision.encode(frames)
    audio: list[np.ndarray] = []
    with decode(clip, perception, video=False) as items:
        for item in items:
            audio.append(item.samples)  # type: ignore[union-attr]
            if sum(len(a) for a in audio) >= 8 * perception.sample_rate:
                break
    if encoders.speech is not None:
        encoders.speech.transcribe(np.concatenate(audio))
    encoders.text.encode(["a person walking down a street"])
    return time.perf_counter() - started


# -- the stages ----------------------------------------------------------------------------------------------

Stage = Callable[[Path, Encoders, PerceptionConfig, MemoryConfig], tuple[float, dict[str, Any]]]


def _decode_only(
    path: Path, encoders: Encoders, perception: PerceptionConfig, memory_config: MemoryConfig
) -> tuple[float, dict[str, Any]]:
    frames = chunks = 0
    started = time.perf_counter()
    with decode(path, perception) as items:
        for item in items:
            if isinstance(item, Frame):
                frames += 1
            else:
                chunks += 1
    return time.perf_counter() - started, {"frames": frames, "audio_chunks": chunks}


def _vision(
    path: Path,
    encoders: Encoders,
    perception: PerceptionConfig,
    memory_config: MemoryConfig,
    memory: StreamMemory | None = None,
) -> tuple[float, dict[str, Any]]:
    """Frames in batches of `batch_frames` through the vision encoder; into `memory` too, if given."""
    period = 1.0 / perception.fps
    frames = tokens = 0
    batch: list[Frame] = []

    def flush() -> None:
        nonlocal frames, tokens
        encoded = encoders.vision.encode([f.image for f in batch])
        if memory is not None:
            # as ingest's _frame_tokens: every token spans its frame's time to the next sampling instant
            values = np.concatenate([e.tokens for e in encoded])
            t0 = [f.t for f, e in zip(batch, encoded, strict=True) for _ in range(e.tokens.shape[0])]
            memory.write(values, t0, [t + period for t in t0], modality="visual")
        frames += len(batch)
        tokens += sum(e.tokens.shape[0] for e in encoded)
        batch.clear()

    started = time.perf_counter()
    with decode(path, perception, audio=False) as items:
        for item in items:
            batch.append(item)  # type: ignore[arg-type]
            if len(batch) == perception.batch_frames:
                flush()
    if batch:
        flush()
    if memory is not None:
        memory.flush()
    return time.perf_counter() - started, {"frames": frames, "tokens": tokens}


def _vision_memory(
    path: Path, encoders: Encoders, perception: PerceptionConfig, memory_config: MemoryConfig
) -> tuple[float, dict[str, Any]]:
    memory = StreamMemory(memory_config)  # built before the clock starts, as a stream's memory is
    wall, detail = _vision(path, encoders, perception, memory_config, memory)
    return wall, {**detail, "slots_used": len(memory)}


class _Timed:
    """An encoder whose one working method is timed; everything else is the encoder's own."""

    def __init__(self, inner: Any, method: str) -> None:
        self._inner, self._method, self.seconds, self.calls = inner, method, 0.0, 0
        self.outputs: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            out = attr(*args, **kwargs)
            self.seconds += time.perf_counter() - started
            self.calls += 1
            self.outputs.append(out)
            return out

        return timed


def _full(
    path: Path, encoders: Encoders, perception: PerceptionConfig, memory_config: MemoryConfig
) -> tuple[float, dict[str, Any]]:
    vision, text = _Timed(encoders.vision, "encode"), _Timed(encoders.text, "encode")
    speech = _Timed(encoders.speech, "transcribe") if encoders.speech is not None else None
    timed = Encoders(vision=vision, text=text, speech=speech)  # type: ignore[arg-type]
    with (
        tempfile.TemporaryDirectory(prefix="vsalmonn-bench-throughput-") as tmp,
        MemoryStore(Path(tmp)) as store,
    ):
        started = time.perf_counter()
        result = ingest_file(
            path, "bench", store=store, encoders=timed, perception=perception, memory_config=memory_config
        )
        wall = time.perf_counter() - started
    speech_s = speech.seconds if speech is not None else 0.0
    words = sum(len(s.text.split()) for out in (speech.outputs if speech else []) for s in out)
    return wall, {
        "frames": result.frames,
        "segments": result.segments,
        "words": words,
        "checkpoints": result.checkpoints,
        "vision_s": vision.seconds,
        "speech_s": speech_s,
        "speech_calls": speech.calls if speech is not None else 0,
        "text_s": text.seconds,
        "rest_s": wall - vision.seconds - speech_s - text.seconds,
    }


STAGE_RUNNERS: dict[str, Stage] = {
    "decode": _decode_only,
    "vision": _vision,
    "vision_memory": _vision_memory,
    "full": _full,
}


def _median_detail(details: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median over rounds (counts are the same in every round)."""
    return {k: median([float(d[k]) for d in details]) for k in details[0]}


# -- the table -----------------------------------------------------------------------------------------------


BREAKDOWN = (
    ("speech_s", "speech (VAD + Whisper)"),
    ("vision_s", "vision encoder"),
    ("text_s", "text encoder (transcripts)"),
    ("rest_s", "the rest: decode, memory, catalog, checkpoints"),
)


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """throughput.png: each stage's speed (x real time, with its range over the rounds), and where the full
    pipeline's time goes on each clip (stacked seconds per stream minute)."""
    plt = pyplot()
    stages = result["stages"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    names = [f"{s['label']}\n({s['media']})" for s in stages]
    speeds = [s["speed"] for s in stages]
    spread = [[s["speed"] - s["speed_min"] for s in stages], [s["speed_max"] - s["speed"] for s in stages]]
    left.barh(names, speeds, xerr=spread, color="tab:blue", capsize=3)
    for t in result["targets"]:
        left.axvline(t["target"], color="tab:red", linestyle=":", linewidth=1)
    left.invert_yaxis()
    left.set_xlabel("x real time (median; bars: range over rounds; dotted: targets)")
    left.set_title("speed of each stage")
    by_key = {s["key"]: s for s in stages}
    media = [key for key in ("full/street", "full/speech") if key in by_key]
    bottom = [0.0] * len(media)
    for part, label in BREAKDOWN:
        per_minute = [60 * by_key[k]["detail"][part] / by_key[k]["stream_s"] for k in media]
        right.bar([by_key[k]["media"] for k in media], per_minute, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, per_minute, strict=True)]
    right.set_ylabel("s of work per minute of stream")
    right.set_title("full pipeline: where the time goes")
    right.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"bench throughput{' --quick' if result['quick'] else ''}: {result['environment']['cores']} cores, "
        f"{result['environment']['threads']} threads, load {result['loadavg']['start'][0]:.1f} at the start"
    )
    return save_figure(fig, out_dir / "throughput.png")


def render(result: dict[str, Any]) -> str:
    rows = [
        [
            s["label"],
            s["media"],
            f"{s['stream_s']:.1f}",
            f"{s['wall_s']:.2f}",
            f"{s['speed']:.1f}",
            f"{s['speed_min']:.1f} – {s['speed_max']:.1f}",
        ]
        for s in result["stages"]
    ]
    by_key = {s["key"]: s for s in result["stages"]}
    breakdown = []
    for key in ("full/street", "full/speech"):
        d, wall = by_key[key]["detail"], by_key[key]["wall_s"]
        for part, label in BREAKDOWN:
            share = d[part] / wall if wall > 0 else math.nan
            breakdown.append([by_key[key]["media"], label, f"{d[part]:.2f}", f"{100 * share:.0f} %"])
    speech_media = result["media"]["speech"]
    speech_detail = by_key["full/speech"]["detail"]
    load, rss, la = result["load"], result["peak_rss_mb"], result["loadavg"]
    return "\n".join(
        [
            f"bench throughput{' (quick)' if result['quick'] else ''}: {result['fps']:g} FPS, short side "
            f"{result['short_side']} px, {result['rounds']} round(s), medians",
            render_environment(result["environment"]),
            f"street: {result['media']['street']['path']}; speech: {speech_media['path']} "
            f"({speech_media['prompts']} prompts, {100 * speech_media['voiced_fraction']:.0f} % voiced"
            + (f", built in {speech_media['built_s']:.1f} s" if speech_media["built_s"] else ", cached")
            + ")",
            "",
            format_table(["stage", "media", "stream s", "wall s", "x real time", "range"], rows),
            "",
            "full pipeline, where the time goes (median s per run):",
            format_table(["media", "part", "s", "share"], breakdown),
            f"continuous speech: {speech_detail['segments']:.0f} transcript segments, "
            f"{speech_detail['words']:.0f} words in {speech_detail['speech_calls']:.0f} Whisper calls",
            "",
            f"encoders: model files prepared in {load['prepare_s']:.1f} s, loaded in {load['load_s']:.1f} s, "
            f"warmed up in {result['warmup_s']:.1f} s; peak RSS {rss['after_load']:,.0f} MB after loading, "
            f"{rss['end']:,.0f} MB at the end",
            render_load_span(la),
            "",
            render_targets(result["targets"]),
            "",
            render_verdict(result),
        ]
    )
