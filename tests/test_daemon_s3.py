"""The local daemon with checkpoints in S3 (moto's real server on loopback, tests/s3_server.py): an object
store lost mid-stream, several streams against S3 and the PostgreSQL catalog of tests/postgres.py, and the
query commands run from another node (another data directory) against that shared store and catalog.

Real clips with speech (the prompts of tests/test_daemon_ray.py), real encoders, real moto and PostgreSQL.
In the default suite: the lost store (one 16 s stream) and, from the other node, `status` and `search` (two
processes) and `serve`; `slow` (`pytest -m slow`): the other node's `ask` (its process loads the embedded
LLM, ~30 s) and four streams, equal to a run of the same files on local storage.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import DaemonConfig, PerceptionConfig, StreamSpec
from vsalmonn.perception.daemon import Daemon, read_status
from vsalmonn.perception.pipeline import Encoders
from vsalmonn.settings import DATA_ENV

from . import postgres, s3_server
from .test_daemon_ray import MEMORY, PROMPTS, build_clips, checkpoint_seqs, moments, transcripts
from .test_ingest import SHARED
from .test_memory import assert_states_equal
from .test_store_s3 import PREFIX, _toml, groups_of, s3_config

ROOT = Path(__file__).resolve().parents[1]
PERCEPTION = PerceptionConfig(language="en", threads=1)  # as the Ray tests' reference: one thread
DAEMON = DaemonConfig(window_s=4, checkpoint_every_s=4, status_every_s=0.3)
CLIP_S = 16.0

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared media folder {SHARED} is absent")


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> Encoders:
    return Encoders.from_config(PERCEPTION, tmp_path_factory.mktemp("models"))


class _Clips(dict[str, Path]):
    """The clips of tests/test_daemon_ray.py, each made when first asked for (the default suite needs one)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        made = build_clips(self.root, CLIP_S, only=[name])[name]
        self[name] = made
        return made


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> _Clips:
    return _Clips(tmp_path_factory.mktemp("clips"))


def run_daemon(store: MemoryStore, specs: list[StreamSpec], encoders: Encoders) -> Daemon:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(PERCEPTION.threads)
    try:
        daemon = Daemon(
            specs, store=store, perception=PERCEPTION, memory=MEMORY, config=DAEMON, encoders=encoders
        )
        assert daemon.run() == 0
    finally:
        torch.set_num_threads(threads)
    assert {r.spec.name: r.stats.state for r in daemon.runners} == {s.name: "done" for s in specs}
    return daemon


def specs_of(clips: dict[str, Path], names: list[str]) -> list[StreamSpec]:
    return [StreamSpec(name=n, source=str(clips[n])) for n in names]


class _Outage(logging.Handler):
    """Cuts the S3 endpoint when the first checkpoint is committed, and restores it when the stream has
    reported the checkpoint that failed meanwhile: the store is away for exactly one checkpoint."""

    def __init__(self, endpoint: s3_server.Endpoint) -> None:
        super().__init__(logging.INFO)
        self.endpoint = endpoint
        self.records: list[logging.LogRecord] = []
        self.cut = self.restored = False

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        message = record.getMessage()
        if not self.cut and "checkpoint 1 committed" in message:
            self.cut = True
            self.endpoint.cut()
        elif self.cut and not self.restored and "checkpoint not committed" in message:
            self.restored = True
            self.endpoint.restore()


@dataclass
class Faulted:
    """cam-a ingested by node a into a bucket (and a PostgreSQL catalog, where the server binaries are
    here) with the endpoint cut for one checkpoint; what it logged and left."""

    bucket: str
    catalog_url: str | None
    outage: _Outage
    stats: Any
    state: dict[str, Any]
    last: Any
    seqs: list[int]
    transcripts: dict[str, list[tuple[float, float, str]]]
    committed: set[str | None]
    left: list[str]
    first: dict[str, Any]
    node_b: Path
    settings: Path | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.settings is not None
        return _cli(*args, "--data", str(self.node_b), "--config", str(self.settings), cwd=self.node_b)


