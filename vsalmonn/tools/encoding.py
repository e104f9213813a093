"""The text encoder the tools embed search prompts with, as the tools see it: anything with `encode`.

The tools do not make encoders: which one (and which weights, threads, data directory) is a decision of the
composition root (`vsalmonn.app.make_toolkit`), which hands the view an encoder or a factory for one. A
factory is called on the first search, so listing streams or reading a transcript never loads a model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np


@runtime_checkable
class TextEncoder(Protocol):
    """Embeds texts into the space the memories' tokens live in (the perception encoders satisfy it)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 rows, one per text."""
        ...


TextEncoderFactory = Callable[[], TextEncoder]
"""Makes the text encoder when it is first needed."""


class NoTextEncoder(RuntimeError):
    """A search was asked of a view that was given neither a text encoder nor a factory for one."""


class LazyTextEncoder:
    """One text encoder, given or made once by its factory on first use; safe to share between threads."""

    def __init__(self, encoder: TextEncoder | None = None, factory: TextEncoderFactory | None = None) -> None:
        self._encoder = encoder
        self._factory = factory
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether `get` can give an encoder (one is held, or a factory can make one)."""
        return self._encoder is not None or self._factory is not None

    def get(self) -> TextEncoder:
        """The encoder, made now by the factory if this is the first use."""
        with self._lock:
            if self._encoder is None:
                if self._factory is None:
                    raise NoTextEncoder(
                        "no text encoder to embed the query with: give the view or toolkit a text_encoder "
                        "(vsalmonn.app.make_toolkit makes the one the settings name)"
                    )
                self._encoder = self._factory()
            return self._encoder


__all__ = ["LazyTextEncoder", "NoTextEncoder", "TextEncoder", "TextEncoderFactory"]
