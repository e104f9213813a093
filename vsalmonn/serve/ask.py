"""``POST /api/ask``: the agent's answer as the JSON of `vsalmonn ask --json`, or streamed as SSE.

The server has one agent (`Asker`), built as `vsalmonn ask` builds it (`vsalmonn.app.make_toolkit`,
`open_plugins`, `make_agent`) on the first question, so a server that is never asked never loads a chat
model. Questions are answered one at a time: the embedded local model is not thread-safe, and one CPU-bound
generation at a time is also the fastest way through a queue of them.

With ``Accept: text/event-stream`` the answer streams (the contract pages and programs are written against):

- each piece of text as ``event: token`` / ``data: {"text": "..."}``;
- last, ``event: answer`` / ``data: <the Answer JSON>``: its ``answer`` is the authoritative text (the agent
  may append a citation the tokens did not have), its ``citations`` the cited moments;
- a failure after the stream started as ``event: error`` / ``data: {"detail": "one line"}``.

A refusal known before the first piece of text (an unknown stream, no catalog, a model that cannot be loaded,
an answer that is only a tool's error) is an ordinary JSON error with its status, streamed or not: the
response starts only when the first piece of text (or the whole answer) is there.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.
import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from vsalmonn.agent.loop import SEARCH_TOOL, Answer
from vsalmonn.errors import one_line
from vsalmonn.settings import Settings
from vsalmonn.tools.checks import QUERY_MAX
from vsalmonn.tools.memory_view import MemoryView
from vsalmonn.tools.results import UnknownStreamError, ViewError
from vsalmonn.tools.wallclock import TIME_HELP, TimeArg, parse_time

from .metrics import ServeMetrics, Timer

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from vsalmonn.agent.loop import VideoAgent
    from vsalmonn.plugins import PluginManager
    from vsalmonn.plugins.context import Shared
    from vsalmonn.tools import VideoMemoryToolkit

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 10.0  # how long shutdown waits for a question being answered before closing the agent


class AskRequest(BaseModel):
    """A question about the streams, for one stream or all."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(
        description=f"what to ask, in words: 1 to {QUERY_MAX:,} characters once runs of whitespace are one "
        "space (the agent searches the memory with it)",
        examples=["When does someone say goodbye?"],
    )
    stream: str | None = Field(None, description="one stream (default: every stream)")
    start: float | str | None = Field(
        None, description=f"only moments that end at or after this time: {TIME_HELP}", examples=["00:01:05"]
    )
    end: float | str | None = Field(None, description="only moments that begin at or before this time")

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: float | str | None) -> TimeArg | None:
        return None if value is None else parse_time(value)

    @field_validator("question")
    @classmethod
    def _collapsed(cls, value: str) -> str:
        text = " ".join(value.split())
        if not text:
            raise ValueError("the question is empty")
        if len(text) > QUERY_MAX:
            raise ValueError(f"the question is {len(text):,} characters long; the limit is {QUERY_MAX:,}")
        return text


class Asker:
    """The server's one agent, made on the first question and reused; one question at a time.

    `view()` gives the server's view: the agent's tools read its store, and its plugins store their events
    there, as in `vsalmonn ask`. `text_encoder` is the holder the search route embeds with, so the process
    loads one text model. `chat_model`, when given, replaces the model the settings name (``agent.llm``).
    """

    def __init__(
        self,
        settings: Settings,
        view: Callable[[], MemoryView],
        text_encoder: "Shared",
        chat_model: "BaseChatModel | None" = None,
    ) -> None:
        self._settings = settings
        self._view = view
        self._text_encoder = text_encoder
        self._chat_model = chat_model
        self._lock = threading.Lock()
        self._agent: VideoAgent | None = None
        self._toolkit: VideoMemoryToolkit | None = None
        self._plugins: PluginManager | None = None

    def ask(self, body: AskRequest, on_token: Callable[[str], None] | None = None) -> Answer:
        with self._lock:
            agent = self._agent if self._agent is not None else self._build()
            return agent.ask(
                body.question, stream=body.stream, start=body.start, end=body.end, on_token=on_token
            )

    def _build(self) -> "VideoAgent":
        from vsalmonn.app import make_agent, make_toolkit, open_plugins

        settings = self._settings
        toolkit = make_toolkit(settings, self._view().store, text_encoder=self._text_encoder)
        plugins = open_plugins(settings, toolkit.store, text_encoder=self._text_encoder)
        try:
            # A model that cannot be had (ModelError) leaves nothing built: the next question tries again.
            agent = make_agent(settings, toolkit, plugins=plugins, model=self._chat_model)
        except BaseException:
            plugins.close()
            toolkit.close()
            raise
        self._agent, self._toolkit, self._plugins = agent, toolkit, plugins
        return agent

    def close(self) -> None:
        """Close the agent's plugins and toolkit (after the question being answered, if any)."""
        locked = self._lock.acquire(timeout=CLOSE_WAIT_S)
        try:
            if self._plugins is not None:
                self._plugins.close()
            if self._toolkit is not None:
                self._toolkit.close()
            self._agent = self._toolkit = self._plugins = None
        finally:
            if locked:
                self._lock.release()


