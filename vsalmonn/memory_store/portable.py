"""A stream's memory as one portable, checksummed file: `vsalmonn memory export` / `memory import`.

Why it looks like this:

- **What travels.** The newest checkpoint that verifies (its Zarr group, file for file) and the catalog rows a
  reader cites from it: transcript lines, frame labels, kept moments with their evidence, and the stream's
  events. Models never travel: the file names the encoders whose tokens it holds, and an import into a store
  set up with other encoders is refused, since their tokens would be compared with prompts of another space.
- **One zip, checked before use.** `manifest.json` carries the format, the catalog's schema revision, the
  memory config and the SHA-256 of every other member; an import verifies all of them before it writes
  anything, and the checkpoint is read back through `read_group` against its own state checksum as well.
- **Written like a checkpoint.** The export goes to a temporary file beside the target and is renamed into
  place, so a failed export leaves nothing. The import writes the group through `StreamWriter.commit` (group
  complete, then its row) after the rows are in; a failure on the way removes the half-made stream again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import uuid
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from vsalmonn.errors import one_line

from .catalog import SCHEMA_HEAD
from .checkpoint import CheckpointError, read_group
from .config import saved_config
from .models import (
    Event,
    Evidence,
    FrameLabel,
    MomentRecord,
    ScreenText,
    Stream,
    TranscriptSegment,
    UTCDateTime,
)
from .store import MemoryStore

log = logging.getLogger(__name__)

FORMAT = "vsalmonn-memory/1"
MANIFEST = "manifest.json"
GROUP_PREFIX = "checkpoint/"
# Tables carried, each as JSON lines of its columns (ids and stream ids are the importing store's own).
_TABLES: dict[str, type[Any]] = {
    "transcript_segments": TranscriptSegment,
    "frame_labels": FrameLabel,
    "screen_text": ScreenText,  # absent from exports made before revision 0005: read as no rows
    "events": Event,
}


class PortableError(ValueError):
    """An export or import that cannot be done; the message is one line, for the command line."""


class Manifest(BaseModel):
    format: str
    stream: str
    source: str | None = None
    kind: str | None = None
    schema_revision: str
    encoders: str | None = None
    config: dict[str, Any] | None = None
    checkpoint_checksum: str
    source_offset: float | None = None
    source_state: dict[str, Any] | None = None
    rows: dict[str, int]
    members: dict[str, str]  # member name -> sha256


def _row_dict(row: Any, skip: tuple[str, ...] = ("id", "stream_id")) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in row.__table__.columns:
        if column.name in skip:
            continue
        value = getattr(row, column.key)
        out[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _from_dict(model: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for column in model.__table__.columns:
        if isinstance(column.type, UTCDateTime) and isinstance(out.get(column.key), str):
            out[column.key] = datetime.fromisoformat(out[column.key])
    return out


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()


def export_stream(store: MemoryStore, name: str, target: Path) -> Manifest:
    """Write stream `name`'s newest verified checkpoint and its rows to `target` (a zip), atomically."""
    latest = store.load_latest(name)
    if latest is None:
        raise PortableError(f"stream {name} has no committed checkpoint that verifies: nothing to export")
    _, info = latest
    members: dict[str, bytes] = {}
    key = store.groups.key_of(info.location)
    assert key is not None  # load_latest read the group through this very key
    for part, data in sorted(store.groups.files(key).items()):
        members[GROUP_PREFIX + part] = data
    counts: dict[str, int] = {}
    with store.catalog.session() as s:
        stream = s.scalars(select(Stream).where(Stream.name == name)).one()
        for table, model in _TABLES.items():
            rows = [_row_dict(r) for r in s.scalars(select(model).where(model.stream_id == stream.id))]
            members[f"rows/{table}.jsonl"] = _jsonl(rows)
            counts[table] = len(rows)
        moments = []
        for m in s.scalars(select(MomentRecord).where(MomentRecord.stream_id == stream.id)):
            moment = _row_dict(m)
            moment["evidence"] = [_row_dict(e, skip=("id", "moment_id")) for e in m.evidence]
            moments.append(moment)
        members["rows/moments.jsonl"] = _jsonl(moments)
        counts["moments"] = len(moments)
        config = stream.config
        manifest = Manifest(
            format=FORMAT,
            stream=name,
            source=stream.source,
            kind=stream.kind,
            schema_revision=SCHEMA_HEAD,
            encoders=(config or {}).get("encoders"),
            config=config,
            checkpoint_checksum=info.checksum,
            source_offset=info.source_offset,
            source_state=info.source_state,
            rows=counts,
            members={k: hashlib.sha256(v).hexdigest() for k, v in members.items()},
        )
    target = Path(target)
    if target.is_dir():
        raise PortableError(f"{target} is a directory; give the export a file name")
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST, manifest.model_dump_json(indent=1))
            for member, data in members.items():
                zf.writestr(member, data)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise PortableError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return manifest


