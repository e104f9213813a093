"""``vsalmonn bench search``: latency of ``search_video_memory`` over the memory of a 3-hour stream.

The stream (built once, cached under ``<data>/bench/``; ``<data>`` is ``$VSALMONN_DATA``, else
``./vsalmonn-data``) holds 3 hours at 1 FPS, written through `StreamMemory` with the default `MemoryConfig`
(16,384 visual + 4,096 audio slots, merge, TTT with ``hf_cg``) and committed as one checkpoint, with the
catalog rows a real ingest writes (one `FrameLabel` row per frame, one `TranscriptSegment` row per sentence):

- **pictures**: the real vision encoder (EfficientNet-Lite0 with label grounding, 1 global + 4 regional
  tokens a frame) over real footage of ../shared/media, 480x360: ``vtest.avi`` (street) at 2 fps, and
  ``anim-1.mov`` (a glass teapot) and ``alea.mpg`` (dice) at 10 fps, 243 distinct frames in all, each
  encoded once. The 10,800 frames of the stream reuse those tokens: runs of street footage (30-300 s each,
  from a random point, looped) with, between runs, a third of the time the teapot or the dice clip (1-3
  loops); each reused token gets Gaussian noise (σ 0.01 per dimension, cosine ≈ 0.98 to the original) and
  is renormalised, so that no two frames are identical. Encoding all 10,800 frames would cost 10-20 min and
  show the encoder's speed, not the search's.
- **speech**: the ../shared/media/speech prompts (each trimmed to its voice), one every 5-15 s in a seeded
  shuffled order over the 3 hours (`_harness.PromptTrack`, at least 1.5 s apart). Each distinct prompt was
  transcribed once by the real speech encoder (Whisper-base, cached); its sentences are placed at the
  prompt's time and embedded by the real text encoder (MiniLM) as audio tokens, as the pipeline does.

Then the store is opened, the stream's checkpoint loaded once into a `MemoryView` (its load time is reported
apart: the target is for a loaded checkpoint) and one untimed search run. Timed, for each of N prompts (full
200, ``--quick`` 50; all different, drawn from the prompts' transcript sentences, the questions of ``bench
qa`` and descriptions of what the clips show), one after the other:

- **tool**: the ``search_video_memory`` LangChain tool (k 5): `MemoryView.search` plus the text it renders;
- **MemoryView.search** (k 5): the catalog check for a newer checkpoint, the prompt's text encoding, the
  reader over both banks, and each moment's evidence rows (transcript lines, frame labels) from the catalog;
- **text encoding** alone (MiniLM, one prompt) and **reader** alone (`StreamMemory.read`, k 5).

Also `MemoryView.search` with a time window (start/end; full 50, quick 20 searches, windows of 10-60 min),
which the reader serves from the slots inside the window.

Every call is made twice in a row: with torch at the settings' `perception.threads` (2), as ``vsalmonn
search``, ``ask`` and the daemon set it, and at 1 thread. On a 2-core machine that other processes keep busy,
torch's OpenMP threads busy-wait for each other at every barrier (``OMP_WAIT_POLICY`` unset), the spinning
thread takes the core the working one needs, and one prompt's text encoding (a few ms of work) can take
hundreds of ms; side by side, the two show how much of a slow figure is that. With
``OMP_WAIT_POLICY=PASSIVE`` in the environment (read when torch starts) the two thread counts measure alike.

Target (issue): ``search_video_memory`` ≤ 100 ms at p95, applied at the settings' thread count to the tool
and to `MemoryView.search`, without and with a window.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vsalmonn.cli.output import format_table, quiet_model_loading
from vsalmonn.memory_store import MemoryConfig, StreamMemory
from vsalmonn.memory_store.models import FrameLabel, TranscriptSegment
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.encoders import Segment, Word
from vsalmonn.perception.pipeline import Encoders, split_sentences
from vsalmonn.tools.memory_view import MemoryView
from vsalmonn.tools.toolkit import build_tools

from . import _qa_streams as qs
from ._harness import (
    PromptTrack,
    bench_data_dir,
    environment,
    render_environment,
    render_loadavg,
    render_targets,
    shared_media,
    target,
)

BUILD_VERSION = 1  # part of the cached store's name: bump when the recipe below changes
STREAM = "long"
SECONDS = 10_800.0  # 3 hours at 1 FPS, --quick too (the store is built once and shared)
POOL_FPS = {"street": 2, "teapot": 10, "dice": 10}  # distinct frames encoded once, per clip
AUGMENT_SIGMA = 0.01
SCENE_S = (30.0, 300.0)
INSERT_SHARE, INSERT_LOOPS = 1 / 3, (1, 3)
PROMPT_EVERY_S, FIRST_PROMPT_S, MIN_PAUSE_S = (5.0, 15.0), 3.0, 1.5
TIMELINE_SEED, AUGMENT_SEED, PROMPT_ORDER_SEED, PLACEMENT_SEED, QUERY_SEED = 31, 32, 33, 34, 35
WINDOW_S = 30.0  # stream seconds written at a time, as the pipeline's windows
K = 5
SEARCHES = {"full": 200, "quick": 50}
WINDOWED = {"full": 50, "quick": 20}
WINDOW_RANGE_S = (600.0, 3600.0)

TARGET_P95_MS = 100.0

VISUAL_QUERIES = (
    "people walking along a street",
    "pedestrians crossing a square",
    "a man carrying a bag",
    "a woman in a red coat",
    "a crowd of people outside",
    "someone standing still on the pavement",
    "a person riding a bicycle",
    "a car parked by the road",
    "a street seen from a surveillance camera",
    "a shop window",
    "a teapot on a table",
    "a glass jug",
    "a coffee pot",
    "a green ring on a wooden floor",
    "a small toy aeroplane",
    "dice falling on a black background",
    "pink dice",
    "a cartoon animation",
    "a dark empty screen",
    "a digital clock",
    "a street lamp",
    "two people talking on the street",
    "a child running",
    "an umbrella",
    "a person in a white shirt",
    "people walking away from the camera",
    "a tiled plaza",
    "a traffic light",
    "a dog on a lead",
    "a bright room with a wooden floor",
)


def run(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    loadavg_start = os.getloadavg()
    store = three_hour_store(shared_media("search"))
    perception, encoders, store_dir, build = store.perception, store.encoders, store.path, store.build
    queries = queries_of(store.transcripts, SEARCHES["quick" if quick else "full"])
    windowed = WINDOWED["quick" if quick else "full"]
    threads = tuple(dict.fromkeys((perception.threads, 1)))
    timing = _measure(store_dir, encoders, queries, windowed, threads)
    ms = timing["ms"][str(perception.threads)]
    targets = [
        target("search_video_memory tool p95", ms["tool"]["p95"], TARGET_P95_MS, "ms", False),
        target("MemoryView.search p95", ms["search"]["p95"], TARGET_P95_MS, "ms", False),
        target("windowed MemoryView.search p95", ms["windowed"]["p95"], TARGET_P95_MS, "ms", False),
    ]
    return {
        "benchmark": "search",
        "quick": quick,
        "environment": environment(),
        "stream_s": SECONDS,
        "store": build,
        "queries": {"timed": len(queries), "windowed": windowed, "by_kind": _count(k for k, _ in queries)},
        **timing,
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "loadavg": {"start": list(loadavg_start), "end": list(os.getloadavg())},
        "seconds": time.perf_counter() - started,
    }


def _count(kinds: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind in kinds:
        out[kind] = out.get(kind, 0) + 1
    return out


# -- the store -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """The 3-hour store, built once and cached under the bench data folder, with what built it (`bench serve`
    serves the same one)."""

    perception: PerceptionConfig
    encoders: Encoders
    folder: Path  # <data>/bench: the cached store, prompt transcripts and clips
    transcripts: dict[str, list[dict[str, Any]]]  # each prompt's sentences, as Whisper heard them
    path: Path
    build: dict[str, Any]  # what it holds (`_build`)


def three_hour_store(shared: Path) -> Store:
    """The default encoders, loaded, and the store they built (built now if absent or unfinished)."""
    data_dir = bench_data_dir().resolve()
    folder = data_dir / "bench"
    perception = PerceptionConfig()
    quiet_model_loading(perception.threads)
    encoders = Encoders.from_config(perception, data_dir)
    transcripts = qs.prompt_transcripts(shared, encoders.speech, folder)
    path = folder / f"search-store-{SECONDS:.0f}s-v{BUILD_VERSION}"
    build = _build(shared, path, encoders, transcripts)
    return Store(perception, encoders, folder, transcripts, path, build)


def _build(
    shared: Path, store_dir: Path, encoders: Encoders, transcripts: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The cached store (built if absent or unfinished) and what it holds."""
    marker = store_dir / "built.json"
    if marker.is_file():
        return {**json.loads(marker.read_text()), "cached": True}
    shutil.rmtree(store_dir, ignore_errors=True)
    started = time.perf_counter()
    pool, labels, offsets = _pool(shared, encoders)
    frames, inserts = _timeline(shared, offsets)
    sentences, placed = _sentences(shared, transcripts)
    texts = sorted({s.text for s in sentences})
    embedded = dict(zip(texts, encoders.text.encode(texts), strict=True))
    config = MemoryConfig()
    memory = StreamMemory(config)
    noise = np.random.default_rng(AUGMENT_SEED)
    per_frame = pool.shape[1]
    with MemoryStore.open(store_dir) as store:
        with store.writer(STREAM, config=config, source="bench search", kind="file") as writer:
            sid = writer.stream_id
            s = 0
            for w0 in np.arange(0.0, SECONDS, WINDOW_S):
                w1 = min(w0 + WINDOW_S, SECONDS)
                ts = np.arange(w0, w1)  # the frames' times, 1 FPS
                tokens = pool[frames[int(w0) : int(w1)]]  # (n, tokens a frame, d)
                tokens = tokens + noise.normal(0.0, AUGMENT_SIGMA, tokens.shape).astype(np.float32)
                tokens /= np.linalg.norm(tokens, axis=2, keepdims=True)
                t0 = np.repeat(ts, per_frame)
                memory.write(tokens.reshape(-1, tokens.shape[2]), t0, t0 + 1.0, modality="visual")
                rows: list[Any] = [
                    FrameLabel(stream_id=sid, t=float(t), labels={"labels": labels[frames[int(t)]]})
                    for t in ts
                ]
                batch = []
                while s < len(sentences) and sentences[s].t0 < w1:
                    batch.append(sentences[s])
                    s += 1
                if batch:
                    memory.write(
                        np.stack([embedded[x.text] for x in batch]),
                        [x.t0 for x in batch],
                        [x.t1 for x in batch],
                        modality="audio",
                    )
                    rows += [_transcript_row(sid, x) for x in batch]
                with store.catalog.transaction() as session:
                    session.add_all(rows)
            memory.flush()
            info = writer.commit(
                memory.state_dict(copy=False), source_offset=SECONDS, source_state={"done": True}
            )
        built = {
            "build_s": time.perf_counter() - started,
            "distinct_frames": {clip: int(n) for clip, (_, n) in offsets.items()},
            "frames": len(frames),
            "inserts": inserts,
            "tokens_visual": info.tokens_visual,
            "tokens_audio": info.tokens_audio,
            "slots_visual": len(memory.banks["visual"]),
            "slots_audio": len(memory.banks["audio"]),
            "transcript_rows": len(sentences),
            "frame_label_rows": len(frames),
            "prompts_placed": placed,
            "distinct_sentences": len(texts),
            "checkpoint_bytes": info.bytes_stored,
            "config": "MemoryConfig() defaults: 16,384 visual + 4,096 audio slots, merge, TTT hf_cg",
        }
    marker.write_text(json.dumps(built))
    return {**built, "cached": False}


