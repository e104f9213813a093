"""The plugin API: every hook a vsalmonn plugin can implement (DESIGN §7).

A plugin is any object (a module, a class instance) with functions marked `@hookimpl` whose names are the
hooks below; it declares only the arguments it needs, in any order. It is found through the entry-point
group `vsalmonn.plugins` of its distribution, or named in the settings (``[plugins] enabled``)::

    # pyproject.toml of the plugin
    [project.entry-points."vsalmonn.plugins"]
    doorbell = "vsalmonn_doorbell"

    # vsalmonn_doorbell.py
    from vsalmonn.plugins import hookimpl

    @hookimpl
    def on_frame(stream, t, labels):
        if any(name == "person" and p > 0.5 for name, p in labels):
            ...

How hooks are called (`PluginManager`): through pluggy's own hook calling (so ``pm.trace`` and
``pm.enable_tracing()`` show every call), in pluggy's order (tryfirst ones first, then the most recently
registered first), each implementation guarded on its own (`vsalmonn.plugins.isolation`). An exception is
logged with the plugin's name and counted, and the other plugins are still called; a plugin whose calls of
one hook fail `max_failures` times in a row is disabled (event ``plugin.disabled``). Time is measured after
each call (Python cannot interrupt a function running in its own thread): an ingestion hook (`on_frame`,
`on_transcript`, `on_memory_write`) that keeps overrunning its budget, or overruns it grossly once, is skipped
from then on for that plugin (event ``plugin.skipped``). Return values are collected; None means "nothing".

Threads: ingestion hooks run on the thread of the stream they concern, one thread per stream, so they run
concurrently for different streams: keep per-stream state keyed by `stream` and guard shared state with a
lock. They are on the ingestion path: do little, hand slow work to a thread of your own. Times are seconds of
stream time (DESIGN §2). `stream` is always the stream's name.

Wrapper implementations (``hookwrapper=True`` / ``wrapper=True``) are not supported, and a hook name that is
not below is refused unless marked ``optionalhook=True`` (one written for a newer vsalmonn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    from pydantic import BaseModel

    from .context import PluginContext

PROJECT = "vsalmonn"
ENTRY_POINT_GROUP = "vsalmonn.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- life cycle ---------------------------------------------------------------------------------------------


@hookspec
def plugin_settings_model() -> type[BaseModel] | None:
    """The pydantic model of this plugin's settings table (``[plugins.settings.NAME]``), or None.

    Called once, when the plugin is registered, on the thread that loads plugins (the main thread). The table
    is validated against it; a table that does not validate keeps the plugin from loading, with the reason.
    Without a model the table is passed to `configure` as a plain dict.
    """


@hookspec
def configure(config: Any, emit: Any, data_dir: Path | None, context: PluginContext) -> None:
    """Receive this plugin's settings, its event emitter and the program's context; called once, at load.

    Thread: the one that loads plugins (the main thread), right after registration, before any stream
    starts. `config`: the plugin's settings table, an instance of its `plugin_settings_model` (or a dict,
    {} when absent). `emit(kind, message="", *, stream=None, t=None, **payload)` raises an event with this
    plugin as its source: stored in the catalog, passed to `on_event`, delivered to this plugin's sinks; it
    never raises and may be called from any thread. `data_dir`: the data directory (None in a bare
    manager), where a plugin may keep files under a folder of its own name.

    `context` (`vsalmonn.plugins.context.PluginContext`): the program's own objects, for the plugin to keep:
    ``context.store`` (the `MemoryStore` the daemon writes to, so its catalog is the one ``[store]
    catalog_url`` names; None where the program has none, as in ``plugins list``), ``context.settings``
    (the whole `vsalmonn.settings.Settings`, read-only), ``context.text_encoder`` (the pipeline's text
    encoder, made on first use, so that a plugin embedding text shares the pipeline's model and space; None
    where the program gives none), ``context.data_dir`` and ``context.emit`` (the same as the arguments).
    Declare only the arguments you need: a plugin written before `context` existed keeps working.
    A failure here keeps the plugin from loading, with the reason. Return value: ignored.
    """


@hookspec
def on_shutdown() -> None:
    """The program is stopping: flush and close what the plugin holds (files, threads, connections).

    Called once by `PluginManager.close()`, on the thread that closes it, after the streams have stopped.
    Return value: ignored.
    """


# --- registries ---------------------------------------------------------------------------------------------


@hookspec
def register_sources(register: Any) -> None:
    """Add kinds of source: ``register(scheme, factory)``.

    Called once when the daemon starts, on the main thread, before any stream is opened. A stream whose
    source string starts with ``scheme:`` (``mqtt://…`` for scheme ``mqtt``) is opened with
    ``factory(source, config, data_dir)`` (`config`: the perception settings), which returns an iterable of
    decoded items in stream time (`vsalmonn.perception.media.Frame` / `AudioChunk`) and may have a
    ``close()``; it runs on that stream's thread and, when it raises `DecodeError`, the stream fails alone.
    Return value: ignored.
    """


@hookspec
def register_encoders(register: Any) -> None:
    """Add encoders choosable by name in the settings: ``register(kind, name, factory)``.

    `kind` is "vision", "speech" or "text"; ``factory(config, data_dir, **shared)`` builds the encoder
    (the protocols of `vsalmonn.perception.encoders.base`; a vision factory receives ``text_encoder=``).
    Called once when perception starts, on the main thread, before any encoder is built; a name registered
    twice: the later one wins. Return value: ignored.
    """


@hookspec
def register_tools(register: Any, view: Any) -> None:
    """Add tools for the agent: ``register(tool)`` with a LangChain `BaseTool`.

    Called when the agent's tool list is built (once per agent, on the thread building it). `view` is the
    read-only view of the committed memories and the catalog (`vsalmonn.tools.memory_view.MemoryView`) that
    the built-in tools use; a tool may keep it. Tool names must be unique. Return value: ignored.
    """


# --- ingestion (on each stream's thread, within `budget_ms`) ------------------------------------------------


@hookspec
def on_frame(stream: str, t: float, frame: np.ndarray, tokens: np.ndarray, labels: Any) -> None:
    """A sampled frame has been encoded and written to its stream's memory.

    Thread: the stream's ingestion thread, once per frame (1 per second of stream time by default; a file is
    ingested faster than real time). `t`: the frame's stream time in seconds; `frame`: (H, W, 3) uint8 RGB,
    read-only, do not keep it beyond the call without copying; `tokens`: (n, d) float32 unit rows of the frame
    as encoded (global token first), before the memory's rewrite; `labels`: the vision encoder's best
    ``(label, probability)`` pairs, best first (may be empty). Budget: `budget_ms`. Return value: ignored.
    """


@hookspec
def on_transcript(stream: str, segment: Any) -> None:
    """A transcript segment has been recognised and stored in the catalog.

    Thread: the stream's ingestion thread, once per segment (a sentence or so), in time order within a window.
    `segment`: `vsalmonn.perception.encoders.base.Segment` (`t0`, `t1` stream seconds, `text`, `words` with
    their times, `language`). Budget: `budget_ms`. Return value: ignored.
    """


@hookspec
def on_memory_write(stream: str, modality: str, t0: float, t1: float, count: int) -> None:
    """Tokens have been written to a stream's memory.

    Thread: the stream's ingestion thread, after each write (a batch of frames, or a window's speech).
    `modality`: "visual" or "audio"; `t0`, `t1`: the stream time the written tokens span; `count`: how many
    tokens. Budget: `budget_ms`. Return value: ignored.
    """


@hookspec
def on_checkpoint(stream: str, seq: int, t_end: float | None, path: str) -> None:
    """A checkpoint has been committed: its catalog row exists, readers now see this state.

    Thread: the stream's background checkpoint thread (the stream's own thread when it commits on stop).
    `seq`: the checkpoint's sequence number (1, 2, … per stream); `t_end`: the stream time its memory covers
    up to (None when empty); `path`: its Zarr group, relative to the data directory. Return value: ignored.
    """


@hookspec
def on_stream_end(stream: str, state: str) -> None:
    """A stream's source has ended, or the daemon has stopped it; its final checkpoint is committed.

    Thread: the stream's own thread, as it finishes. `state`: done, stopped, failed or skipped (as
    ``vsalmonn status`` shows it). The place for end-of-stream work such as a meeting's minutes; a slow one
    delays only this stream's shutdown. Return value: ignored.
    """


# --- the agent ----------------------------------------------------------------------------------------------


@hookspec
def agent_system_prompt(settings: Any) -> str | None:
    """A part to add to the agent's system prompt, or None.

    Called each time an agent is built, on the thread building it. `settings`: the program's settings object
    (`vsalmonn.settings.Settings`), read-only. Returned parts are appended, in call order, to the built-in
    prompt, separated by blank lines.
    """


@hookspec
def on_answer(question: str, answer: dict[str, Any]) -> dict[str, Any] | None:
    """Post-process an answer before it is returned: return a changed answer, or None to leave it.

    Called once per question, on the thread that asked, after the agent's loop. `answer` is what
    ``ask --json`` prints (``{"answer", "citations": [{"stream", "t0", "t1"}], "steps"}``) as changed by the
    plugins called before; do not change it in place, return a new dict with the same keys. A result that is
    not such a dict is ignored.
    """


# --- events -------------------------------------------------------------------------------------------------


@hookspec
def on_event(event: Any) -> None:
    """An event has been raised (an alert, a plugin fault, a failed stream) and stored.

    Thread: the one that raised it: any thread. `event`: `vsalmonn.plugins.events.EventRecord` (`kind`,
    `message`, `stream`, `source`, `t`, `payload`, `created_at`, `id`), read-only. Events raised from inside
    `on_event` are stored and delivered but not passed to `on_event` again (no loops). Return value: ignored.
    """


INGEST_HOOKS = frozenset({"on_frame", "on_transcript", "on_memory_write"})
"""Hooks on the ingestion path: held to `budget_ms`, and skipped for a plugin that keeps overrunning it."""

LIFECYCLE_HOOKS = frozenset({"plugin_settings_model", "configure"})
"""Hooks the manager calls for one plugin as it registers it: a failure refuses the plugin (not counted)."""
