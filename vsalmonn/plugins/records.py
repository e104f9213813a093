"""What the plugin manager knows of each plugin: its record, its per-hook counters, its public summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["active", "loading", "disabled", "failed", "off"]


@dataclass
class HookStats:
    """One plugin's record for one hook."""

    calls: int = 0
    failures: int = 0
    failure_streak: int = 0
    overruns: int = 0
    overrun_streak: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    skipped: bool = False
    last_error: str | None = None
    _warned_at: float = float("-inf")
    _unwarned: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "failures": self.failures,
            "overruns": self.overruns,
            "skipped": self.skipped,
            "mean_ms": 1e3 * self.total_s / self.calls if self.calls else None,
            "max_ms": 1e3 * self.max_s,
            "last_error": self.last_error,
        }


@dataclass
class PluginRecord:
    """One plugin as the manager holds it (its object, where it came from, its state and counters)."""

    name: str
    obj: Any = None
    version: str | None = None
    dist: str | None = None
    value: str | None = None  # what the entry point or the settings named
    state: State = "active"
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    stats: dict[str, HookStats] = field(default_factory=dict)
    config: Any = None

    def stats_of(self, hook: str) -> HookStats:
        """This plugin's counters of `hook` (made on first use; the caller holds the manager's lock)."""
        stats = self.stats.get(hook)
        if stats is None:
            stats = self.stats[hook] = HookStats()
        return stats

    def info(self) -> PluginInfo:
        return PluginInfo(
            name=self.name, version=self.version, dist=self.dist, value=self.value, hooks=tuple(self.hooks),
            state=self.state, skipped=tuple(sorted(h for h, s in self.stats.items() if s.skipped)),
            error=self.error,
        )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """One entry of `PluginManager.stats()`."""
        errors = [s.last_error for s in self.stats.values() if s.last_error]
        return {
            "state": self.state,
            "calls": sum(s.calls for s in self.stats.values()),
            "failures": sum(s.failures for s in self.stats.values()),
            "overruns": sum(s.overruns for s in self.stats.values()),
            "disabled": self.state == "disabled",
            "skipped": sorted(h for h, s in self.stats.items() if s.skipped),
            "last_error": self.error
            if self.state in ("disabled", "failed")
            else (errors[-1] if errors else None),
            "hooks": {h: s.as_dict() for h, s in sorted(self.stats.items())},
        }


@dataclass(frozen=True)
class PluginInfo:
    """One line of `vsalmonn plugins list`."""

    name: str
    version: str | None
    dist: str | None
    value: str | None
    hooks: tuple[str, ...]
    state: State
    skipped: tuple[str, ...] = ()
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "dist": self.dist,
            "value": self.value,
            "hooks": list(self.hooks),
            "state": self.state,
            "skipped": list(self.skipped),
            "error": self.error,
        }
