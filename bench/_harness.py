"""Helpers shared by the benchmarks: timing, the machine's description, targets and tables, and the media
they are measured on (the shared real footage and speech, clips built from them, the checkout's tests/)."""

from __future__ import annotations

import bisect
import importlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import torch

from vsalmonn.cli.output import UsageError, format_table
from vsalmonn.perception import allocator
from vsalmonn.perception.decode import probe
from vsalmonn.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent
SHARED_MEDIA = ROOT.parent / "shared" / "media"
STREET = "vtest.avi"  # 79.5 s of street footage, 768x576, 10 fps, no audio
PROMPT_MARGIN_S, VOICE_RMS = 0.05, 0.02
AUDIO_BLOCK = 1024  # samples per audio frame handed to the encoder (AAC's frame size)


def environment() -> dict[str, Any]:
    """What the figures depend on besides the code; recorded with every result so numbers can be compared."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        # How torch's OpenMP threads wait (the CLI sets these per command: `vsalmonn.cli.openmp_waits`); on 2
        # cores they change speed more than anything else here does when other work shares the machine.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        # whether glibc's malloc thresholds were fixed (the CLI does it: `vsalmonn.cli.tune_malloc`); without
        # it hf_cg faults its temporaries in afresh at every mini-batch
        "malloc_tuned": allocator.holds_freed_blocks(),
    }


SCENE = 64
"""Tokens per scene of `token_stream`'s "scenes"."""


