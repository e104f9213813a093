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
    from langchain_core.language_models import BaseChatModel
    from langchain_core.tools import BaseTool

    from vsalmonn.agent.loop import VideoAgent
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.perception.daemon import Daemon
    from vsalmonn.plugins import PluginManager
    from vsalmonn.plugins.context import Shared
    from vsalmonn.tools import MemoryView, VideoMemoryToolkit
    from vsalmonn.tools.encoding import TextEncoder

BUILTIN_PLUGINS: dict[str, str] = {
    "meeting_monitor": "vsalmonn.plugins.builtin.meeting_monitor:MeetingMonitor",
    "surveillance": "vsalmonn.plugins.builtin.surveillance:Surveillance",
}


def shared_text_encoder(settings: Settings, encoder: TextEncoder | None = None) -> Shared:
    """The process's one text encoder: `encoder` when the caller has loaded it, else the one the settings name
    (``perception.text_encoder``), made when first asked for.

    Plugins (their context), the pipeline and the tools all embed text into the memories' one space; giving
    them this one holder loads the model once per process, and not at all in a program that never embeds.
    """
    from vsalmonn.plugins.context import Shared

    return Shared(value=encoder) if encoder is not None else Shared(text_encoder_factory(settings))


def open_plugins(
    settings: Settings, store: MemoryStore | None, *, text_encoder: TextEncoder | Shared | None = None
) -> PluginManager:
    """The plugins the settings select, loaded, with their encoders registered; close() it when done.

    Their context (`vsalmonn.plugins.context.PluginContext`) carries `store`, `settings` and the one text
    encoder of the process (`shared_text_encoder`; pass the caller's own holder or encoder to share it).
    """
    from vsalmonn.perception.encoders import register_encoder
    from vsalmonn.plugins.manager import PluginManager

    manager = PluginManager(
        settings.plugins, store=store, data_dir=settings.data_dir, settings=settings,
        text_encoder=_holder(settings, text_encoder),
    )  # fmt: skip
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
    text_encoder: TextEncoder | Shared | None = None,
) -> MemoryView:
    """The read-only view the tools use, over `store`, or over the settings' data directory (closed with it).

    Prompts are embedded by `text_encoder` (an encoder the process has loaded, or its `shared_text_encoder`
    holder), else by the encoder the settings name, made on the first search.
    """
    from vsalmonn.tools.memory_view import MemoryView

    factory = _holder(settings, text_encoder).get
    if store is None:
        return MemoryView.from_data_dir(
            settings.data_dir, settings.store, text_encoder_factory=factory, read_only=read_only
        )
    return MemoryView(store, text_encoder_factory=factory)


def make_toolkit(
    settings: Settings,
    store: MemoryStore | None = None,
    *,
    read_only: bool = False,
    text_encoder: TextEncoder | Shared | None = None,
) -> VideoMemoryToolkit:
    """The LangChain toolkit over `store`, or over the settings' data directory (closed by its `close()`).

    The text encoder is chosen as by `make_view`.
    """
    from vsalmonn.tools.toolkit import VideoMemoryToolkit

    factory = _holder(settings, text_encoder).get
    if store is None:
        return VideoMemoryToolkit.from_data_dir(
            settings.data_dir, settings.store, text_encoder_factory=factory, read_only=read_only
        )
    return VideoMemoryToolkit(store=store, text_encoder_factory=factory)


def _holder(settings: Settings, text_encoder: TextEncoder | Shared | None) -> Shared:
    from vsalmonn.plugins.context import Shared

    return text_encoder if isinstance(text_encoder, Shared) else shared_text_encoder(settings, text_encoder)


def agent_tools(view: MemoryView, plugins: PluginManager | None = None) -> list[BaseTool]:
    """The tools an agent gets over `view`: the toolkit's five, then each plugin's (``register_tools``).

    The agent and the MCP server (`vsalmonn.serve.mcp`) both take their tools from here, so a client of
    either sees the same tools with the same schemas.
    """
    from vsalmonn.tools.toolkit import build_tools

    tools = build_tools(view)
    if plugins is not None:
        plugins.call("register_tools", register=tools.append, view=view)
    return tools


def make_agent(
    settings: Settings,
    toolkit: VideoMemoryToolkit,
    *,
    plugins: PluginManager | None = None,
    llm: str | None = None,
    model: BaseChatModel | None = None,
) -> VideoAgent:
    """The agent over the toolkit's tools plus the plugins' tools, prompt parts and answer hooks.

    `model`: a chat model the caller brings (a program's own, a test's scripted one) instead of the one
    `llm` (else ``agent.llm``) names; the agent's mode still follows the settings.
    """
    from vsalmonn.agent.loop import VideoAgent
    from vsalmonn.agent.models import chat_model

    config = settings.agent if llm is None else settings.agent.model_copy(update={"llm": llm})
    tools = agent_tools(toolkit.view, plugins)
    prompt = (plugins.system_prompt(settings) or None) if plugins is not None else None
    if model is None:
        model = chat_model(config, settings.data_dir)
    return VideoAgent(model, tools, config, system_prompt=prompt, plugins=plugins)
