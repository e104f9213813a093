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

Isolation. Every hook is called through pluggy's hook calling (its order, its tracing: ``manager.pm.trace``,
``manager.pm.enable_tracing()``), and each plugin's implementation runs inside a guard of its own
(`vsalmonn.plugins.isolation`), so one that raises does not keep the others from running:

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

Context. `configure` receives a `PluginContext` (hook argument ``context``): the store, the settings, the
shared text encoder, the data directory and the plugin's emitter; see `vsalmonn.plugins.context`.

Events about a plugin (``plugin.disabled``, ``plugin.skipped``, ``plugin.failed``) have that plugin as their
source, so they reach its own sinks. `reset(name)` brings a disabled or skipped plugin back.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from vsalmonn.errors import one_line
from vsalmonn.memory_store.catalog import Catalog

from . import hookspecs
from .config import PluginConfig, PluginError
from .context import PluginContext, Shared
from .discovery import Candidate, candidates, discovered, named
from .events import EventBus, EventRecord
from .hookspecs import PROJECT
from .isolation import HookCall, Isolation
from .records import HookStats, PluginInfo, PluginRecord, State

log = logging.getLogger(__name__)

__all__ = [
    "HookStats",
    "PluginConfig",
    "PluginError",
    "PluginInfo",
    "PluginManager",
    "State",
    "discovered",
]


