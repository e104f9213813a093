"""The REST API: FastAPI routes over one read-only `MemoryView` of the settings' data directory.

Every answer is a model the tools or the CLI's ``--json`` already give (`vsalmonn.tools.results`,
`vsalmonn.reports`), so a program sees one schema whichever face it uses. A refusal is a JSON body whose
``detail`` is one line: 422 for an argument the view refuses, 404 for an unknown stream, 503 while the data
directory has no catalog yet.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import hmac
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vsalmonn import __version__
from vsalmonn.errors import one_line
from vsalmonn.plugins.context import Shared
from vsalmonn.settings import Settings
from vsalmonn.tools.checks import QUERY_MAX
from vsalmonn.tools.encoding import TextEncoder
from vsalmonn.tools.memory_view import EVENTS_MAX, MemoryView
from vsalmonn.tools.results import Events, SearchResult, Transcript, UnknownStreamError, ViewError
from vsalmonn.tools.wallclock import TIME_HELP, read_time

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

log = logging.getLogger(__name__)

SEARCH_K_MAX = 100
"""Moments one request may ask for: a page of results, not a dump of the memory."""


class Unavailable(Exception):
    """The data directory cannot be read yet (no catalog, or one that cannot be opened): 503."""


class ViewHolder:
    """The server's one view, opened on first need: a server started before the daemon has made a catalog
    becomes ready once it exists, without a restart."""

    def __init__(self, settings: Settings, text_encoder: TextEncoder | Shared | None = None) -> None:
        from vsalmonn.app import shared_text_encoder

        self._settings = settings
        # one holder for the view and the MCP server's plugins: the process loads one text model
        self.text_encoder = (
            text_encoder if isinstance(text_encoder, Shared) else shared_text_encoder(settings, text_encoder)
        )
        self._view: MemoryView | None = None
        self._lock = threading.Lock()

    def get(self) -> MemoryView:
        with self._lock:
            if self._view is None:
                self._view = self._open()
            return self._view

    def _open(self) -> MemoryView:
        from vsalmonn.app import make_view
        from vsalmonn.memory_store.store import CATALOG_FILE

        settings = self._settings
        if settings.store.catalog_url is None and not (settings.data_dir / CATALOG_FILE).is_file():
            raise Unavailable(f"no catalog in {settings.data_dir} yet: nothing has been ingested")
        try:
            return make_view(settings, read_only=True, text_encoder=self.text_encoder)
        except Exception as exc:  # a catalog that cannot be opened is the environment's fault, not a bug
            raise Unavailable(f"catalog: {one_line(exc)}") from None

    def close(self) -> None:
        with self._lock:
            if self._view is not None:
                self._view.close()
                self._view = None


def _view(request: Request) -> MemoryView:
    return request.app.state.views.get()


View = Annotated[MemoryView, Depends(_view)]
_scheme = HTTPBearer(auto_error=False, description="serve.token")


def _check_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)]
) -> None:
    """``Authorization: Bearer TOKEN``, compared in constant time, when a token is set; 401 otherwise."""
    token = request.app.state.settings.serve.token
    if token is None:
        return
    given = credentials.credentials.encode() if credentials is not None else b""
    if not hmac.compare_digest(given, token.get_secret_value().encode()):
        raise HTTPException(
            401, "missing or wrong token: send 'Authorization: Bearer TOKEN'",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


def create_app(
    settings: Settings,
    *,
    text_encoder: TextEncoder | Shared | None = None,
    chat_model: "BaseChatModel | None" = None,
) -> FastAPI:
    """The FastAPI app serving the memory under `settings.data_dir` as `settings.serve` configures it.

    Prompts are embedded by `text_encoder` when given (a process that has loaded one shares it), else by
    the one the settings name, loaded on the first search; the agent of ``POST /api/ask`` shares it.
    `chat_model`: for programs and tests that bring their own chat model to the agent instead of the one
    ``agent.llm`` names (which is loaded on the first question).
    """
    from vsalmonn.app import shared_text_encoder
    from vsalmonn.serve.ask import Asker
    from vsalmonn.serve.metrics import ServeMetrics

    if not isinstance(text_encoder, Shared):
        text_encoder = shared_text_encoder(settings, text_encoder)  # one holder: search and the agent
    holder = ViewHolder(settings, text_encoder)
    asker = Asker(settings, holder.get, text_encoder, chat_model)
    metrics = ServeMetrics(holder.get)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        asker.close()
        holder.close()

    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN. /openapi.json is served.
    app = FastAPI(
        title="vsalmonn", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
        description="The committed memory of vsalmonn's streams: search, transcripts, events, status.",
    )  # fmt: skip
    app.state.views = holder
    app.state.metrics = metrics
    app.state.settings = settings
    _add_errors(app)
    if settings.serve.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.serve.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )  # fmt: skip
    guard = [Depends(_check_token)]

    @app.get("/health/live", tags=["health"])
    def live() -> dict[str, str]:
        """The process answers."""
        return {"status": "live"}

    @app.get("/health/ready", tags=["health"], responses={503: {"description": "not ready, with the reason"}})
    def ready() -> Any:
        """Ready when the catalog is reachable and at least one stream has a committed checkpoint."""
        try:
            streams = holder.get().streams()
        except Unavailable as exc:
            return _error(503, str(exc))
        except Exception as exc:
            return _error(503, f"catalog: {one_line(exc)}")
        committed = [s.name for s in streams if s.checkpoint_seq is not None]
        if not committed:
            return _error(503, "no stream has a committed checkpoint yet")
        return {"status": "ready", "streams": len(streams), "committed": len(committed)}

    @app.get("/api/streams", dependencies=guard, tags=["memory"])
    def streams(view: View) -> dict[str, list[dict[str, Any]]]:
        """Every stream's status, as `vsalmonn status --json` gives it."""
        from vsalmonn.reports import status_entries

        return {"streams": status_entries(view.store, settings)}

    @app.get("/api/search", dependencies=guard, tags=["memory"])
    def search(
        view: View,
        q: Annotated[str, Query(min_length=1, max_length=QUERY_MAX, description="what to look for")],
        stream: Annotated[str | None, Query(description="one stream (default: all)")] = None,
        k: Annotated[int, Query(ge=1, le=SEARCH_K_MAX, description="moments to return")] = 5,
        start: Annotated[
            str | None, Query(max_length=64, description=f"moments overlapping [start, end]: {TIME_HELP}")
        ] = None,
        end: Annotated[str | None, Query(max_length=64, description="as start")] = None,
    ) -> SearchResult:
        """The reader's moments for a prompt: exactly the JSON of `vsalmonn search --json`."""
        from vsalmonn.reports import search_result
        from vsalmonn.serve.metrics import Timer

        timer = Timer()
        found = search_result(
            view, q, stream=stream, k=k, start=read_time(start, "start"), end=read_time(end, "end")
        )
        timer.observe(metrics.search_seconds)
        return found

    @app.get("/api/streams/{name}/transcript", dependencies=guard, tags=["memory"])
    def transcript(
        view: View,
        name: str,
        start: Annotated[str, Query(max_length=64, description=f"from: {TIME_HELP}")] = "0",
        end: Annotated[str | None, Query(max_length=64, description="to, as start (default: all)")] = (None),
    ) -> Transcript:
        """What was said in a stream between two times, as far as it is committed."""
        begin, until = read_time(start, "start") or 0.0, read_time(end, "end")
        if until is None:
            view.stream(name)  # 404 for an unknown stream before its summary is looked for
            covered = next((s.covered_until for s in view.streams() if s.name == name), None)
            until = covered or 0.0
            if not isinstance(begin, datetime):
                until = max(begin, until)
        return view.transcript(name, begin, until)

    @app.get("/api/events", dependencies=guard, tags=["memory"])
    def events(
        view: View,
        since: Annotated[
            str | None, Query(description="stream seconds, or an ISO 8601 wall-clock time (naive means UTC)")
        ] = None,
        kind: Annotated[str | None, Query(max_length=100, description="one kind of event")] = None,
        stream: Annotated[str | None, Query(description="one stream")] = None,
        limit: Annotated[int, Query(ge=1, le=EVENTS_MAX)] = 20,
    ) -> Events:
        """Events (alerts, faults, reconnects), newest first."""
        return view.events(stream=stream, since=_since(since), kind=kind, limit=limit)

    from vsalmonn.serve import ask, feed
    from vsalmonn.serve import metrics as metrics_routes

    app.include_router(feed.router(_view, guard))
    app.include_router(ask.router(asker, _view, guard, metrics))
    app.include_router(metrics_routes.router(metrics, guard))

    from vsalmonn.serve.mcp import mount

    mount(app, settings, holder.get, holder.text_encoder)  # MCP over streamable HTTP at /mcp

    @app.get(
        "/api/thumbnails/{path:path}", dependencies=guard, tags=["memory"], response_class=FileResponse,
        responses={404: {"description": "no such thumbnail"}},
    )  # fmt: skip
    def thumbnail(path: str) -> FileResponse:
        """An alert thumbnail the surveillance plugin wrote, by its path under ``<data>/thumbs``."""
        return FileResponse(_thumbnail_file(settings, path))

    from vsalmonn.serve.page import mount

    mount(app)  # the web page at / (no token needed to load it; its calls send one)
    return app