def wants_events(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


def sse(event: str, data: Any) -> str:
    """One Server-Sent Event; its JSON data is one line (json.dumps escapes newlines)."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def refusal(exc: BaseException) -> JSONResponse:
    """The JSON error for a question that failed before any text was sent, with its status."""
    from vsalmonn.agent.local_model import ModelError

    from .api import Unavailable

    if isinstance(exc, UnknownStreamError):
        status = 404
    elif isinstance(exc, ViewError):
        status = 422
    elif isinstance(exc, Unavailable | ModelError):
        status = 503  # no catalog yet, or no chat model: the server's state, not the question
    else:
        log.error("ask failed: %s", one_line(exc, typed=True), exc_info=exc)
        detail = f"the agent failed: {one_line(exc, typed=True)}"
        return JSONResponse(status_code=500, content={"detail": detail})
    return JSONResponse(status_code=status, content={"detail": one_line(exc)})


def tool_refusal(answer: Answer) -> JSONResponse | None:
    """The refusal of an answer that is only a tool's error, as `ask --json` refuses it; None otherwise.

    422 as ``GET /api/search`` answers the same refusals of the reader (every checkpoint of a stream damaged,
    no text encoder); 500 when the search tool itself crashed.
    """
    from vsalmonn.reports import tool_error

    error = tool_error(answer)
    if error is None:
        return None
    status = 500 if error.startswith(f"{SEARCH_TOOL} failed") else 422
    return JSONResponse(status_code=status, content={"detail": error})


def router(asker: Asker, view_dependency: object, guard: list[object], metrics: ServeMetrics) -> APIRouter:
    routes = APIRouter()

    @routes.post(
        "/api/ask", dependencies=guard, tags=["agent"], response_model=Answer,  # type: ignore[arg-type]
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "the Answer, or its SSE stream"},
            404: {"description": "no such stream"}, 503: {"description": "no catalog yet, or no chat model"},
        },
    )  # fmt: skip
    async def ask(
        request: Request, body: AskRequest, view: Annotated[MemoryView, Depends(view_dependency)]
    ) -> Any:
        """The agent's answer with its cited moments: the JSON of `vsalmonn ask --json`, or with ``Accept:
        text/event-stream`` its text as it is written (``token`` events), then the ``answer`` event."""
        if body.stream is not None:
            try:
                await run_in_threadpool(view.stream, body.stream)  # before any model loads
            except ViewError as exc:
                return refusal(exc)
        timer = Timer()
        if wants_events(request):
            return await _streamed(asker, body, lambda: timer.observe(metrics.ask_seconds))
        try:
            answer = await run_in_threadpool(asker.ask, body)
        except Exception as exc:
            return refusal(exc)
        refused = tool_refusal(answer)
        if refused is not None:
            return refused
        timer.observe(metrics.ask_seconds)
        return answer

    return routes


async def _streamed(asker: Asker, body: AskRequest, answered: Callable[[], None]) -> Response:
    """The answer as SSE, started once the first piece of text is there (a refusal before it is JSON).

    The agent runs in a thread of its own and hands each piece to the event loop. A client that goes away
    does not stop it: the model is not interrupted mid-generation, so the next question never meets a
    generation still running on it; what is left of the answer is written and dropped.
    """
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def put(kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed event loop (the server stopped): no one listens
            loop.call_soon_threadsafe(items.put_nowait, (kind, value))

    def work() -> None:
        try:
            put("answer", asker.ask(body, on_token=lambda piece: put("token", piece)))
        except BaseException as exc:
            put("error", exc)

    threading.Thread(target=work, name="ask", daemon=True).start()
    first = await items.get()
    if first[0] == "error":
        return refusal(first[1])
    if first[0] == "answer":
        refused = tool_refusal(first[1])
        if refused is not None:
            return refused
    return StreamingResponse(
        _events(first, items, answered), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )  # fmt: skip


async def _events(
    first: tuple[str, Any], items: "asyncio.Queue[tuple[str, Any]]", answered: Callable[[], None]
) -> AsyncIterator[str]:
    kind, value = first
    while True:
        if kind == "token":
            yield sse("token", {"text": value})
        elif kind == "answer":
            error = tool_refusal(value)
            if error is not None:
                yield sse("error", {"detail": json.loads(error.body)["detail"]})
                return
            answered()
            yield sse("answer", value.model_dump(mode="json"))
            return
        else:  # the same one line a refusal before the stream would have had
            yield sse("error", {"detail": json.loads(refusal(value).body)["detail"]})
            return
        kind, value = await items.get()


__all__ = ["AskRequest", "Asker", "router", "sse"]
