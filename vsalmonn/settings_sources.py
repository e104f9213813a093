"""Where settings come from: the TOML file, the environment and the ``--data`` flag, as layers of raw values
that remember which file, variable or flag gave each key.

`vsalmonn.settings` merges the layers (a later one wins, key by key; a list is replaced whole) and validates
the result once; the layers stay around so that an invalid value can be blamed on its source and so that
`describe_settings` can say where every effective value came from. The environment is read through
pydantic-settings' `EnvSettingsSource` (``VSALMONN_<TABLE>__<KEY>``, JSON for tables and lists), fed from an
explicit mapping rather than ``os.environ`` so that tests and embedding programs pass their own.

Names are checked before anything is parsed: pydantic-settings silently skips a variable that names no field,
which would make a misspelt ``VSALMONN_MEMORY__VISUL_SLOTS`` a setting that silently does not apply.
"""

from __future__ import annotations

import json
import tomllib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_settings import BaseSettings, EnvSettingsSource
from pydantic_settings import SettingsError as SourceError

from vsalmonn.errors import closest, one_line

ENV_PREFIX = "VSALMONN_"
ENV_DELIMITER = "__"
DATA_ENV = "VSALMONN_DATA"  # older name of VSALMONN_DATA_DIR, kept
CATALOG_ENV = "VSALMONN_CATALOG_URL"  # older name of VSALMONN_STORE__CATALOG_URL, kept
CONFIG_ENV = "VSALMONN_CONFIG"  # the TOML file when --config is absent; not a setting itself
ENV_ALIASES: dict[str, tuple[str, ...]] = {DATA_ENV: ("data_dir",), CATALOG_ENV: ("store", "catalog_url")}

KeyPath = tuple[str | int, ...]


class SettingsError(ValueError):
    """A settings source is unreadable or invalid; the message is one line, fit for a CLI's stderr."""


# --- layers -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """The raw values of one source, and which source gave each of them.

    `origins` maps a key path to its source (``file PATH``, ``env NAME``, ``flag --data``); a key is
    attributed to the origin of its longest listed prefix, so ``{(): "file x.toml"}`` covers a whole file.
    """

    values: dict[str, Any]
    origins: dict[KeyPath, str] = field(default_factory=dict)

    def reach(self, path: KeyPath) -> Literal["has", "shadows", "none"]:
        """Whether this layer gives `path` ("has"), replaces a list or value above it without giving `path`
        ("shadows": a lower layer's value does not show through), or leaves it to the layers below."""
        node: Any = self.values
        inside_list = False
        for part in path:
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node, inside_list = node[part], True
            elif isinstance(node, Mapping) and not inside_list:
                return "none"
            else:
                return "shadows"
        return "has"

    def source_of(self, path: KeyPath) -> str:
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.origins:
                return self.origins[path[:cut]]
        under = [origin for key, origin in self.origins.items() if key[: len(path)] == path]
        return ", ".join(sorted(set(under))) or "default"


def merge(layers: Sequence[Layer]) -> dict[str, Any]:
    """The layers' values as one mapping, a later layer winning key by key (tables merge, lists do not)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _deep_merge(merged, layer.values)
    return merged


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        out[key] = (
            _deep_merge(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
        )
    return out


# --- the TOML file ------------------------------------------------------------------------------------------


def file_layer(path: Path) -> Layer:
    """Parse `path`, resolving a relative ``data_dir`` against the file's folder, as ruff and others do."""
    try:
        with path.open("rb") as fh:
            values = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise SettingsError(f"config file {path} is a directory") from None
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
    return Layer(values, {(): f"file {path}"})


# --- the environment ----------------------------------------------------------------------------------------


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # read by _load_env_vars, which the base class calls while it initialises
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}


