"""The daemon's Ray backend: every stream a Ray actor, placed and restarted by Ray (DESIGN §8, docs/scale.md).

Why it is built this way:

- **The actor runs the local daemon's own code.** A `StreamActor` builds the same `StreamRunner` the local
  daemon runs in a thread (same kinds, same resume by kind, same failure handling, same events) and runs it
  in the actor's thread; nothing of how a stream runs or resumes is written twice. A restarted actor (Ray
  restarts it after a crash or a lost node, `ray_max_restarts`, and retries its pending `run`) resumes from
  the stream's last committed checkpoint exactly as a daemon restarted by hand does, because the state is in
  the store and the catalog, never in the process (DESIGN §4, §8).
- **One stream, one process.** Ray gives each actor its own worker process: the encoders load once per actor
  process, on its first `run`, and a crash or an out-of-memory kill takes one stream with it, not the rest.
- **The driver only places and watches.** `RayDaemon` (what `vsalmonn daemon` runs with ``backend = "ray"``)
  connects to `ray_address`, or starts a local Ray, submits one actor per ``[[streams]]`` table, and stays
  until every stream has ended or a signal stops it. Each actor writes its own status row into the catalog
  (its host, pid and Ray node), so `vsalmonn status` works from any node as with the local backend; the driver
  writes a row only for a stream whose actor Ray gave up on. SIGHUP reconciles the running set with the
  settings read again: a new ``[[streams]]`` table starts an actor, a removed one is stopped (checkpointed),
  a changed one is stopped and started again.
- **Refused where it would corrupt.** SQLite is a file on one machine: a Ray backend on more than one alive
  node with an SQLite catalog is refused with a one-line reason before any actor starts. The data directory
  (the checkpoints) must be a filesystem every node shares, as the catalog must be a database every node
  reaches; both are settings, so nothing here knows where they are.
- **A lost writer lets go.** The stream's writer lock (an flock in its folder) belongs to the actor's
  process; when a node is lost its processes die with it and the lock goes too. A restarted actor that finds
  the lock still held (its predecessor not dead yet) waits up to `ray_lock_wait_s` before it gives up.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from vsalmonn.errors import one_line
from vsalmonn.perception.config import StreamSpec
from vsalmonn.settings import Settings

if TYPE_CHECKING:
    from vsalmonn.memory_store.store import MemoryStore

log = logging.getLogger(__name__)

__all__ = [
    "RayBackendError", "RayDaemon", "StreamActor", "check_gpus", "check_placement", "is_sqlite_catalog",
    "uses_cuda",
]  # fmt: skip

ACTOR_NAME = "vsalmonn-stream-{}"
# What the actors' processes get from the driver's environment: OpenMP's wait policy, set before torch loads.
PASSED_ENV = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


class RayBackendError(RuntimeError):
    """The Ray backend cannot run as configured (Ray missing, SQLite across nodes, no cluster): one line."""


class StreamSetupError(RuntimeError):
    """An actor cannot set its stream up in its process (no CUDA where the memory needs it): one line."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayBackendError("daemon.backend 'ray' needs Ray: pip install 'vsalmonn[ray]'") from None
    return ray


def is_sqlite_catalog(settings: Settings) -> bool:
    """Whether the catalog is an SQLite file (the default, inside the data directory, or a sqlite:// URL)."""
    from vsalmonn.memory_store.catalog import is_sqlite_url

    return is_sqlite_url(settings.store.catalog_url)


def check_placement(settings: Settings, alive_nodes: int) -> None:
    """Refuse an SQLite catalog on a cluster of more than one alive node (one file cannot be every node's)."""
    if alive_nodes > 1 and is_sqlite_catalog(settings):
        raise RayBackendError(
            f"daemon.backend 'ray' on {alive_nodes} nodes needs a catalog every node reaches: SQLite is one "
            "machine's file; set store.catalog_url to a PostgreSQL database"
        )


def uses_cuda(settings: Settings) -> bool:
    """Whether the memory (the TTT layer and the banks) is to run on a GPU: the only part that can."""
    return settings.memory.device.startswith("cuda")


