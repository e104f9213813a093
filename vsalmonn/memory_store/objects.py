"""Where checkpoint groups live: a folder on local disk, or a prefix in an S3-compatible object store.

The store (`store.py`) commits a group by inserting its catalog row after the group is written completely;
this module only writes, reads, lists and deletes groups, under *keys* (``<stream id>/<name>.zarr``) below
one root. The two places differ in the one thing the commit protocol leans on:

- a folder has an atomic rename, so a group is written under a temporary name, fsynced and renamed to its
  final name (``00000007.zarr``); a reader that lists the folder never sees a half-written final group;
- an object store has no rename (and no folders): each object PUT is atomic, nothing more. So a group is
  written once, straight under a fresh key that is never used again (``00000007-<random>.zarr``), and the
  catalog row naming that key is the only pointer to it. A group without a row is garbage whatever state
  it is in; `MemoryStore.collect_garbage` removes it (docs/storage.md, "Checkpoints in object storage").

The object store is reached through obstore (Rust's object_store crate) wrapped in Zarr's `ObjectStore`:
its timeouts and retries are settings (`S3Options`), so a dead endpoint fails a write in seconds with one
line instead of hanging the stream.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .checkpoint import (
    CheckpointError,
    GroupInfo,
    encode_state,
    fsync_dir,
    read_group,
    read_group_attrs,
    read_store,
    read_store_attrs,
    run_sync,
    write_encoded,
    write_group,
)
from .config import S3Options, StoreConfig
from .fresh_writes import FreshKeyStore, SinglePutStore

log = logging.getLogger(__name__)

MEMORY_DIR = "memory"  # the default root, below the data directory
GROUP_SUFFIX = ".zarr"
TMP_PREFIX = ".tmp-"


class ObjectStoreError(RuntimeError):
    """The object store cannot be reached or refused a request: says nothing about the groups in it."""


@dataclass(frozen=True)
class GroupEntry:
    """A group found below the root: its key and when its newest part was written."""

    key: str  # <stream id>/<name>.zarr
    modified: datetime

    @property
    def stream_id(self) -> str:
        return self.key.split("/", 1)[0]


def group_key(stream_id: str, name: str) -> str:
    return f"{stream_id}/{name}"


class GroupStore(ABC):
    """Checkpoint groups below one root. Keys are ``<stream id>/<group name>``; the catalog stores
    `row_path(key)`, and `key_of` maps a row's path back (None: the row points outside this root)."""

    url: str  # the root, as the settings name it (shown in messages)
    local: bool

    @abstractmethod
    def new_key(self, stream_id: str, seq: int) -> str:
        """The key the next checkpoint `seq` of a stream is written under."""

    @abstractmethod
    def write(self, key: str, state: dict[str, Any], extra_attrs: dict[str, Any]) -> GroupInfo:
        """Write `state` as a group under `key`, completely and durably, before returning."""

    @abstractmethod
    def read(self, key: str, expected_checksum: str | None) -> tuple[dict[str, Any], str]:
        """The state under `key` (CheckpointError: missing or damaged; ObjectStoreError: unreachable)."""

    @abstractmethod
    def read_attrs(self, key: str) -> dict[str, Any]:
        """The group's attributes, no arrays read (errors as in `read`)."""

    @abstractmethod
    def stored_bytes(self, key: str) -> int:
        """Bytes of every part of the group as stored."""

    @abstractmethod
    def set_aside(self, key: str, suffix: str) -> str:
        """Move the group out of the listing (to ``<name>.zarr<suffix>``, which `groups` never lists, so no
        garbage collection deletes it); where it went."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove every part of the group under `key` (a missing one is fine)."""

    @abstractmethod
    def groups(self, stream_id: str | None = None) -> list[GroupEntry]:
        """The groups below the root (of one stream), whole or not, temporaries included."""

    @abstractmethod
    def files(self, key: str) -> dict[str, bytes]:
        """Every part of a group by its path inside the group (an export copies them as they are)."""

    @abstractmethod
    def row_path(self, key: str) -> str:
        """What the catalog row stores for `key`."""

    @abstractmethod
    def key_of(self, row_path: str) -> str | None:
        """The key a catalog row's path names, None when it is not below this root."""

    @abstractmethod
    def location(self, key: str) -> Path:
        """The group's folder on disk; for an object store, its key (there is no folder)."""

    def first_group(self) -> GroupEntry | None:
        """Any one group below the root (None: there is none)."""
        found = self.groups()
        return found[0] if found else None

    def describe(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"

    @abstractmethod
    def probe(self) -> None:
        """ObjectStoreError when the root cannot be reached."""

    def delete_stream(self, stream_id: str) -> int:
        """Delete every group of a stream; how many."""
        entries = self.groups(stream_id)
        for entry in entries:
            self.delete(entry.key)
        return len(entries)


# ----- a folder ----------------------------------------------------------------------------------------
class LocalGroups(GroupStore):
    """Groups in a folder: written under a temporary name, fsynced, renamed (today's protocol, unchanged).

    Rows keep the path relative to the data directory when the root lies below it (``memory/<id>/….zarr``,
    as every catalog before object stores did), else the absolute path."""

    local = True

    def __init__(self, root: Path, data_dir: Path) -> None:
        self.root = Path(root)
        self.data_dir = Path(data_dir)
        self.url = str(self.root)

    def new_key(self, stream_id: str, seq: int) -> str:
        return group_key(stream_id, f"{seq:08d}{GROUP_SUFFIX}")

    def write(self, key: str, state: dict[str, Any], extra_attrs: dict[str, Any]) -> GroupInfo:
        final = self.root / key
        tmp = final.with_name(f"{TMP_PREFIX}{final.stem}-{uuid.uuid4().hex[:8]}{GROUP_SUFFIX}")
        try:
            info = write_group(tmp, state, extra_attrs=extra_attrs)
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return info

    def read(self, key: str, expected_checksum: str | None) -> tuple[dict[str, Any], str]:
        return read_group(self.root / key, expected_checksum)

    def read_attrs(self, key: str) -> dict[str, Any]:
        return read_group_attrs(self.root / key)

    def stored_bytes(self, key: str) -> int:
        return sum(f.stat().st_size for f in (self.root / key).rglob("*") if f.is_file())

    def set_aside(self, key: str, suffix: str) -> str:
        final = self.root / key
        aside = final.with_name(final.name + suffix)
        os.replace(final, aside)
        fsync_dir(final.parent)
        return str(aside)

    def delete(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)

    def groups(self, stream_id: str | None = None) -> list[GroupEntry]:
        folders = [self.root / stream_id] if stream_id else _subfolders(self.root)
        found = []
        for folder in folders:
            for entry in _subfolders(folder):
                if entry.name.endswith(GROUP_SUFFIX):
                    mtime = datetime.fromtimestamp(_mtime(entry), UTC)
                    found.append(GroupEntry(group_key(folder.name, entry.name), mtime))
        return sorted(found, key=lambda e: e.key)

    def files(self, key: str) -> dict[str, bytes]:
        folder = self.root / key
        return {
            p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
        }

    def row_path(self, key: str) -> str:
        path = self.root / key
        try:
            return str(path.relative_to(self.data_dir))
        except ValueError:
            return str(path.absolute())

    def key_of(self, row_path: str) -> str | None:
        if "://" in row_path:
            return None
        try:
            return (self.data_dir / row_path).relative_to(self.root).as_posix()
        except ValueError:
            return None

    def location(self, key: str) -> Path:
        return self.root / key

    def probe(self) -> None:
        """Nothing to reach: a folder that is missing is created by the first writer."""


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# ----- an S3-compatible object store --------------------------------------------------------------------
class S3Groups(GroupStore):
    """Groups in a bucket below a prefix; each written once under a fresh key, never renamed or rewritten.

    Rows store the group's whole URL (``s3://bucket/prefix/<id>/00000007-<random>.zarr``): a row says where
    its group is without the settings of the node that wrote it.
    """

    local = False

    def __init__(self, url: str, options: S3Options) -> None:
        import obstore.exceptions

        bucket, _, prefix = url.split("://", 1)[1].partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.options = options
        self._errors: tuple[type[BaseException], ...] = (obstore.exceptions.BaseError,)
        self._not_found = obstore.exceptions.NotFoundError
        try:
            self._root = self._store(self.prefix)
        except (*self._errors, ValueError, TypeError) as exc:
            raise self._fail(f"checkpoints_url {self.url}: bad [store.s3] settings", exc) from None

    def _store(self, prefix: str) -> Any:
        """An obstore S3Store for `prefix`; unset settings fall back to the AWS_* environment."""
        from obstore.store import S3Store

        o = self.options
        config: dict[str, Any] = {}
        if o.endpoint_url:
            config["endpoint"] = o.endpoint_url
        if o.region:
            config["region"] = o.region
        for name, secret in (
            ("access_key_id", o.access_key_id),
            ("secret_access_key", o.secret_access_key),
            ("session_token", o.session_token),
        ):
            if secret is not None:
                config[name] = secret.get_secret_value()
        endpoint = (
            o.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT") or ""
        )
        client = {
            "connect_timeout": timedelta(seconds=o.connect_timeout_s),
            "timeout": timedelta(seconds=o.request_timeout_s),
            "allow_http": endpoint.startswith("http://"),
        }
        retry = {
            "max_retries": o.max_retries,
            "retry_timeout": timedelta(seconds=o.retry_timeout_s),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2.0,
            },
        }
        return S3Store(
            self.bucket, prefix=prefix or None, client_options=client, retry_config=retry, **config
        )

    def _group_store(self, key: str, read_only: bool) -> Any:
        prefix = f"{self.prefix}/{key}" if self.prefix else key
        return SinglePutStore(self._store(prefix), read_only=read_only)

    def _fail(self, what: str, exc: BaseException) -> ObjectStoreError:
        return ObjectStoreError(f"{what}: {_first_line(exc)}")

    def new_key(self, stream_id: str, seq: int) -> str:
        return group_key(stream_id, f"{seq:08d}-{uuid.uuid4().hex[:16]}{GROUP_SUFFIX}")

    def write(self, key: str, state: dict[str, Any], extra_attrs: dict[str, Any]) -> GroupInfo:
        encoded = encode_state(state, extra_attrs)
        store = FreshKeyStore(self._group_store(key, read_only=False))  # one request per object
        try:
            run_sync(write_encoded(store, encoded))
        except self._errors as exc:
            raise self._fail(f"cannot write checkpoint group {self.describe(key)}", exc) from None
        stored = sum(store.written.values())  # what the PUTs carried: no listing of the group afterwards
        return GroupInfo(checksum=encoded.checksum, bytes_raw=encoded.bytes_raw, bytes_stored=stored)

    def read(self, key: str, expected_checksum: str | None) -> tuple[dict[str, Any], str]:
        where = self.describe(key)
        try:
            return read_store(
                self._group_store(key, read_only=True), where, expected_checksum, passthrough=self._errors
            )
        except self._not_found:
            raise CheckpointError(f"checkpoint group {where} is missing") from None
        except self._errors as exc:
            raise self._fail(f"cannot read checkpoint group {where}", exc) from None

    def read_attrs(self, key: str) -> dict[str, Any]:
        where = self.describe(key)
        try:
            return read_store_attrs(self._group_store(key, read_only=True), where, passthrough=self._errors)
        except self._errors as exc:
            raise self._fail(f"cannot read checkpoint group {where}", exc) from None

    def stored_bytes(self, key: str) -> int:
        try:
            return sum(int(meta["size"]) for meta in self._list(f"{key}/"))
        except self._errors as exc:
            raise self._fail(f"cannot list checkpoint group {self.describe(key)}", exc) from None

    def set_aside(self, key: str, suffix: str) -> str:
        """No rename in an object store: each object is copied under the new name, then the group deleted.
        Cut off half way, the group is still whole under its old key (a copy is never a move)."""
        import obstore

        aside = key + suffix
        try:
            for meta in list(self._list(f"{key}/")):
                part = meta["path"].removeprefix(f"{key}/")
                obstore.copy(self._root, meta["path"], f"{aside}/{part}")
        except self._errors as exc:
            raise self._fail(f"cannot set aside checkpoint group {self.describe(key)}", exc) from None
        self.delete(key)
        return self.describe(aside)

    def delete(self, key: str) -> None:
        import obstore

        try:
            paths = [meta["path"] for meta in self._list(f"{key}/")]
            if paths:
                obstore.delete(self._root, paths)
        except self._errors as exc:
            raise self._fail(f"cannot delete checkpoint group {self.describe(key)}", exc) from None

    def groups(self, stream_id: str | None = None) -> list[GroupEntry]:
        newest: dict[str, datetime] = {}
        try:
            for meta in self._list(f"{stream_id}/" if stream_id else None):
                parts = meta["path"].split("/")
                if len(parts) < 3 or not parts[1].endswith(GROUP_SUFFIX):
                    continue
                key = group_key(parts[0], parts[1])
                modified = meta["last_modified"]
                newest[key] = max(modified, newest.get(key, modified))
        except self._errors as exc:
            raise self._fail(f"cannot list {self.url}", exc) from None
        return [GroupEntry(k, newest[k]) for k in sorted(newest)]

    def first_group(self) -> GroupEntry | None:
        try:
            for meta in self._list(None):
                parts = meta["path"].split("/")
                if len(parts) >= 3 and parts[1].endswith(GROUP_SUFFIX):
                    return GroupEntry(group_key(parts[0], parts[1]), meta["last_modified"])
        except self._errors as exc:
            raise self._fail(f"cannot list {self.url}", exc) from None
        return None

    def files(self, key: str) -> dict[str, bytes]:
        import obstore

        try:
            return {
                meta["path"].removeprefix(f"{key}/"): bytes(obstore.get(self._root, meta["path"]).bytes())
                for meta in self._list(f"{key}/")
            }
        except self._errors as exc:
            raise self._fail(f"cannot read checkpoint group {self.describe(key)}", exc) from None

    def _list(self, prefix: str | None) -> Iterator[dict[str, Any]]:
        import obstore

        for batch in obstore.list(self._root, prefix=prefix, chunk_size=1000):
            yield from batch

    def row_path(self, key: str) -> str:
        return self.describe(key)

    def key_of(self, row_path: str) -> str | None:
        head = self.url + "/"
        return row_path[len(head) :] if row_path.startswith(head) else None

    def location(self, key: str) -> Path:
        return Path(key)

    def probe(self) -> None:
        import obstore

        try:
            next(iter(obstore.list(self._root, chunk_size=1)), None)
        except self._errors as exc:
            raise self._fail(f"checkpoint store {self.url} cannot be reached", exc) from None


def _first_line(exc: BaseException) -> str:
    """obstore's errors carry a multi-line debug dump after a first line that says it all."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def open_groups(config: StoreConfig, data_dir: Path) -> GroupStore:
    """The group store `config.checkpoints_url` names (default: the folder ``<data>/memory``)."""
    data_dir = Path(data_dir)
    url = config.checkpoints_url
    if url is None:
        return LocalGroups(data_dir / MEMORY_DIR, data_dir)
    scheme, sep, rest = url.partition("://")
    if not sep:
        path = Path(url).expanduser()
        return LocalGroups(path if path.is_absolute() else data_dir / path, data_dir)
    if scheme.lower() == "file":
        return LocalGroups(Path(rest), data_dir)
    try:
        return S3Groups(url, config.s3)
    except ImportError:
        raise ObjectStoreError(f"checkpoints_url {url} needs obstore: pip install 'vsalmonn[s3]'") from None
