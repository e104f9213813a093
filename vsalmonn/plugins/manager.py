"""The plugin manager: discovery, settings, guarded hook calls and the plugins' events (DESIGN §7).

Discovery. Plugins come from the entry-point group ``vsalmonn.plugins`` of installed distributions, from
``module`` or ``module:attr`` names in the settings, and from `register()` (built-ins, tests). The object an
entry point names may be a module, an instance, or a class (instantiated without arguments). Settings::

    [plugins]
    enabled = ["surveillance", "mycompany.plugins:Doorbell"]   # empty: every discovered plugin
    disabled = ["noisy"]                                        # "*": no discovered plugin unless enabled
    max_failures = 5
    budget_ms = 50

    [plugins.settings.surveillance]                             # the plugin's own table (its settings model)
    cooldown_s = 60

    [[plugins.sinks.surveillance]]                              # where its events go; default: the log
    type = "webhook"
    url = "https://hooks.example.com/vsalmonn"
    secret = "…"

Isolation. `call()` calls each plugin's implementation on its own, never through pluggy's loop, so one that
raises does not keep the others from running:

- an exception is logged (``plugin NAME: hook X failed: …``) and counted; after `max_failures` failures in a
  row of one hook (a success resets the count), the plugin is disabled: unregistered from every hook, with an
  event ``plugin.disabled``;
- each call is timed. Python cannot interrupt a function running in the caller's thread, so an overrun is
  measured *after* the call returns: the time is lost once, and the manager's job is to make sure it is not
  lost again and again. An ingestion hook (`INGEST_HOOKS`) that takes longer than `budget_ms` is an overrun,
  logged (at most every `warn_every_s` per plugin and hook) and counted; after `overrun_limit` overruns in a
  row, or at once for one call longer than `overrun_factor` × `budget_ms` (a plugin that sleeps 10 s per
  frame is skipped after its first frame), that plugin's implementation of that hook is skipped from then on,
  with an event ``plugin.skipped``. Other hooks are held to `hook_budget_ms`: an overrun is reported only.
  A plugin that blocks forever still blocks the thread it was called from: give slow work a thread.

Events about a plugin (``plugin.disabled``, ``plugin.skipped``, ``plugin.failed``) have that plugin as their
source, so they reach its own sinks. `reset(name)` brings a disabled or skipped plugin back.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pluggy
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import hookspecs
from .events import EventBus, EventRecord, SinkConfig
from .hookspecs import ENTRY_POINT_GROUP, INGEST_HOOKS, PROJECT

log = logging.getLogger(__name__)

State = Literal["active", "loading", "disabled", "failed", "off"]


class PluginConfig(BaseModel):
    """The ``[plugins]`` table of the settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: list[str] = Field(
        default_factory=list,
        description="entry-point names or module[:attr] to load; empty: every discovered plugin",
    )
    disabled: list[str] = Field(
        default_factory=list, description="names never loaded, even if enabled; '*': every discovered one"
    )
    max_failures: int = Field(5, ge=1, description="failures in a row of one hook that disable a plugin")
    budget_ms: float = Field(50.0, gt=0, description="time budget of one ingestion hook call (on_frame, …)")
    overrun_limit: int = Field(
        20, ge=1, description="overruns in a row after which an ingestion hook is skipped"
    )
    overrun_factor: float = Field(
        20.0, gt=1, description="one call longer than this many budgets skips the hook at once"
    )
    hook_budget_ms: float = Field(2000.0, gt=0, description="other hooks: longer calls are reported")
    warn_every_s: float = Field(30.0, ge=0, description="at most one overrun warning per plugin and hook")
    settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="each plugin's own table, validated by its settings model"
    )
    sinks: dict[str, list[SinkConfig]] = Field(
        default_factory=dict, description="where each plugin's events go ('*': default); default: the log"
    )