def read_manifest(source: Path) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and members of an export, every member checked against its SHA-256."""
    try:
        with zipfile.ZipFile(source) as zf:
            manifest = Manifest.model_validate_json(zf.read(MANIFEST))
            members = {n: zf.read(n) for n in zf.namelist() if n != MANIFEST}
    except FileNotFoundError:
        raise PortableError(f"{source}: no such file") from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        reason = one_line(exc)
        raise PortableError(f"{source}: not a vsalmonn memory export ({reason})") from None
    if manifest.format != FORMAT:
        raise PortableError(f"{source}: format {manifest.format!r}, this vsalmonn reads {FORMAT!r}")
    if set(members) != set(manifest.members):
        raise PortableError(f"{source}: its members differ from its manifest (damaged or edited)")
    for member, digest in manifest.members.items():
        if hashlib.sha256(members[member]).hexdigest() != digest:
            raise PortableError(f"{source}: {member} fails its checksum (damaged or edited)")
    return manifest, members


def import_stream(
    store: MemoryStore, source: Path, *, name: str | None = None, encoders: str | None = None
) -> Manifest:
    """Bring an export into `store` as stream `name` (default: its own name); refused when it does not fit.

    `encoders` is what this store's settings encode with; an export of tokens from other encoders is refused.
    """
    manifest, members = read_manifest(Path(source))
    name = name or manifest.stream
    if manifest.schema_revision != SCHEMA_HEAD:
        raise PortableError(
            f"{source}: written with catalog schema {manifest.schema_revision}, this store has "
            f"{SCHEMA_HEAD}; export it again with this version of vsalmonn"
        )
    if encoders is not None and manifest.encoders is not None and manifest.encoders != encoders:
        raise PortableError(
            f"{source}: its tokens come from encoders {manifest.encoders}, this store encodes with {encoders}"
        )
    if _stream_exists(store, name):
        raise PortableError(f"stream {name} exists already; import under another name with --stream NAME")
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=store.data_dir))
    try:
        group = staging / "group.zarr"
        for member, data in members.items():
            if member.startswith(GROUP_PREFIX):
                path = group / member.removeprefix(GROUP_PREFIX)
                if ".." in Path(member).parts:
                    raise PortableError(f"{source}: member {member} points outside its group")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        try:
            state, _ = read_group(group, manifest.checkpoint_checksum)
        except CheckpointError as exc:
            raise PortableError(f"{source}: its checkpoint does not load ({exc})") from None
        config = saved_config(manifest.config) if manifest.config else None
        try:
            with store.writer(name, config=config, source=manifest.source, kind=manifest.kind) as writer:
                _insert_rows(store, writer.stream_id, members)
                writer.commit(state, source_offset=manifest.source_offset, source_state=manifest.source_state)
        except BaseException:
            _forget(store, name)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("stream %s imported from %s", name, source)
    return manifest


def _stream_exists(store: MemoryStore, name: str) -> bool:
    with store.catalog.session() as s:
        return s.scalar(select(Stream.id).where(Stream.name == name)) is not None


def _lines(members: dict[str, bytes], member: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in io.StringIO(members.get(member, b"").decode()) if line.strip()]


def _insert_rows(store: MemoryStore, stream_id: str, members: dict[str, bytes]) -> None:
    with store.catalog.transaction() as s:
        for table, model in _TABLES.items():
            for data in _lines(members, f"rows/{table}.jsonl"):
                s.add(model(stream_id=stream_id, **_from_dict(model, data)))
        for data in _lines(members, "rows/moments.jsonl"):
            evidence = data.pop("evidence", [])
            moment = MomentRecord(stream_id=stream_id, **_from_dict(MomentRecord, data))
            moment.evidence = [Evidence(**e) for e in evidence]
            s.add(moment)


def _forget(store: MemoryStore, name: str) -> None:
    """Remove what a failed import made (its stream row cascades to every other row; then its folder)."""
    from .deletion import delete_stream

    try:
        delete_stream(store, name)
    except Exception as exc:  # the original failure is what the user needs to see
        log.warning("stream %s: could not remove the half-made import: %s", name, exc)
