"""``vsalmonn bench serve``: `vsalmonn serve`'s REST search against the in-process reader, under load, and
what serving costs a live stream being ingested, side by side in one run.

1. **REST against in-process** (the 3-hour store of ``bench search``, built once and shared with it): a
   `vsalmonn serve` subprocess over that store (as a deployment runs it beside the daemon), and in this
   process a `MemoryView` of the same store. For each of N prompts (full 200, ``--quick`` 50; the prompts of
   ``bench search``), one after the other: `MemoryView.search` (k 5) here, then ``GET /api/search`` (k 5) over
   a kept-alive httpx connection to the server. The two alternate call by call, so that a busy spell of the
   machine hits both alike; the REST figure is what a client sees: HTTP, FastAPI's validation, the JSON of
   ``search --json`` (built by `reports.search_result`, the evidence lines included) and its parse.
2. **20 concurrent clients for 30 s** (``--quick``: 10 s) on the same server: 20 threads, each with its own
   connection, each sending its next search as soon as the last answered (prompts drawn from the same list,
   one random stream window in four). Reported: requests, errors (any status but 200, or a transport error),
   latency p50 / p95 / max, requests per second.
3. **A live source, ingested alone and while served** (the MPEG-TS clip and source of ``bench live``:
   street footage with speech, released over HTTP at real time by ``tests/stream_server``; the real daemon,
   default settings, 1 FPS): twice, in a fresh store each time, a warm-up of 15 s then a period of 120 s
   (``--quick``: 45 s) sampled every 0.5 s. The second time the REST server runs in the daemon's process,
   as ``vsalmonn daemon --serve`` runs it, with a dashboard's load on it: ``GET /api/streams`` every 2 s,
   a search every 2 s (the page's search box, used without a pause), and an open ``/api/events/stream``
   feed. A live source arrives at real time, so the ingest's speed is the frames it writes a second (the
   target), with ``lag_s`` and drops beside it: a pipeline that cannot keep up drops frames and lags.

Targets (issue 16): REST search p95 ≤ 1.5x in-process `MemoryView.search` and ≤ 60 ms; 20 clients: 0
errors; serving: frames written a second ≥ 90 % of the stream's alone, on the same source.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from vsalmonn.cli.output import format_table
from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import DaemonConfig, PerceptionConfig, StreamSpec
from vsalmonn.perception.daemon import Daemon
from vsalmonn.perception.pipeline import Encoders
from vsalmonn.settings import Settings
from vsalmonn.tools.memory_view import MemoryView

from . import live, search
from ._harness import (
    checkout_module,
    environment,
    render_environment,
    render_load_span,
    render_targets,
    render_verdict,
    shared_media,
    target,
)

K = 5
PROMPTS = {"full": 200, "quick": 50}
CLIENTS = 20
CONCURRENT_S = {"full": 30.0, "quick": 10.0}
LIVE_PERIOD_S = {"full": 120.0, "quick": 45.0}
DASHBOARD_EVERY_S = 2.0
SERVER_START_S = 120.0  # the server loads no model before its first search, but imports torch and FastAPI
SEED = 41

TARGET_RATIO = 1.5
TARGET_P95_MS = 60.0
TARGET_INGEST_SHARE = 0.9


def run(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    loadavg_start = os.getloadavg()
    size = "quick" if quick else "full"
    shared = shared_media("serve", checkout=("media", "stream_server"))
    store = search.three_hour_store(shared)
    perception, encoders, folder = store.perception, store.encoders, store.folder
    store_dir, build = store.path, store.build
    prompts = [text for _, text in search.queries_of(store.transcripts, PROMPTS[size])]

    with _Server(store_dir, perception) as server:
        side_by_side = _side_by_side(store_dir, encoders, server.url, prompts)
        concurrent = _concurrent(server.url, prompts, CONCURRENT_S[size])
    clip = live._clip(shared, folder, live.WARMUP_S + LIVE_PERIOD_S[size] + live.MARGIN_S)
    ingest = {
        name: _live_ingest(Path(clip["path"]), encoders, perception, LIVE_PERIOD_S[size], served=served)
        for name, served in (("alone", False), ("served", True))
    }
    alone, served = ingest["alone"]["figures"], ingest["served"]["figures"]
    share = served["frames_per_s"] / alone["frames_per_s"] if alone["frames_per_s"] else 0.0
    rest, local = side_by_side["rest"], side_by_side["in_process"]
    targets = [
        target("REST search p95 / in-process p95", rest["p95"] / local["p95"], TARGET_RATIO, "x", False),
        target("REST search p95", rest["p95"], TARGET_P95_MS, "ms", False),
        target(f"{CLIENTS} concurrent clients: errors", concurrent["errors"], 0, "requests", False),
        target("live ingest while served: frames/s share of alone", share, TARGET_INGEST_SHARE, "", True),
    ]
    return {
        "benchmark": "serve",
        "quick": quick,
        "environment": environment(),
        "store": {
            "stream_s": search.SECONDS,
            "tokens_visual": build["tokens_visual"],
            "tokens_audio": build["tokens_audio"],
            "cached": build["cached"],
        },
        "prompts": len(prompts),
        "side_by_side": side_by_side,
        "concurrent": concurrent,
        "clip": {k: v for k, v in clip.items() if k != "path"},
        "ingest": ingest,
        "ingest_share": share,
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "loadavg": {"start": list(loadavg_start), "end": list(os.getloadavg())},
        "seconds": time.perf_counter() - started,
    }


# -- the server ----------------------------------------------------------------------------------------------


class _Server:
    """`vsalmonn serve` over `data` in a subprocess, on a free loopback port; stopped with SIGTERM."""

    def __init__(self, data: Path, perception: PerceptionConfig) -> None:
        self.data, self.threads = data, perception.threads
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> _Server:
        env = {**os.environ, "VSALMONN_PERCEPTION__THREADS": str(self.threads)}
        command = [sys.executable, "-m", "vsalmonn", "--data", str(self.data), "serve", "--port", "0"]
        self._process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self._process.stderr is not None
        line = self._process.stderr.readline()  # "vsalmonn: serving DIR on http://127.0.0.1:PORT (no token)"
        found = re.search(r" on (http://\S+) ", line)
        if found is None:
            self.__exit__()
            raise RuntimeError(f"vsalmonn serve did not start: {line.strip() or 'no output'}")
        self.url = found.group(1)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"vsalmonn serve at {self.url} was not ready in {SERVER_START_S:.0f} s")
            time.sleep(0.2)

    def _drain(self) -> None:
        """Read the server's stderr so that a chatty server never blocks on a full pipe."""
        assert self._process is not None and self._process.stderr is not None
        for _ in self._process.stderr:
            pass

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = 1e3 * np.asarray(seconds)
    if not ms.size:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "max": 0.0, "mean": 0.0}
    return {
        "n": int(ms.size),
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
    }


