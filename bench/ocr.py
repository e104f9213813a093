"""``vsalmonn bench ocr``: on-screen text found by `search`, and what reading it costs (issue 18).

The clip is built here (and cached under ``<data>/bench/``) with phrases at known times, in 20 s blocks:
a *slide* (white text on a plain coloured background) for 6 s, 4 s of street footage, then the footage with
a *caption* drawn over it (white text with a dark outline, over the moving street) for 6 s, and 4 s of
footage again. The footage is ../shared/media/vtest.avi looped, 640x360 at 5 fps, H.264; the audio track is
continuous speech (the ../shared/media/speech prompts back to back, as `bench throughput` uses), so that
"the full pipeline" is the one a meeting recording runs: 120 s and 12 phrases (``--quick``: 60 s and 6).

The clip is ingested twice with the default settings (`ingest_file`, 30 s windows, a checkpoint a minute)
into fresh stores: with ``perception.ocr`` off and on. Reported:

- **recall@5 at ±5 s**: for each phrase, `MemoryView.search(phrase, k=5)` on the OCR store; found when one of
  the five moments starts within 5 s of the phrase's first frame. Also the catalog's recall: a
  ``screen_text`` row within 5 s whose text matches the phrase (difflib ratio ≥ 0.8).
- **OCR cost per stream hour**: wall seconds spent in the reader (it runs under the encoder lock, alone),
  and the CPU seconds of the process during those calls (an upper bound: the decode thread runs meanwhile),
  scaled to an hour of stream, with the frames read per minute.
- **speed**: the clip's duration over the ingest's wall time, OCR off and on.

Targets (issue 18): recall@5 ≥ 80 %; the full pipeline with OCR on ≥ 4x real time.
"""

from __future__ import annotations

import difflib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np

from vsalmonn.cli.output import format_table, quiet_model_loading
from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.rows.screen_text import stream_screen_text
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.encoders.ocr import OcrReader, TextLine
from vsalmonn.perception.ingest import Encoders, ingest_file
from vsalmonn.tools.memory_view import MemoryView

from ._harness import (
    STREET,
    PromptTrack,
    bench_data_dir,
    cached_speech_clip,
    environment,
    render_environment,
    render_load_span,
    render_targets,
    render_verdict,
    shared_media,
    street_frames,
    target,
)
from .throughput import _warm_up

CLIP_VERSION = 2  # part of the cached clip's name: bump when the recipe below changes
FPS, SIZE, AUDIO_RATE = 5, (640, 360), 48_000
BLOCK_S = 20.0  # a slide, footage, a caption over footage, footage
SLIDE = (0.0, 6.0)
CAPTION = (10.0, 16.0)
TOLERANCE_S = 5.0
K = 5
MATCH = 0.8  # difflib ratio for a catalog row to count as the phrase
TARGET_RECALL = 0.8
TARGET_SPEED = 4.0

PHRASES = (
    "QUARTERLY BUDGET REVIEW", "PLATFORM NINE DEPARTURES", "CUSTOMER SATISFACTION SURVEY",
    "NO PARKING AT ANY TIME", "PRODUCT ROADMAP FOR NEXT YEAR", "PHARMACY OPEN LATE",
    "HIRING PLAN FOR SPRING", "BICYCLE LANE AHEAD", "SECURITY INCIDENT TIMELINE", "FRESH BREAD EVERY DAY",
    "DATA CENTRE MIGRATION", "SCHOOL ZONE SLOW DOWN", "MARKETING LAUNCH CHECKLIST", "CITY MUSEUM ENTRANCE",
    "ANNUAL SALES TARGETS", "CAUTION WET FLOOR", "VENDOR CONTRACT RENEWAL", "GRAND CENTRAL HOTEL",
)  # fmt: skip
BACKGROUNDS = ((20, 40, 110), (10, 80, 40), (90, 30, 30), (60, 60, 60), (40, 20, 80), (0, 70, 90))


def _settings(quick: bool) -> dict[str, Any]:
    return {"seconds": 60.0} if quick else {"seconds": 120.0}