def _pool(shared: Path, encoders: Encoders) -> tuple[np.ndarray, list[list[list[Any]]], dict[str, tuple]]:
    """The distinct frames' tokens (P, tokens a frame, d), their labels, and each clip's (first, count)."""
    images, offsets = [], {}
    for clip, fps in POOL_FPS.items():
        frames = qs.clip_frames(shared, clip, fps)
        offsets[clip] = (len(images), len(frames))
        images += frames
    batch = PerceptionConfig().batch_frames
    encoded = [e for i in range(0, len(images), batch) for e in encoders.vision.encode(images[i : i + batch])]
    tokens = np.stack([e.tokens for e in encoded]).astype(np.float32)
    labels = [[[label, float(p)] for label, p in e.labels] for e in encoded]
    return tokens, labels, offsets


def _timeline(shared: Path, offsets: dict[str, tuple]) -> tuple[np.ndarray, int]:
    """The pool frame shown at each second: street runs from random points, with clips spliced between."""
    rng = np.random.default_rng(TIMELINE_SEED)
    total = int(SECONDS)
    out = np.empty(total, np.int64)
    street_first, street_n = offsets["street"]
    t, inserts = 0, 0
    while t < total:
        run = int(rng.uniform(*SCENE_S))
        start = rng.uniform(0, street_n / POOL_FPS["street"])
        for i in range(min(run, total - t)):
            out[t + i] = street_first + int((start + i) * POOL_FPS["street"]) % street_n
        t += run
        if t < total and rng.random() < INSERT_SHARE:
            clip = str(rng.choice(["teapot", "dice"]))
            first, n = offsets[clip]
            fps = POOL_FPS[clip]
            length = int(
                qs.clip_duration(shared, clip) * int(rng.integers(INSERT_LOOPS[0], INSERT_LOOPS[1] + 1))
            )
            phase = int(rng.integers(fps))
            for i in range(min(length, total - t)):
                out[t + i] = first + (phase + i * fps) % n
            t += length
            inserts += 1
    return out, inserts