# -- 1. REST against in-process ------------------------------------------------------------------------------


def _side_by_side(store_dir: Path, encoders: Encoders, url: str, prompts: list[str]) -> dict[str, Any]:
    """ms percentiles of `MemoryView.search` here and of ``GET /api/search`` there, call by call."""
    local: list[float] = []
    rest: list[float] = []
    agree = 0
    with MemoryStore.open(store_dir) as store, httpx.Client(base_url=url, timeout=60) as client:
        view = MemoryView(store, encoders.text)
        try:
            for warm in ("people walking along a street", "someone says goodbye"):  # untimed
                view.search(warm, stream=search.STREAM, k=K)
                client.get("/api/search", params={"q": warm, "stream": search.STREAM, "k": K})
            for text in prompts:
                begun = time.perf_counter()
                hits = view.search(text, stream=search.STREAM, k=K)
                local.append(time.perf_counter() - begun)
                begun = time.perf_counter()
                response = client.get("/api/search", params={"q": text, "stream": search.STREAM, "k": K})
                moments = response.json()["moments"]
                rest.append(time.perf_counter() - begun)
                response.raise_for_status()
                agree += [(m["t0"], m["t1"]) for m in moments] == [(h.t0, h.t1) for h in hits]
        finally:
            view.close()
    return {
        "in_process": _percentiles(local),
        "rest": _percentiles(rest),
        "same_moments": agree,
        "calls": len(prompts),
    }


# -- 2. concurrent clients -----------------------------------------------------------------------------------


