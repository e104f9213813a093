"""A real two-node Ray cluster on this machine, on 127.0.0.1, as separate processes (test_daemon_ray.py).

Each node is one `ray start --block` process (the head with `--head`, the second with `--address` and a
`{"node2": 1}` resource), each with its own temporary directory and in its own session (process group):
Ray's processes of a node (GCS, raylet, agents, workers) all stay in it. So a node is stopped by its own
process group, never by `ray stop`, which would stop every Ray on the machine, another user's included:
SIGTERM to `ray start --block` (which stops what it started), then SIGKILL to whatever of the group is left.
Every node started is stopped again at exit (atexit) even where a test's finalizer never ran.

The head is started with quick health checks, so that a node whose raylet is killed is declared dead in about
two seconds rather than Ray's default (about 15 s): the restart the tests wait for comes sooner, the
behaviour is the same.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")
QUICK_HEALTH = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}
_LIVE: list[RayNode] = []


class RayUnavailable(RuntimeError):
    """Ray is not installed: the tests that need a cluster skip."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _group_pids(pgid: int) -> list[int]:
    """Processes whose process group is `pgid` (read from /proc: no psutil needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class RayNode:
    """One `ray start --block` process and everything it started (its process group)."""

    name: str
    process: subprocess.Popen[bytes]
    temp_dir: Path
    log_path: Path
    stopped: bool = field(default=False)

    @property
    def pgid(self) -> int:
        return self.process.pid  # start_new_session: the process leads its own group

    def pids(self) -> list[int]:
        return _group_pids(self.pgid)

    def raylet_pid(self) -> int:
        pids = [p for p in self.pids() if _comm(p) == "raylet"]
        assert len(pids) == 1, f"{self.name}: raylet processes {pids}"
        return pids[0]

    def kill_raylet(self) -> None:
        """SIGKILL this node's raylet: to the cluster, a lost node."""
        os.kill(self.raylet_pid(), signal.SIGKILL)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM `ray start --block` (it stops its processes), then SIGKILL the rest of the group."""
        if self.stopped:
            return
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (self.process.poll() is None or self.pids()):
            time.sleep(0.1)
        for _attempt in range(3):
            left = self.pids()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        if self.process.poll() is None:
            self.process.wait(5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)
        if self in _LIVE:
            _LIVE.remove(self)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class RayCluster:
    head: RayNode
    address: str
    nodes: list[RayNode] = field(default_factory=list)

    def add_node(self, name: str, num_cpus: int, resources: dict[str, float], env: dict[str, str]) -> RayNode:
        node = _start(
            name,
            ["--address", self.address, "--num-cpus", str(num_cpus), "--resources", json.dumps(resources)],
            env,
        )
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        self.head.stop()


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_DISABLE_DOCKER_CPU_WARNING="1", **extra)
    return env


def _start(name: str, args: list[str], env: dict[str, str]) -> RayNode:
    temp_dir = Path(tempfile.mkdtemp(prefix=f"vr{name[:2]}", dir="/tmp"))  # short: unix socket paths
    log_path = temp_dir.with_name(temp_dir.name + ".log")
    common = [
        "--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir), "--disable-usage-stats",
        "--dashboard-agent-listen-port", str(free_port()), "--object-store-memory", str(200 * 2**20),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(RAY), "start", *args, *common],
            stdout=log, stderr=subprocess.STDOUT, env=_env(env), start_new_session=True,
        )  # fmt: skip
    node = RayNode(name=name, process=process, temp_dir=temp_dir, log_path=log_path)
    _LIVE.append(node)
    deadline = time.monotonic() + 90
    while b"will now block forever" not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = node.log_tail()
            node.stop()
            raise RuntimeError(f"ray node {name} did not start:\n{tail}")
        time.sleep(0.2)
    return node


def start_cluster(head_cpus: int, env: dict[str, str], head_gpus: int = 0) -> RayCluster:
    """A head node on 127.0.0.1 at a free port; add nodes with `add_node`. Stop it with `stop()`.

    `head_gpus` declares logical GPUs: Ray schedules and hands them out (CUDA_VISIBLE_DEVICES) whether or not
    the machine has one, which is what the placement tests need; nothing can run CUDA on them here.
    """
    if not RAY.exists():
        raise RayUnavailable(f"Ray is not installed ({RAY} missing): pip install 'vsalmonn[ray]'")
    port = free_port()
    args = ["--head", "--port", str(port), "--num-cpus", str(head_cpus), "--include-dashboard", "false"]
    if head_gpus:
        args += ["--num-gpus", str(head_gpus)]
    head = _start("head", args, {**QUICK_HEALTH, **env})
    return RayCluster(head=head, address=f"127.0.0.1:{port}")


@contextlib.contextmanager
def joined_cluster(
    head_cpus: int, env: dict[str, str], head_gpus: int = 0, nodes: tuple[tuple[str, int], ...] = ()
) -> Iterator[RayCluster]:
    """A cluster of a head and `nodes` ((name, CPUs), each with a resource of its name), joined by this
    process as a driver; everything stopped again on the way out, and the driver's `RAY_AUTH_MODE` restored.

    One authentication mode for the nodes, this driver and any CLI driver a test starts: without it, Ray 2.60
    turns token authentication on wherever it finds a ~/.ray/auth_token (a local `ray.init` leaves one), and
    a node or driver that did not look for it is refused.
    """
    import ray

    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = env["RAY_AUTH_MODE"] = "disabled"
    started = start_cluster(head_cpus=head_cpus, env=env, head_gpus=head_gpus)
    try:
        for name, cpus in nodes:
            started.add_node(name, num_cpus=cpus, resources={name: 1}, env=env)
        ray.init(address=started.address, logging_level="WARNING", configure_logging=False)
        deadline = time.monotonic() + 30
        while sum(1 for n in ray.nodes() if n["Alive"]) < 1 + len(nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{1 + len(nodes)} Ray nodes not alive within 30 s")
            time.sleep(0.1)
        yield started
    finally:
        if ray.is_initialized():
            ray.shutdown()
        started.stop()
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous
    assert not started.head.pids() and not any(n.pids() for n in started.nodes), "Ray processes left"


@atexit.register
def _stop_all() -> None:
    for node in list(_LIVE):
        node.stop(grace_s=5.0)