def _sentences(shared: Path, transcripts: dict[str, list[dict[str, Any]]]) -> tuple[list[Segment], int]:
    """Every placed prompt's transcript at its place, cut into sentences as the pipeline cuts them; also how
    many prompts were placed."""
    track = PromptTrack(
        shared,
        SECONDS,
        qs.AUDIO_RATE,
        every_s=PROMPT_EVERY_S,
        first_s=FIRST_PROMPT_S,
        order_seed=PROMPT_ORDER_SEED,
        placement_seed=PLACEMENT_SEED,
        min_pause_s=MIN_PAUSE_S,
    )
    out = []
    for start, name in zip(track.starts, track.names, strict=True):
        at = start / track.rate
        for seg in transcripts[name]:
            words = tuple(Word(w, at + a, at + b, p) for w, a, b, p in seg["words"])
            segment = Segment(at + seg["t0"], at + seg["t1"], seg["text"], words, seg["language"])
            out += [x for x in split_sentences(segment) if x.text.strip() and x.t0 < SECONDS]
    return sorted(out, key=lambda x: x.t0), len(track.starts)


def _transcript_row(stream_id: str, segment: Segment) -> TranscriptSegment:
    return TranscriptSegment(
        stream_id=stream_id,
        t0=segment.t0,
        t1=max(segment.t1, segment.t0),
        text=segment.text.strip(),
        language=segment.language,
        words={"words": [{"w": w.text, "t0": w.t0, "t1": w.t1, "p": w.probability} for w in segment.words]},
    )


