"""Where plugins come from: entry points of installed distributions, built-ins, ``module[:attr]`` names."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .hookspecs import ENTRY_POINT_GROUP

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A plugin that may be loaded: how to get its object, and what to list about it."""

    load: Callable[[], Any]
    value: str | None  # what the entry point or the settings named
    dist: str | None
    version: str | None


def candidates(extra: Mapping[str, Any] | None = None) -> dict[str, Candidate]:
    """The entry points of group ``vsalmonn.plugins`` (the first of a name wins), then `extra` (name ->
    object or ``module[:attr]``; built-ins, treated like entry points of vsalmonn itself)."""
    found: dict[str, Candidate] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            log.warning("plugin %s: declared twice; %s ignored", ep.name, ep.value)
            continue
        dist = getattr(ep, "dist", None)
        found[ep.name] = Candidate(
            ep.load,
            ep.value,
            dist.metadata["Name"] if dist is not None else None,
            dist.version if dist is not None else None,
        )
    for name, target in (extra or {}).items():
        loader = (lambda t=target: import_target(t)) if isinstance(target, str) else (lambda t=target: t)
        found[name] = Candidate(
            loader, target if isinstance(target, str) else None, "vsalmonn", own_version()
        )
    return found


def named(spec: str) -> Candidate:
    """A ``module[:attr]`` named in the settings that is no entry point."""
    dist, version = dist_of(spec)
    return Candidate(lambda: import_target(spec), spec, dist, version)


def import_target(spec: str) -> Any:
    """The object `module` or `module:attr.attr` names."""
    module, _, attr = spec.partition(":")
    target: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        target = getattr(target, part)
    return target


def dist_of(spec: str) -> tuple[str | None, str | None]:
    """The distribution (name, version) that provides `spec`'s top-level package, when one is known."""
    top = spec.partition(":")[0].split(".")[0]
    names = metadata.packages_distributions().get(top) or []
    if not names:
        return None, None
    try:
        return names[0], metadata.version(names[0])
    except metadata.PackageNotFoundError:
        return names[0], None


def own_version() -> str | None:
    try:
        return metadata.version("vsalmonn")
    except metadata.PackageNotFoundError:
        return None


def discovered() -> Iterable[metadata.EntryPoint]:
    """The entry points of group ``vsalmonn.plugins`` of the installed distributions (nothing loaded)."""
    return metadata.entry_points(group=ENTRY_POINT_GROUP)