class PluginError(RuntimeError):
    """A plugin that cannot be registered: bad hooks, duplicate name, invalid settings. One-line message."""


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
class _Plugin:
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PluginManager:
    """Plugins, their hooks and their events; see the module docstring.

    `store`: a `MemoryStore` or `Catalog` where events are stored (None: not stored); `data_dir`: given to
    plugins (`configure`) and the base of relative JSONL sink paths. Thread-safe: hooks may be called from
    many threads at once.
    """

    def __init__(
        self, config: PluginConfig | None = None, *, store: Any = None, data_dir: Path | None = None
    ) -> None:
        self.config = config or PluginConfig()
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.events = EventBus(
            store, sinks=self.config.sinks, on_event=self._dispatch_event, base_dir=self.data_dir
        )
        self._plugins: dict[str, _Plugin] = {}
        self._lock = threading.RLock()
        self._closed = False

    # ----- discovery --------------------------------------------------------------------------------------

    def load(self, extra: Mapping[str, Any] | None = None) -> list[PluginInfo]:
        """Load the plugins the settings select; return `plugins()`. Never raises for a plugin's fault.

        Candidates are the entry points of group ``vsalmonn.plugins`` and `extra` (name -> object or
        ``module[:attr]``: built-ins, treated like entry points). With `enabled` empty every candidate is
        loaded; otherwise only those named, plus ``module[:attr]`` names imported directly. Names in
        `disabled` are never loaded. A candidate not loaded is listed as "off"; one that fails to import or
        register as "failed" (with an event ``plugin.failed``).
        """
        candidates: dict[str, tuple[Callable[[], Any], str | None, str | None, str | None]] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in candidates:
                log.warning("plugin %s: declared twice; %s ignored", ep.name, ep.value)
                continue
            dist = getattr(ep, "dist", None)
            candidates[ep.name] = (
                ep.load,
                ep.value,
                dist.metadata["Name"] if dist is not None else None,
                dist.version if dist is not None else None,
            )
        for name, target in (extra or {}).items():
            loader = (lambda t=target: _import(t)) if isinstance(target, str) else (lambda t=target: t)
            candidates[name] = (
                loader,
                target if isinstance(target, str) else None,
                "vsalmonn",
                _own_version(),
            )

        enabled, disabled = list(self.config.enabled), set(self.config.disabled)
        wanted = enabled or list(candidates)

        def off(name: str) -> bool:
            return name in disabled or ("*" in disabled and name not in enabled)

        for name in candidates:
            if name not in wanted or off(name):
                with self._lock:
                    if name not in self._plugins:
                        _, value, dist, version = candidates[name]
                        self._plugins[name] = _Plugin(name, None, version, dist, value, state="off")
        for name in wanted:
            if off(name) or self._is_registered(name):
                continue
            if name in candidates:
                loader, value, dist, version = candidates[name]
            else:  # module[:attr] named in the settings
                dist, version = _dist_of(name)
                loader, value = (lambda n=name: _import(n)), name
            try:
                obj = loader()
                if inspect.isclass(obj):
                    obj = obj()
            except Exception as exc:
                reason = _one_line(exc)
                if name not in candidates and isinstance(exc, ImportError):
                    reason = f"not an installed plugin nor an importable module ({reason})"
                self._failed(name, value, dist, version, f"cannot load: {reason}")
                continue
            try:
                self.register(obj, name, version=version, dist=dist, value=value)
            except PluginError as exc:
                self._failed(name, value, dist, version, str(exc))
        for name in sorted(set(self.config.settings) - set(self._plugins)):
            log.warning("plugins: settings for %r, which is no known plugin", name)
        return self.plugins()

    def _is_registered(self, name: str) -> bool:
        with self._lock:
            plugin = self._plugins.get(name)
            return plugin is not None and plugin.state in ("active", "loading", "disabled")

    def _failed(
        self, name: str, value: str | None, dist: str | None, version: str | None, error: str
    ) -> None:
        log.error("plugin %s: %s", name, error)
        with self._lock:
            self._plugins[name] = _Plugin(name, None, version, dist, value, state="failed", error=error)
        self.events.event("plugin.failed", f"plugin {name}: {error}", source=name, plugin=name, error=error)

    def register(
        self,
        obj: Any,
        name: str | None = None,
        *,
        version: str | None = None,
        dist: str | None = None,
        value: str | None = None,
    ) -> str:
        """Register a plugin object (a module or instance with `hookimpl` functions) under `name`.

        Its settings table is validated (`plugin_settings_model`) and `configure` is called. Raises
        `PluginError` for a duplicate name, an unknown hook, a signature pluggy refuses, a wrapper, or
        settings that do not validate; the plugin is then not registered.
        """
        name = name or getattr(obj, "__name__", None) or type(obj).__name__
        with self._lock:
            existing = self._plugins.get(name)
            if existing is not None and existing.state in ("active", "loading", "disabled"):
                raise PluginError(f"a plugin named {name!r} is registered already")
            try:
                self.pm.register(obj, name=name)
            except Exception as exc:  # pluggy's PluginValidationError, or ValueError for a duplicate
                raise PluginError(f"plugin {name}: {_one_line(exc)}") from exc
            hooks = []
            try:
                for caller in self.pm.get_hookcallers(obj) or []:
                    impls = [i for i in caller.get_hookimpls() if i.plugin is obj]
                    if caller.spec is None and not all(i.optionalhook for i in impls):
                        raise PluginError(f"plugin {name}: unknown hook {caller.name}")
                    if any(i.hookwrapper or i.wrapper for i in impls):
                        raise PluginError(f"plugin {name}: hook {caller.name}: wrappers are not supported")
                    if caller.spec is not None:
                        hooks.append(caller.name)
            except PluginError:
                self.pm.unregister(obj)
                raise
            # "loading" until configured: hooks called meanwhile from other threads pass it by
            plugin = _Plugin(name, obj, version, dist, value, state="loading", hooks=sorted(hooks))
            self._plugins[name] = plugin
        try:
            plugin.config = self._plugin_settings(plugin)
            kwargs = {"config": plugin.config, "emit": self._emitter(name), "data_dir": self.data_dir}
            self._lifecycle(plugin, "configure", kwargs)
        except PluginError:
            with self._lock:
                if self.pm.is_registered(obj):
                    self.pm.unregister(obj)
                self._plugins.pop(name, None)
            raise
        with self._lock:
            plugin.state = "active"
        log.info("plugin %s loaded (%s)", name, ", ".join(plugin.hooks) or "no hooks")
        return name

    def _lifecycle(self, plugin: _Plugin, hook: str, kwargs: Mapping[str, Any]) -> Any:
        """One plugin's implementation of a load-time hook (None without one); a failure: PluginError."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if impl.plugin is plugin.obj:
                try:
                    return impl.function(*[kwargs[a] for a in impl.argnames])
                except Exception as exc:
                    raise PluginError(f"plugin {plugin.name}: {hook} failed: {_one_line(exc)}") from exc
        return None

    def _plugin_settings(self, plugin: _Plugin) -> Any:
        table = self.config.settings.get(plugin.name, {})
        model = self._lifecycle(plugin, "plugin_settings_model", {})
        if model is None:
            return dict(table)
        if not (inspect.isclass(model) and issubclass(model, BaseModel)):
            raise PluginError(f"plugin {plugin.name}: plugin_settings_model returned {model!r}, not a model")
        try:
            return model.model_validate(table)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(table)"
            raise PluginError(
                f"plugin {plugin.name}: [plugins.settings.{plugin.name}] {where}: {first['msg']}"
            ) from exc

    def _emitter(self, name: str) -> Callable[..., EventRecord | None]:
        def emit(
            kind: str, message: str = "", *, stream: str | None = None, t: float | None = None, **payload: Any
        ) -> EventRecord | None:
            return self.events.event(kind, message, source=name, stream=stream, t=t, **payload)

        return emit

    # ----- calls ------------------------------------------------------------------------------------------

    def call(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call every active plugin's `hook_name` with `kwargs`; return their results that are not None.

        Each implementation is called on its own, guarded and timed (module docstring); the order is
        pluggy's. `kwargs` must hold every argument of the hook's specification (a TypeError otherwise: that
        is the caller's bug, not a plugin's).
        """
        return [result for _, result in self.call_each(hook_name, **kwargs) if result is not None]

    def call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Like `call`, with the plugin's name beside each result (None results included)."""
        caller = getattr(self.pm.hook, hook_name, None)
        if caller is None or caller.spec is None:
            raise TypeError(f"no hook named {hook_name!r}")
        missing = set(caller.spec.argnames) - set(kwargs)
        if missing:
            raise TypeError(f"hook {hook_name}: missing arguments {', '.join(sorted(missing))}")
        results = []
        for impl in reversed(caller.get_hookimpls()):
            with self._lock:
                plugin = self._plugins.get(impl.plugin_name)
                if plugin is None or plugin.state != "active" or plugin.obj is not impl.plugin:
                    continue
                if hook_name in plugin.stats and plugin.stats[hook_name].skipped:
                    continue
            ok, result = self._guarded(plugin, hook_name, impl, kwargs)
            if ok:
                results.append((plugin.name, result))
        return results

    def _guarded(self, plugin: _Plugin, hook: str, impl: Any, kwargs: Mapping[str, Any]) -> tuple[bool, Any]:
        """Call one implementation with the arguments it declares: (True, result), or (False, None)."""
        started = time.perf_counter()
        try:
            result = impl.function(*[kwargs[a] for a in impl.argnames])
        except Exception as exc:
            self._failure(plugin, hook, exc, time.perf_counter() - started, kwargs)
            return False, None
        self._success(plugin, hook, time.perf_counter() - started, kwargs)
        return True, result

    def _stats(self, plugin: _Plugin, hook: str) -> HookStats:
        stats = plugin.stats.get(hook)
        if stats is None:
            stats = plugin.stats[hook] = HookStats()
        return stats

    def _failure(
        self, plugin: _Plugin, hook: str, exc: Exception, elapsed: float, context: Mapping[str, Any]
    ) -> None:
        reason = _one_line(exc)
        log.error("plugin %s: hook %s failed: %s", plugin.name, hook, reason, exc_info=exc)
        with self._lock:
            stats = self._stats(plugin, hook)
            stats.calls += 1
            stats.failures += 1
            stats.failure_streak += 1
            stats.total_s += elapsed
            stats.max_s = max(stats.max_s, elapsed)
            stats.last_error = reason
            streak = stats.failure_streak
            disable = streak >= self.config.max_failures and plugin.state == "active"
            if disable:
                self._disable(plugin, f"hook {hook} failed {streak} times in a row; last: {reason}")
        if disable:
            message = f"plugin {plugin.name} disabled: hook {hook} failed {streak} times in a row ({reason})"
            self._plugin_event(
                plugin, "plugin.disabled", message, hook, context, failures=streak, error=reason
            )

    def _success(self, plugin: _Plugin, hook: str, elapsed: float, context: Mapping[str, Any]) -> None:
        ingest = hook in INGEST_HOOKS
        budget_s = 1e-3 * (self.config.budget_ms if ingest else self.config.hook_budget_ms)
        skip_reason = None
        warn = None
        with self._lock:
            stats = self._stats(plugin, hook)
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
            self._plugin_event(
                plugin, "plugin.skipped", message, hook, context,
                elapsed_ms=round(1e3 * elapsed, 3), budget_ms=budget_ms, overruns=streak,
            )  # fmt: skip

    def _disable(self, plugin: _Plugin, reason: str) -> None:
        """Mark `plugin` disabled and take it out of pluggy (the caller holds the lock)."""
        plugin.state = "disabled"
        plugin.error = reason
        if self.pm.is_registered(plugin.obj):
            self.pm.unregister(plugin.obj)
        log.error("plugin %s disabled: %s", plugin.name, reason)

    def _plugin_event(
        self, plugin: _Plugin, kind: str, message: str, hook: str, context: Mapping[str, Any], **extra: Any
    ) -> None:
        """An event about `plugin`, placed in the stream and time of the call it concerns, if any."""
        stream = context.get("stream")
        t = context.get("t")
        self.events.event(
            kind,
            message,
            source=plugin.name,
            stream=stream if isinstance(stream, str) else None,
            t=float(t) if isinstance(t, int | float) else None,
            plugin=plugin.name,
            hook=hook,
            **extra,
        )

    def _dispatch_event(self, record: EventRecord) -> None:
        self.call("on_event", event=record)

    # ----- conveniences for the callers of common hooks ---------------------------------------------------

    def system_prompt(self, settings: Any) -> str:
        """The plugins' parts of the agent's system prompt, joined by blank lines ("" for none)."""
        parts = self.call("agent_system_prompt", settings=settings)
        return "\n\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())

    def answer(self, question: str, answer: dict[str, Any]) -> dict[str, Any]:
        """`answer` passed through each plugin's `on_answer` in turn; other results are ignored."""
        caller = self.pm.hook.on_answer
        for impl in reversed(caller.get_hookimpls()):
            with self._lock:
                plugin = self._plugins.get(impl.plugin_name)
                if plugin is None or plugin.state != "active" or plugin.obj is not impl.plugin:
                    continue
            ok, result = self._guarded(plugin, "on_answer", impl, {"question": question, "answer": answer})
            if not ok or result is None:
                continue
            if isinstance(result, dict) and "answer" in result:
                answer = result
            else:
                log.warning(
                    "plugin %s: on_answer returned %s, not an answer dict; ignored",
                    plugin.name,
                    type(result).__name__,
                )
        return answer

    def emit(
        self,
        kind: str,
        message: str = "",
        *,
        source: str | None = None,
        stream: str | None = None,
        t: float | None = None,
        **payload: Any,
    ) -> EventRecord | None:
        """Raise an event from a component (the daemon, the agent): stored, sent to `on_event`, delivered."""
        return self.events.event(kind, message, source=source, stream=stream, t=t, **payload)

    # ----- state ------------------------------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every plugin known, loaded or not, by name."""
        with self._lock:
            return [
                PluginInfo(
                    name=p.name,
                    version=p.version,
                    dist=p.dist,
                    value=p.value,
                    hooks=tuple(p.hooks),
                    state=p.state,
                    skipped=tuple(sorted(h for h, s in p.stats.items() if s.skipped)),
                    error=p.error,
                )
                for p in sorted(self._plugins.values(), key=lambda p: p.name)
            ]

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per plugin: calls, failures, overruns, disabled, skipped hooks, last error, and each hook's own."""
        with self._lock:
            out = {}
            for p in sorted(self._plugins.values(), key=lambda p: p.name):
                errors = [(s.last_error, h) for h, s in p.stats.items() if s.last_error]
                out[p.name] = {
                    "state": p.state,
                    "calls": sum(s.calls for s in p.stats.values()),
                    "failures": sum(s.failures for s in p.stats.values()),
                    "overruns": sum(s.overruns for s in p.stats.values()),
                    "disabled": p.state == "disabled",
                    "skipped": sorted(h for h, s in p.stats.items() if s.skipped),
                    "last_error": p.error
                    if p.state in ("disabled", "failed")
                    else (errors[-1][0] if errors else None),
                    "hooks": {h: s.as_dict() for h, s in sorted(p.stats.items())},
                }
            return out

    def get(self, name: str) -> Any:
        """The object of the plugin called `name` (None if unknown or not loaded)."""
        with self._lock:
            plugin = self._plugins.get(name)
            return plugin.obj if plugin is not None else None

    def reset(self, name: str) -> None:
        """Bring back a disabled plugin or its skipped hooks, with fresh counters (not `configure` again)."""
        with self._lock:
            plugin = self._plugins.get(name)
            if plugin is None or plugin.obj is None:
                raise KeyError(name)
            if plugin.state == "disabled":
                self.pm.register(plugin.obj, name=name)
                plugin.state, plugin.error = "active", None
            plugin.stats.clear()
        log.info("plugin %s reset", name)

    def close(self, timeout: float | None = 10.0) -> None:
        """Call `on_shutdown`, then flush the event sinks (webhooks: up to `timeout` seconds)."""
        if self._closed:
            return
        self._closed = True
        self.call("on_shutdown")
        self.events.close(timeout)

    def __enter__(self) -> PluginManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _import(spec: str) -> Any:
    """The object `module` or `module:attr.attr` names."""
    module, _, attr = spec.partition(":")
    target: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        target = getattr(target, part)
    return target


def _dist_of(spec: str) -> tuple[str | None, str | None]:
    """The distribution (name, version) that provides `spec`'s top-level package, when one is known."""
    top = spec.partition(":")[0].split(".")[0]
    names = metadata.packages_distributions().get(top) or []
    if not names:
        return None, None
    try:
        return names[0], metadata.version(names[0])
    except metadata.PackageNotFoundError:
        return names[0], None


def _own_version() -> str | None:
    try:
        return metadata.version("vsalmonn")
    except metadata.PackageNotFoundError:
        return None


def discovered() -> Iterable[metadata.EntryPoint]:
    """The entry points of group ``vsalmonn.plugins`` of the installed distributions (nothing loaded)."""
    return metadata.entry_points(group=ENTRY_POINT_GROUP)