# -- the searches --------------------------------------------------------------------------------------------


def queries_of(transcripts: dict[str, list[dict[str, Any]]], n: int) -> list[tuple[str, str]]:
    """`n` different prompts (kind, text), the kinds taken in turn while each lasts: transcript sentences
    ("said"), bench qa's questions ("question") and descriptions of what the clips show ("seen")."""
    rng = np.random.default_rng(QUERY_SEED)
    said = sorted({seg["text"] for segs in transcripts.values() for seg in segs if len(seg["text"]) > 3})
    kinds = {
        "said": said,
        "question": [q.text for recipe in qs.STREAMS for q in recipe.questions],
        "seen": list(VISUAL_QUERIES),
    }
    queues = {kind: [texts[i] for i in rng.permutation(len(texts))] for kind, texts in kinds.items()}
    out: list[tuple[str, str]] = []
    while len(out) < n and any(queues.values()):
        for kind, queue in queues.items():
            if queue and len(out) < n:
                out.append((kind, queue.pop()))
    if len(out) < n:
        raise ValueError(f"only {len(out)} different prompts; {n} asked for")
    return out


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = 1e3 * np.asarray(seconds)
    return {
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
    }


KINDS = ("tool", "search", "windowed", "encode", "reader")


def _measure(
    store_dir: Path,
    encoders: Encoders,
    queries: list[tuple[str, str]],
    windowed: int,
    threads: tuple[int, ...],
) -> dict[str, Any]:
    """Per torch thread count: ms percentiles of each kind of call; the thread counts alternate call by call,
    so that a busy spell of the machine hits all alike."""
    times: dict[int, dict[str, list[float]]] = {n: {kind: [] for kind in KINDS} for n in threads}
    spans, evidence = [], []
    rng = np.random.default_rng(QUERY_SEED + 1)
    widths = rng.uniform(*WINDOW_RANGE_S, windowed)
    starts = rng.uniform(0.0, 1.0, windowed) * (SECONDS - widths)
    windows = list(zip(starts.tolist(), (starts + widths).tolist(), strict=True))
    with MemoryStore.open(store_dir) as store:
        view = MemoryView(store, encoders.text)
        tool = next(t for t in build_tools(view) if t.name == "search_video_memory")
        started = time.perf_counter()
        loaded = view.memory(STREAM)
        load_s = time.perf_counter() - started
        assert loaded is not None, "the bench store has no committed checkpoint"
        memory, info = loaded

        def timed(n: int, kind: str, fn: Any) -> Any:
            begun = time.perf_counter()
            out = fn()
            times[n][kind].append(time.perf_counter() - begun)
            return out

        try:
            for n in threads:  # warm-up, untimed
                torch.set_num_threads(n)
                view.search("people walking along a street", stream=STREAM, k=K)
                tool.invoke({"query": "someone says goodbye", "stream": STREAM, "k": K})
            for i, (_, text) in enumerate(queries):
                for n in threads:
                    torch.set_num_threads(n)
                    vector = timed(n, "encode", lambda text=text: view.encode(text))
                    timed(n, "reader", lambda vector=vector: memory.read(vector, k=K))
                    hits = timed(n, "search", lambda text=text: view.search(text, stream=STREAM, k=K))
                    timed(n, "tool", lambda text=text: tool.invoke({"query": text, "stream": STREAM, "k": K}))
                    if i < windowed:
                        a, b = windows[i]
                        timed(
                            n,
                            "windowed",
                            lambda text=text, a=a, b=b: view.search(text, stream=STREAM, start=a, end=b, k=K),
                        )
                spans += [h.t1 - h.t0 for h in hits]
                evidence += [len(h.evidence) for h in hits]
        finally:
            torch.set_num_threads(threads[0])
        slots = {m: len(memory.banks[m]) for m in ("visual", "audio")}
        view.close()
    return {
        "checkpoint": {"load_s": load_s, "seq": info.seq, "bytes": info.bytes_stored, "slots": slots},
        "threads": list(threads),
        "ms": {str(n): {kind: _percentiles(values) for kind, values in t.items()} for n, t in times.items()},
        "moments": {
            "span_s_mean": float(np.mean(spans)) if spans else 0.0,
            "span_s_max": float(np.max(spans)) if spans else 0.0,
            "evidence_lines_mean": float(np.mean(evidence)) if evidence else 0.0,
        },
    }


