"""What `search --json` and `status --json` print, built once for every face that gives them (the CLI, the
REST API), so that a program reading either sees one schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vsalmonn.settings import Settings

if TYPE_CHECKING:
    from vsalmonn.memory_store.store import MemoryStore
    from vsalmonn.tools import MemoryView
    from vsalmonn.tools.results import SearchResult
    from vsalmonn.tools.wallclock import TimeArg

TERMINAL_STATES = (None, "done", "stopped", "failed", "skipped", "idle", "new")
"""States of a stream no process is expected to report on: such a stream is never stale."""


def search_result(
    view: MemoryView,
    prompt: str,
    *,
    stream: str | None = None,
    k: int = 5,
    start: TimeArg | str | None = None,
    end: TimeArg | str | None = None,
) -> SearchResult:
    """The moments of `prompt` in one stream or all (overlapping [start, end] when given: stream seconds or
    wall-clock datetimes, or text in the forms of `tools.wallclock`), from their newest committed checkpoints.

    Raises `UnknownStreamError` for a stream the catalog lacks, `ViewError` for an argument the view
    refuses, and `ViewError` too when streams have checkpoints but every one failed its checksum (no moments
    would otherwise pass for "nothing matches").
    """
    from vsalmonn.tools.results import SearchResult

    known = [s.name for s in view.store.catalog.streams()]
    if stream is not None:
        view.stream(stream)  # UnknownStreamError before any model loads
    hits = view.search(prompt, stream=stream, k=k, start=start, end=end)
    if not hits:
        _refuse_all_damaged(view.store, [stream] if stream else known)
    return SearchResult.of(hits)


def _refuse_all_damaged(store: MemoryStore, names: Sequence[str]) -> None:
    from vsalmonn.tools import ViewError

    damaged = []
    for name in names:
        infos = store.checkpoints(name)
        failed = store.failed.get(infos[0].stream_id, set()) if infos else set()
        if infos and all(i.seq in failed for i in infos):
            damaged.append(name)
    if damaged:
        raise ViewError(
            f"every checkpoint of stream {', '.join(map(repr, damaged))} fails its checksum; "
            "see 'vsalmonn store check'"
        )


def tool_error(answer: Any) -> str | None:
    """The error, in one line, when an answer is only a tool's error (retrieve-then-answer found no evidence
    because the search itself failed), else None: `ask --json` and ``POST /api/ask`` refuse such an answer,
    so that a program does not take "no such stream" or a bad argument for an answer."""
    steps = answer.steps or []
    if len(steps) == 1 and steps[0].get("status") == "error" and answer.answer == steps[0].get("result"):
        return " ".join(str(answer.answer).split())
    return None


def status_entries(store: MemoryStore, settings: Settings) -> list[dict[str, Any]]:
    """Each stream's last status report, newest checkpoint and stored sizes, with `stale` set for a stream
    whose ingesting process stopped reporting: the entries of `status --json`."""
    from vsalmonn.memory_store.retention import stream_sizes
    from vsalmonn.perception.daemon import read_status

    entries = read_status(store)
    ids = {stream.name: stream.id for stream in store.catalog.streams()}
    for entry in entries:
        if entry["stream"] in ids:
            sizes = stream_sizes(store.catalog, store.data_dir, ids[entry["stream"]], entry["stream"])
            entry["sizes"] = {kind: size.model_dump() for kind, size in sizes.items()}
    stale_after = max(10.0, 5 * settings.daemon.status_every_s)
    for entry in entries:
        if entry.get("state") not in TERMINAL_STATES:
            entry["stale"] = entry.get("age_s", 0.0) > stale_after
    return entries


__all__ = ["search_result", "status_entries", "tool_error"]
