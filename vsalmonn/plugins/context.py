"""What a plugin gets from the program it runs in: `PluginContext`, given to the ``configure`` hook.

Before the context, `configure` gave a plugin only its settings table, an emitter and the data directory, so
a plugin that needed the catalog or a text encoder made its own: a second catalog that ignored
``[store] catalog_url`` of the settings file, a second text model in memory. The context carries the
program's own: the store the daemon writes to, the whole settings object, the text encoder the pipeline
embeds with, the data directory and the plugin's emitter. The composition root (`vsalmonn.app`) fills it;
a bare `PluginManager` (tests, a plugin used standalone) gives what it was given, None for the rest.

The settings are typed `Any`: they are `vsalmonn.settings.Settings`, which sits in the top layer and which
the plugin API (layer 2, DESIGN §1) must not import.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vsalmonn.memory_store.store import MemoryStore


class Shared:
    """A value made once, on first use, by `factory` (or given as `value`), from any thread.

    The text encoder costs seconds and hundreds of MB to load; most programs that open plugins never need it
    (``plugins list``), so it is made only when a plugin or the pipeline first asks for it.
    """

    def __init__(self, factory: Callable[[], Any] | None = None, *, value: Any = None) -> None:
        self._factory = factory
        self._value = value
        self._made = value is not None or factory is None
        self._lock = threading.Lock()

    def get(self) -> Any:
        """The value (made now if it is not yet; None when there is neither a value nor a factory)."""
        if not self._made:
            with self._lock:
                if not self._made:
                    assert self._factory is not None
                    self._value = self._factory()
                    self._made = True
        return self._value

    @property
    def loaded(self) -> bool:
        """Whether the value exists already (asking for it would cost nothing)."""
        return self._made


def _no_emit(kind: str, message: str = "", **_: Any) -> None:
    """The emitter of a context made outside a plugin manager: events go nowhere."""
    return None


@dataclass(frozen=True)
class PluginContext:
    """The program's objects a plugin may use; see the module docstring and the ``configure`` hook.

    `store`: the `MemoryStore` the program writes to (its catalog and checkpoints), None where the caller
    has none (``vsalmonn plugins list``). `settings`: the program's `vsalmonn.settings.Settings`, read-only,
    None in a bare manager. `data_dir`: the data directory, None in a bare manager. `emit`: raises an event
    with this plugin as its source (as `configure`'s `emit`). `text_encoder`: the pipeline's text encoder,
    made on first use, None where the program gives none.
    """

    store: MemoryStore | None = None
    settings: Any = None
    data_dir: Path | None = None
    emit: Callable[..., Any] = _no_emit
    text_encoder_source: Shared = field(default_factory=Shared, repr=False)

    @property
    def text_encoder(self) -> Any:
        """The shared text encoder (`vsalmonn.perception.encoders.base.TextEncoder`), or None."""
        return self.text_encoder_source.get()
