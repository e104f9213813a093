"""The plugin API (DESIGN §7): hook specifications, the plugin manager, events; and the built-in plugins.

A plugin marks its hook implementations with `hookimpl`; `hookspecs` documents every hook. `PluginManager`
discovers plugins (entry-point group ``vsalmonn.plugins`` and the ``[plugins]`` settings, `PluginConfig`),
calls their hooks guarded, and raises their events (`EventRecord`) through `EventBus`.

This is layer 2 (DESIGN §1): it imports only `memory_store`. The manager and the events are imported on
first use, so that a plugin module importing `hookimpl` loads no more than pluggy.
"""

from typing import TYPE_CHECKING, Any

from .hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec

if TYPE_CHECKING:
    from .events import EventBus, EventRecord, WebhookVerificationError, verify_webhook
    from .manager import PluginConfig, PluginError, PluginInfo, PluginManager

_LAZY = {
    "EventBus": "events",
    "EventRecord": "events",
    "WebhookVerificationError": "events",
    "verify_webhook": "events",
    "PluginConfig": "manager",
    "PluginError": "manager",
    "PluginInfo": "manager",
    "PluginManager": "manager",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "ENTRY_POINT_GROUP",
    "EventBus",
    "EventRecord",
    "PluginConfig",
    "PluginError",
    "PluginInfo",
    "PluginManager",
    "WebhookVerificationError",
    "hookimpl",
    "hookspec",
    "verify_webhook",
]
