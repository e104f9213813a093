"""The memory of a stream: the TTT layer, the fixed-size banks and the prompt-dependent reader (DESIGN §3).

This is the lowest layer of vsalmonn; it imports nothing from the other components.
"""

from typing import TYPE_CHECKING, Any

from .config import MemoryConfig, Modality, Optimizer, Policy, RetentionPolicy, StoreConfig

if TYPE_CHECKING:
    from .memory import StreamMemory
    from .reader import Moment
    from .slow_weights import (
        SHIPPED,
        SlowWeightsInfo,
        load_slow_weights,
        resolve_slow_weights,
        save_slow_weights,
    )

# slow_weights imports torch too (safetensors.torch)
_SLOW_WEIGHTS = {
    "SHIPPED",
    "SlowWeightsInfo",
    "load_slow_weights",
    "resolve_slow_weights",
    "save_slow_weights",
}


def __getattr__(name: str) -> Any:
    """Import the torch-backed parts on first use: a process that only reads the catalog never loads torch."""
    if name == "StreamMemory":
        from .memory import StreamMemory

        return StreamMemory
    if name == "Moment":
        from .reader import Moment

        return Moment
    if name in _SLOW_WEIGHTS:
        from . import slow_weights

        return getattr(slow_weights, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SHIPPED",
    "MemoryConfig",
    "Modality",
    "Moment",
    "Optimizer",
    "Policy",
    "RetentionPolicy",
    "SlowWeightsInfo",
    "StoreConfig",
    "StreamMemory",
    "load_slow_weights",
    "resolve_slow_weights",
    "save_slow_weights",
]
