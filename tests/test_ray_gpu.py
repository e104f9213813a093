"""A stream's GPU on the Ray backend, on a real one-node Ray cluster whose head declares one logical GPU.

Ray schedules a logical GPU as it does a real one (it counts the fractions and sets CUDA_VISIBLE_DEVICES for
the actors it gives one to), so what is tested here is the placement: a CUDA memory reserves
`ray_num_gpus` of a GPU per actor, no more actors than the fractions allow run at once, and a CPU memory
reserves none. Nothing can run CUDA here, so the stream with a CUDA memory must fail in one line before it
loads anything; a machine with a real GPU skips that test (there the stream would simply run).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import DaemonConfig, StreamSpec
from vsalmonn.settings import Settings

from . import ray_cluster

ROOT = Path(__file__).resolve().parents[1]
DAEMON = DaemonConfig(backend="ray", ray_num_cpus=0.5, ray_num_gpus=0.5, status_every_s=0.3)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ray_cluster.RayCluster]:
    """One node: 3 logical CPUs, 1 logical GPU; the pytest process joins as a driver."""
    pytest.importorskip("ray")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with ray_cluster.joined_cluster(head_cpus=3, head_gpus=1, env=env) as started:
        yield started


def settings_for(tmp_path: Path, address: str, device: str, streams: int) -> Settings:
    folders = [tmp_path / f"watch{i}" for i in range(streams)]
    for folder in folders:
        folder.mkdir(exist_ok=True)
    return Settings(
        data_dir=tmp_path / "data", memory={"device": device},
        daemon=DAEMON.model_copy(update={"ray_address": address}),
        streams=[StreamSpec(name=f"cam-{i}", source=str(f), kind="folder") for i, f in enumerate(folders)],
    )  # fmt: skip


def test_a_cuda_memory_reserves_its_fraction_of_a_gpu_and_no_more_actors_run_than_fit(
    cluster: ray_cluster.RayCluster, tmp_path: Path
) -> None:
    import ray

    from vsalmonn.ray_backend import RayDaemon

    settings = settings_for(tmp_path, cluster.address, "cuda", streams=3)
    with MemoryStore.open(settings.data_dir, settings.store) as store:
        daemon = RayDaemon(settings, store=store)
        daemon.connect()
        assert daemon.actor_options(settings.streams[0])["num_gpus"] == 0.5
        actors = [daemon._actor(spec) for spec in settings.streams]  # made, not run: `where` only
        try:
            first = ray.get([a.where.remote() for a in actors[:2]], timeout=60)
            assert [w["gpus"] for w in first] == [["0"], ["0"]], first
            assert [w["cuda_visible_devices"] for w in first] == ["0", "0"], first
            third = actors[2].where.remote()
            ready, _ = ray.wait([third], timeout=3)
            assert not ready, "a third actor of 0.5 GPU ran beside two on one GPU"
            assert ray.available_resources().get("GPU", 0.0) == 0.0
            ray.kill(actors[0])  # half the GPU is free again: the third actor is placed
            assert ray.get(third, timeout=60)["gpus"] == ["0"]
        finally:
            for actor in actors:
                ray.kill(actor)
            daemon.disconnect()


def test_a_cpu_memory_reserves_no_gpu_and_says_the_gpus_stay_unused(
    cluster: ray_cluster.RayCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import ray

    from vsalmonn.ray_backend import RayDaemon

    settings = settings_for(tmp_path, cluster.address, "cpu", streams=1)
    with MemoryStore.open(settings.data_dir, settings.store) as store:
        daemon = RayDaemon(settings, store=store)
        with caplog.at_level(logging.WARNING, logger="vsalmonn.ray_backend"):
            daemon.connect()
        assert "the cluster has 1 GPUs but memory.device is 'cpu': actors reserve none" in caplog.text
        assert "num_gpus" not in daemon.actor_options(settings.streams[0])
        actor = daemon._actor(settings.streams[0])
        try:
            where = ray.get(actor.where.remote(), timeout=60)
            assert where["gpus"] == [] and where["cuda_visible_devices"] is None, where
        finally:
            ray.kill(actor)


def test_a_cuda_memory_where_the_actor_sees_no_cuda_fails_its_stream_in_one_line(
    cluster: ray_cluster.RayCluster, tmp_path: Path
) -> None:
    import torch

    from vsalmonn.ray_backend import RayDaemon

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the stream would run on it")
    settings = settings_for(tmp_path, cluster.address, "cuda", streams=1)
    with MemoryStore.open(settings.data_dir, settings.store) as store:
        daemon = RayDaemon(settings, store=store)
        daemon.start()
        try:
            assert daemon.wait(60), "the stream did not end"
        finally:
            daemon.shutdown()
    [(name, state, error)] = daemon.outcomes()
    assert (name, state) == ("cam-0", "failed")
    assert error is not None and "\n" not in error
    assert error.startswith("memory.device 'cuda', but this actor's process sees no CUDA device"), error
    assert "GPUs Ray gave it: 0; CUDA_VISIBLE_DEVICES=0" in error, error
