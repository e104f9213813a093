"""LangChain tools over the video memory (DESIGN §6) and the toolkit that hands them to an agent.

Five tools, each a `StructuredTool` with a pydantic argument schema (`schemas`) and
`response_format="content_and_artifact"`: the model reads short text with every time as HH:MM:SS and
seconds (`render`); the structured result (moments, lines, streams, events as plain JSON-able dicts) is the
ToolMessage's artifact. A bad argument, an unknown stream or a time past what is committed comes back as a
one-line error message (status "error") that says what to change, never as an exception.

They read through one `MemoryView`: committed checkpoints and catalog rows only, reloaded when a newer
checkpoint lands, so an agent in another process can use them while the daemon writes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool, BaseToolkit, StructuredTool, ToolException
from pydantic import BaseModel, ConfigDict, PrivateAttr

from vsalmonn.errors import one_line

from . import render
from .encoding import TextEncoder, TextEncoderFactory
from .memory_view import MemoryView, ViewError
from .schemas import (
    DescribeArgs,
    ListEventsArgs,
    ListStreamsArgs,
    SearchArgs,
    TranscriptArgs,
    validation_message,
)
from .timefmt import at_text, span_text
from .wallclock import TimeArg

log = logging.getLogger(__name__)

Result = tuple[str, dict[str, Any]]

SEARCH_DESCRIPTION = (
    "Search the video memory for the moments that best match a description of something seen or said. "
    "Returns up to k moments, best first, each with its stream, its time span as HH:MM:SS and in seconds, a "
    "relevance score, whether it was found in the pictures (visual) or the speech (audio), and evidence: "
    "what was said during it and what the camera most likely showed. Use start and end (seconds, "
    "HH:MM:SS, or a wall-clock ISO date-time for a live stream) to search one stretch of time, and stream "
    "to search one stream. Cite moments by their times."
)
TRANSCRIPT_DESCRIPTION = (
    "Read what was said in a stream between two times (seconds, HH:MM:SS, or a wall-clock ISO date-time "
    "for a live stream), line by line with each line's time span. Use it to check or quote speech around "
    "a moment that search_video_memory found."
)
DESCRIBE_DESCRIPTION = (
    "Describe one instant of a stream (seconds, HH:MM:SS, or a wall-clock ISO date-time): the most likely "
    "contents of the nearest video frames, the speech and on-screen text within 10 seconds of it, and how "
    "much of the memory covers it."
)
STREAMS_DESCRIPTION = (
    "List the video streams in the memory: each one's name, source, the stretch of time its memory covers "
    "(HH:MM:SS and seconds) and its ingest state. Call this first to learn stream names and time ranges."
)
EVENTS_DESCRIPTION = (
    "List recorded events (alerts, reconnects, faults), newest first, optionally of one stream, of one kind, "
    "or since a stream time (seconds) or a wall-clock date-time."
)


def _guarded(name: str, fn: Callable[..., Result]) -> Callable[..., Result]:
    """`fn` with every failure turned into a one-line ToolException: the model sees a message, not a trace."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Result:
        try:
            return fn(*args, **kwargs)
        except ToolException:
            raise
        except ViewError as exc:
            raise ToolException(" ".join(str(exc).split())) from exc
        except Exception as exc:
            log.exception("tool %s failed", name)
            raise ToolException(
                f"{name} failed: {one_line(exc, typed=True)}; try again or with other arguments"
            ) from exc

    return run


def _tool(name: str, description: str, schema: type[BaseModel], fn: Callable[..., Result]) -> StructuredTool:
    return StructuredTool.from_function(
        func=_guarded(name, fn),
        name=name,
        description=description,
        args_schema=schema,
        response_format="content_and_artifact",
        handle_tool_error=True,
        handle_validation_error=validation_message(name),
    )


def _at(t: TimeArg) -> str:
    return render.when(t) if isinstance(t, datetime) else at_text(t)


def _scope(stream: str | None, start: TimeArg | None, end: TimeArg | None) -> str:
    where = f"in stream {stream!r}" if stream else "in any stream"
    if isinstance(start, float | int) and isinstance(end, float | int):
        return f"{where} within {span_text(start, end)}"
    if start is not None and end is not None:
        return f"{where} from {_at(start)} to {_at(end)}"
    if start is not None:
        return f"{where} from {_at(start)} on"
    if end is not None:
        return f"{where} up to {_at(end)}"
    return where


def _all_damaged(view: MemoryView, name: str) -> bool:
    """True when every committed checkpoint of `name` failed its checksum when this process read it."""
    infos = view.store.checkpoints(name)
    failed = getattr(view.store, "failed", {}).get(infos[0].stream_id, set()) if infos else set()
    return bool(infos) and all(i.seq in failed for i in infos)


