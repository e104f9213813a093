"""What happened: the catalog's `events` rows (alerts, plugin faults, reconnects), stored by the event bus."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, select

from ..models import Event

if TYPE_CHECKING:
    from ..catalog import Catalog


def add_event(
    catalog: Catalog,
    *,
    kind: str,
    stream_id: str | None = None,
    source: str | None = None,
    t: float | None = None,
    message: str = "",
    payload: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> int:
    """Store one event row (in its own transaction) and return its id."""
    row = Event(stream_id=stream_id, kind=kind, source=source, t=t, message=message, payload=payload)
    if created_at is not None:
        row.created_at = created_at
    with catalog.transaction() as session:
        session.add(row)
        session.flush()
        return row.id


def _conditions(
    stream_id: str | None, kind: str | None, since: datetime | None, since_t: float | None
) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if stream_id is not None:
        out.append(Event.stream_id == stream_id)
    if kind is not None:
        out.append(Event.kind == kind)
    if since is not None:
        out.append(Event.created_at >= (since if since.tzinfo else since.replace(tzinfo=UTC)))
    if since_t is not None:
        out.append(Event.t >= since_t)  # events without a stream time never match
    return out


def events_since(
    catalog: Catalog,
    *,
    stream_id: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    since_t: float | None = None,
    limit: int,
) -> list[Event]:
    """Events newest first, at most `limit`: of one stream and one kind when given, created at or after the
    wall-clock `since` (naive means UTC) and at or after the stream time `since_t`."""
    query = (
        select(Event)
        .where(*_conditions(stream_id, kind, since, since_t))
        .order_by(Event.created_at.desc(), Event.id.desc())
        .limit(limit)
    )
    with catalog.session() as session:
        return list(session.scalars(query))


def events_after(catalog: Catalog, after_id: int, *, limit: int) -> list[Event]:
    """Events stored after the one with id `after_id` (ids only grow), oldest first, at most `limit`: what a
    follower of the event feed has not seen yet."""
    query = select(Event).where(Event.id > after_id).order_by(Event.id).limit(limit)
    with catalog.session() as session:
        return list(session.scalars(query))


def last_event_id(catalog: Catalog) -> int:
    """The id of the newest event stored, 0 when none: where a new follower of the feed starts."""
    with catalog.session() as session:
        return int(session.scalar(select(func.max(Event.id))) or 0)


def event_kinds(catalog: Catalog, stream_id: str | None = None, *, limit: int = 50) -> list[str]:
    """The distinct kinds of the events stored (of one stream when given), alphabetically, at most `limit`."""
    query = select(Event.kind).distinct().order_by(Event.kind)
    if stream_id is not None:
        query = query.where(Event.stream_id == stream_id)
    with catalog.session() as session:
        return list(session.scalars(query.limit(limit)))


def count_events(catalog: Catalog, kinds: Sequence[str]) -> dict[tuple[str, str | None], int]:
    """How many events of each of `kinds` each source has stored, by (kind, source): a counter a process
    other than the one that raised them (a metrics scrape of `vsalmonn serve`) can read."""
    query = (
        select(Event.kind, Event.source, func.count())
        .where(Event.kind.in_(list(kinds)))
        .group_by(Event.kind, Event.source)
    )
    with catalog.session() as session:
        return {(kind, source): int(n) for kind, source, n in session.execute(query)}


__all__ = ["add_event", "count_events", "event_kinds", "events_after", "events_since", "last_event_id"]
