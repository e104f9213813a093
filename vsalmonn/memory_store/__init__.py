"""The memory of a stream: the TTT layer, the fixed-size banks and the prompt-dependent reader (DESIGN §3).

This is the lowest layer of vsalmonn; it imports nothing from the other components.
"""

from .config import MemoryConfig, Modality, Optimizer, Policy
from .memory import StreamMemory
from .reader import Moment

__all__ = ["MemoryConfig", "Modality", "Moment", "Optimizer", "Policy", "StreamMemory"]