def env_layer(settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> Layer:
    """The ``VSALMONN_*`` variables of `environ` that name settings; an empty variable counts as unset.

    A variable that is clearly meant as a setting but names none (``VSALMONN_MEMORY__VISUL_SLOTS``, a close
    misspelling of a top-level name) is an error with a suggestion; other ``VSALMONN_*`` names (the
    benchmarks' knobs, ``VSALMONN_CONFIG``) are not settings and are left alone.
    """
    ours = {
        name: value
        for name, value in environ.items()
        if name.upper().startswith(ENV_PREFIX) and value != "" and name.upper() != CONFIG_ENV
    }
    aliases = {name: value for name, value in ours.items() if name.upper() in ENV_ALIASES}
    paths = {
        name: path
        for name, value in ours.items()
        if name not in aliases and (path := setting_path(settings_cls, name, value)) is not None
    }
    try:
        values = _MappingEnvSource(settings_cls, {name: ours[name] for name in paths})()
    except SourceError as exc:  # setting_path checked the JSON already; this is the library's own refusal
        raise SettingsError(f"environment: {one_line(exc)}") from None
    origins: dict[KeyPath, str] = {path: f"env {name.upper()}" for name, path in paths.items()}
    for name, value in aliases.items():
        path = ENV_ALIASES[name.upper()]
        if Layer(values).reach(path) == "none":  # the canonical name wins over the older one
            values = _deep_merge(values, _nest(path, value))
            origins[path] = f"env {name.upper()}"
    return Layer(values, origins)


def setting_path(settings_cls: type[BaseModel], name: str, value: str) -> KeyPath | None:
    """The key path a ``VSALMONN_*`` variable sets, None when it is no setting; SettingsError when it is
    meant as one but names no key, or its value cannot be what the key takes (a table or list as JSON)."""
    parts = [part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_DELIMITER)]
    top = list(settings_cls.model_fields)
    if len(parts) == 1 and parts[0] not in top:
        hint = closest(parts[0], top, cutoff=0.8)
        if hint is None:
            return None  # another program's variable (VSALMONN_BENCH_*, VSALMONN_PG_BINDIR)
        raise SettingsError(f"{name}: names no setting (did you mean {env_name((hint,))}?)")
    node: Any = settings_cls
    for depth, part in enumerate(parts):
        if not part:
            raise SettingsError(f"{name}: empty key between '{ENV_DELIMITER}'")
        node = _unwrap(node)
        if node is Any:  # inside a free-form table (a plugin's own settings): its model checks it later
            return tuple(parts)
        fields = _model_fields(node)
        here = ".".join(parts[: depth + 1])
        if fields is not None:
            if part not in fields:
                hint = closest(part, list(fields))
                meant = (*parts[:depth], hint, *parts[depth + 1 :])
                better = f" (did you mean {env_name(meant)}?)" if hint else ""
                raise SettingsError(f"{name}: {here}: unknown key{better}")
            node = fields[part]
        elif _is_mapping(node):
            node = get_args(node)[1] if get_args(node) else Any
        elif _is_list(node):
            raise SettingsError(
                f"{name}: {'.'.join(parts[:depth])} is a list: set it whole, as JSON in "
                f"{env_name(tuple(parts[:depth]))}"
            )
        else:
            raise SettingsError(f"{name}: {'.'.join(parts[:depth])} is a value and has no key {part!r}")
    if _is_complex(node):
        kind = "list" if _is_list(_unwrap(node)) else "table"
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list if kind == "list" else dict):
            raise SettingsError(
                f"{name}: {'.'.join(parts)} is a {kind}: give it as JSON (e.g. {name}='{_example(kind)}')"
            )
    return tuple(parts)


def env_name(path: Sequence[str | int]) -> str:
    """The variable that sets `path`: ``("memory", "visual_slots")`` → ``VSALMONN_MEMORY__VISUAL_SLOTS``."""
    return ENV_PREFIX + ENV_DELIMITER.join(str(part).upper() for part in path)


def _nest(path: KeyPath, value: Any) -> dict[str, Any]:
    for part in reversed(path[1:]):
        value = {part: value}
    return {str(path[0]): value}


def _example(kind: str) -> str:
    return '["a", "b"]' if kind == "list" else '{"key": 1}'


# --- the flag -----------------------------------------------------------------------------------------------


def flag_layer(data_dir: Path | None) -> Layer:
    if data_dir is None:
        return Layer({})
    return Layer({"data_dir": data_dir}, {(): "flag --data"})


# --- types and suggestions ----------------------------------------------------------------------------------


def fields_at(root: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys the table at `loc` accepts (a pydantic error's location, union tags included), or []."""
    node: Any = root
    for part in loc:
        node = _step(node, part)
        if node is None:
            return []
    fields = _model_fields(_unwrap(node))
    return list(fields) if fields else []


def _step(node: Any, part: str | int) -> Any:
    node = _unwrap(node)
    fields = _model_fields(node)
    if fields is not None:
        return fields.get(str(part))
    if _is_list(node) and isinstance(part, int):
        return get_args(node)[0] if get_args(node) else Any
    if _is_mapping(node):
        return get_args(node)[1] if get_args(node) else Any
    if get_origin(node) in (Union, types.UnionType):  # a discriminated union: the error names the tag
        for member in get_args(node):
            member_fields = _model_fields(_unwrap(member))
            tag = member_fields.get("type") if member_fields else None
            if tag is not None and get_origin(tag) is Literal and part in get_args(tag):
                return member
    return None


def _unwrap(node: Any) -> Any:
    """`node` without Annotated metadata and without an optional None."""
    while True:
        if get_origin(node) is Annotated:
            node = get_args(node)[0]
        elif get_origin(node) in (Union, types.UnionType):
            members = [arg for arg in get_args(node) if arg is not type(None)]
            if len(members) != 1:
                return node
            node = members[0]
        else:
            return node


def _model_fields(node: Any) -> dict[str, Any] | None:
    if isinstance(node, type) and issubclass(node, BaseModel):
        return {name: info.annotation for name, info in node.model_fields.items()}
    return None


def _is_list(node: Any) -> bool:
    return get_origin(node) in (list, tuple, set, frozenset) or node in (list, tuple)


def _is_mapping(node: Any) -> bool:
    return get_origin(node) in (dict, Mapping) or node is dict


def _is_complex(node: Any) -> bool:
    node = _unwrap(node)
    if get_origin(node) in (Union, types.UnionType):
        return any(_is_complex(member) for member in get_args(node))
    return _model_fields(node) is not None or _is_list(node) or _is_mapping(node)