@pytest.fixture(scope="module")
def faulted(
    request: pytest.FixtureRequest,
    s3: s3_server.S3Server,
    clips: dict[str, Path],
    encoders: Encoders,
    tmp_path_factory: pytest.TempPathFactory,
) -> Faulted:
    catalog_url = None
    if postgres.find_bindir() is not None:  # else an SQLite catalog, and no other node
        server = request.getfixturevalue("postgres_server")
        catalog_url = server.url(server.create_database())
    bucket = s3.create_bucket()
    root = tmp_path_factory.mktemp("faulted")
    outage = _Outage(s3.endpoint)
    logger = logging.getLogger()
    level = logger.level
    logger.addHandler(outage)
    logger.setLevel(logging.INFO)
    try:
        with MemoryStore.open(root / "node-a", s3_config(s3, bucket, catalog_url=catalog_url)) as store:
            daemon = run_daemon(store, specs_of(clips, ["cam-a"]), encoders)
            state, last = store.load_latest("cam-a")
            seqs = checkpoint_seqs(store)["cam-a"]
            got = transcripts(store)
            first = store.read_checkpoint(store.checkpoints("cam-a")[-1])[0]  # seq 1, from before the cut
            left = store.collect_garbage(min_age_s=0.0)  # what the failed write left, if anything
            committed = {store.groups.key_of(c.location) for c in store.checkpoints("cam-a")}
    finally:
        logger.removeHandler(outage)
        logger.setLevel(level)
        if s3.endpoint._listener is None:
            s3.endpoint.restore()
    (root / "node-b").mkdir()
    found = Faulted(
        bucket, catalog_url, outage, daemon.runners[0].stats, state, last, seqs, got, committed, left, first,
        root / "node-b",
    )  # fmt: skip
    if catalog_url is not None:
        found.settings = _config(root / "vsalmonn.toml", s3, bucket, catalog_url)
    return found


def test_an_object_store_lost_mid_stream_costs_one_line_and_the_stream_goes_on(
    s3: s3_server.S3Server, faulted: Faulted
) -> None:
    outage, stats = faulted.outage, faulted.stats
    assert outage.cut and outage.restored, "the endpoint was cut and back mid-stream"
    url = f"s3://{faulted.bucket}/{PREFIX}/"
    faults = [r for r in outage.records if r.levelno >= logging.WARNING]
    assert len(faults) == 1, [r.getMessage() for r in faults]
    line = faults[0].getMessage()
    assert line.startswith("stream cam-a: checkpoint not committed, ingest goes on") and url in line, line
    assert "cannot write checkpoint group" in line and "\n" not in line and faults[0].exc_info is None
    assert not any(r.exc_info for r in outage.records), "no traceback anywhere"
    assert stats.errors == 1 and stats.detail["checkpoints_failed"] == 1 and url in (stats.last_error or "")
    # the failed checkpoint took no sequence number; the stream committed again once the store was back
    assert faulted.seqs == list(range(1, len(faulted.seqs) + 1)) and len(faulted.seqs) >= 3, faulted.seqs
    last = faulted.last
    assert last.source_state == {"done": True} and last.source_offset >= CLIP_S - 0.5
    # nothing was lost: every frame and both prompts are in, to the end of the clip (the equality with a run
    # on local storage is the slow four-stream test's), and the checkpoint from before the cut still loads
    assert stats.frames == CLIP_S * PERCEPTION.fps and faulted.state["pending"]["t1"].numel() == 0
    said = " ".join(text for _, _, text in faulted.transcripts["cam-a"]).lower()
    assert "weasel" in said and "goodbye" in said, said
    assert last.t_end is not None and last.t_end >= CLIP_S - 1.0
    assert faulted.first["next_id"]["visual"] < faulted.state["next_id"]["visual"]
    assert groups_of(s3, faulted.bucket) == faulted.committed, faulted.left


# -- the shared store and catalog from another node -----------------------------------------------------


def _config(path: Path, server: s3_server.S3Server, bucket: str, catalog_url: str) -> Path:
    text = _toml(server, bucket).replace("[store]\n", f'[store]\ncatalog_url = "{catalog_url}"\n')
    path.write_text('[perception]\nlanguage = "en"\n' + text, encoding="utf-8")
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "vsalmonn", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def shared(faulted: Faulted) -> Faulted:
    """The faulted run's bucket and PostgreSQL catalog, seen from node b (its own empty data directory)."""
    if faulted.catalog_url is None:
        pytest.skip(postgres.MISSING)
    return faulted