def token_stream(
    kind: str, n: int, dim: int, *, seed: int = 0, noise: float = 0.3, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """n unit tokens (1, n, dim) for the memory benchmarks that need no encoder.

    "scenes": runs of `SCENE` near-duplicate tokens (a random unit anchor plus `noise`), as a camera's frames
    are: on these, as on encoded video (the needle streams), hf_cg's φ rule never fires and CG runs to
    cg_max_iter. "random": independent random unit tokens, on which it stops every head at iteration 2.
    """
    gen = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.nn.functional.normalize(torch.randn(1, n, dim, generator=gen, dtype=dtype), dim=-1)
    if kind != "scenes":
        raise ValueError(f"token stream kind {kind!r}: use 'scenes' or 'random'")
    anchors = torch.randn(-(-n // SCENE), dim, generator=gen, dtype=dtype)  # (scenes, d)
    x = anchors.repeat_interleave(SCENE, dim=0)[:n]  # (n, d)
    x = x + noise * torch.randn(n, dim, generator=gen, dtype=dtype)  # (n, d)
    return torch.nn.functional.normalize(x, dim=-1)[None]  # (1, n, d)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux); platform.processor() elsewhere, which is often empty."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls.

    The warm-up absorbs one-off costs (allocator growth, lazy initialisation, first-touch page faults) that
    a long-running stream pays once, not per call.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def median(values: list[float]) -> float:
    """The median: unlike the mean, one call slowed by another process does not move it."""
    return statistics.median(values)


def target(
    name: str, value: float, bound: float, unit: str, at_least: bool, *, strict: bool = False
) -> dict[str, Any]:
    """One target row: the measured value, its bound and whether it holds (`strict`: equal does not)."""
    if strict:
        ok = value > bound if at_least else value < bound
    else:
        ok = value >= bound if at_least else value <= bound
    row = {"name": name, "value": value, "target": bound, "unit": unit, "at_least": at_least, "pass": ok}
    return {**row, "strict": True} if strict else row


def render_environment(env: dict[str, Any]) -> str:
    return (
        f"torch {env['torch']}, {env['threads']} threads, {env['cores']} cores, {env['cpu']}, "
        f"Python {env['python']}, OMP_WAIT_POLICY {env.get('omp_wait_policy') or 'unset'}, "
        f"GOMP_SPINCOUNT {env.get('gomp_spincount') or 'unset'}, "
        f"malloc {'tuned' if env.get('malloc_tuned') else 'glibc defaults'}"
    )


def render_targets(targets: list[dict[str, Any]]) -> str:
    rows = [
        [
            t["name"],
            f"{t['value']:,.0f}" if abs(t["value"]) >= 1000 else f"{t['value']:.2f}",
            f"{_relation(t)} {t['target']:,g} {t['unit']}",
            "pass" if t["pass"] else "FAIL",
        ]
        for t in targets
    ]
    return format_table(["target", "measured", "bound", "result"], rows)


def render_load_span(loadavg: dict[str, list[float]]) -> str:
    """The load average at a run's start and end: what else the machine was doing meanwhile."""
    return (
        f"load average (1/5/15 min): {render_loadavg(loadavg['start'])} at start, "
        f"{render_loadavg(loadavg['end'])} at the end"
    )


def render_verdict(result: dict[str, Any]) -> str:
    """A table's last line: whether every target held, and the run's wall time."""
    met = "all targets met" if result["all_pass"] else "some targets missed"
    return f"{met}; ran in {result['seconds']:.0f} s"


def _relation(row: dict[str, Any]) -> str:
    if row.get("strict"):
        return ">" if row["at_least"] else "<"
    return "≥" if row["at_least"] else "≤"


def render_loadavg(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


# -- plots ---------------------------------------------------------------------------------------------------


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the Agg backend (files only, no display), imported when a plot is asked for:
    matplotlib is in the 'bench' extra, and nothing else needs it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> list[Path]:
    """Lay the figure out, write it as PNG and free it; returns [path] for a benchmark's ``plot``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return [path]


# -- where things are ----------------------------------------------------------------------------------------


def bench_data_dir() -> Path:
    """The settings' data directory ($VSALMONN_DATA, else ./vsalmonn-data): model files, cached clips."""
    try:
        return load_settings().data_dir
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def shared_media(bench: str, *, checkout: tuple[str, ...] = ("media",)) -> Path:
    """The shared media folder (the street clip and the speech prompts), checked together with the modules of
    the checkout's tests/ that the benchmark `bench` imports; UsageError naming what is missing."""
    if not (SHARED_MEDIA / STREET).is_file() or not (SHARED_MEDIA / "speech").is_dir():
        raise UsageError(
            f"bench {bench} needs the shared media folder ({STREET} and speech/); none at {SHARED_MEDIA}"
        )
    for name in checkout:
        path = ROOT / "tests" / f"{name}.py"
        if not path.is_file():
            raise UsageError(f"bench {bench} needs the source checkout's tests/{name}.py; none at {path}")
    return SHARED_MEDIA


def checkout_module(name: str) -> ModuleType:
    """``tests.<name>`` of the source checkout (media builders, the loopback stream server), imported with the
    checkout's root on sys.path: tests/ is not installed with the package, and benchmarks need a checkout."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module = importlib.import_module(f"tests.{name}")
    where = Path(module.__file__ or "").resolve()
    if where.parent != ROOT / "tests":
        raise UsageError(f"tests.{name} resolves to {where}, not to the checkout's {ROOT / 'tests'}")
    return module


def duration(path: Path) -> float:
    seconds = probe(path).duration
    assert seconds is not None, f"{path} declares no duration"
    return seconds


# -- building clips ------------------------------------------------------------------------------------------


def prompt_paths(shared: Path, seed: int) -> list[Path]:
    """The speech prompts in a fixed shuffled order (name order would put similar menus back to back)."""
    paths = sorted((shared / "speech").glob("*.wav"))
    return [paths[i] for i in np.random.default_rng(seed).permutation(len(paths))]


def voice(samples: np.ndarray, rate: int) -> np.ndarray:
    """A prompt without its leading and trailing silence (10 ms windows under `VOICE_RMS`), with margins."""
    win = rate // 100
    n = len(samples) // win
    rms = np.sqrt((samples[: n * win].reshape(n, win) ** 2).mean(1))
    loud = np.flatnonzero(rms > VOICE_RMS)
    if not len(loud):
        return samples[:0]
    margin = round(PROMPT_MARGIN_S * rate)
    return samples[max(0, loud[0] * win - margin) : min(len(samples), (loud[-1] + 1) * win + margin)]


class PromptTrack:
    """A mono track built block by block (a 3-hour track would take 0.7 GB as one array): a faint noise floor
    and the speech prompts (each trimmed to its voice, in a fixed shuffled order, cycled), the first at
    `first_s`, then one every `every_s` (uniform in the range, seeded), later after a long prompt so that
    there is always at least `min_pause_s` between two. Call it as ``track(start, n)`` (samples)."""

    def __init__(
        self,
        shared: Path,
        seconds: float,
        rate: int,
        *,
        every_s: tuple[float, float],
        first_s: float,
        order_seed: int,
        placement_seed: int,
        min_pause_s: float = 2.0,
        noise: float = 1e-3,
    ) -> None:
        media = checkout_module("media")  # load_wav: the prompts as float32 at any rate
        paths = prompt_paths(shared, order_seed)
        voices: dict[Path, np.ndarray] = {}
        rng = np.random.default_rng(placement_seed)
        self.rate = rate
        self.starts: list[int] = []
        self.voices: list[np.ndarray] = []
        self.names: list[str] = []
        at, i = first_s, 0
        while at < seconds:
            path = paths[i % len(paths)]
            if path not in voices:
                voices[path] = voice(media.load_wav(path, rate), rate)
            spoken = voices[path]
            i += 1
            if not len(spoken):
                continue
            self.starts.append(round(at * rate))
            self.voices.append(spoken)
            self.names.append(path.stem)
            at += max(float(rng.uniform(*every_s)), len(spoken) / rate + min_pause_s)
        self.total = round(seconds * rate)
        self.noise = (np.random.default_rng(0).standard_normal(10 * rate) * noise).astype(np.float32)

    def __call__(self, start: int, n: int) -> np.ndarray:
        block = np.take(self.noise, np.arange(start, start + n), mode="wrap")
        last = bisect.bisect_right(self.starts, start + n - 1) - 1
        for j in (last - 1, last):
            if j < 0:
                continue
            s, v = self.starts[j], self.voices[j]
            lo, hi = max(start, s), min(start + n, s + len(v), self.total)
            if lo < hi:
                block[lo - start : hi - start] += v[lo - s : hi - s]
        return block

    def info(self) -> dict[str, Any]:
        voiced = sum(min(len(v), self.total - s) for s, v in zip(self.starts, self.voices, strict=True))
        return {"prompts": len(self.starts), "voiced_fraction": voiced / self.total}


def street_frames(
    path: Path, *, every: int = 1, size: tuple[int, int] | None = None, cache: bool = False
) -> Iterator[av.VideoFrame]:
    """The street clip's frames in yuv420p, looped for ever: every `every`-th frame, scaled to `size`
    (width, height) if given. With `cache` they are decoded once and kept as arrays (for small sizes)."""
    width, height = size or (None, None)
    kept: list[np.ndarray] = []
    while True:
        if kept:
            for array in kept:
                yield av.VideoFrame.from_ndarray(array, format="yuv420p")
            continue
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % every:
                    continue
                frame = frame.reformat(width=width, height=height, format="yuv420p")
                if cache:
                    kept.append(frame.to_ndarray())
                yield frame


def cached_speech_clip(
    path: Path,
    seconds: float,
    *,
    track: Callable[[], PromptTrack],
    frames: Callable[[], Iterator[av.VideoFrame]],
    fps: int,
    size: tuple[int, int],
    video_options: dict[str, str],
    video: str,
    audio_rate: int,
    container_format: str | None = None,
) -> dict[str, Any]:
    """The clip at `path` with its description (a .json beside it), built first if absent.

    Built from `frames()` and the prompt track `track()` with `write_clip`, under a temporary name renamed
    into place only when whole, so an interrupted build is never taken for a cached clip. The result adds
    "path" and "built_s" (0 when it came from the cache) to the description.
    """
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        return {**json.loads(info_path.read_text()), "path": str(path), "built_s": 0.0}
    started = time.perf_counter()
    prompts = track()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    source = frames()
    try:
        write_clip(
            tmp, source, seconds=seconds, fps=fps, size=size, video_options=video_options, audio=prompts,
            audio_rate=audio_rate, container_format=container_format,
        )  # fmt: skip
    finally:
        source.close()  # type: ignore[attr-defined]
    info = {
        "seconds": seconds,
        "duration_s": duration(tmp),
        "video": video,
        "audio": f"{audio_rate} Hz mono AAC",
        "bytes": tmp.stat().st_size,
        **prompts.info(),
    }
    info_path.write_text(json.dumps(info))
    os.replace(tmp, path)
    return {**info, "path": str(path), "built_s": time.perf_counter() - started}


def write_clip(
    path: Path,
    frames: Iterator[av.VideoFrame],
    *,
    seconds: float,
    fps: int,
    size: tuple[int, int],
    video_options: dict[str, str],
    audio: Callable[[int, int], np.ndarray] | None = None,
    audio_rate: int = 48_000,
    container_format: str | None = None,
) -> None:
    """Encode `seconds` of `frames` at `fps` as H.264 (`size` = width, height) and, if given, a mono AAC track
    whose samples ``audio(start, n)`` returns (float32, n samples from sample `start`; fewer at the end).

    Audio blocks are muxed interleaved with the video (each block before the first frame after its start), as
    a camera or a recorder writes them, so that demuxing and live pacing see both streams together.
    """
    out = av.open(str(path), "w", format=container_format)
    try:
        vstream = out.add_stream("libx264", rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = size[0], size[1], "yuv420p"
        vstream.options = dict(video_options)
        vstream.codec_context.time_base = Fraction(1, fps)
        astream = None
        if audio is not None:
            astream = out.add_stream("aac", rate=audio_rate)
            astream.layout = "mono"
        total = round(seconds * audio_rate)
        next_audio = 0

        def mux_audio_until(limit_s: float) -> None:
            """Encode the audio blocks that start at or before `limit_s`."""
            nonlocal next_audio
            if audio is None or astream is None:
                return
            while next_audio < total and next_audio / audio_rate <= limit_s:
                block = audio(next_audio, min(AUDIO_BLOCK, total - next_audio))
                aframe = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(block[None, :], dtype=np.float32), format="fltp", layout="mono"
                )
                aframe.sample_rate = audio_rate
                aframe.pts, aframe.time_base = next_audio, Fraction(1, audio_rate)
                out.mux(astream.encode(aframe))
                next_audio += AUDIO_BLOCK

        for i in range(round(seconds * fps)):
            mux_audio_until(i / fps)
            vframe = next(frames)
            vframe.pts, vframe.time_base = i, Fraction(1, fps)
            out.mux(vstream.encode(vframe))
        mux_audio_until(float("inf"))
        out.mux(vstream.encode(None))
        if astream is not None:
            out.mux(astream.encode(None))
    finally:
        out.close()