def render(result: dict[str, Any]) -> str:
    store, cp, threads = result["store"], result["checkpoint"], result["threads"]
    names = {
        "tool": "search_video_memory tool (k 5)",
        "search": "MemoryView.search (k 5)",
        "windowed": "MemoryView.search, 10-60 min window",
        "encode": "  of which: text encoding",
        "reader": "  of which: reader (StreamMemory.read)",
    }
    counts = {"windowed": result["queries"]["windowed"]}
    rows = [
        [label, str(counts.get(kind, result["queries"]["timed"]))]
        + [
            f"{ms[kind]['p50']:.1f} / {ms[kind]['p95']:.1f} / {ms[kind]['max']:.1f}"
            for ms in (result["ms"][str(n)] for n in threads)
        ]
        for kind, label in names.items()
    ]
    built = "cached" if store["cached"] else f"built in {store['build_s']:.0f} s"
    kinds = ", ".join(f"{n} {k}" for k, n in result["queries"]["by_kind"].items())
    columns = [f"{n} thread{'s' if n > 1 else ''}: p50 / p95 / max ms" for n in threads]
    return "\n".join(
        [
            f"bench search{' (quick)' if result['quick'] else ''}: a {result['stream_s'] / 3600:.0f}-hour "
            f"stream at 1 FPS ({built}): {store['tokens_visual']:,} visual tokens in "
            f"{cp['slots']['visual']:,} slots, {store['tokens_audio']:,} audio tokens in "
            f"{cp['slots']['audio']:,} slots; {store['frame_label_rows']:,} frame-label and "
            f"{store['transcript_rows']:,} transcript rows",
            render_environment(result["environment"]),
            f"checkpoint {cp['seq']} ({cp['bytes'] / 1e6:.1f} MB) loaded once in {cp['load_s'] * 1e3:.0f} "
            f"ms; prompts: {kinds}; torch threads alternate call by call: {', '.join(map(str, threads))}",
            "",
            format_table(["measure", "calls", *columns], rows),
            f"moments found: {result['moments']['span_s_mean']:.1f} s long on average "
            f"({result['moments']['span_s_max']:.0f} s at most), "
            f"{result['moments']['evidence_lines_mean']:.1f} evidence lines each",
            "",
            render_targets(result["targets"]),
            f"(targets at {threads[0]} threads, the settings' perception.threads, as `vsalmonn search` runs)",
            "",
            f"load average {render_loadavg(result['loadavg']['start'])} at start, "
            f"{render_loadavg(result['loadavg']['end'])} at end; ran in {result['seconds']:.0f} s",
        ]
    )