def schedule(seconds: float) -> list[dict[str, Any]]:
    """The phrases of a clip of `seconds`: text, kind (slide or caption), first and last second shown."""
    out = []
    for block in range(int(seconds // BLOCK_S)):
        for kind, (a, b) in (("slide", SLIDE), ("caption", CAPTION)):
            text = PHRASES[len(out) % len(PHRASES)]
            out.append({"text": text, "kind": kind, "t0": block * BLOCK_S + a, "t1": block * BLOCK_S + b})
    return out


def _fitted(draw: Any, text: str, size: int) -> tuple[Any, tuple[int, int, int, int]]:
    """The largest default font up to `size` px that fits `text` in 90 % of the frame's width, and its box."""
    from PIL import ImageFont

    while True:
        font = ImageFont.load_default(size=size)
        box = draw.textbbox((0, 0), text, font=font)
        if box[2] <= 0.9 * SIZE[0] or size <= 12:
            return font, box
        size -= 2


def _frames(shared: Path, phrases: list[dict[str, Any]]) -> Iterator[av.VideoFrame]:
    """The clip's frames in order: slides, footage, captions over footage (module docstring)."""
    from PIL import Image, ImageDraw

    street = street_frames(shared / STREET, every=2, size=SIZE, cache=True)  # 10 fps footage at 5 fps
    i = 0
    try:
        while True:
            t = i / FPS
            footage = next(street).to_ndarray(format="rgb24")
            shown = next((p for p in phrases if p["t0"] <= t < p["t1"]), None)
            if shown is None:
                image = Image.fromarray(footage)
            elif shown["kind"] == "slide":
                image = Image.new("RGB", SIZE, BACKGROUNDS[phrases.index(shown) % len(BACKGROUNDS)])
                draw = ImageDraw.Draw(image)
                font, box = _fitted(draw, shown["text"], 44)
                xy = ((SIZE[0] - box[2]) / 2, (SIZE[1] - box[3]) / 2)
                draw.text(xy, shown["text"], fill="white", font=font)
            else:
                image = Image.fromarray(footage)
                draw = ImageDraw.Draw(image)
                font, box = _fitted(draw, shown["text"], 36)
                xy = ((SIZE[0] - box[2]) / 2, SIZE[1] * 0.72)
                draw.text(xy, shown["text"], fill="white", font=font, stroke_width=2, stroke_fill="black")
            yield av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24").reformat(format="yuv420p")
            i += 1
    finally:
        street.close()


class _TimedReader:
    """The OCR reader with its calls timed: wall seconds and the process's CPU seconds meanwhile."""

    def __init__(self, reader: OcrReader) -> None:
        self.reader = reader
        self.name = reader.name
        self.min_score = reader.min_score
        self.calls, self.wall_s, self.cpu_s = 0, 0.0, 0.0

    def read(self, image: np.ndarray) -> list[TextLine]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return self.reader.read(image)
        finally:
            self.calls += 1
            self.wall_s += time.perf_counter() - wall
            self.cpu_s += time.process_time() - cpu


def _ingest(clip: Path, data: Path, encoders: Encoders, perception: PerceptionConfig) -> float:
    started = time.perf_counter()
    with MemoryStore(data) as store:
        ingest_file(
            clip, "ocr", store=store, encoders=encoders, perception=perception, memory_config=MemoryConfig()
        )
    return time.perf_counter() - started


def _similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.upper(), b.upper()).ratio()


def _recall(data: Path, encoders: Encoders, phrases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    with MemoryStore(data) as store, MemoryView(store, encoders.text) as view:
        stream = store.catalog.stream("ocr")
        assert stream is not None
        rows = stream_screen_text(store.catalog, stream.id)
        for p in phrases:
            hits = view.search(p["text"].lower(), stream="ocr", k=K)
            near = [h for h in hits if abs(h.t0 - p["t0"]) <= TOLERANCE_S]
            read = [
                r for r in rows if abs(r.t - p["t0"]) <= TOLERANCE_S and _similar(r.text, p["text"]) >= MATCH
            ]
            out.append(
                {
                    **p,
                    "found": bool(near),
                    "rank": hits.index(near[0]) + 1 if near else None,
                    "read": bool(read),
                    "read_as": read[0].text if read else None,
                    "read_at": read[0].t if read else None,
                }
            )
    return out


def run(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    loadavg_start = os.getloadavg()
    shared = shared_media("ocr")
    seconds = _settings(quick)["seconds"]
    phrases = schedule(seconds)
    data_dir = bench_data_dir()
    clip_path = data_dir / "bench" / f"ocr-{seconds:.0f}s-v{CLIP_VERSION}.mp4"
    clip = cached_speech_clip(
        clip_path, seconds,
        track=lambda: PromptTrack(
            shared, seconds, AUDIO_RATE, every_s=(0.25, 0.5), first_s=0.5, order_seed=4, placement_seed=1,
            min_pause_s=0.25,
        ),
        frames=lambda: _frames(shared, phrases), fps=FPS, size=SIZE,
        video_options={"preset": "veryfast", "g": str(5 * FPS)}, video=f"H.264 {SIZE[0]}x{SIZE[1]} {FPS} fps",
        audio_rate=AUDIO_RATE,
    )  # fmt: skip
    off, on = PerceptionConfig(), PerceptionConfig(ocr=True)
    quiet_model_loading(off.threads)
    load = time.perf_counter()
    encoders = Encoders.from_config(off, data_dir)
    reader = _TimedReader(OcrReader(min_score=on.ocr_min_score, threads=on.threads))
    load_s = time.perf_counter() - load
    warmup_s = _warm_up(
        encoders, shared / STREET, Path(clip["path"]), off
    )  # the first ingest pays no warm-up
    reader.read(np.zeros((SIZE[1], SIZE[0], 3), np.uint8))  # warm-up, not counted
    reader.calls, reader.wall_s, reader.cpu_s = 0, 0.0, 0.0
    with tempfile.TemporaryDirectory(prefix="vsalmonn-bench-ocr-") as tmp:
        wall_off = _ingest(Path(clip["path"]), Path(tmp) / "off", encoders, off)
        with_ocr = replace(encoders, ocr=reader)  # type: ignore[arg-type]
        wall_on = _ingest(Path(clip["path"]), Path(tmp) / "on", with_ocr, on)
        found = _recall(Path(tmp) / "on", encoders, phrases)
    duration = float(clip["duration_s"])
    recall = sum(f["found"] for f in found) / len(found)
    per_hour = 3600.0 / duration
    speed_on = duration / wall_on
    targets = [
        target(f"recall@{K} of on-screen phrases at ±{TOLERANCE_S:g} s", recall, TARGET_RECALL, "", True),
        target("full pipeline with OCR on", speed_on, TARGET_SPEED, "x real time", True),
    ]
    return {
        "benchmark": "ocr",
        "quick": quick,
        "environment": environment(),
        "clip": clip,
        "phrases": found,
        "recall": recall,
        "recall_by_kind": {
            kind: sum(f["found"] for f in found if f["kind"] == kind) / sum(f["kind"] == kind for f in found)
            for kind in ("slide", "caption")
        },
        "read_recall": sum(f["read"] for f in found) / len(found),
        "ocr": {
            "frames_read": reader.calls,
            "frames_per_minute": reader.calls * 60.0 / duration,
            "wall_s_per_frame": reader.wall_s / max(reader.calls, 1),
            "wall_s_per_stream_hour": reader.wall_s * per_hour,
            "cpu_s_per_stream_hour": reader.cpu_s * per_hour,
            "settings": {k: getattr(on, k) for k in ("ocr_every_s", "ocr_change", "ocr_min_score")}
            | {"ocr_max_per_minute": on.ocr_max_per_minute},
        },
        "speed": {
            "ocr_off": duration / wall_off,
            "ocr_on": speed_on,
            # the OCR-off run plus the reader's measured time: less exposed to the machine's load changing
            # between the two runs than their ratio
            "ocr_on_from_parts": duration / (wall_off + reader.wall_s),
        },
        "wall_s": {"ocr_off": wall_off, "ocr_on": wall_on},
        "load_s": load_s,
        "warmup_s": warmup_s,
        "loadavg": {"start": list(loadavg_start), "end": list(os.getloadavg())},
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "seconds": time.perf_counter() - started,
    }


def render(result: dict[str, Any]) -> str:
    rows = [
        [
            f"{p['t0']:.0f}",
            p["kind"],
            p["text"],
            str(p["rank"]) if p["found"] else "-",
            f"{p['read_as']} @ {p['read_at']:.0f}" if p["read"] else "-",
        ]
        for p in result["phrases"]
    ]
    ocr, speed, clip = result["ocr"], result["speed"], result["clip"]
    by_kind = ", ".join(f"{k} {100 * v:.0f} %" for k, v in result["recall_by_kind"].items())
    return "\n".join(
        [
            f"bench ocr{' (quick)' if result['quick'] else ''}: {clip['duration_s']:.0f} s clip "
            f"({clip['video']}, {len(result['phrases'])} phrases"
            + (f", built in {clip['built_s']:.1f} s" if clip["built_s"] else ", cached")
            + ")",
            render_environment(result["environment"]),
            "",
            format_table(["at s", "kind", "phrase", f"search rank (≤{K})", "read as @ s"], rows),
            "",
            f"recall@{K} at ±{TOLERANCE_S:g} s: {100 * result['recall']:.0f} % ({by_kind}); "
            f"read into the catalog: {100 * result['read_recall']:.0f} %",
            f"OCR: {ocr['frames_read']} frames read ({ocr['frames_per_minute']:.1f} a minute), "
            f"{ocr['wall_s_per_frame']:.2f} s a frame; per stream hour {ocr['wall_s_per_stream_hour']:.0f} s "
            f"wall, {ocr['cpu_s_per_stream_hour']:.0f} s CPU (upper bound)",
            f"speed: {speed['ocr_off']:.1f}x real time with OCR off, {speed['ocr_on']:.1f}x with it on "
            f"(wall {result['wall_s']['ocr_off']:.1f} s and {result['wall_s']['ocr_on']:.1f} s); "
            f"OCR off plus the reader's time: {speed['ocr_on_from_parts']:.1f}x",
            f"encoders loaded in {result['load_s']:.1f} s, warmed up in {result['warmup_s']:.1f} s",
            render_load_span(result["loadavg"]),
            "",
            render_targets(result["targets"]),
            "",
            render_verdict(result),
        ]
    )
