"""A loopback HTTP server that plays an MPEG-TS file out at about real time, like a live camera or encoder.

Live-source tests need a stream that arrives at the pace it is shown, that can vanish mid-stream and come back
on the same address. A file served as fast as the socket allows would look like a download, not a live stream,
so the bytes are released by the presentation time of the packets they hold: the file is demuxed once to
learn, for each packet, its byte position and decode time, and a client receives the bytes whose time has come
(plus a small lead, as a real server's send buffer would hold). Every client gets the stream from its start;
it ends when the file does (the connection closes), which a live source sees as the stream ending.

Only 127.0.0.1 is ever bound. `stop` closes the listening socket and cuts every open connection at once (the
client sees the stream end or a read error); `restart` binds the same port again.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import av

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_TICK_S = 0.02  # how often a client's pacing loop wakes up to send what has come due


def byte_schedule(path: Path) -> list[tuple[float, int]]:
    """(seconds from the first packet, bytes of the file that may have been sent by then), non-decreasing.

    The bytes before a packet's position belong to earlier packets, so they are due at that packet's decode
    time. A running maximum keeps the schedule monotonic where the muxer interleaves streams slightly out of
    time order.
    """
    points: list[tuple[float, int]] = []
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pos is None or packet.pos < 0 or packet.dts is None or packet.time_base is None:
                continue
            points.append((float(packet.dts * packet.time_base), int(packet.pos)))
    if not points:
        raise ValueError(f"{path}: no timed packets to pace the stream by")
    points.sort()
    t0 = points[0][0]
    schedule, reach = [], 0
    for t, pos in points:
        reach = max(reach, pos)
        schedule.append((t - t0, reach))
    return schedule


class StreamServer:
    """Serves one MPEG-TS file at `http://127.0.0.1:<port>/live.ts`, paced at `speed` times real time.

    Use as a context manager or call `start`/`stop`. `connections` counts the clients served so far (a
    reconnecting source shows up as more than one).
    """

    def __init__(
        self, media: Path, *, speed: float = 1.0, lead_s: float = 0.5, path: str = "/live.ts"
    ) -> None:
        self.media = Path(media)
        self.data = self.media.read_bytes()
        self.schedule = byte_schedule(self.media)
        self.speed = speed
        self.lead_s = lead_s
        self.path = path
        self.port = 0  # chosen by the first start, kept by restarts
        self.connections = 0
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> StreamServer:
        """Listen on 127.0.0.1 (a new port the first time, the same port after a stop)."""
        if self._server is not None:
            return self
        self._stopping = threading.Event()
        server = ThreadingHTTPServer((HOST, self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="stream-server", daemon=True)
        self._thread.start()
        log.debug("serving %s", self.url)
        return self

    def stop(self) -> None:
        """Stop listening and cut every connection now: the stream goes away as a crashed server's would."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            with contextlib.suppress(OSError):  # the client may already be gone
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.debug("stopped %s", self.url)

    def restart(self) -> StreamServer:
        self.stop()
        return self.start()

    def __enter__(self) -> StreamServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _due(self, elapsed: float) -> int:
        """Bytes of the file a client may have received `elapsed` seconds after it connected."""
        media_t = elapsed * self.speed + self.lead_s
        due = 0
        for t, reach in self.schedule:  # a few hundred points: a linear scan per tick is cheap enough
            if t > media_t:
                break
            due = reach
        return due if media_t <= self.schedule[-1][0] else len(self.data)

    def _play(self, conn: socket.socket, write: object) -> None:
        """Send the file to one client at the schedule's pace until it ends, the client goes, or a stop."""
        stopping = self._stopping
        with self._lock:
            self._clients.add(conn)
            self.connections += 1
        started, sent = time.monotonic(), 0
        try:
            while sent < len(self.data) and not stopping.is_set():
                due = self._due(time.monotonic() - started)
                if due > sent:
                    write(self.data[sent:due])  # type: ignore[operator]
                    sent = due
                stopping.wait(_TICK_S)
        except OSError as exc:  # the client hung up, or a stop cut the connection
            log.debug("client of %s gone: %s", self.url, exc)
        finally:
            with self._lock:
                self._clients.discard(conn)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # no Content-Length: the body ends when the connection closes

            def do_GET(self) -> None:
                if self.path != owner.path:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                owner._play(self.connection, self.wfile.write)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s " + format, owner.url, *args)

        return Handler
