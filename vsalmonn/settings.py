"""One settings object for the whole program, composed from each component's own pydantic config.

Values come from four places; a later one wins, key by key:

1. the defaults of the models below,
2. a TOML file (``--config FILE``, else the file ``VSALMONN_CONFIG`` names),
3. environment variables: every setting as ``VSALMONN_<TABLE>__<KEY>`` (tables nest with ``__``:
   ``VSALMONN_MEMORY__VISUAL_SLOTS=4096``, ``VSALMONN_STORE__DATA_RETENTION__LABELS__MAX_AGE_S=86400``,
   top-level ``VSALMONN_DATA_DIR``; a table or a list as JSON:
   ``VSALMONN_PLUGINS__ENABLED='["surveillance"]'``),
   and the older names ``VSALMONN_DATA`` (= ``VSALMONN_DATA_DIR``) and ``VSALMONN_CATALOG_URL``
   (= ``VSALMONN_STORE__CATALOG_URL``), which lose to the new ones when both are set,
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

    [serve]                          # vsalmonn.serve.config.ServeConfig: `vsalmonn serve`
    port = 8765

    [[streams]]                      # vsalmonn.perception.config.StreamSpec, one table per stream
    name = "gate"
    source = "rtsp://10.0.0.7/stream1"

Unknown keys are errors rather than warnings, in the file and in ``VSALMONN_*`` variables alike, with the
closest key as a suggestion: a misspelt key that is silently ignored is a setting that silently does not
apply. Secrets (a webhook's signing key and headers, ``serve.token``) are ``SecretStr``: shown as
``**********`` in reprs, logs and `describe_settings`. This module sits at the top layer (DESIGN §1): it
may import every component, and no component imports it; `vsalmonn.settings_sources` reads the sources.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from vsalmonn.agent.config import AgentConfig
from vsalmonn.errors import did_you_mean
from vsalmonn.memory_store.config import MemoryConfig, StoreConfig
from vsalmonn.memory_store.redact import redact
from vsalmonn.perception.config import DaemonConfig, PerceptionConfig, StreamSpec
from vsalmonn.plugins.config import PluginConfig
from vsalmonn.serve.config import ServeConfig
from vsalmonn.settings_sources import (
    CATALOG_ENV,
    CONFIG_ENV,
    DATA_ENV,
    ENV_DELIMITER,
    ENV_PREFIX,
    KeyPath,
    Layer,
    SettingsError,
    env_layer,
    fields_at,
    file_layer,
    flag_layer,
    merge,
)

__all__ = [
    "CATALOG_ENV",
    "CONFIG_ENV",
    "DATA_ENV",
    "DEFAULT_DATA_DIR",
    "SettingValue",
    "Settings",
    "SettingsError",
    "describe_settings",
    "describe_validation_error",
    "load_settings",
]

DEFAULT_DATA_DIR = Path("vsalmonn-data")
DERIVED_KEYS: frozenset[KeyPath] = frozenset({("memory", "encoders")})  # see _memory_follows_encoders


class Settings(BaseSettings):
    """Everything the program can be configured with; one field per component.

    ``Settings(...)`` is a plain value built from its arguments, like any model: only `load_settings` reads
    the file and the environment, so that composing settings in code never picks up a stray variable.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        env_ignore_empty=True,
    )

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
    serve: ServeConfig = Field(
        default_factory=ServeConfig, description="`vsalmonn serve`: address, port, token, CORS origins"
    )
    streams: list[StreamSpec] = Field(
        default_factory=list, description="what `vsalmonn daemon` runs: one [[streams]] table per stream"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the sources are layered by load_settings, which can blame each value

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


class SettingValue(BaseModel):
    """One effective setting, for `vsalmonn config show`: where it is, what it is and who said so."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(description="dotted, as in the TOML file: memory.visual_slots, streams[0].source")
    value: JsonValue = Field(description="as JSON; secrets are **********, URL credentials ***")
    source: str = Field(
        description="default, derived (from other settings), file PATH, env VSALMONN_..., or flag --data"
    )


def load_settings(
    config: Path | None = None,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Compose the settings: defaults < TOML file ``config`` < environment < the ``data_dir`` flag.

    ``environ`` defaults to ``os.environ``; tests pass their own mapping instead of patching the process,
    and then the process environment is not read at all. Without ``config``, ``VSALMONN_CONFIG`` names the
    file. Raises :class:`SettingsError` with a one-line reason, naming the file or the variable at fault,
    for a missing or malformed file, an unknown key, or a bad value.
    """
    return _load(_layers(config, data_dir, environ))[0]


def describe_settings(
    config: Path | None = None,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[SettingValue]:
    """Every leaf of the effective settings (as `load_settings` composes them), in model order, with the
    source of its value; a list of tables (``[[streams]]``, sinks) is described table by table."""
    settings, layers = _load(_layers(config, data_dir, environ))
    out: list[SettingValue] = []
    for path, value in _leaves(settings.model_dump(mode="json"), ()):
        out.append(SettingValue(key=format_key(path), value=_shown(value), source=_source(layers, path)))
    return out


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error as one line (``memory.dim: Input should be ...``).

    pydantic's own text spans several lines per problem; a CLI wants one line that names the key, and for
    an unknown key the closest one it may have meant.
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "settings"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        loc = first["loc"]
        message = "unknown key" + did_you_mean(str(loc[-1]), fields_at(Settings, loc[:-1]))
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {message}{more}"


def format_key(path: KeyPath) -> str:
    """A key path as TOML writes it: ``plugins.sinks."*"[0].url``, ``streams[1].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            bare = part and all(c.isascii() and (c.isalnum() or c in "_-") for c in part)
            out += ("." if out else "") + (part if bare else '"' + part.replace('"', '\\"') + '"')
    return out


# --- composition --------------------------------------------------------------------------------------------


def _layers(config: Path | None, data_dir: Path | None, environ: Mapping[str, str] | None) -> list[Layer]:
    env = os.environ if environ is None else environ
    layers = [file_layer(config)] if config is not None else []
    if config is None and env.get(CONFIG_ENV):
        try:
            layers = [file_layer(Path(env[CONFIG_ENV]).expanduser())]
        except SettingsError as exc:  # say where the path came from: no --config was given
            raise SettingsError(f"{CONFIG_ENV}: {exc}") from None
    return [*layers, env_layer(Settings, env), flag_layer(data_dir)]


def _load(layers: list[Layer]) -> tuple[Settings, list[Layer]]:
    try:
        settings = Settings.model_validate(merge(layers))  # validation only: no source is read again
    except ValidationError as exc:
        blamed = _blame(layers, exc.errors(include_url=False)[0]["loc"])
        prefix = f"{blamed}: " if blamed else ""
        raise SettingsError(prefix + describe_validation_error(exc)) from None
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        # every command would fail later on mkdir or open with a traceback; say it once, here
        raise SettingsError(f"data directory {settings.data_dir} exists and is not a directory")
    return settings, layers


def _blame(layers: list[Layer], loc: tuple[str | int, ...]) -> str:
    """The file, variable(s) or flag that gave the value at `loc`, as an error's prefix; "" for a default."""
    for layer in reversed(layers):
        if layer.reach(loc) != "none":
            source = layer.source_of(loc)
            if source.startswith("file "):
                return source.removeprefix("file ")
            if source.startswith("flag "):
                return source.removeprefix("flag ")
            return "" if source == "default" else source.replace("env ", "")  # "env A, env B": names only
    return ""


def _source(layers: list[Layer], path: KeyPath) -> str:
    for layer in reversed(layers):
        reach = layer.reach(path)
        if reach == "has":
            return layer.source_of(path)
        if reach == "shadows":  # a list given whole, without this key: the key has its default
            break
    return "derived" if path in DERIVED_KEYS else "default"


def _leaves(value: Any, path: KeyPath) -> list[tuple[KeyPath, Any]]:
    """Leaf values of a dumped model; an empty table or list, or a list of plain values, is one leaf."""
    if isinstance(value, dict) and value:
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, (*path, i))]
    return [(path, value)]


def _shown(value: Any) -> Any:
    """`value` as it may be shown: credentials in URLs masked (SecretStr dumps as ********** already)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_shown(item) for item in value]
    if isinstance(value, dict):
        return {key: _shown(item) for key, item in value.items()}
    return value