def check_gpus(settings: Settings, cluster_gpus: float) -> None:
    """Refuse a CUDA memory that Ray could not give a GPU of its own.

    Ray sets CUDA_VISIBLE_DEVICES only for an actor that reserved a GPU: one that reserved none would see
    every GPU of its node and share them unplanned, so `memory.device = "cuda"` needs `ray_num_gpus` > 0 and
    a cluster with GPUs. The device is plain "cuda", because the actor sees only the GPU Ray gave it.
    """
    if not uses_cuda(settings):
        return
    device, fraction = settings.memory.device, settings.daemon.ray_num_gpus
    if device != "cuda":
        raise RayBackendError(
            f"memory.device {device!r} on Ray: use 'cuda' (Ray picks each actor's GPU and shows it only "
            "that one)"
        )
    if fraction <= 0:
        raise RayBackendError(
            "memory.device 'cuda' on Ray needs daemon.ray_num_gpus > 0: an actor that reserves no GPU would "
            "share every GPU of its node unplanned"
        )
    if cluster_gpus <= 0:
        raise RayBackendError(
            "memory.device 'cuda' on Ray, but the cluster has no GPUs: set memory.device = 'cpu' or add GPU "
            "nodes"
        )


def actor_threads(settings: Settings) -> int:
    """Torch threads of an actor: the perception setting, but no more than the CPUs the actor reserved."""
    return max(1, min(settings.perception.threads, math.floor(settings.daemon.ray_num_cpus)))


# ----- the actor ------------------------------------------------------------------------------------------


class StreamActor:
    """One stream in one Ray actor process (decorated with `ray.remote` by `RayDaemon` when it submits it).

    `run` blocks until the stream ends (its source ends, it fails, or `stop` is called) and returns its final
    state as a plain dict; the actor is threaded (`max_concurrency`), so `stop` and `where` are served while
    `run` is busy.
    """

    def __init__(self, settings: Settings, spec: StreamSpec, started_at: datetime) -> None:
        self.settings = settings
        self.spec = spec
        self.started_at = started_at
        self.stop_event = threading.Event()
        self._parts: tuple[Any, ...] | None = None
        self._open_lock = threading.Lock()  # `prepare` and `run` may overlap (a threaded actor)
        self._runner: Any = None

    def where(self) -> dict[str, Any]:
        """The node and process this actor runs in (for the driver's log and the tests)."""
        import ray

        context = ray.get_runtime_context()
        with warnings.catch_warnings():  # Ray's own property reads a deprecated one inside
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = bool(context.was_current_actor_reconstructed)
        gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
        return {
            "node_id": context.get_node_id(), "pid": os.getpid(), "restarted": restarted, "gpus": gpus,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # what "cuda" means to torch here
        }  # fmt: skip

    def stop(self) -> None:
        """Ask the stream to checkpoint what is whole and end (the local daemon's SIGTERM, for one stream)."""
        self.stop_event.set()

    def prepare(self) -> float:
        """Load the encoders now rather than on the first `run`; the seconds it took (0 when loaded)."""
        started = time.perf_counter()
        loaded = self._parts is not None
        self._open()
        return 0.0 if loaded else time.perf_counter() - started

    def _open(self) -> tuple[Any, ...]:
        """The store, plugins, encoders and kinds of this process: made once, on the first `run`."""
        with self._open_lock:
            return self._open_once()

    def _open_once(self) -> tuple[Any, ...]:
        if self._parts is None:
            import torch

            if uses_cuda(self.settings) and not torch.cuda.is_available():  # before minutes of loading
                where = self.where()
                raise StreamSetupError(
                    f"memory.device 'cuda', but this actor's process sees no CUDA device (GPUs Ray gave it: "
                    f"{', '.join(where['gpus']) or 'none'}; CUDA_VISIBLE_DEVICES="
                    f"{where['cuda_visible_devices'] or '(unset)'})"
                )

            from vsalmonn.app import open_plugins
            from vsalmonn.memory_store.store import MemoryStore
            from vsalmonn.perception import allocator
            from vsalmonn.perception.daemon import daemon_kinds
            from vsalmonn.perception.pipeline import Encoders

            allocator.tune()
            torch.set_num_threads(actor_threads(self.settings))
            settings = self.settings
            store = MemoryStore.open(settings.data_dir, settings.store)
            plugins = open_plugins(settings, store)
            encoders = Encoders.from_config(
                self._perception(), settings.data_dir, text=plugins.context.text_encoder
            )
            self._parts = (store, plugins, encoders, daemon_kinds(plugins))
        return self._parts

    def _perception(self) -> Any:
        perception = self.settings.perception
        threads = actor_threads(self.settings)
        return (
            perception
            if threads == perception.threads
            else perception.model_copy(update={"threads": threads})
        )

    def run(self) -> dict[str, Any]:
        """Run the stream from its last checkpoint to its end; its final state, node and pid."""
        from vsalmonn.perception.daemon import StreamRunner

        try:
            store, plugins, encoders, kinds = self._open()
        except StreamSetupError as exc:  # the driver writes the row: this process has no stream to report
            return {**self.where(), "state": "failed", "last_error": str(exc), "setup_failed": True}
        settings, where = self.settings, self.where()
        cpu_started = time.process_time()  # every thread of this process: the stream's whole CPU cost
        if where["restarted"]:
            log.warning("stream %s: actor restarted on node %s, resuming", self.spec.name, where["node_id"])
        deadline = time.monotonic() + settings.daemon.ray_lock_wait_s
        done = threading.Event()
        reporter = threading.Thread(target=self._report_loop, args=(store, done), daemon=True)
        reporter.start()
        try:
            while True:
                runner = StreamRunner(
                    self.spec, store=store, encoders=encoders, perception=self._perception(),
                    memory=settings.memory, daemon=settings.daemon, stop=self.stop_event, plugins=plugins,
                    kinds=kinds,
                )  # fmt: skip
                runner.stats.detail.update(
                    backend="ray", node=where["node_id"], restarted=where["restarted"], gpus=where["gpus"]
                )
                self._runner = runner
                runner.run()  # in this thread: the actor's thread is the stream's thread
                if not runner.busy or self.stop_event.is_set() or time.monotonic() >= deadline:
                    break
                log.warning("stream %s: waiting for the lost writer to let go", self.spec.name)
                self.stop_event.wait(1.0)
        finally:
            done.set()
            reporter.join(5.0)
            self._report(store)
        stats = runner.stats
        return {
            **where, "state": stats.state, "last_error": stats.last_error, "position": stats.position,
            "cpu_s": time.process_time() - cpu_started,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }  # fmt: skip

    def _report_loop(self, store: MemoryStore, done: threading.Event) -> None:
        while not done.wait(self.settings.daemon.status_every_s):
            self._report(store)

    def _report(self, store: MemoryStore) -> None:
        from vsalmonn.perception.daemon import write_status

        runner = self._runner
        if runner is not None and runner.stream_id is not None:
            write_status(store, [(runner.stream_id, runner.stats)], self.started_at)


