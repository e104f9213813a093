"""A real S3 API for the test session: moto's server on 127.0.0.1, reached through a TCP endpoint we control.

moto (`moto[server]`) answers the S3 REST API over HTTP like a real object store; obstore, the client the
store uses, talks to it as it would to S3 or MinIO. The server runs in the test process
(`ThreadedMotoServer`, started once per session on a free port, stopped at the end) and keeps its buckets in
memory for as long as it runs.

Clients do not connect to moto directly but to an `Endpoint`: a plain TCP relay on its own loopback port.
`Endpoint.cut()` is the object store going away mid-write: the listening socket closes (new connections are
refused) and every open connection is reset, both ways, so a PUT in flight fails as it would on a crashed
server or a lost network. `Endpoint.restore()` listens again on the same port: the server is back, with
every object that was written before the cut and none after it. Stopping moto itself could not do that:
a new moto server keeps no data, and a stopped werkzeug server goes on serving connections it had accepted.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

ACCESS_KEY, SECRET_KEY, REGION = "testing-key", "testing-secret", "us-east-1"


class Endpoint:
    """A TCP relay from 127.0.0.1:`port` to the moto server, which can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._pumps: list[threading.Thread] = []
        self.connections = 0  # accepted so far: a test can tell that a client really came through

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        """Listen (again) on the endpoint's port; the first call picks a free one."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accepting.start()

    def cut(self) -> None:
        """Refuse new connections and reset every open one; returns once no byte can pass any more."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the accepting thread
            listener.close()
        if self._accepting is not None:
            self._accepting.join(timeout=5)
        with self._lock:
            live, self._open = list(self._open), set()
            pumps, self._pumps = self._pumps, []
        for s in live:
            _reset(s)
        for t in pumps:
            t.join(timeout=5)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut()
            # connecting onwards in a thread of its own: a client opens many connections at once
            threading.Thread(target=self._relay, args=(listener, client), daemon=True).start()

    def _relay(self, listener: socket.socket, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=10)
            server.settimeout(None)
        except OSError:
            _reset(client)
            return
        with self._lock:
            if self._listener is not listener:  # cut meanwhile
                _reset(client)
                _reset(server)
                return
            self.connections += 1
            self._open |= {client, server}
            pumps = [
                threading.Thread(target=_pump, args=(client, server), daemon=True),
                threading.Thread(target=_pump, args=(server, client), daemon=True),
            ]
            self._pumps += pumps
        for t in pumps:
            t.start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)  # a clean end of one direction passes on as one
    except OSError:
        pass


def _reset(s: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed peer's kernel would, not an orderly FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


class RequestLog:
    """Every HTTP request moto's server answers, as (method, path, query), while `recording` (WSGI middleware
    in front of moto's app: what the client really sent, however it batched or retried it)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.recording = False
        self.seen: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.recording:
            with self._lock:
                self.seen.append(
                    (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
                )
        return self.app(environ, start_response)

    @contextlib.contextmanager
    def record(self) -> Iterator[list[tuple[str, str, str]]]:
        """The requests made inside the block (a list filled as they come)."""
        with self._lock:
            self.seen, self.recording = [], True
        try:
            yield self.seen
        finally:
            self.recording = False


@dataclass
class S3Server:
    """moto's S3 server and the endpoint in front of it; `stop()` ends both."""

    moto: object
    endpoint: Endpoint
    requests: RequestLog
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return self.endpoint.url

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket (named at random unless `name` is given); its name."""
        name = name or f"t-{uuid.uuid4().hex[:16]}"
        request = urllib.request.Request(f"{self.url}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"moto refused bucket {name}: HTTP {response.status}")
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key of a bucket below `prefix`, read from moto itself (not through the endpoint)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        return sorted(k for k in backend.get_bucket(bucket).keys if k.startswith(prefix))

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.endpoint.cut()
        self.moto.stop()  # type: ignore[attr-defined]


def start_server() -> S3Server:
    """moto's S3 server on a free loopback port, and an endpoint in front of it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    requests = RequestLog(moto._server.app)  # type: ignore[union-attr]  # werkzeug serves `server.app`
    moto._server.app = requests  # type: ignore[union-attr]
    endpoint = Endpoint((host, port))
    endpoint.restore()
    log.info("test S3 (moto) on %s:%d behind %s", host, port, endpoint.url)
    return S3Server(moto=moto, endpoint=endpoint, requests=requests)
