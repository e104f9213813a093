"""The memory of a stream: the TTT layer, the fixed-size banks and the prompt-dependent reader (DESIGN §3).

This is the lowest layer of vsalmonn; it imports nothing from the other components.
"""

from typing import TYPE_CHECKING, Any

from .config import MemoryConfig, Modality, Optimizer, Policy, RetentionPolicy, StoreConfig

if TYPE_CHECKING:
    from .memory import StreamMemory
    from .reader import Moment


def __getattr__(name: str) -> Any:
    """Import the torch-backed parts on first use: a process that only reads the catalog never loads torch."""
    if name == "StreamMemory":
        from .memory import StreamMemory

        return StreamMemory
    if name == "Moment":
        from .reader import Moment

        return Moment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MemoryConfig",
    "Modality",
    "Moment",
    "Optimizer",
    "Policy",
    "RetentionPolicy",
    "StoreConfig",
    "StreamMemory",
]
