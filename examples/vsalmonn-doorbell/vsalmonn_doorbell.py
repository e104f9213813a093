"""vsalmonn-doorbell: a vsalmonn plugin that notices visitors at a door camera.

Each sampled frame comes with the vision encoder's best labels (hook `on_frame`). When one of the watched
labels is among them with at least `min_probability`, someone is at the door: the plugin records a *visit*
and raises an event ``doorbell.visitor`` (stored in the catalog and sent to the plugin's sinks). Further
sightings within `cooldown_s` stream seconds of the last one belong to the same visit, so a visitor who waits
at the door for a minute rings once. The agent gets a tool, ``doorbell_visits(stream)``, that lists a
stream's visits, newest first, with their times.

Settings (``[plugins.settings.doorbell]``, model `DoorbellSettings`)::

    [plugins.settings.doorbell]
    labels = ["jean", "sweatshirt", "mailbag"]   # frame labels that mean "someone is there"
    min_probability = 0.2
    cooldown_s = 60
    streams = ["porch"]                          # empty: every stream

Why clothes: the default vision encoder names frames by the 1000 ImageNet classes, which have no "person";
people show up as what they wear or carry. An encoder with a "person" label (a plugin's own) works as well.

Visits are kept in memory, per stream, for the life of the process (the last `max_visits` of each stream).
In another process (``vsalmonn ask`` while ``vsalmonn daemon`` ingests) the tool finds none in memory and
reads the ``doorbell.visitor`` events stored in the catalog instead.

The module is the plugin (entry point ``doorbell = "vsalmonn_doorbell"``): its hooks are those of one
default instance, `DOORBELL`. A program or a test that wants an instance of its own registers `Doorbell()`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from vsalmonn.plugins import hookimpl

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool

__version__ = "0.1.0"

log = logging.getLogger(__name__)

VISITOR_EVENT = "doorbell.visitor"
TOOL_NAME = "doorbell_visits"
TOOL_LISTED = 20  # visits the tool shows, newest first
STORED_LIMIT = 200  # events read back from the catalog (the view's maximum)

TOOL_DESCRIPTION = (
    "List the visits seen at the door of one stream, newest first: when each visitor arrived and left "
    "(HH:MM:SS and seconds of stream time) and what the camera saw. Use it for questions such as 'who came "
    "to the door?', 'was there a delivery?' or 'when did someone ring?'."
)
PROMPT = (
    f"A doorbell plugin watches the door cameras: to learn who came to the door of a stream and when, call "
    f"{TOOL_NAME} with the stream's name and cite the times it returns."
)


class DoorbellSettings(BaseModel):
    """The ``[plugins.settings.doorbell]`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: list[str] = Field(
        default_factory=lambda: [
            "jean",
            "jersey",
            "sweatshirt",
            "trench coat",
            "backpack",
            "mailbag",
            "carton",
        ],
        min_length=1,
        description="frame labels that mean someone is at the door: one of a label's comma-separated names, "
        "case-insensitive ('jean' matches 'jean, blue jean')",
    )
    min_probability: float = Field(0.2, ge=0, le=1, description="the least probability of a watched label")
    cooldown_s: float = Field(
        60.0, ge=0, description="stream seconds without a sighting after which a new sighting is a new visit"
    )
    streams: list[str] = Field(default_factory=list, description="streams watched; empty: every stream")
    max_visits: int = Field(100, ge=1, description="visits kept in memory per stream (the newest)")


@dataclasses.dataclass
class Visit:
    """Someone at the door: from the first sighting `t0` to the last `t1` (stream seconds)."""

    stream: str
    t0: float
    t1: float
    label: str  # the watched label seen with the highest probability
    probability: float
    sightings: int = 1

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class VisitsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: str = Field(min_length=1, description="Name of a stream, exactly as list_streams shows it.")


def hms(t: float) -> str:
    """Stream seconds as HH:MM:SS, the way vsalmonn's tools write times."""
    s = max(0, int(t))
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


class Doorbell:
    """The plugin; see the module docstring. Thread-safe: `on_frame` runs on every stream's own thread."""

    def __init__(self) -> None:
        self.settings = DoorbellSettings()
        self.data_dir: Path | None = None
        self._emit: Callable[..., Any] | None = None
        self._watched = self._names(self.settings.labels)
        self._visits: dict[str, deque[Visit]] = {}
        self._lock = threading.Lock()

    # ----- hooks ------------------------------------------------------------------------------------------

    @hookimpl
    def plugin_settings_model(self) -> type[BaseModel]:
        return DoorbellSettings

    @hookimpl
    def configure(self, config: DoorbellSettings, emit: Callable[..., Any], data_dir: Path | None) -> None:
        with self._lock:
            self.settings = config
            self._emit = emit
            self.data_dir = data_dir
            self._watched = self._names(config.labels)
            self._visits.clear()

    @hookimpl
    def on_frame(self, stream: str, t: float, labels: Iterable[tuple[str, float]]) -> None:
        # On the ingestion path, within its budget (50 ms by default): a few comparisons and a lock, nothing
        # slow. emit() stores and delivers the event; webhooks send from a thread of their own.
        settings = self.settings
        if settings.streams and stream not in settings.streams:
            return
        seen = self._watched_label(labels, settings.min_probability)
        if seen is None:
            return
        label, probability = seen
        with self._lock:
            visits = self._visits.get(stream)
            if visits is None:
                visits = self._visits[stream] = deque(maxlen=settings.max_visits)
            last = visits[-1] if visits else None
            if last is not None and 0 <= t - last.t1 < settings.cooldown_s:  # the same visitor, still there
                last.t1 = t
                last.sightings += 1
                if probability > last.probability:
                    last.label, last.probability = label, probability
                return
            visits.append(Visit(stream, t, t, label, probability))
            emit = self._emit
        message = f"visitor at {stream} {hms(t)}: {label} ({probability:.0%})"
        log.info("doorbell: %s", message)
        if emit is not None:
            emit(VISITOR_EVENT, message, stream=stream, t=t, label=label, probability=round(probability, 4))

    @hookimpl
    def register_tools(self, register: Callable[[Any], None], view: Any) -> None:
        register(self.visits_tool(view))

    @hookimpl
    def agent_system_prompt(self, settings: Any) -> str:
        return PROMPT

    # ----- visits -----------------------------------------------------------------------------------------

    def visits(self, stream: str) -> list[Visit]:
        """Copies of `stream`'s visits kept in memory, newest first."""
        with self._lock:
            return [dataclasses.replace(v) for v in reversed(self._visits.get(stream, ()))]

    def visits_tool(self, view: Any = None) -> StructuredTool:
        """The agent's ``doorbell_visits`` tool; `view` (a MemoryView) reads stored visits when none are in
        memory, and checks stream names."""
        # imported here, not at the top: the daemon loads the plugin too, and never asks for tools
        from langchain_core.tools import StructuredTool

        def doorbell_visits(stream: str) -> tuple[str, dict[str, Any]]:
            visits, where = self.visits(stream), "memory"
            if not visits and view is not None:
                visits, where = stored_visits(view, stream), "catalog"
            shown = visits[:TOOL_LISTED]
            if not shown:
                watched = ", ".join(self.settings.labels)
                text = f"No visits seen at {stream} (the doorbell watches for: {watched})."
            else:
                more = (
                    f" ({len(visits) - len(shown)} older ones not shown)" if len(visits) > len(shown) else ""
                )
                lines = [f"{len(visits)} visit(s) at {stream}, newest first{more}:"]
                lines += [
                    f"- {hms(v.t0)}-{hms(v.t1)} ({v.t0:.1f}-{v.t1:.1f} s): {v.label} ({v.probability:.0%})"
                    for v in shown
                ]
                text = "\n".join(lines)
            artifact = {
                "stream": stream,
                "source": where,
                "visits": [v.as_dict() for v in shown],
                # the agent cites what its tools return as "moments": a visit is one
                "moments": [{"stream": v.stream, "t0": v.t0, "t1": v.t1} for v in shown],
            }
            return text, artifact

        return StructuredTool.from_function(
            func=doorbell_visits,
            name=TOOL_NAME,
            description=TOOL_DESCRIPTION,
            args_schema=VisitsArgs,
            response_format="content_and_artifact",
            handle_tool_error=True,  # a ToolException reaches the model as a one-line message
            handle_validation_error=True,
        )

    # ----- helpers ----------------------------------------------------------------------------------------

    @staticmethod
    def _names(labels: Iterable[str]) -> frozenset[str]:
        return frozenset(" ".join(label.lower().split()) for label in labels)

    def _watched_label(self, labels: Iterable[tuple[str, float]], least: float) -> tuple[str, float] | None:
        """The most probable watched label of a frame, with its probability, or None."""
        best = None
        for name, probability in labels or ():
            if probability < least or (best is not None and probability <= best[1]):
                continue
            names = {" ".join(part.lower().split()) for part in str(name).split(",")}
            if names & self._watched or " ".join(str(name).lower().split()) in self._watched:
                best = (str(name), float(probability))
        return best


def stored_visits(view: Any, stream: str) -> list[Visit]:
    """The visits of `stream` as the catalog's ``doorbell.visitor`` events tell them (one sighting each),
    newest first. ToolException (one line) for a stream the memory does not know."""
    from langchain_core.tools import ToolException

    try:
        events = view.events(stream=stream, kind=VISITOR_EVENT, limit=STORED_LIMIT).events
    except ValueError as exc:  # the view's ViewError: an unknown or malformed stream name
        raise ToolException(str(exc)) from None
    return [
        Visit(
            stream,
            e.t,
            e.t,
            str((e.payload or {}).get("label", "?")),
            float((e.payload or {}).get("probability", 0.0)),
        )
        for e in events
        if e.t is not None
    ]


DOORBELL = Doorbell()
"""The instance whose hooks are the module's: what the entry point loads."""

plugin_settings_model = DOORBELL.plugin_settings_model
configure = DOORBELL.configure
on_frame = DOORBELL.on_frame
register_tools = DOORBELL.register_tools
agent_system_prompt = DOORBELL.agent_system_prompt
