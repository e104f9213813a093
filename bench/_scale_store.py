"""`bench scale`'s checkpoint figure: the full memory of `bench checkpoint` written to local disk and to S3.

The memory is `bench checkpoint`'s own (`_full_memory`: the `MemoryConfig()` defaults, both banks full).
Round by round, so that a busy machine slows both alike, one `StreamWriter.commit` goes to a local store
(Zarr group, fsync, rename, catalog row) and one to a store whose `checkpoints_url` is ``s3://`` on moto's S3
server on loopback (group under a fresh key, one PUT per object, catalog row); each is then loaded back with
`load_latest` (read + checksum). The requests moto answers are counted by method for the last round's S3
write (which includes retention's deletion of the oldest group) and load. moto runs in this process
(`ThreadedMotoServer`): its Python request handling shares the CPU with the writer, which a real object
store on another machine would not.

Target (issue 19): the write to loopback S3 ≤ 2× the local-disk write.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from vsalmonn.cli.output import format_table
from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.config import S3Options, StoreConfig
from vsalmonn.memory_store.store import MemoryStore

from ._harness import median, target
from .checkpoint import _full_memory

STREAM = "bench-scale-checkpoint"
BUCKET = "vsalmonn-bench"
TARGET_RATIO = 2.0


def _repeats(quick: bool) -> dict[str, int]:
    return {"warmup": 1, "timed": 3} if quick else {"warmup": 2, "timed": 10}


def measure_checkpoint(quick: bool) -> dict[str, Any]:
    """Median write and load times of the full memory, local disk against loopback S3 (moto)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request at INFO
    reps = _repeats(quick)
    started = time.perf_counter()
    config = MemoryConfig()
    memory = _full_memory(config)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    seen: list[str] = []  # the methods of the requests moto answers, in order
    app = server._server.app  # type: ignore[union-attr]  # werkzeug serves `server.app`

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ["REQUEST_METHOD"])
        return app(environ, start_response)

    server._server.app = counting  # type: ignore[union-attr]
    requests: dict[str, dict[str, int]] = {}
    data = Path(tempfile.mkdtemp(prefix="vsalmonn-bench-scale-"))
    times: dict[str, list[float]] = {k: [] for k in ("local_write", "local_load", "s3_write", "s3_load")}
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=30):
            pass
        s3 = StoreConfig(
            checkpoints_url=f"s3://{BUCKET}/checkpoints",
            s3=S3Options(
                endpoint_url=endpoint,
                region="us-east-1",
                access_key_id="bench",  # type: ignore[arg-type]  # moto accepts any credentials
                secret_access_key="bench",  # type: ignore[arg-type]
            ),
        )
        stores = {
            "local": MemoryStore.open(data / "local", StoreConfig()),
            "s3": MemoryStore.open(data / "s3", s3),
        }
        sizes: dict[str, int] = {}
        try:
            writers = {k: store.writer(STREAM, config=config) for k, store in stores.items()}
            for rnd in range(reps["warmup"] + reps["timed"]):
                for kind in ("local", "s3"):
                    seen.clear()
                    t0 = time.perf_counter()
                    info = writers[kind].commit(memory.state_dict(copy=False))
                    t1 = time.perf_counter()
                    written = list(seen)
                    loaded = stores[kind].load_latest(STREAM)
                    t2 = time.perf_counter()
                    if kind == "s3":
                        requests = {"write": _by_method(written), "load": _by_method(seen[len(written) :])}
                    assert loaded is not None and loaded[1].seq == info.seq
                    sizes[kind] = info.bytes_stored
                    if rnd >= reps["warmup"]:
                        times[f"{kind}_write"].append(1e3 * (t1 - t0))
                        times[f"{kind}_load"].append(1e3 * (t2 - t1))
            for writer in writers.values():
                writer.close()
        finally:
            for store in stores.values():
                store.close()
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    summary = {k: median(v) for k, v in times.items()}
    summary["write_ratio"] = summary["s3_write"] / summary["local_write"]
    summary["load_ratio"] = summary["s3_load"] / summary["local_load"]
    targets = [target("S3 write / local write", summary["write_ratio"], TARGET_RATIO, "x", at_least=False)]
    return {
        "measure": "checkpoint",
        "quick": quick,
        "repeats": reps,
        "bytes_stored": sizes,
        "requests": requests,
        "summary": summary,
        "samples_ms": times,
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "seconds": time.perf_counter() - started,
    }


def _by_method(methods: list[str]) -> dict[str, int]:
    return {m: methods.count(m) for m in sorted(set(methods))}


def render_checkpoint(result: dict[str, Any]) -> list[str]:
    """The figure's lines for `bench scale`'s report."""
    s, mb = result["summary"], 1e6
    rows = [
        ["local disk (group + fsync + rename + row)", f"{s['local_write']:.0f}", f"{s['local_load']:.0f}"],
        ["loopback S3, moto (fresh key + row)", f"{s['s3_write']:.0f}", f"{s['s3_load']:.0f}"],
        ["S3 / local", f"{s['write_ratio']:.2f}x", f"{s['load_ratio']:.2f}x"],
    ]
    verdict = "pass" if result["all_pass"] else "FAIL"
    return [
        f"checkpoint of the full default memory ({result['bytes_stored']['local'] / mb:.1f} MB stored), "
        f"median of {result['repeats']['timed']} after {result['repeats']['warmup']} warm-up:",
        *format_table(["store", "write ms", "load ms"], rows).splitlines(),
        *(
            f"S3 requests, last round's {what}: "
            + ", ".join(f"{n} {m}" for m, n in result.get("requests", {}).get(what, {}).items())
            for what in ("write", "load")
        ),
        f"target: S3 write ≤ {TARGET_RATIO:g}x local write: {s['write_ratio']:.2f}x, {verdict}",
    ]
