"""One settings object for the whole program, composed from each component's own pydantic config.

Values come from four places; a later one wins:

1. the defaults of the models below,
2. a TOML file (``--config FILE``),
3. environment variables (``VSALMONN_DATA``, ``VSALMONN_CATALOG_URL``),
4. command-line flags (``--data DIR``).

The TOML file mirrors the model: top-level keys are the fields of :class:`Settings`, one table per component::

    data_dir = "/var/lib/vsalmonn"   # relative paths are taken from the file's own folder

    [memory]                         # vsalmonn.memory_store.MemoryConfig
    visual_slots = 4096
    optimizer = "gd"

    [store]                          # vsalmonn.memory_store.StoreConfig
    catalog_url = "postgresql+psycopg://vsalmonn@db.internal/vsalmonn"
    retention = { keep_last = 5, max_bytes = 2_000_000_000 }

    [store.data_retention]           # vsalmonn.memory_store.config.DataRetention: rows and files, per stream
    labels = { max_age_s = 2592000, max_bytes = 256_000_000 }

    [daemon]                         # vsalmonn.perception.config.DaemonConfig
    checkpoint_every_s = 120

    [[streams]]                      # vsalmonn.perception.config.StreamSpec, one table per stream
    name = "gate"
    source = "rtsp://10.0.0.7/stream1"

Unknown keys are errors rather than warnings: a misspelt key that is silently ignored is a setting that
silently does not apply. This module sits at the top layer (DESIGN §1): it may import every component, and no
component imports it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vsalmonn.agent.config import AgentConfig
from vsalmonn.memory_store.config import MemoryConfig, StoreConfig
from vsalmonn.perception.config import DaemonConfig, PerceptionConfig, StreamSpec
from vsalmonn.plugins.manager import PluginConfig

DATA_ENV = "VSALMONN_DATA"
CATALOG_ENV = "VSALMONN_CATALOG_URL"
DEFAULT_DATA_DIR = Path("vsalmonn-data")


class SettingsError(ValueError):
    """A settings source is unreadable or invalid; the message is one line, fit for a CLI's stderr."""


class Settings(BaseModel):
    """Everything the program can be configured with; one field per component."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="checkpoints, catalog, model caches")
    memory: MemoryConfig = Field(default_factory=MemoryConfig, description="each stream's TTT memory")
    store: StoreConfig = Field(default_factory=StoreConfig, description="checkpoints and the catalog")
    perception: PerceptionConfig = Field(
        default_factory=PerceptionConfig, description="sampling and encoders"
    )
    daemon: DaemonConfig = Field(default_factory=DaemonConfig, description="windows, checkpoints, status")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="the chat model and its loop")
    plugins: PluginConfig = Field(
        default_factory=PluginConfig, description="which plugins load, their settings and event sinks"
    )
    streams: list[StreamSpec] = Field(
        default_factory=list, description="what `vsalmonn daemon` runs: one [[streams]] table per stream"
    )

    @model_validator(mode="after")
    def _memory_follows_encoders(self) -> Settings:
        """Unless ``memory.encoders`` is set, it names the perception encoders: the memory then holds their
        tokens, and trained slow weights are only used when they were trained for those encoders."""
        encoders = f"{self.perception.vision_encoder}/{self.perception.text_encoder}"
        if "encoders" not in self.memory.model_fields_set and self.memory.encoders != encoders:
            memory = self.memory.model_copy(update={"encoders": encoders})
            # still derived, not set: Settings built again from this memory and other encoders follow those
            object.__setattr__(memory, "__pydantic_fields_set__", set(self.memory.model_fields_set))
            object.__setattr__(self, "memory", memory)  # frozen; a validator may still finish its own object
        return self


def load_settings(
    config: Path | None = None,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Compose the settings: defaults < TOML file ``config`` < environment < the ``data_dir`` flag.

    ``environ`` defaults to ``os.environ``; tests pass their own mapping instead of patching the process.
    Raises :class:`SettingsError` with a one-line reason for a missing or malformed file or a bad value.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = _read_toml(config) if config is not None else {}
    if env.get(DATA_ENV):
        values["data_dir"] = Path(env[DATA_ENV])
    if env.get(CATALOG_ENV) and isinstance(values.get("store", {}), dict):
        values["store"] = {**values.get("store", {}), "catalog_url": env[CATALOG_ENV]}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        source = f"{config}: " if config is not None else ""
        raise SettingsError(source + describe_validation_error(exc)) from None
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        # every command would fail later on mkdir or open with a traceback; say it once, here
        raise SettingsError(f"data directory {settings.data_dir} exists and is not a directory")
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    """Parse ``path``, resolving a relative ``data_dir`` against the file's folder, as ruff and others do."""
    try:
        with path.open("rb") as fh:
            values = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 text; a binary file fails while being decoded
        raise SettingsError(
            f"{path}: not a TOML file (byte {exc.start} is not UTF-8 text; is it a binary file?)"
        ) from None
    data = values.get("data_dir")
    if isinstance(data, str) and not Path(data).expanduser().is_absolute():
        values["data_dir"] = path.parent / data
    elif isinstance(data, str):
        values["data_dir"] = Path(data).expanduser()
    return values


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error as one line (``memory.dim: Input should be ...``).

    pydantic's own text spans several lines per problem; a CLI wants one line that names the key.
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "settings"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {message}{more}"
