"""The plugin's own tests: a bare PluginManager, no store, no models (run: pytest test_doorbell.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from vsalmonn_doorbell import TOOL_NAME, VISITOR_EVENT, Doorbell

from vsalmonn.plugins import PluginConfig, PluginError, PluginManager, hookimpl

FRAME = np.zeros((4, 4, 3), np.uint8)
TOKENS = np.zeros((1, 8), np.float32)


def frame(t: float, *labels: tuple[str, float], stream: str = "porch") -> dict[str, Any]:
    """Every argument of on_frame, as the pipeline passes them."""
    return {"stream": stream, "t": t, "frame": FRAME, "tokens": TOKENS, "labels": labels}


class Events:
    """A second plugin that records every event (hook on_event)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def on_event(self, event: Any) -> None:
        self.seen.append(event)


@pytest.fixture
def setup() -> tuple[PluginManager, Doorbell, Events]:
    config = PluginConfig(
        settings={"doorbell": {"labels": ["jean"], "min_probability": 0.3, "cooldown_s": 10}}
    )
    manager = PluginManager(config)
    doorbell, events = Doorbell(), Events()
    manager.register(doorbell, "doorbell")  # what the entry point does, with an instance of our own
    manager.register(events, "events")
    return manager, doorbell, events


def test_a_visitor_rings_once_per_visit(setup: tuple[PluginManager, Doorbell, Events]) -> None:
    manager, doorbell, events = setup
    manager.call("on_frame", **frame(1.0, ("jean, blue jean", 0.6)))
    manager.call("on_frame", **frame(5.0, ("jean, blue jean", 0.8)))  # still there: same visit
    manager.call("on_frame", **frame(6.0, ("jean, blue jean", 0.1)))  # too unsure
    manager.call("on_frame", **frame(30.0, ("sweatshirt", 0.9)))  # not watched
    manager.call("on_frame", **frame(40.0, ("jean, blue jean", 0.5)))  # a new visit
    assert [(e.kind, e.stream, e.t) for e in events.seen] == [
        (VISITOR_EVENT, "porch", 1.0),
        (VISITOR_EVENT, "porch", 40.0),
    ]
    assert events.seen[0].source == "doorbell" and events.seen[0].payload["label"] == "jean, blue jean"
    assert [(v.t0, v.t1, v.probability) for v in doorbell.visits("porch")] == [
        (40.0, 40.0, 0.5),
        (1.0, 5.0, 0.8),
    ]
    assert manager.stats()["doorbell"]["failures"] == 0


def test_the_tool_lists_the_visits(setup: tuple[PluginManager, Doorbell, Events]) -> None:
    manager, _, _ = setup
    manager.call("on_frame", **frame(65.0, ("jean, blue jean", 0.6)))
    tools: list[Any] = []
    manager.call("register_tools", register=tools.append, view=None)
    (tool,) = tools
    assert tool.name == TOOL_NAME
    text, artifact = tool.func(stream="porch")
    assert "00:01:05" in text and artifact["moments"] == [{"stream": "porch", "t0": 65.0, "t1": 65.0}]
    assert "No visits" in tool.func(stream="garden")[0]
    assert TOOL_NAME in manager.system_prompt(settings=None)


def test_bad_settings_keep_the_plugin_from_loading() -> None:
    manager = PluginManager(PluginConfig(settings={"doorbell": {"min_probability": 2}}))
    with pytest.raises(PluginError, match=r"\[plugins.settings.doorbell\] min_probability"):
        manager.register(Doorbell(), "doorbell")
