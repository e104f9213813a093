"""Isolation of plugins: each hook implementation guarded inside pluggy's own hook calling.

Every hook is called the one way pluggy calls hooks, ``pm.hook.NAME(**kwargs)``, so pluggy's order,
argument selection and tracing (``pm.trace``, ``pm.enable_tracing()``) apply to every call. What pluggy does
not do is isolation: in its loop an exception of one implementation ends the call for all the others. So,
when a plugin is registered, the manager replaces the function of each of its `HookImpl`s (a public
attribute) by a guard (`Isolation.guard`) that calls the plugin's function, catches what it raises, times it,
and applies the rules of the manager's module docstring (failures in a row disable, overruns skip). pluggy's
loop then never sees an exception, and one plugin's fault costs the others nothing.

Why not a hook wrapper (``wrapper=True``): a wrapper surrounds the whole call of a hook, not one
implementation, so it sees the first exception only after pluggy has stopped calling the rest. Why not
calling each `HookImpl` through pluggy's `_multicall`: it is private, and it bypasses the tracing hooked into
the manager's `_hookexec`. The guard keeps both: public API only, one path.

A guard learns the arguments of the whole call (a plugin may declare fewer: its events are still placed at
the call's stream and time) and the call's collector from `HookCall`, kept per thread in a stack because
hooks nest (an event raised inside ``on_frame`` runs ``on_event`` on the same thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vsalmonn.errors import one_line

from .hookspecs import INGEST_HOOKS, LIFECYCLE_HOOKS
from .records import PluginRecord

if TYPE_CHECKING:
    from .config import PluginConfig
    from .events import EventBus

log = logging.getLogger("vsalmonn.plugins.manager")  # the messages tests and operators know
_GUARD = "_vsalmonn_guard"  # marks a guard, so that an implementation is never guarded twice


@dataclass
class HookCall:
    """One call of a hook through the manager: its arguments and what each plugin returned.

    `accept(call, plugin, result)`, when given, sees each plugin's result as it comes and may change
    `kwargs` for the plugins called after it (``on_answer`` passes the answer on this way).
    """

    hook: str
    kwargs: dict[str, Any]
    accept: Callable[[HookCall, str, Any], None] | None = None
    results: list[tuple[str, Any]] = field(default_factory=list)


class Isolation:
    """The guards of one plugin manager and the rules they apply (see the manager's module docstring).

    `lock`: the manager's lock, which guards the records; `events`: where the events about plugins go;
    `unregister(record)`: takes a disabled plugin out of pluggy (the caller holds the lock).
    """

    def __init__(
        self,
        config: PluginConfig,
        lock: threading.RLock,
        events: EventBus,
        unregister: Callable[[PluginRecord], None],
    ) -> None:
        self.config = config
        self._lock = lock
        self._events = events
        self._unregister = unregister
        self._local = threading.local()

    # ----- the calls in progress on this thread -----------------------------------------------------------

    def run(self, caller: Any, call: HookCall) -> list[tuple[str, Any]]:
        """Call pluggy's hook `caller` with `call.kwargs`; return the results the guards collected."""
        stack: list[HookCall] = self._local.__dict__.setdefault("stack", [])
        stack.append(call)
        try:
            caller(**call.kwargs)
        finally:
            stack.pop()
        return call.results

    def _current(self, hook: str) -> HookCall | None:
        stack = self._local.__dict__.get("stack")
        return stack[-1] if stack and stack[-1].hook == hook else None

    # ----- guards -----------------------------------------------------------------------------------------

    def guard(self, record: PluginRecord, hook: str, impl: Any) -> None:
        """Put a guard around `impl` (one of `record`'s `HookImpl`s of `hook`), once."""
        function: Callable[..., Any] = impl.function
        argnames: Sequence[str] = tuple(impl.argnames)
        if hook in LIFECYCLE_HOOKS or getattr(function, _GUARD, False):
            return  # lifecycle: called for this plugin alone, and a failure there refuses the plugin

        def guarded(*args: Any) -> Any:
            call = self._current(hook)
            kwargs = call.kwargs if call is not None else dict(zip(argnames, args, strict=False))
            with self._lock:
                stats = record.stats.get(hook)
                if record.state != "active" or (stats is not None and stats.skipped):
                    return None
            started = time.perf_counter()
            try:
                result = function(*[kwargs[a] for a in argnames])
            except Exception as exc:
                self._failure(record, hook, exc, time.perf_counter() - started, kwargs)
                return None
            self._success(record, hook, time.perf_counter() - started, kwargs)
            if call is not None:
                call.results.append((record.name, result))
                if call.accept is not None:
                    call.accept(call, record.name, result)
            return result

        guarded.__wrapped__ = function  # type: ignore[attr-defined]
        guarded.__name__ = getattr(function, "__name__", hook)
        setattr(guarded, _GUARD, True)
        impl.function = guarded

    # ----- the rules --------------------------------------------------------------------------------------

    def _failure(
        self, plugin: PluginRecord, hook: str, exc: Exception, elapsed: float, context: Mapping[str, Any]
    ) -> None:
        reason = one_line(exc, typed=True)
        log.error("plugin %s: hook %s failed: %s", plugin.name, hook, reason, exc_info=exc)
        with self._lock:
            stats = plugin.stats_of(hook)
            stats.calls += 1
            stats.failures += 1
            stats.failure_streak += 1
            stats.total_s += elapsed
            stats.max_s = max(stats.max_s, elapsed)
            stats.last_error = reason
            streak = stats.failure_streak
            disable = streak >= self.config.max_failures and plugin.state == "active"
            if disable:
                self.disable(plugin, f"hook {hook} failed {streak} times in a row; last: {reason}")
        if disable:
            message = f"plugin {plugin.name} disabled: hook {hook} failed {streak} times in a row ({reason})"
            self.plugin_event(
                plugin, "plugin.disabled", message, hook, context, failures=streak, error=reason
            )

    def _success(self, plugin: PluginRecord, hook: str, elapsed: float, context: Mapping[str, Any]) -> None:
        ingest = hook in INGEST_HOOKS
        budget_s = 1e-3 * (self.config.budget_ms if ingest else self.config.hook_budget_ms)
        skip_reason = None
        warn = None
        with self._lock:
            stats = plugin.stats_of(hook)
            stats.calls += 1
            stats.failure_streak = 0
            stats.total_s += elapsed
            stats.max_s = max(stats.max_s, elapsed)
            if elapsed <= budget_s:
                stats.overrun_streak = 0
                return
            stats.overruns += 1
            stats.overrun_streak += 1
            streak = stats.overrun_streak
            if ingest and not stats.skipped:
                if elapsed > self.config.overrun_factor * budget_s:
                    factor = self.config.overrun_factor
                    skip_reason = f"one call took {1e3 * elapsed:.0f} ms, over {factor:g}x its budget"
                elif streak >= self.config.overrun_limit:
                    skip_reason = f"{streak} calls in a row over budget"
                if skip_reason:
                    stats.skipped = True
            now = time.monotonic()
            if skip_reason is None:
                stats._unwarned += 1
                if now - stats._warned_at >= self.config.warn_every_s:
                    warn, stats._unwarned, stats._warned_at = stats._unwarned, 0, now
        budget_ms = 1e3 * budget_s
        if warn is not None:
            log.warning(
                "plugin %s: hook %s took %.0f ms (budget %.0f ms); %d overrun(s) since the last warning",
                plugin.name, hook, 1e3 * elapsed, budget_ms, warn,
            )  # fmt: skip
        if skip_reason is not None:
            message = (
                f"plugin {plugin.name}: hook {hook} skipped from now on: {skip_reason} of {budget_ms:g} ms"
            )
            log.error("%s", message)
            self.plugin_event(
                plugin, "plugin.skipped", message, hook, context,
                elapsed_ms=round(1e3 * elapsed, 3), budget_ms=budget_ms, overruns=streak,
            )  # fmt: skip

    def disable(self, plugin: PluginRecord, reason: str) -> None:
        """Mark `plugin` disabled and take it out of pluggy (the caller holds the lock)."""
        plugin.state = "disabled"
        plugin.error = reason
        self._unregister(plugin)
        log.error("plugin %s disabled: %s", plugin.name, reason)

    def plugin_event(
        self,
        plugin: PluginRecord,
        kind: str,
        message: str,
        hook: str,
        context: Mapping[str, Any],
        **extra: Any,
    ) -> None:
        """An event about `plugin`, placed in the stream and time of the call it concerns, if any."""
        stream = context.get("stream")
        t = context.get("t")
        self._events.event(
            kind,
            message,
            source=plugin.name,
            stream=stream if isinstance(stream, str) else None,
            t=float(t) if isinstance(t, int | float) else None,
            plugin=plugin.name,
            hook=hook,
            **extra,
        )