def _nothing_written(shared: Faulted) -> None:
    assert not list(shared.node_b.rglob("*.zarr")) and not (shared.node_b / "catalog.sqlite").exists()


@pytest.mark.postgresql
def test_status_and_search_from_another_node(shared: Faulted) -> None:
    """Node b, with its own empty data directory and the same settings, answers `status` and `search` as
    separate processes from the shared bucket and catalog, and writes nothing locally."""
    status = shared.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    (entry,) = json.loads(status.stdout)["streams"]
    assert entry["stream"] == "cam-a" and entry["state"] == "done"
    assert entry["checkpoint"]["seq"] == shared.last.seq

    search = shared.cli("search", "weasels", "--json")
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)["moments"]
    assert hits and hits[0]["stream"] == "cam-a" and hits[0]["t0"] <= 4.0, hits  # the prompt at 0.5 s
    _nothing_written(shared)


@pytest.mark.postgresql
def test_serve_from_another_node_and_while_the_store_is_away(
    s3: s3_server.S3Server, shared: Faulted, encoders: Encoders
) -> None:
    """`serve` on node b: a search needing a checkpoint while the object store is away is a one-line 503
    (not a 500 with a traceback); once the store is back it answers, and from then on its loaded memory
    answers even while the store is away again."""
    from vsalmonn.settings import load_settings

    from .test_serve import one_line_detail, serving

    settings = load_settings(config=shared.settings, data_dir=shared.node_b)
    with serving(settings, encoders.text) as client:
        assert client.get("/api/streams").json()["streams"][0]["stream"] == "cam-a"  # the catalog only
        s3.endpoint.cut()
        try:
            away = client.get("/api/search", params={"q": "weasels"})
            one_line_detail(away, 503, f"s3://{shared.bucket}/{PREFIX}/", "cannot read checkpoint group")
        finally:
            s3.endpoint.restore()
        back = client.get("/api/search", params={"q": "weasels"})
        assert back.status_code == 200 and back.json()["moments"][0]["stream"] == "cam-a", back.text
        s3.endpoint.cut()
        try:
            cached = client.get("/api/search", params={"q": "weasels"})
        finally:
            s3.endpoint.restore()
        assert cached.status_code == 200 and cached.json() == back.json()
    _nothing_written(shared)


@pytest.mark.slow  # ~30 s: the process loads the embedded LLM
@pytest.mark.postgresql
def test_ask_from_another_node(shared: Faulted) -> None:
    ask = shared.cli("ask", "What is said about weasels?", "--json")
    assert ask.returncode == 0, ask.stderr
    answer = json.loads(ask.stdout)
    assert answer["citations"] and all(c["stream"] == "cam-a" for c in answer["citations"]), answer
    assert any(c["t0"] <= 4.0 for c in answer["citations"]), answer
    _nothing_written(shared)


# -- four streams --------------------------------------------------------------------------------------


@pytest.mark.slow  # ~40 s on 2 busy cores: four 16 s streams on local storage, then on S3 + PostgreSQL
@pytest.mark.postgresql
def test_four_streams_on_s3_and_postgresql_equal_a_local_run(
    s3: s3_server.S3Server, clips: dict[str, Path], encoders: Encoders, postgres_server: Any, tmp_path: Path
) -> None:
    names = list(PROMPTS)
    with MemoryStore(tmp_path / "local") as store:
        run_daemon(store, specs_of(clips, names), encoders)
        expected = transcripts(store), moments(store, encoders)
        local_states = {n: store.load_latest(n)[0] for n in names}
    bucket = s3.create_bucket()
    config = s3_config(s3, bucket, catalog_url=postgres_server.url(postgres_server.create_database()))
    with MemoryStore.open(tmp_path / "shared", config) as store:
        run_daemon(store, specs_of(clips, names), encoders)
        assert (transcripts(store), moments(store, encoders)) == expected
        for name in names:
            state, info = store.load_latest(name)
            assert info.location.startswith(f"s3://{bucket}/{PREFIX}/")
            assert_states_equal(local_states[name], state)
        assert {e["stream"]: e["state"] for e in read_status(store)} == dict.fromkeys(names, "done")
        committed = {store.groups.key_of(c.location) for n in names for c in store.checkpoints(n)}
    assert groups_of(s3, bucket) == committed
    assert not list((tmp_path / "shared").rglob("*.zarr")), "no group on local disk"
