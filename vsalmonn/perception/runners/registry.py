"""The one registry of source kinds: the built-in ones and those plugins add through `register_sources`.

Why it is built this way:

- **One lookup for every kind.** A stream's kind is found in one place, `KindRegistry.resolve`, whether it
  is built in or a plugin's: a source whose scheme a plugin registered is the plugin's (even over an explicit
  `kind`, as before), else the spec's `kind` names it, else the kinds are asked in order whether the source
  string is theirs (`classify`). The order is the rule: a capture device first (it is neither a URL nor a
  regular file), then a URL (`file://` is a file), an existing directory, and a file for everything else.
- **A registry per daemon.** `builtin_kinds()` makes a fresh one; a daemon feeds its plugins' kinds into its
  own, so two daemons in one process (the tests) never see each other's plugins. `SOURCE_KINDS` is the
  built-in registry for callers that have no plugins loaded yet (the CLI, before a stream starts).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .base import KindRunner
from .file import FileKind
from .folder import FolderKind
from .live import DeviceKind, UrlKind
from .plugin import PluginKind, SourceFactory

if TYPE_CHECKING:
    from ..config import StreamSpec

__all__ = ["SOURCE_KINDS", "KindRegistry", "builtin_kinds"]


class KindRegistry:
    """Source kinds by name, asked in the order they were added; plugins' kinds by scheme, asked first."""

    def __init__(self, kinds: tuple[KindRunner, ...] = ()) -> None:
        self._kinds: dict[str, KindRunner] = {}
        self._schemes: dict[str, KindRunner] = {}
        for kind in kinds:
            self.add(kind)

    def add(self, kind: KindRunner) -> None:
        """Add (or replace, keeping its place) a kind known by its `name`."""
        self._kinds[kind.name] = kind

    def register(self, scheme: str, factory: SourceFactory) -> None:
        """The `register` of hook `register_sources`: sources ``scheme://…`` are opened with `factory`.

        A scheme registered twice: the later one wins.
        """
        self._schemes[scheme] = PluginKind(scheme, factory)

    def get(self, name: str) -> KindRunner:
        """The kind called `name` (a built-in name or a plugin's scheme); KeyError names the known ones."""
        kind = self._kinds.get(name) or self._schemes.get(name)
        if kind is None:
            raise KeyError(f"no source kind {name!r}; known: {', '.join(self.names())}")
        return kind

    def names(self) -> list[str]:
        return [*self._kinds, *self._schemes]

    def __iter__(self) -> Iterator[KindRunner]:
        yield from self._schemes.values()
        yield from self._kinds.values()

    def classify(self, source: str) -> KindRunner:
        """The kind of the source string (the first kind, in order, whose `matches` says so)."""
        for kind in self:
            if kind.matches(source):
                return kind
        raise ValueError(f"no source kind takes {source!r}")  # pragma: no cover - the file kind takes all

    def resolve(self, spec: StreamSpec) -> KindRunner:
        """The kind that runs `spec`: a plugin's scheme first, then `spec.kind`, then the source string."""
        for kind in self._schemes.values():
            if kind.matches(spec.source):
                return kind
        return self.get(spec.kind) if spec.kind else self.classify(spec.source)

    def label(self, name: str | None) -> str:
        """The text a person reads for a kind's name as the catalog records it ("-" for none)."""
        if not name:
            return "-"
        kind = self._kinds.get(name) or self._schemes.get(name)
        return kind.label if kind is not None else name


def builtin_kinds() -> KindRegistry:
    """A fresh registry of the built-in kinds, in the order they are asked."""
    return KindRegistry((DeviceKind(), UrlKind(), FolderKind(), FileKind()))


SOURCE_KINDS = builtin_kinds()