THUMBNAIL_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def _thumbnail_file(settings: Settings, path: str) -> Path:
    """The image file `path` names inside ``<data>/thumbs``; 404 for anything else (a path leading out of it
    by ``..`` or a link, a folder, another kind of file), without saying which."""
    from vsalmonn.memory_store.retention import THUMBS_DIR

    root = (settings.data_dir / THUMBS_DIR).resolve()
    try:
        found = (root / path).resolve()
        inside = found.is_relative_to(root) and found != root and found.is_file()
    except (OSError, ValueError):
        inside = False
    if not inside or found.suffix.lower() not in THUMBNAIL_TYPES:
        raise HTTPException(404, f"no thumbnail {path[:80]!r}")
    return found


def _since(text: str | None) -> float | datetime | None:
    """`since` as stream seconds when it is a number, else as a wall-clock time; 422 for neither."""
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ViewError(f"since must be stream seconds or an ISO 8601 time, got {text[:40]!r}") from None


def _add_errors(app: FastAPI) -> None:
    """Every refusal as ``{"detail": "one line"}``; FastAPI's validation errors are a list by default."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        if first.get("type") == "json_invalid":
            where = "body"  # its location is a character offset
        more = len(exc.errors()) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
        return _error(422, f"{where or 'request'}: {one_line(first.get('msg', 'invalid'))}{tail}")

    @app.exception_handler(UnknownStreamError)
    async def unknown(request: Request, exc: UnknownStreamError) -> JSONResponse:
        return _error(404, one_line(exc))

    @app.exception_handler(ViewError)
    async def refused(request: Request, exc: ViewError) -> JSONResponse:
        return _error(422, one_line(exc))

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return _error(503, one_line(exc))

    from vsalmonn.memory_store.objects import ObjectStoreError

    @app.exception_handler(ObjectStoreError)
    async def store_away(request: Request, exc: ObjectStoreError) -> JSONResponse:
        # the checkpoints' object store cannot be reached: the environment's fault, and it may come back
        return _error(503, one_line(exc))


__all__ = ["SEARCH_K_MAX", "Unavailable", "ViewHolder", "create_app"]
