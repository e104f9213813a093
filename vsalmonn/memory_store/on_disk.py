"""What a store's disk tells without its catalog: group folders, the span of a saved state, and the refusal to
start a new catalog over groups that an old one committed. `store.py` and `repair.py` (which rebuilds a lost
catalog from the groups) both read the store this way, so it lives in one module of its own.
"""

from __future__ import annotations

import json
import logging
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from .catalog import Catalog
from .models import Stream
from .objects import GROUP_SUFFIX, MEMORY_DIR, TMP_PREFIX, GroupStore

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The store cannot be used as it is (a catalog that lost its rows while checkpoint groups remain)."""


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _span(state: dict[str, Any]) -> tuple[float | None, float | None]:
    """Stream seconds covered by a memory state: earliest start and latest end over banks and pending."""
    starts, ends = [], []
    parts = [*state.get("banks", {}).values(), state.get("pending", {})]
    for part in parts:
        t0, t1 = part.get("t0"), part.get("t1")
        if t0 is not None and t0.numel():
            starts.append(float(t0.min()))
            ends.append(float(t1.max()))
    if not starts:
        return None, None
    start, end = min(starts), max(ends)
    return (start if math.isfinite(start) else None), (end if math.isfinite(end) else None)


def _groups_on_disk(root: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        groups = sorted(
            g for g in folder.iterdir()
            if g.is_dir() and g.name.endswith(GROUP_SUFFIX) and not g.name.startswith(TMP_PREFIX)
        )  # fmt: skip
        if groups:
            found[folder.name] = groups
    return found


def refuse_lost_catalog(
    data_dir: Path,
    sqlite_file: Path | None,
    catalog: Catalog | None = None,
    groups: GroupStore | None = None,
) -> None:
    """StoreError when checkpoint groups exist but the catalog that commits them is missing, empty or
    holds no stream: a new catalog there would silently orphan every stream's memory."""
    where: Path | str = data_dir / MEMORY_DIR
    if groups is None or groups.local:
        if groups is not None:
            where = groups.location("")
        found = _groups_on_disk(Path(where))
    else:  # one group is enough to refuse: no listing of a whole bucket at every start
        where = groups.url
        first = groups.first_group()
        found = {first.stream_id: [first.key]} if first is not None else {}
    if not found:
        return
    if sqlite_file is not None:
        if sqlite_file.exists() and sqlite_file.stat().st_size > 0:
            return
        what = f"{sqlite_file} is {'empty' if sqlite_file.exists() else 'missing'}"
    else:
        assert catalog is not None
        with catalog.session() as s:
            if s.scalar(select(func.count()).select_from(Stream)):
                return
        what = "the catalog holds no streams"
    count = sum(len(g) for g in found.values())
    holds = (
        f"{count} checkpoint group(s) of {len(found)} stream(s)"
        if groups is None or groups.local
        else ("checkpoint groups")
    )
    raise StoreError(
        f"{what} but {where} holds {holds}; "
        "refusing to start a new catalog over them: run 'vsalmonn store check', then 'vsalmonn store rebuild'"
    )


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Replace `path` with `value` as JSON, atomically; a failure is logged (the sidecar is a convenience)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(value, default=str), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)
