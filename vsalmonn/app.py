"""Composition: the plugins, the daemon and the agent made from one settings object (DESIGN §1, top layer).

The components below take what they need as arguments and never read the settings themselves; this module
is where the settings become objects, so that the CLI, the demo and a program embedding vsalmonn build them
the same way.

Built-in plugins (`vsalmonn.plugins.builtin`) are loaded only when named in ``plugins.enabled``: each costs
work on every frame or segment, so a deployment opts in. Each is loaded by its class, so every plugin manager
(one per process, usually) has its own instance and state. Installed plugins (entry-point group
``vsalmonn.plugins``) load by default, as the plugin API describes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vsalmonn.settings import Settings

if TYPE_CHECKING:
    from vsalmonn.agent.loop import VideoAgent
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.perception.daemon import Daemon
    from vsalmonn.plugins import PluginManager
    from vsalmonn.tools import MemoryView, VideoMemoryToolkit
    from vsalmonn.tools.encoding import TextEncoder

BUILTIN_PLUGINS: dict[str, str] = {
    "meeting_monitor": "vsalmonn.plugins.builtin.meeting_monitor:MeetingMonitor",
    "surveillance": "vsalmonn.plugins.builtin.surveillance:Surveillance",
}


def open_plugins(settings: Settings, store: MemoryStore | None, *, text_encoder: Any = None) -> PluginManager:
    """The plugins the settings select, loaded, with their encoders registered; close() it when done.

    Their context (`vsalmonn.plugins.context.PluginContext`) carries `store`, `settings` and the one text
    encoder of the process: `text_encoder` when the caller has it already, else the one the perception
    settings name, made when first asked for (by a plugin's `configure`, or by the daemon's pipeline, which
    takes it from there).
    """
    from vsalmonn.perception.encoders import create_encoder, register_encoder
    from vsalmonn.plugins.context import Shared
    from vsalmonn.plugins.manager import PluginManager

    perception = settings.perception
    shared = Shared(value=text_encoder) if text_encoder is not None else Shared(
        lambda: create_encoder("text", perception.text_encoder, perception, settings.data_dir)
    )  # fmt: skip
    manager = PluginManager(
        settings.plugins, store=store, data_dir=settings.data_dir, settings=settings, text_encoder=shared
    )
    wanted = set(settings.plugins.enabled)
    manager.load(extra={name: target for name, target in BUILTIN_PLUGINS.items() if name in wanted})
    manager.call("register_encoders", register=register_encoder)
    return manager


def make_daemon(
    settings: Settings,
    store: MemoryStore,
    specs: Sequence[Any],
    *,
    plugins: PluginManager | None = None,
    once: bool = False,
) -> Daemon:
    from vsalmonn.perception.daemon import Daemon

    return Daemon(
        specs, store=store, perception=settings.perception, memory=settings.memory, config=settings.daemon,
        data_dir=settings.data_dir, once=once, plugins=plugins,
    )  # fmt: skip


def text_encoder_factory(settings: Settings) -> Callable[[], TextEncoder]:
    """Makes the text encoder the settings name (``perception.text_encoder``), when it is first called.

    What the tools are given to embed prompts: they never choose an encoder themselves, and a factory keeps
    a view that only lists streams or reads transcripts from loading a model.
    """

    def make() -> TextEncoder:
        from vsalmonn.perception.encoders import create_encoder

        perception = settings.perception
        return create_encoder("text", perception.text_encoder, perception, settings.data_dir)

    return make


def make_view(
    settings: Settings,
    store: MemoryStore | None = None,
    *,
    read_only: bool = False,
    text_encoder: TextEncoder | None = None,
) -> MemoryView:
    """The read-only view the tools use, over `store`, or over the settings' data directory (closed with it).

    Prompts are embedded by `text_encoder` when given (the one a process has loaded already), else by the
    encoder the settings name, made on the first search.
    """
    from vsalmonn.tools.memory_view import MemoryView

    factory = None if text_encoder is not None else text_encoder_factory(settings)
    if store is None:
        return MemoryView.from_data_dir(
            settings.data_dir, settings.store, text_encoder, text_encoder_factory=factory, read_only=read_only
        )
    return MemoryView(store, text_encoder, text_encoder_factory=factory)


def make_toolkit(
    settings: Settings,
    store: MemoryStore | None = None,
    *,
    read_only: bool = False,
    text_encoder: TextEncoder | None = None,
) -> VideoMemoryToolkit:
    """The LangChain toolkit over `store`, or over the settings' data directory (closed by its `close()`).

    The text encoder is chosen as by `make_view`.
    """
    from vsalmonn.tools.toolkit import VideoMemoryToolkit

    factory = None if text_encoder is not None else text_encoder_factory(settings)
    if store is None:
        return VideoMemoryToolkit.from_data_dir(
            settings.data_dir, settings.store, text_encoder, text_encoder_factory=factory, read_only=read_only
        )
    return VideoMemoryToolkit(store=store, text_encoder=text_encoder, text_encoder_factory=factory)


def make_agent(
    settings: Settings,
    toolkit: VideoMemoryToolkit,
    *,
    plugins: PluginManager | None = None,
    llm: str | None = None,
) -> VideoAgent:
    """The agent over the toolkit's tools plus the plugins' tools, prompt parts and answer hooks."""
    from vsalmonn.agent.loop import VideoAgent
    from vsalmonn.agent.models import chat_model

    config = settings.agent if llm is None else settings.agent.model_copy(update={"llm": llm})
    tools = toolkit.get_tools()
    prompt = None
    if plugins is not None:
        plugins.call("register_tools", register=tools.append, view=toolkit.view)
        prompt = plugins.system_prompt(settings) or None
    model = chat_model(config, settings.data_dir)
    return VideoAgent(model, tools, config, system_prompt=prompt, plugins=plugins)