class PluginManager:
    """Plugins, their hooks and their events; see the module docstring.

    `store`: a `MemoryStore` or `Catalog` where events are stored (None: not stored); a `MemoryStore` is
    also the plugins' `context.store`. `data_dir`: given to plugins (`configure`) and the base of relative
    JSONL sink paths. `settings`: the program's settings object, for `context.settings`. `text_encoder`: the
    pipeline's text encoder for `context.text_encoder`, as an encoder or a `Shared` that makes it on first
    use. Thread-safe: hooks may be called from many threads at once.
    """

    def __init__(
        self,
        config: PluginConfig | None = None,
        *,
        store: Any = None,
        data_dir: Path | None = None,
        settings: Any = None,
        text_encoder: Any = None,
    ) -> None:
        self.config = config or PluginConfig()
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.events = EventBus(
            store, sinks=self.config.sinks, on_event=self._dispatch_event, base_dir=self.data_dir
        )
        shared = text_encoder if isinstance(text_encoder, Shared) else Shared(value=text_encoder)
        self.context = PluginContext(
            store=None if store is None or isinstance(store, Catalog) else store,
            settings=settings, data_dir=self.data_dir, emit=self.emit, text_encoder_source=shared,
        )  # fmt: skip
        self._plugins: dict[str, PluginRecord] = {}
        self._lock = threading.RLock()
        self._isolation = Isolation(self.config, self._lock, self.events, self._unregister)
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
        found = candidates(extra)
        enabled, disabled = list(self.config.enabled), set(self.config.disabled)
        wanted = enabled or list(found)

        def off(name: str) -> bool:
            return name in disabled or ("*" in disabled and name not in enabled)

        for name, candidate in found.items():
            if name not in wanted or off(name):
                with self._lock:
                    if name not in self._plugins:
                        self._plugins[name] = self._record(name, candidate, state="off")
        for name in wanted:
            if off(name) or self._is_registered(name):
                continue
            candidate = found.get(name) or named(name)  # else a module[:attr] named in the settings
            try:
                obj = candidate.load()
                if inspect.isclass(obj):
                    obj = obj()
            except Exception as exc:
                reason = one_line(exc, typed=True)
                if name not in found and isinstance(exc, ImportError):
                    reason = f"not an installed plugin nor an importable module ({reason})"
                self._failed(name, candidate, f"cannot load: {reason}")
                continue
            try:
                self.register(
                    obj, name, version=candidate.version, dist=candidate.dist, value=candidate.value
                )
            except PluginError as exc:
                self._failed(name, candidate, str(exc))
        for name in sorted(set(self.config.settings) - set(self._plugins)):
            log.warning("plugins: settings for %r, which is no known plugin", name)
        return self.plugins()

    @staticmethod
    def _record(name: str, candidate: Candidate, **kw: Any) -> PluginRecord:
        return PluginRecord(name, None, candidate.version, candidate.dist, candidate.value, **kw)

    def _is_registered(self, name: str) -> bool:
        with self._lock:
            plugin = self._plugins.get(name)
            return plugin is not None and plugin.state in ("active", "loading", "disabled")

    def _failed(self, name: str, candidate: Candidate, error: str) -> None:
        log.error("plugin %s: %s", name, error)
        with self._lock:
            self._plugins[name] = self._record(name, candidate, state="failed", error=error)
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

        Its settings table is validated (`plugin_settings_model`) and `configure` is called with its
        context. Raises `PluginError` for a duplicate name, an unknown hook, a signature pluggy refuses, a
        wrapper, or settings that do not validate; the plugin is then not registered.
        """
        name = name or getattr(obj, "__name__", None) or type(obj).__name__
        with self._lock:
            existing = self._plugins.get(name)
            if existing is not None and existing.state in ("active", "loading", "disabled"):
                raise PluginError(f"a plugin named {name!r} is registered already")
            try:
                self.pm.register(obj, name=name)
            except Exception as exc:  # pluggy's PluginValidationError, or ValueError for a duplicate
                raise PluginError(f"plugin {name}: {one_line(exc, typed=True)}") from exc
            try:
                hooks = self._checked_hooks(obj, name)
            except PluginError:
                self.pm.unregister(obj)
                raise
            # "loading" until configured: hooks called meanwhile from other threads pass it by
            plugin = PluginRecord(name, obj, version, dist, value, state="loading", hooks=hooks)
            self._plugins[name] = plugin
            self._guard(plugin)
        try:
            plugin.config = self._plugin_settings(plugin)
            emit = self._emitter(name)
            context = dataclasses.replace(self.context, emit=emit)
            kwargs = {"config": plugin.config, "emit": emit, "data_dir": self.data_dir, "context": context}
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

    def _checked_hooks(self, obj: Any, name: str) -> list[str]:
        """The hooks `obj` implements, refusing unknown hooks (unless optional) and wrappers."""
        hooks = []
        for caller in self.pm.get_hookcallers(obj) or []:
            impls = [i for i in caller.get_hookimpls() if i.plugin is obj]
            if caller.spec is None and not all(i.optionalhook for i in impls):
                raise PluginError(f"plugin {name}: unknown hook {caller.name}")
            if any(i.hookwrapper or i.wrapper for i in impls):
                raise PluginError(f"plugin {name}: hook {caller.name}: wrappers are not supported")
            if caller.spec is not None:
                hooks.append(caller.name)
        return sorted(hooks)

    def _guard(self, plugin: PluginRecord) -> None:
        """Guard each of `plugin`'s hook implementations as pluggy holds them (after each registration)."""
        for caller in self.pm.get_hookcallers(plugin.obj) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin.obj:
                    self._isolation.guard(plugin, caller.name, impl)

    def _unregister(self, plugin: PluginRecord) -> None:
        if self.pm.is_registered(plugin.obj):
            self.pm.unregister(plugin.obj)

    def _lifecycle(self, plugin: PluginRecord, hook: str, kwargs: Mapping[str, Any]) -> Any:
        """One plugin's implementation of a load-time hook (None without one); a failure: PluginError.

        Called through pluggy like every hook, by a caller of the hook restricted to this one plugin.
        """
        others = [p for p in self.pm.get_plugins() if p is not plugin.obj]
        caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
        try:
            results = caller(**kwargs)
        except Exception as exc:
            raise PluginError(f"plugin {plugin.name}: {hook} failed: {one_line(exc, typed=True)}") from exc
        return results[0] if results else None

    def _plugin_settings(self, plugin: PluginRecord) -> Any:
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

        The call goes through pluggy (its order, its tracing); each implementation is guarded and timed on
        its own (module docstring). `kwargs` must hold every argument of the hook's specification (a
        TypeError otherwise: that is the caller's bug, not a plugin's).
        """
        return [result for _, result in self.call_each(hook_name, **kwargs) if result is not None]

    def call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Like `call`, with the plugin's name beside each result (None results included)."""
        return self._call(HookCall(hook_name, dict(kwargs)))

    def _call(self, call: HookCall) -> list[tuple[str, Any]]:
        """The one path of every hook call after registration: checked, then pluggy's, guarded."""
        caller = getattr(self.pm.hook, call.hook, None)
        if caller is None or caller.spec is None or call.hook in hookspecs.LIFECYCLE_HOOKS:
            raise TypeError(f"no hook named {call.hook!r}")
        missing = set(caller.spec.argnames) - set(call.kwargs)
        if missing:
            raise TypeError(f"hook {call.hook}: missing arguments {', '.join(sorted(missing))}")
        return self._isolation.run(caller, call)

    def _dispatch_event(self, record: EventRecord) -> None:
        self.call("on_event", event=record)

    # ----- conveniences for the callers of common hooks ---------------------------------------------------

    def system_prompt(self, settings: Any) -> str:
        """The plugins' parts of the agent's system prompt, joined by blank lines ("" for none)."""
        parts = self.call("agent_system_prompt", settings=settings)
        return "\n\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())

    def answer(self, question: str, answer: dict[str, Any]) -> dict[str, Any]:
        """`answer` passed through each plugin's `on_answer` in turn; other results are ignored."""

        def accept(call: HookCall, plugin: str, result: Any) -> None:
            if result is None:
                return
            if isinstance(result, dict) and "answer" in result:
                call.kwargs["answer"] = result  # what the next plugin is given
            else:
                log.warning(
                    "plugin %s: on_answer returned %s, not an answer dict; ignored",
                    plugin,
                    type(result).__name__,
                )

        call = HookCall("on_answer", {"question": question, "answer": answer}, accept=accept)
        self._call(call)
        return call.kwargs["answer"]

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
            return [p.info() for p in sorted(self._plugins.values(), key=lambda p: p.name)]

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per plugin: calls, failures, overruns, disabled, skipped hooks, last error, and each hook's own."""
        with self._lock:
            return {p.name: p.summary() for p in sorted(self._plugins.values(), key=lambda p: p.name)}

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
                self._guard(plugin)  # pluggy made new implementations
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