# ----- the driver -----------------------------------------------------------------------------------------


@dataclass
class _Stream:
    spec: StreamSpec
    actor: Any
    ref: Any
    result: dict[str, Any] | None = None

    @property
    def state(self) -> str:
        return "running" if self.result is None else str(self.result.get("state"))


class RayDaemon:
    """Runs `settings.streams` as Ray actors until every stream has ended or a stop is asked for.

    `reload`, when given, reads the settings again (SIGHUP): `run` then reconciles the running streams with
    its ``[[streams]]``. `store` is the driver's own handle on the catalog, for the rows of streams whose
    actor Ray gave up on.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: MemoryStore,
        specs: Sequence[StreamSpec] | None = None,
        reload: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = _absolute(settings)
        self.specs = list(settings.streams if specs is None else specs)
        _unique(self.specs)
        self.store = store
        self.reload = reload
        self.streams: dict[str, _Stream] = {}
        self.ended: list[_Stream] = []  # streams removed by a reconcile, kept for the summary
        self.started_at = datetime.now(UTC)
        self.started_ray = False
        self.ray: Any = None
        self._gpus = 0.0
        self._actor_class: Any = None
        self.load_s: list[float] = []  # encoder load of each actor, when started with `prepare`
        self.running_since = 0.0  # perf_counter when the streams' `run` calls were submitted

    # ----- connecting -----------------------------------------------------------------------------------

    def connect(self) -> None:
        """Join `ray_address` (or RAY_ADDRESS), else start a local Ray; refuse SQLite across nodes.

        `ray.init` sets its own SIGTERM handler (an exit with status 15): a caller that handles signals
        installs its handlers after this.
        """
        ray = self.ray = import_ray()
        config = self.settings.daemon
        address = config.ray_address or os.environ.get("RAY_ADDRESS") or None
        if ray.is_initialized():  # the program embedding this joined a cluster itself
            address = "(joined by this process already)"
        else:
            try:
                if address:
                    ray.init(address=address, logging_level=logging.WARNING, configure_logging=False)
                else:
                    ray.init(include_dashboard=False, logging_level=logging.WARNING, configure_logging=False)
                    self.started_ray = True
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RayBackendError(
                    f"cannot join the Ray cluster at {address}: {one_line(str(exc))}"
                ) from None
        alive = [n for n in ray.nodes() if n.get("Alive")]
        resources = ray.cluster_resources()
        self._gpus = float(resources.get("GPU", 0.0))
        if self.started_ray:
            log.warning(
                "backend ray: started a local Ray (no ray_address): %.0f CPUs", resources.get("CPU", 0)
            )
        else:
            log.warning(
                "backend ray: joined the Ray cluster at %s: %d node(s), %.0f CPUs, %.2g GPUs",
                address, len(alive), resources.get("CPU", 0), self._gpus,
            )  # fmt: skip
        if self._gpus > 0 and not uses_cuda(self.settings):
            log.warning(
                "backend ray: the cluster has %.2g GPUs but memory.device is %r: actors reserve none "
                "(set memory.device = 'cuda' to run the memory on them)",
                self._gpus, self.settings.memory.device,
            )  # fmt: skip
        try:
            check_placement(self.settings, len(alive))
            check_gpus(self.settings, self._gpus)
        except RayBackendError:
            self.disconnect()
            raise

    def disconnect(self) -> None:
        if self.ray is not None and self.started_ray and self.ray.is_initialized():
            self.ray.shutdown()

    # ----- streams ----------------------------------------------------------------------------------------

    def actor_options(self, spec: StreamSpec) -> dict[str, Any]:
        """The resources, restart policy and placement of a stream's actor."""
        config = self.settings.daemon
        env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
        options: dict[str, Any] = {
            "name": ACTOR_NAME.format(spec.name),
            "num_cpus": config.ray_num_cpus,
            "max_restarts": config.ray_max_restarts,
            "max_task_retries": config.ray_max_restarts,  # the pending `run` follows the actor's restart
            "max_concurrency": 4,  # `stop` and `where` while `run` is busy
            "scheduling_strategy": "SPREAD" if config.ray_scheduling == "spread" else "DEFAULT",
        }
        if env:
            options["runtime_env"] = {"env_vars": env}
        if uses_cuda(self.settings):  # check_gpus made sure the cluster has GPUs and the fraction is > 0
            options["num_gpus"] = config.ray_num_gpus
        return options

    def _actor(self, spec: StreamSpec) -> Any:
        if self._actor_class is None:  # one remote class per driver: Ray exports it to the workers once
            self._actor_class = self.ray.remote(StreamActor)
        actor_class = self._actor_class
        return actor_class.options(**self.actor_options(spec)).remote(self.settings, spec, self.started_at)

    def submit(self, spec: StreamSpec, actor: Any = None) -> None:
        actor = actor if actor is not None else self._actor(spec)
        self.streams[spec.name] = _Stream(spec=spec, actor=actor, ref=actor.run.remote())
        log.warning("stream %s: submitted to Ray", spec.name)

    def start(self, *, prepare: bool = False) -> None:
        """Connect (unless `connect` was called already), then submit every stream.

        `prepare` first makes every actor and waits until each has loaded its encoders, so that the streams
        start together (bench scale times ingest, not loading).
        """
        if self.ray is None:
            self.connect()
        actors = [self._actor(spec) for spec in self.specs] if prepare else [None] * len(self.specs)
        if prepare:
            self.load_s = self.ray.get([a.prepare.remote() for a in actors])
        self.running_since = time.perf_counter()
        for spec, actor in zip(self.specs, actors, strict=True):
            self.submit(spec, actor)

    def where(self, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
        """Node and pid of each running stream's actor (asks the actors; for logs and tests)."""
        running = {n: s for n, s in self.streams.items() if s.result is None}
        found = self.ray.get([s.actor.where.remote() for s in running.values()], timeout=timeout)
        return dict(zip(running, found, strict=True))

    @property
    def running(self) -> bool:
        return any(s.result is None for s in self.streams.values())

    def poll(self, timeout: float = 0.2) -> None:
        """Collect the streams that ended within `timeout`."""
        pending = {s.ref: s for s in self.streams.values() if s.result is None}
        if not pending:
            return
        ready, _ = self.ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in ready:
            self._collect(pending[ref])

    def _collect(self, stream: _Stream) -> None:
        try:
            stream.result = self.ray.get(stream.ref)
        except Exception as exc:  # the actor died for good (restarts spent) or could not be made
            reason = f"Ray gave up on the stream's actor: {one_line(f'{type(exc).__name__}: {exc}')}"
            stream.result = {"state": "failed", "last_error": reason}
        else:
            if not stream.result.get("setup_failed"):  # the actor's runner wrote its own rows
                log.warning(
                    "stream %s %s on node %s",
                    stream.spec.name, stream.result["state"], stream.result.get("node_id"),
                )  # fmt: skip
                return
            reason = str(stream.result["last_error"])
        log.error("stream %s failed: %s", stream.spec.name, reason)
        self._write_failed(stream.spec, reason)

    def _write_failed(self, spec: StreamSpec, reason: str) -> None:
        from vsalmonn.perception.daemon import write_status
        from vsalmonn.perception.pipeline import StreamStats

        row = self.store.catalog.stream(spec.name)
        if row is not None:
            stats = StreamStats(source=spec.source)
            stats.fail(reason, "failed")
            write_status(self.store, [(row.id, stats)], self.started_at)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every stream has ended (True) or `timeout` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.poll(0.5)
        return True

    def stop_streams(self, names: Sequence[str]) -> None:
        """Ask these streams to checkpoint and end, wait up to `stop_timeout_s`, then kill what is left."""
        chosen = [self.streams[n] for n in names if n in self.streams and self.streams[n].result is None]
        for stream in chosen:
            stream.actor.stop.remote()
        deadline = time.monotonic() + self.settings.daemon.stop_timeout_s
        for stream in chosen:
            try:
                stream.result = self.ray.get(stream.ref, timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:
                log.warning(
                    "stream %s did not stop in time (%s): killed", stream.spec.name, type(exc).__name__
                )
                stream.result = {"state": "stopped", "last_error": "killed after stop_timeout_s"}
        for stream in chosen:
            self.ray.kill(stream.actor, no_restart=True)

    def reconcile(self, specs: Sequence[StreamSpec]) -> None:
        """Make the running set the given streams: start the new ones, stop the removed and the changed."""
        _unique(specs)
        wanted = {s.name: s for s in specs}
        gone = [n for n, s in self.streams.items() if n not in wanted or s.spec != wanted[n]]
        if gone:
            log.warning("reconcile: stopping %s", ", ".join(gone))
            self.stop_streams(gone)
            for name in gone:
                self.ended.append(self.streams.pop(name))
        new = [s for n, s in wanted.items() if n not in self.streams]
        for spec in new:
            self.submit(spec)
        self.specs = list(specs)
        log.warning("reconcile: %d stream(s), %d started, %d stopped", len(wanted), len(new), len(gone))

    def shutdown(self) -> None:
        """Stop every running stream (checkpointing) and leave the cluster."""
        running = [n for n, s in self.streams.items() if s.result is None]
        if running:
            self.stop_streams(running)
        self.disconnect()

    def run(self, should_stop: threading.Event | None = None, reload: threading.Event | None = None) -> int:
        """Start, run until every stream ends or `should_stop` is set, shut down; 0, or 1 if a stream failed.

        `reload` set (SIGHUP) reads the settings again through `self.reload` and reconciles the streams.
        """
        outside = should_stop or threading.Event()
        self.start()
        try:
            while self.running and not outside.is_set():
                if reload is not None and reload.is_set():
                    reload.clear()
                    self._reload()
                self.poll(0.2)
        finally:
            self.shutdown()
        failed = [n for n, s in self.streams.items() if s.state == "failed"]
        return 1 if failed and not outside.is_set() else 0

    def _reload(self) -> None:
        if self.reload is None:
            return
        try:
            settings = self.reload()
            specs = settings.streams
            _unique(specs)
        except Exception as exc:  # a bad edit keeps the running set as it is
            log.error("SIGHUP: settings not reloaded, streams unchanged: %s", one_line(str(exc)))
            return
        self.reconcile(specs)

    def outcomes(self) -> list[tuple[str, str, str | None]]:
        """(name, state, last error) of every stream this daemon ran."""
        every = [*self.ended, *self.streams.values()]
        return [(s.spec.name, s.state, (s.result or {}).get("last_error")) for s in every]


def _unique(specs: Sequence[StreamSpec]) -> None:
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"stream names must be unique; repeated: {', '.join(duplicates)}")


def _absolute(settings: Settings) -> Settings:
    """The settings with the data directory absolute: an actor's working directory is not the driver's."""
    return settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