def _concurrent(url: str, prompts: list[str], seconds: float) -> dict[str, Any]:
    """`CLIENTS` threads searching back to back for `seconds`: latencies, errors, throughput."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors: list[list[str]] = [[] for _ in range(CLIENTS)]
    start = threading.Barrier(CLIENTS + 1)
    deadline: list[float] = []

    def client(i: int) -> None:
        rng = random.Random(SEED + i)
        with httpx.Client(base_url=url, timeout=60) as http:
            start.wait()
            while time.monotonic() < deadline[0]:
                params: dict[str, Any] = {"q": rng.choice(prompts), "stream": search.STREAM, "k": K}
                if rng.random() < 0.25:
                    a = rng.uniform(0.0, search.SECONDS - 3600.0)
                    params.update(start=a, end=a + rng.uniform(600.0, 3600.0))
                begun = time.perf_counter()
                try:
                    response = http.get("/api/search", params=params)
                    response.json()
                    if response.status_code != 200:
                        errors[i].append(f"{response.status_code}: {response.text[:100]}")
                except (httpx.HTTPError, ValueError) as exc:
                    errors[i].append(f"{type(exc).__name__}: {exc}")
                latencies[i].append(time.perf_counter() - begun)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    deadline.append(time.monotonic() + seconds)
    begun = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join(seconds + 120)
    wall = time.perf_counter() - begun
    flat = [x for per in latencies for x in per]
    failed = [x for per in errors for x in per]
    return {
        "clients": CLIENTS,
        "seconds": seconds,
        "requests": len(flat),
        "errors": len(failed),
        "first_errors": failed[:3],
        "requests_per_s": len(flat) / wall if wall > 0 else 0.0,
        "ms": _percentiles(flat),
    }


# -- 3. a live source, alone and while served ----------------------------------------------------------------


class _Dashboard:
    """A page's load on a server: the streams every 2 s, a search every 2 s, and an open event feed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.calls: dict[str, list[float]] = {"streams": [], "search": []}
        self.errors: list[str] = []
        self.feed_open = False
        self._threads = [
            threading.Thread(target=self._poll, args=("streams",), daemon=True),
            threading.Thread(target=self._poll, args=("search",), daemon=True),
            threading.Thread(target=self._feed, daemon=True),
        ]

    def __enter__(self) -> _Dashboard:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads[:2]:
            thread.join(60)

    def _poll(self, what: str) -> None:
        rng = random.Random(SEED)
        words = ("a person walking", "someone says goodbye", "a car", "people talking", "a street")
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while not self.stop.wait(DASHBOARD_EVERY_S):
                begun = time.perf_counter()
                try:
                    if what == "streams":
                        response = http.get("/api/streams")
                    else:
                        response = http.get("/api/search", params={"q": rng.choice(words), "k": K})
                    if response.status_code not in (200, 503):  # 503: no checkpoint committed yet
                        self.errors.append(f"{what} {response.status_code}: {response.text[:100]}")
                except httpx.HTTPError as exc:
                    self.errors.append(f"{what}: {type(exc).__name__}: {exc}")
                self.calls[what].append(time.perf_counter() - begun)

    def _feed(self) -> None:
        try:
            with (
                httpx.Client(base_url=self.url, timeout=httpx.Timeout(60, read=None)) as http,
                http.stream("GET", "/api/events/stream") as response,
            ):
                self.feed_open = response.status_code == 200
                for _ in response.iter_lines():
                    if self.stop.is_set():
                        return
        except httpx.HTTPError as exc:
            if not self.stop.is_set():
                self.errors.append(f"feed: {type(exc).__name__}: {exc}")