def _coverage(view: MemoryView, stream: str | None) -> str:
    """Why a search may have found nothing: what the streams searched have committed."""
    summaries = [s for s in view.streams() if stream is None or s.name == stream]
    damaged = [s.name for s in summaries if s.checkpoint_seq is not None and _all_damaged(view, s.name)]
    if damaged:
        return f"; every checkpoint of stream {', '.join(map(repr, damaged))} fails its checksum"
    searchable = [s for s in summaries if s.checkpoint_seq is not None]
    if not searchable:
        which = f"stream {stream!r} has" if stream else "no stream has"
        return f"; {which} no committed checkpoint yet, so there is nothing to search: try again later"
    spans = [
        f"{s.name} {span_text(s.t_start, s.t_end)}"
        for s in searchable[:10]
        if s.t_start is not None and s.t_end is not None
    ]
    return f"; the memory covers: {', '.join(spans)}" if spans else ""


def build_tools(view: MemoryView) -> list[BaseTool]:
    """The five tools over `view`: search_video_memory, get_transcript, describe_moment, list_streams,
    list_events."""

    def search_video_memory(
        query: str,
        stream: str | None = None,
        start: TimeArg | None = None,
        end: TimeArg | None = None,
        k: int = 5,
    ) -> Result:
        hits = view.search(query, stream=stream, start=start, end=end, k=k)
        scope = _scope(stream, start, end)
        text = render.render_hits(query, hits, scope)
        if not hits:
            text += _coverage(view, stream)
        return text, {"query": query, "moments": [h.model_dump(mode="json") for h in hits]}

    def get_transcript(stream: str, start: TimeArg, end: TimeArg) -> Result:
        tr = view.transcript(stream, start, end)
        return render.render_transcript(tr), tr.model_dump(mode="json")

    def describe_moment(stream: str, t: TimeArg) -> Result:
        d = view.describe(stream, t)
        return render.render_description(d), d.model_dump(mode="json")

    def list_streams() -> Result:
        streams = view.streams()
        return render.render_streams(streams), {"streams": [s.model_dump(mode="json") for s in streams]}

    def list_events(
        stream: str | None = None,
        since: float | datetime | None = None,
        kind: str | None = None,
        limit: int = 20,
    ) -> Result:
        ev = view.events(stream=stream, since=since, kind=kind, limit=limit)
        parts = [f"of kind {kind!r}"] if kind else []
        parts.append(f"in stream {stream!r}" if stream else "in any stream")
        if isinstance(since, datetime):
            parts.append(f"since {render.when(since)}")
        elif since is not None:
            parts.append(f"since {at_text(since)}")
        return render.render_events(ev, " ".join(parts)), ev.model_dump(mode="json")

    return [
        _tool("search_video_memory", SEARCH_DESCRIPTION, SearchArgs, search_video_memory),
        _tool("get_transcript", TRANSCRIPT_DESCRIPTION, TranscriptArgs, get_transcript),
        _tool("describe_moment", DESCRIBE_DESCRIPTION, DescribeArgs, describe_moment),
        _tool("list_streams", STREAMS_DESCRIPTION, ListStreamsArgs, list_streams),
        _tool("list_events", EVENTS_DESCRIPTION, ListEventsArgs, list_events),
    ]


class VideoMemoryToolkit(BaseToolkit):
    """The video memory's tools for a LangChain agent (DESIGN §9: `VideoMemoryToolkit(...).get_tools()`).

    Give it an open `MemoryStore` (`store=`) and the text encoder the streams were ingested with
    (`text_encoder=`, or `text_encoder_factory=` to make it on the first search), or open a data directory
    with `from_data_dir`; `vsalmonn.app.make_toolkit` does either with the encoder the settings name. Without
    an encoder every tool but search works. All tools share one `MemoryView`, so its cache of loaded memories
    is shared too.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any  # vsalmonn.memory_store.store.MemoryStore (not imported here: it would load torch)
    text_encoder: Any = None  # an encoding.TextEncoder
    text_encoder_factory: Any = None  # an encoding.TextEncoderFactory, called on the first search

    _view: MemoryView = PrivateAttr()
    _owns_store: bool = PrivateAttr(default=False)

    def model_post_init(self, context: Any, /) -> None:
        self._view = MemoryView(self.store, self.text_encoder, text_encoder_factory=self.text_encoder_factory)

    @classmethod
    def from_data_dir(
        cls,
        data_dir: Path | str,
        store_config: Any = None,
        text_encoder: TextEncoder | None = None,
        *,
        text_encoder_factory: TextEncoderFactory | None = None,
        read_only: bool = False,
    ) -> VideoMemoryToolkit:
        """The toolkit of the store under `data_dir` (`store_config`: a StoreConfig); `close()` closes it."""
        from vsalmonn.memory_store.store import MemoryStore

        store = MemoryStore.open(Path(data_dir), store_config, read_only=read_only)
        toolkit = cls(store=store, text_encoder=text_encoder, text_encoder_factory=text_encoder_factory)
        toolkit._owns_store = True
        return toolkit

    @property
    def view(self) -> MemoryView:
        """The MemoryView the tools read through (usable without LangChain)."""
        return self._view

    def get_tools(self) -> list[BaseTool]:
        return build_tools(self._view)

    def close(self) -> None:
        self._view.close()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> VideoMemoryToolkit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
