"""The daemon's Ray backend on a real two-node Ray cluster on this machine (tests/ray_cluster.py), with the
throwaway PostgreSQL of tests/postgres.py as the catalog and a shared directory as the store.

Four streams of real speech run as actors spread over both nodes and must end with exactly the transcripts
and moments of a local-backend run of the same files; the second node's raylet is killed mid-ingest and its
streams must finish on the head without a duplicated transcript row or a gap in the checkpoint sequence; an
SQLite catalog across two nodes is refused with one line; SIGHUP reconciles a running `vsalmonn daemon`.
The cluster is started once for the module and stopped by its finalizer (and at exit, whatever happens).

In the default suite: the refusal (a two-node cluster started and stopped, about 20 s). `slow` (`pytest -m
slow tests/test_daemon_ray.py`): the four streams (about 70 s on 2 cores, most of it loading encoders in five
processes and ingesting 64 s of clips twice), the lost node and SIGHUP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.models import Checkpoint, Stream, TranscriptSegment
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import DaemonConfig, PerceptionConfig, StreamSpec
from vsalmonn.perception.daemon import Daemon, read_status
from vsalmonn.perception.pipeline import Encoders
from vsalmonn.settings import Settings
from vsalmonn.tools import MemoryView

from . import media, ray_cluster
from .conftest import sqlite_url
from .test_ingest import SHARED

ROOT = Path(__file__).resolve().parents[1]
MEMORY = MemoryConfig(visual_slots=256, audio_slots=64)
PERCEPTION = PerceptionConfig(language="en", threads=1)  # an actor reserves one CPU: one thread, as here
DAEMON = DaemonConfig(
    window_s=4, checkpoint_every_s=4, status_every_s=0.3, backend="ray", ray_num_cpus=1, ray_lock_wait_s=20
)
CLIP_S = 16.0
# Two short prompts per stream, each stream its own (a transcript landing in another stream's rows shows),
# each inside one 4 s window: speech cut by a window edge can trip Whisper's temperature fallback, which
# samples, and then two runs need not agree (the local daemon's streams share one model; actors do not).
PROMPTS = {
    "cam-a": [("tt-weasels.wav", 0.5), ("vm-goodbye.wav", 8.5)],
    "cam-b": [("conf-muted.wav", 0.5), ("conf-kicked.wav", 8.5)],
    "cam-c": [("vm-sorry.wav", 0.5), ("conf-locked.wav", 8.5)],
    "cam-d": [("vm-nobodyavail.wav", 0.5), ("vm-goodbye.wav", 12.5)],
}
QUERIES = ("weasels", "kicked out of the conference", "sorry", "nobody is available")

pytestmark = [
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared media folder {SHARED} is absent"),
    pytest.mark.postgresql,
]


def until(check: Callable[[], bool], within_s: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        time.sleep(every)


def build_clips(root: Path, seconds: float, only: list[str] | None = None) -> dict[str, Path]:
    out = {}
    for name, prompts in PROMPTS.items():
        if only is not None and name not in only:
            continue
        track, _ = media.speech_track([(SHARED / "speech" / f, at) for f, at in prompts], seconds, 48_000)
        out[name] = media.write_media(
            root / f"{name}.mp4", video_times=media.uniform_times(seconds, 2), rate=2, audio=track
        )
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_clips(tmp_path_factory.mktemp("clips"), CLIP_S)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ray_cluster.RayCluster]:
    """Head (4 logical CPUs: room for its own two streams and the second node's two after a loss) and a
    second node (2 CPUs, resource node2); the pytest process joins as a driver."""
    pytest.importorskip("ray")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with ray_cluster.joined_cluster(head_cpus=4, env=env, nodes=(("node2", 2),)) as started:
        yield started


def node_ids() -> dict[str, str]:
    """'head' and 'node2' to their Ray node ids (node2: the node with the node2 resource)."""
    import ray

    out = {}
    for node in ray.nodes():
        if node["Alive"] or node["Resources"].get("node2"):
            out["node2" if node["Resources"].get("node2") else "head"] = node["NodeID"]
    return out


def settings_for(data: Path, catalog_url: str, specs: list[StreamSpec], address: str) -> Settings:
    daemon = DAEMON.model_copy(update={"ray_address": address})
    return Settings(
        data_dir=data, memory=MEMORY, perception=PERCEPTION, daemon=daemon, streams=specs,
        store={"catalog_url": catalog_url, "retention": {"keep_last": 1000}},  # every checkpoint row kept
    )  # fmt: skip


def specs_of(clips: dict[str, Path]) -> list[StreamSpec]:
    return [StreamSpec(name=name, source=str(path)) for name, path in clips.items()]


def transcripts(store: MemoryStore) -> dict[str, list[tuple[float, float, str]]]:
    with store.catalog.session() as s:
        rows = s.execute(
            select(Stream.name, TranscriptSegment.t0, TranscriptSegment.t1, TranscriptSegment.text)
            .join(Stream, Stream.id == TranscriptSegment.stream_id)
            .order_by(Stream.name, TranscriptSegment.t0)
        ).all()
    out: dict[str, list[tuple[float, float, str]]] = {}
    for name, t0, t1, text in rows:
        out.setdefault(name, []).append((round(t0, 3), round(t1, 3), text))
    return out


def moments(store: MemoryStore, encoders: Encoders) -> list[tuple[str, str, float, float, float]]:
    view = MemoryView(store, encoders.text)
    return [
        (query, hit.stream, round(hit.t0, 3), round(hit.t1, 3), round(hit.score, 4))
        for query in QUERIES
        for hit in view.search(query, k=3)
    ]


def checkpoint_seqs(store: MemoryStore) -> dict[str, list[int]]:
    with store.catalog.session() as s:
        rows = s.execute(
            select(Stream.name, Checkpoint.seq).join(Stream, Stream.id == Checkpoint.stream_id)
        ).all()
    out: dict[str, list[int]] = {}
    for name, seq in rows:
        out.setdefault(name, []).append(seq)
    return {name: sorted(seqs) for name, seqs in out.items()}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> Encoders:
    return Encoders.from_config(PERCEPTION, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path], encoders: Encoders
) -> tuple[dict[str, list[tuple[float, float, str]]], list[tuple[str, str, float, float, float]]]:
    """The four streams through the local backend (one thread, as in an actor): their transcripts and the
    moments the reader finds for each query."""
    import torch

    data = tmp_path_factory.mktemp("local") / "data"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with MemoryStore(data) as store:
            daemon = Daemon(
                specs_of(clips), store=store, perception=PERCEPTION, memory=MEMORY,
                config=DAEMON.model_copy(update={"backend": "local"}), encoders=encoders,
            )  # fmt: skip
            assert daemon.run() == 0
            assert {r.stats.state for r in daemon.runners} == {"done"}
            return transcripts(store), moments(store, encoders)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def pg_url(postgres_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


def run_on_ray(settings: Settings, during: Callable[..., None] | None = None) -> tuple[object, MemoryStore]:
    from vsalmonn.ray_backend import RayDaemon

    store = MemoryStore.open(settings.data_dir, settings.store)
    daemon = RayDaemon(settings, store=store)
    daemon.start()
    try:
        if during is not None:
            during(daemon, store)
        assert daemon.wait(240), "streams still running after 240 s"
    finally:
        daemon.shutdown()
    return daemon, store


# -- four streams over two nodes -------------------------------------------------------------------------


@pytest.mark.slow  # about 80 s on 2 busy cores: a local run and a Ray run of four streams
def test_four_streams_over_two_nodes_equal_a_local_run(
    cluster: ray_cluster.RayCluster,
    clips: dict[str, Path],
    reference,
    encoders: Encoders,
    pg_url: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path / "data", pg_url, specs_of(clips), cluster.address)
    placed: dict[str, dict[str, object]] = {}

    def where(daemon, store) -> None:  # type: ignore[no-untyped-def]
        placed.update(daemon.where())

    daemon, store = run_on_ray(settings, where)
    with store:
        ids = node_ids()
        on = {name: p["node_id"] for name, p in placed.items()}
        assert sorted(on.values()) == sorted([ids["head"], ids["head"], ids["node2"], ids["node2"]]), on
        assert {n: s for n, s, _ in daemon.outcomes()} == dict.fromkeys(PROMPTS, "done")
        status = {e["stream"]: e for e in read_status(store)}
        assert {status[n]["detail"]["node"] for n in PROMPTS} == set(ids.values())
        assert all(status[n]["state"] == "done" for n in PROMPTS)
        expected_transcripts, expected_moments = reference
        assert transcripts(store) == expected_transcripts
        assert moments(store, encoders) == expected_moments


# -- SQLite across two nodes -----------------------------------------------------------------------------


def test_an_sqlite_catalog_across_two_nodes_is_refused_in_one_line(
    cluster: ray_cluster.RayCluster, clips: dict[str, Path], tmp_path: Path
) -> None:
    import ray

    from vsalmonn.ray_backend import RayBackendError, RayDaemon

    for url in (None, sqlite_url(tmp_path / "cat.sqlite")):
        store_config = {} if url is None else {"catalog_url": url}
        settings = Settings(
            data_dir=tmp_path / "data", daemon=DAEMON.model_copy(update={"ray_address": cluster.address}),
            streams=specs_of(clips), store=store_config,
        )  # fmt: skip
        with MemoryStore.open(settings.data_dir, settings.store) as store:
            daemon = RayDaemon(settings, store=store)
            with pytest.raises(RayBackendError, match="on 2 nodes needs a catalog every node reaches") as got:
                daemon.start()
        assert "\n" not in str(got.value)
        assert not [a for a in ray.util.list_named_actors() if a.startswith("vsalmonn-stream-")]

    config = tmp_path / "vsalmonn.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "cli"}"\n[daemon]\nbackend = "ray"\nray_address = "{cluster.address}"\n'
        f'[[streams]]\nname = "cam-a"\nsource = "{clips["cam-a"]}"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "vsalmonn", "daemon", "--config", str(config)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("vsalmonn: daemon.backend 'ray' on 2 nodes needs a catalog every node reaches"), (
        last
    )


# -- SIGHUP ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # about 35 s: a CLI daemon, three actors loading their encoders
def test_sighup_reconciles_the_running_streams(
    cluster: ray_cluster.RayCluster, pg_url: str, tmp_path: Path
) -> None:
    """Two watched folders (they run until stopped); the file then swaps one for another and SIGHUP makes
    the daemon stop the removed one (checkpointed) and start the new one; SIGTERM ends it with status 0."""
    folders = {name: tmp_path / name for name in ("w1", "w2", "w3")}
    for folder in folders.values():
        folder.mkdir()
    config = tmp_path / "vsalmonn.toml"

    def write(names: list[str]) -> None:
        streams = "".join(
            f'[[streams]]\nname = "{n}"\nsource = "{folders[n]}"\nkind = "folder"\n' for n in names
        )
        config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n[store]\ncatalog_url = "{pg_url}"\n'
            '[perception]\nlanguage = "en"\nthreads = 1\n'
            f'[daemon]\nbackend = "ray"\nray_address = "{cluster.address}"\nstatus_every_s = 0.3\n'
            f"poll_s = 0.3\n{streams}"
        )

    write(["w1", "w2"])
    log = (tmp_path / "daemon.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "vsalmonn", "daemon", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        with MemoryStore.open(tmp_path / "data", Settings(store={"catalog_url": pg_url}).store) as store:

            def states() -> dict[str, str]:
                return {e["stream"]: e["state"] for e in read_status(store)}

            until(lambda: states() == {"w1": "running", "w2": "running"}, 120, "w1 and w2 running")
            write(["w2", "w3"])
            process.send_signal(signal.SIGHUP)
            until(lambda: states() == {"w1": "stopped", "w2": "running", "w3": "running"}, 120, "reconciled")
            pid_w2 = {e["stream"]: e["pid"] for e in read_status(store)}["w2"]
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
            assert code == 0, (tmp_path / "daemon.log").read_text()[-4000:]
            assert states() == {"w1": "stopped", "w2": "stopped", "w3": "stopped"}
            assert {e["stream"]: e["pid"] for e in read_status(store)}["w2"] == pid_w2  # never restarted
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert "SIGHUP received" in text and "1 started, 1 stopped" in text, text[-3000:]


# -- a lost node (last: the second node stays dead) ------------------------------------------------------


@pytest.mark.slow  # about 60-80 s on 2 busy cores: four 40 s streams, two of them restarted
def test_a_lost_node_s_streams_restart_on_the_head_and_finish(
    cluster: ray_cluster.RayCluster,
    reference,  # type: ignore[no-untyped-def]
    pg_url: str,
    tmp_path: Path,
) -> None:
    """The clips of the other tests with 24 s of silence more, so that the kill lands mid-ingest on any
    machine (the speech, and so the transcript, is the same: silence makes no transcript rows)."""
    clips = build_clips(tmp_path, CLIP_S + 24)
    settings = settings_for(tmp_path / "data", pg_url, specs_of(clips), cluster.address)
    seen: dict[str, object] = {}

    def kill_mid_ingest(daemon, store) -> None:  # type: ignore[no-untyped-def]
        ids = node_ids()
        placed = daemon.where()
        lost = sorted(n for n, p in placed.items() if p["node_id"] == ids["node2"])
        assert len(lost) == 2, placed

        def committed() -> bool:
            seqs = checkpoint_seqs(store)
            return all(seqs.get(n) for n in lost)

        until(committed, 120, "a checkpoint of each stream on node2", every=0.05)
        status = {e["stream"]: e for e in read_status(store)}
        assert all(status[n]["state"] != "done" for n in lost), "too late: node2's streams ended first"
        cluster.nodes[0].kill_raylet()
        seen.update(lost=lost, ids=ids, at_kill=checkpoint_seqs(store))

    daemon, store = run_on_ray(settings, kill_mid_ingest)
    with store:
        ended = {name: (state, error) for name, state, error in daemon.outcomes()}
        assert ended == dict.fromkeys(PROMPTS, ("done", None)), ended
        ids, lost = seen["ids"], seen["lost"]
        for name in lost:
            result = daemon.streams[name].result
            assert result["restarted"] and result["node_id"] == ids["head"], result
        seqs = checkpoint_seqs(store)
        for name, got in seqs.items():
            assert got == list(range(1, len(got) + 1)), (name, got)  # unbroken
        for name in lost:
            assert len(seqs[name]) > len(seen["at_kill"][name])  # the restarted actor went on committing
        got = transcripts(store)
        for name, rows in got.items():
            assert len({r[0] for r in rows}) == len(rows), (name, rows)  # no duplicated row
        assert got == reference[0]
        # A killed actor can leave at most the group it was writing (no row names it); garbage collection
        # takes that and nothing else, after which every group on disk has its row and every row its group.
        removed = store.collect_garbage(min_age_s=0.0)
        assert len(removed) <= len(lost), removed
        with store.catalog.session() as s:
            committed = {store.groups.key_of(p) for p in s.scalars(select(Checkpoint.path))}
        assert {entry.key for entry in store.groups.groups(None)} == committed
