"""``GET /api/events/stream``: new catalog events as Server-Sent Events, as they are committed.

The catalog is polled (every `POLL_S`): the daemon may be another process, so there is nothing to wait on
but the rows. Each event's SSE id is its catalog id; a client that reconnects with ``Last-Event-ID`` (or
``?after=``) gets what it missed, in order.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from vsalmonn.tools.memory_view import MemoryView
from vsalmonn.tools.results import EventRecord

POLL_S = 0.5
KEEPALIVE_S = 15.0  # a comment line this often, so proxies and clients see the connection alive


def sse(record: EventRecord) -> str:
    """One event in the text/event-stream format: its id, its kind as the event name, its JSON as data."""
    kind = record.kind.replace("\n", " ").replace("\r", " ")
    return f"id: {record.id}\nevent: {kind}\ndata: {json.dumps(record.model_dump(mode='json'))}\n\n"


def router(view_dependency: object, guard: list[object]) -> APIRouter:
    routes = APIRouter()

    @routes.get("/api/events/stream", dependencies=guard, tags=["memory"], response_class=StreamingResponse)  # type: ignore[arg-type]
    async def stream_events(
        request: Request,
        view: Annotated[MemoryView, Depends(view_dependency)],
        after: Annotated[int | None, Query(ge=0, description="resume after this event id")] = None,
        last_event_id: Annotated[int | None, Header(ge=0)] = None,
    ) -> StreamingResponse:
        """Events as they are committed (SSE); from `after` / ``Last-Event-ID`` when given, else new ones."""
        start = after if after is not None else last_event_id
        if start is None:
            start = await run_in_threadpool(view.last_event_id)
        return StreamingResponse(
            _follow(request, view, start), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )  # fmt: skip

    return routes


async def _follow(request: Request, view: MemoryView, after: int) -> AsyncIterator[str]:
    yield f": following events after id {after}\n\n"
    quiet = 0.0
    stopping = getattr(request.app.state, "stopping", lambda: False)  # set by `server.make_server`
    # Ends when the client goes or the server stops (within POLL_S): a feed never holds up a shutdown.
    while not stopping() and not await request.is_disconnected():
        records = await run_in_threadpool(view.events_after, after)
        for record in records:
            after = record.id
            yield sse(record)
        quiet = 0.0 if records else quiet + POLL_S
        if quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)
