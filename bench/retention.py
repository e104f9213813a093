"""``vsalmonn bench retention``: a simulated month of one stream stays within its configured bytes.

One stream's rows and files are written at the rates of a 1 FPS camera with speech, in simulated time (no
sleeping: `created_at` and file mtimes are set explicitly), into a real SQLite catalog and data directory:

- a frame-label row per second (five labels with probabilities, as the vision encoder writes them);
- a transcript segment every 5 s (a sentence with word times), and a line of the live transcript file;
- an event every 5 minutes, and a 40 kB thumbnail file (JPEG-sized) beside it.

Every simulated hour, retention is applied as the daemon applies it after a checkpoint
(`memory_store.retention.apply_data_retention` with the simulated `now`), and the stored bytes per kind are
sampled. Target (issue 14): at the end, every kind holds its configured bytes within 10 % (never above 110 %,
and not below 90 %: retention must not delete more than it has to). `--quick` runs 3 simulated days with
budgets a tenth of the full run's; the full run is 30 days.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from vsalmonn.cli.output import format_table
from vsalmonn.memory_store.catalog import Catalog
from vsalmonn.memory_store.config import DataRetention, KindRetention
from vsalmonn.memory_store.models import Event, FrameLabel, TranscriptSegment
from vsalmonn.memory_store.names import path_component
from vsalmonn.memory_store.retention import (
    KINDS,
    THUMBS_DIR,
    TRANSCRIPTS_DIR,
    apply_data_retention,
    stream_sizes,
)

from ._harness import environment, render_environment, render_targets, render_verdict, target

STREAM = "bench-retention"
START = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = 3600
SEGMENT_EVERY_S, EVENT_EVERY_S = 5, 300
THUMB_BYTES = 40_000
MB = 1_000_000
# Budgets of the full run, chosen so that every kind is written well past its budget within the month.
BUDGETS = {
    "labels": 256 * MB, "transcript": 64 * MB, "events": 1 * MB, "thumbnails": 128 * MB,
    "transcript_files": 8 * MB,
}  # fmt: skip
TOLERANCE = 0.10
VOCABULARY = [
    "street",
    "car",
    "bus",
    "taxi",
    "person",
    "bicycle",
    "traffic",
    "light",
    "crosswalk",
    "truck",
    "sidewalk",
    "building",
    "tree",
    "sign",
    "dog",
    "umbrella",
    "backpack",
    "motorcycle",
    "van",
    "parking",
    "meter",
    "bench",
]
WORDS = [
    "the",
    "delivery",
    "is",
    "late",
    "again",
    "so",
    "we",
    "should",
    "move",
    "the",
    "meeting",
    "to",
    "thursday",
    "after",
    "lunch",
    "please",
]


def run(quick: bool) -> dict[str, Any]:
    days = 3 if quick else 30
    scale = 0.1 if quick else 1.0
    budgets = {k: int(v * scale) for k, v in BUDGETS.items()}
    policy = DataRetention(
        interval_s=HOUR, **{k: KindRetention(max_age_s=30 * 86_400, max_bytes=budgets[k]) for k in KINDS}
    )
    started = time.perf_counter()
    data = Path(tempfile.mkdtemp(prefix="vsalmonn-bench-retention-"))
    rng = random.Random(0)
    samples: list[dict[str, Any]] = []
    pass_ms: list[float] = []
    written = dict.fromkeys(KINDS, 0)
    try:
        catalog = Catalog(f"sqlite:///{data / 'catalog.sqlite'}")
        try:
            stream_id = catalog.ensure_stream(STREAM, kind="url").id
            thumbs = data / THUMBS_DIR / path_component(STREAM)
            thumbs.mkdir(parents=True)
            live = data / TRANSCRIPTS_DIR / f"{STREAM}.txt"
            live.parent.mkdir(parents=True)
            for hour in range(days * 24):
                _write_hour(catalog, stream_id, hour, rng, thumbs, live, written)
                now = START + timedelta(seconds=(hour + 1) * HOUR)
                t0 = time.perf_counter()
                apply_data_retention(catalog, data, stream_id, STREAM, policy, now=now)
                pass_ms.append(1e3 * (time.perf_counter() - t0))
                if hour % 6 == 5 or hour == days * 24 - 1:
                    sizes = stream_sizes(catalog, data, stream_id, STREAM)
                    samples.append({"hour": hour + 1, **{k: sizes[k].bytes for k in KINDS}})
            final = stream_sizes(catalog, data, stream_id, STREAM)
        finally:
            catalog.close()
        catalog_file = sum(p.stat().st_size for p in data.glob("catalog.sqlite*"))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    ratios = {k: final[k].bytes / budgets[k] for k in KINDS}
    # Once a kind has passed its budget, its stored bytes must stay within the tolerance at every sample.
    worst = {
        k: max((s[k] / budgets[k] for s in samples if s[k] >= (1 - TOLERANCE) * budgets[k]), default=0.0)
        for k in KINDS
    }
    total_budget = sum(budgets.values())
    total = sum(final[k].bytes for k in KINDS)
    targets = [
        *(
            target(f"{k}: stored / budget at the end", ratios[k], 1 + TOLERANCE, "", at_least=False)
            for k in KINDS
        ),
        *(
            target(f"{k}: stored / budget at the end ", ratios[k], 1 - TOLERANCE, "", at_least=True)
            for k in KINDS
        ),
        *(
            target(f"{k}: highest stored / budget", worst[k], 1 + TOLERANCE, "", at_least=False)
            for k in KINDS
        ),
    ]
    return {
        "benchmark": "retention",
        "quick": quick,
        "days": days,
        "budgets": budgets,
        "written": written,
        "final": {k: final[k].model_dump() for k in KINDS},
        "ratios": ratios,
        "worst_ratios": worst,
        "total_bytes": total,
        "total_budget": total_budget,
        "catalog_file_bytes": catalog_file,
        "row_budget": sum(budgets[k] for k in ("labels", "transcript", "events")),
        "pass_ms": {"median": sorted(pass_ms)[len(pass_ms) // 2], "max": max(pass_ms)},
        "samples": samples,
        "environment": environment(),
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "seconds": time.perf_counter() - started,
    }


def _labels(rng: random.Random) -> dict[str, Any]:
    probs = sorted((rng.random() for _ in range(5)), reverse=True)
    total = sum(probs) * 1.3
    return {"labels": [[rng.choice(VOCABULARY), round(p / total, 4)] for p in probs]}


def _segment(t: float, rng: random.Random) -> tuple[str, dict[str, Any]]:
    words = rng.sample(WORDS, 8)
    step = SEGMENT_EVERY_S / len(words)
    timed = [
        {"w": w, "t0": round(t + i * step, 2), "t1": round(t + (i + 0.8) * step, 2)}
        for i, w in enumerate(words)
    ]
    return " ".join(words).capitalize() + ".", {"words": timed}


def _write_hour(
    catalog: Catalog,
    stream_id: str,
    hour: int,
    rng: random.Random,
    thumbs: Path,
    live: Path,
    written: dict[str, int],
) -> None:
    """One simulated hour of the stream: its rows in one transaction, its files with their mtimes."""
    base = hour * HOUR
    labels, segments, events, lines = [], [], [], []
    for s in range(HOUR):
        t = float(base + s)
        labels.append({"stream_id": stream_id, "t": t, "labels": _labels(rng)})
        created = START + timedelta(seconds=t)
        if s % SEGMENT_EVERY_S == 0:
            text, words = _segment(t, rng)
            segments.append({"stream_id": stream_id, "t0": t, "t1": t + SEGMENT_EVERY_S, "text": text,
                             "words": words, "language": "en", "created_at": created})  # fmt: skip
            lines.append(f"[{int(t) // 3600:02d}:{int(t) // 60 % 60:02d}:{int(t) % 60:02d}] {text}\n")
        if s % EVENT_EVERY_S == 0:
            path = thumbs / f"motion-{t:012.3f}.jpg"
            events.append({"stream_id": stream_id, "kind": "surveillance.motion", "source": "surveillance",
                           "t": t, "message": f"motion at {t:.0f} s",
                           "payload": {"score": round(rng.random(), 3), "thumbnail": path.name},
                           "created_at": created})  # fmt: skip
            path.write_bytes(os.urandom(THUMB_BYTES))
            mtime = created.timestamp()
            os.utime(path, (mtime, mtime))
            written["thumbnails"] += THUMB_BYTES
    with catalog.transaction() as session:
        session.execute(insert(FrameLabel), labels)
        session.execute(insert(TranscriptSegment), segments)
        session.execute(insert(Event), events)
    text = "".join(lines).encode()
    with open(live, "ab") as f:
        f.write(text)
    end = (START + timedelta(seconds=base + HOUR)).timestamp()
    os.utime(live, (end, end))
    written["transcript_files"] += len(text)
    written["labels"] += len(labels)  # rows; bytes are in the final sizes
    written["transcript"] += len(segments)
    written["events"] += len(events)


def render(result: dict[str, Any]) -> str:
    budgets, final, worst = result["budgets"], result["final"], result["worst_ratios"]
    rows = [
        [
            kind,
            f"{result['written'][kind]:,}"
            + (" B" if kind in ("thumbnails", "transcript_files") else " rows"),
            f"{final[kind]['rows']:,}",
            f"{final[kind]['bytes'] / MB:.1f}",
            f"{budgets[kind] / MB:.1f}",
            f"{result['ratios'][kind]:.3f}",
            f"{worst[kind]:.3f}",
        ]
        for kind in KINDS
    ]
    over_time = [
        [f"day {s['hour'] / 24:.2f}", *(f"{s[k] / budgets[k]:.2f}" for k in KINDS)]
        for s in result["samples"][:: max(1, len(result["samples"]) // 12)]
    ]
    return "\n".join(
        [
            f"bench retention{' (quick)' if result['quick'] else ''}: {result['days']} simulated days of one "
            "stream at 1 FPS with speech, retention applied every simulated hour",
            render_environment(result["environment"]),
            "",
            format_table(
                ["kind", "written", "kept (rows/files)", "kept MB", "budget MB", "end / budget", "highest"],
                rows,
            ),
            f"total {result['total_bytes'] / MB:.1f} MB of {result['total_budget'] / MB:.1f} MB budget; "
            f"catalog file {result['catalog_file_bytes'] / MB:.1f} MB = "
            f"{result['catalog_file_bytes'] / result['row_budget']:.2f} x the rows' budget "
            "(SQLite reuses freed pages, the file never shrinks)",
            f"a retention pass: median {result['pass_ms']['median']:.0f} ms, "
            f"max {result['pass_ms']['max']:.0f} ms",
            "",
            "stored / budget over time:",
            format_table(["time", *KINDS], over_time),
            "",
            render_targets(result["targets"]),
            "",
            render_verdict(result),
        ]
    )
