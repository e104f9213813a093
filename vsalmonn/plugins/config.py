"""The ``[plugins]`` table of the settings (`PluginConfig`) and the error of a plugin that cannot load."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .events import SinkConfig


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
