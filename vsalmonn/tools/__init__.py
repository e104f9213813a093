"""LangChain tools and toolkit over the reader and the catalog (DESIGN §6, §9).

    from vsalmonn.tools import VideoMemoryToolkit
    tools = VideoMemoryToolkit.from_data_dir("vsalmonn-data", text_encoder=encoder).get_tools()

`MemoryView` is the same reading without LangChain (the CLI's search uses it). Both are imported on first
use: importing this package loads neither torch nor langchain-core. The text encoder that embeds search
prompts is given to them (`encoding.TextEncoder`); `vsalmonn.app.make_toolkit` gives the one the settings
name.
"""

from typing import TYPE_CHECKING, Any

from .timefmt import hms

if TYPE_CHECKING:
    from .memory_view import Hit, MemoryView, ViewError
    from .toolkit import VideoMemoryToolkit, build_tools

_LAZY = {
    "VideoMemoryToolkit": "toolkit",
    "build_tools": "toolkit",
    "MemoryView": "memory_view",
    "Hit": "memory_view",
    "ViewError": "memory_view",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["Hit", "MemoryView", "VideoMemoryToolkit", "ViewError", "build_tools", "hms"]