def _live_ingest(
    clip: Path, encoders: Encoders, perception: PerceptionConfig, period: float, *, served: bool
) -> dict[str, Any]:
    """`bench live`'s measure of one live stream, in a fresh store; `served`: with the REST server in the
    daemon's process under a dashboard's load, as ``vsalmonn daemon --serve``."""
    from vsalmonn.serve.server import Background, bind, make_server, url_of

    stream_server = checkout_module("stream_server")
    dashboard: _Dashboard | None = None
    with (
        tempfile.TemporaryDirectory(prefix="vsalmonn-bench-serve-") as tmp,
        MemoryStore(Path(tmp)) as store,
        stream_server.StreamServer(clip) as source,
    ):
        background = None
        if served:
            settings = Settings(data_dir=Path(tmp), perception=perception)
            sock = bind("127.0.0.1", 0)
            background = Background(make_server(settings, text_encoder=encoders.text), sock)
            dashboard = _Dashboard(url_of(sock)).__enter__()
        spec = StreamSpec(name=live.STREAM, source=source.url, options=live.FAST_START)
        daemon = Daemon(
            [spec], store=store, perception=perception, memory=MemoryConfig(), config=DaemonConfig(),
            encoders=encoders, data_dir=Path(tmp),
        )  # fmt: skip
        begun = time.monotonic()
        daemon.start()
        runner = daemon.runners[0]
        try:
            while runner.stats.frames == 0:
                if not runner.is_alive() or time.monotonic() - begun > live.FIRST_FRAME_WITHIN_S:
                    raise RuntimeError(f"no frame from {source.url} (last error: {runner.stats.last_error})")
                time.sleep(0.05)
            time.sleep(live.WARMUP_S)
            with live._WriteWatcher(runner.stats) as watcher:
                samples = live._sample(runner, period, watcher)
        finally:
            daemon.shutdown()
            if dashboard is not None:
                dashboard.__exit__()
            if background is not None:
                background.stop()
    figures = live._figures(samples, watcher.writes, perception.fps)
    out: dict[str, Any] = {
        "served": served,
        "figures": {k: v for k, v in figures.items() if k != "writes"},
    }
    if dashboard is not None:
        out["dashboard"] = {
            "streams_ms": _percentiles(dashboard.calls["streams"]),
            "search_ms": _percentiles(dashboard.calls["search"]),
            "feed_open": dashboard.feed_open,
            "errors": len(dashboard.errors),
            "first_errors": dashboard.errors[:3],
        }
    return out


# -- the table -----------------------------------------------------------------------------------------------


def _ms(row: dict[str, float]) -> str:
    return f"{row['p50']:.1f} / {row['p95']:.1f} / {row['max']:.1f}"


def render(result: dict[str, Any]) -> str:
    side, conc, store = result["side_by_side"], result["concurrent"], result["store"]
    rows = [
        ["MemoryView.search, in process (k 5)", str(side["calls"]), _ms(side["in_process"])],
        ["GET /api/search, vsalmonn serve (k 5)", str(side["calls"]), _ms(side["rest"])],
        [
            f"GET /api/search, {conc['clients']} clients at once for {conc['seconds']:.0f} s",
            str(conc["requests"]),
            _ms(conc["ms"]),
        ],
    ]
    live_rows = []
    for key in ("alone", "served"):
        run_ = result["ingest"][key]
        f = run_["figures"]
        live_rows.append(
            [
                "while served (dashboard load)" if run_["served"] else "alone",
                f"{f['frames_per_s']:.3f}",
                f"{f['lag_p50_s']:.2f} / {f['lag_p95_s']:.2f} / {f['lag_max_s']:.2f}",
                str(f["drops"]),
                str(f["segments"]),
            ]
        )
    dash = result["ingest"]["served"].get("dashboard", {})
    return "\n".join(
        [
            f"bench serve{' (quick)' if result['quick'] else ''}: the {store['stream_s'] / 3600:.0f}-hour "
            f"store of bench search ({store['tokens_visual']:,} visual, {store['tokens_audio']:,} audio "
            f"tokens{', cached' if store['cached'] else ''}); {result['prompts']} prompts",
            render_environment(result["environment"]),
            "",
            format_table(["measure", "calls", "p50 / p95 / max ms"], rows),
            f"same moments from both: {side['same_moments']} of {side['calls']}; {conc['clients']} clients: "
            f"{conc['requests_per_s']:.1f} requests/s, {conc['errors']} errors",
            "",
            f"a live source (bench live's clip at real time, 1 FPS), {result['ingest_share']:.1%} of its "
            "frames/s alone while served:",
            format_table(["ingest", "frames/s", "lag p50 / p95 / max s", "drops", "segments"], live_rows),
            f"dashboard while served: /api/streams p95 {dash.get('streams_ms', {}).get('p95', 0):.0f} ms, "
            f"search p95 {dash.get('search_ms', {}).get('p95', 0):.0f} ms, event feed "
            f"{'open' if dash.get('feed_open') else 'NOT open'}, {dash.get('errors', 0)} errors",
            "",
            render_targets(result["targets"]),
            render_load_span(result["loadavg"]),
            render_verdict(result),
        ]
    )
