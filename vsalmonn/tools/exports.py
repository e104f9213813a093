"""Transcript exports of a stream: WebVTT, SubRip (SRT) and Markdown (``vsalmonn export STREAM --format``).

Pure functions over the catalog's transcript rows (`TranscriptSegment`): `transcript_rows` reads a stream's
rows in time order, `to_vtt`, `to_srt` and `to_markdown` render them, `export` does both for the CLI. The
Markdown export appends the text read on screen (`screen_text` rows, perception.ocr) in an "On screen"
section and the stream's minutes when the meeting monitor has saved some (`load_minutes`); subtitles (VTT,
SRT) hold speech only, since a player would show screen text over the screen that shows it.

Subtitle cues follow the segments' times, with two repairs that players need: a cue never starts before the
previous one ends (overlapping segments are clamped to start at its end) and always lasts at least
`MIN_CUE_MS`. Times are rounded to whole milliseconds first, so the repaired cues are exact in the text.
All rows stored are exported, including those past the stream's last checkpoint (what a live stream has
said so far).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from vsalmonn.memory_store.models import ScreenText, TranscriptSegment
from vsalmonn.memory_store.rows.screen_text import stream_screen_text
from vsalmonn.memory_store.rows.transcript import stream_transcript
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.tools.timefmt import hms

FORMATS = ("vtt", "srt", "md")
MIN_CUE_MS = 100  # the shortest cue written: a segment with no duration still shows for this long
MINUTES_DIR = "minutes"  # <data>/minutes/<stream>.md and .json


class Minutes(BaseModel):
    """A meeting's minutes: what it was about, what was decided, who does what next."""

    stream: str
    summary: str
    decisions: list[str] = Field(default_factory=list)
    action_items: list[str] = Field(default_factory=list)
    method: Literal["model", "extractive"] = Field(
        description="model: written by the chat model; extractive: transcript lines picked by rule"
    )
    covered_until: float | None = Field(None, description="stream time of the last transcript line covered")

    def to_markdown(self, level: int = 1) -> str:
        """The minutes as Markdown, their title at heading `level` and the sections one level below."""
        head, sub = "#" * level, "#" * (level + 1)
        how = "written by the language model" if self.method == "model" else "extracted from the transcript"
        upto = f" up to {hms(self.covered_until)}" if self.covered_until is not None else ""
        parts = [f"{head} Minutes: {self.stream}", f"_{how}{upto}_", f"{sub} Summary", self.summary or "-"]
        for title, items in (("Decisions", self.decisions), ("Action items", self.action_items)):
            parts += [f"{sub} {title}", "\n".join(f"- {item}" for item in items) or "- none noted"]
        return "\n\n".join(parts) + "\n"


# ----- reading ---------------------------------------------------------------------------------------------


def _stream_id(store: MemoryStore, stream: str) -> str:
    row = store.catalog.stream(stream)
    if row is None:
        names = [s.name for s in store.catalog.streams()]
        known = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
        raise ValueError(f"no stream named {stream!r}; known: {known or 'none yet'}")
    return row.id


def transcript_rows(store: MemoryStore, stream: str) -> list[TranscriptSegment]:
    """Stream `stream`'s transcript rows in time order; a one-line ValueError for an unknown stream."""
    return stream_transcript(store.catalog, _stream_id(store, stream))


def screen_rows(store: MemoryStore, stream: str) -> list[ScreenText]:
    """Stream `stream`'s on-screen text rows in time order; a one-line ValueError for an unknown stream."""
    return stream_screen_text(store.catalog, _stream_id(store, stream))


# ----- rendering -------------------------------------------------------------------------------------------


def _clock(ms: int, sep: str) -> str:
    """Milliseconds as HH:MM:SS<sep>mmm (hours grow past two digits when needed)."""
    seconds, ms = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{sep}{ms:03d}"


def _cue_text(text: str) -> str:
    """A segment's text on one line (a blank line would end a cue early)."""
    return " ".join(text.split())


def cues(rows: Iterable[TranscriptSegment]) -> list[tuple[int, int, str]]:
    """(start ms, end ms, text) per non-empty row, in order, never overlapping and never shorter than
    MIN_CUE_MS."""
    out: list[tuple[int, int, str]] = []
    last_end = 0
    for row in rows:
        text = _cue_text(row.text or "")
        if not text:
            continue
        start = max(round(1000 * row.t0), last_end, 0)
        end = max(round(1000 * row.t1), start + MIN_CUE_MS)
        out.append((start, end, text))
        last_end = end
    return out


def _escape_vtt(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(rows: Iterable[TranscriptSegment]) -> str:
    """A WebVTT file: the WEBVTT header, then one cue per segment (``HH:MM:SS.mmm --> HH:MM:SS.mmm``)."""
    blocks = ["WEBVTT"]
    for start, end, text in cues(rows):
        blocks.append(f"{_clock(start, '.')} --> {_clock(end, '.')}\n{_escape_vtt(text)}")
    return "\n\n".join(blocks) + "\n"


def to_srt(rows: Iterable[TranscriptSegment]) -> str:
    """A SubRip file: numbered cues from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, blank line after each.

    SubRip has no escapes: the text goes as it is, but for ``-->`` (written ``->``), which readers take for
    a timing line."""
    blocks = [
        f"{n}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text.replace('-->', '->')}\n"
        for n, (start, end, text) in enumerate(cues(rows), 1)
    ]
    return "\n".join(blocks)


def to_markdown(
    rows: Sequence[TranscriptSegment],
    minutes: Minutes | None = None,
    *,
    title: str = "Transcript",
    shown: Sequence[ScreenText] = (),
) -> str:
    """A Markdown document: `title`, one ``- [HH:MM:SS] text`` line per segment, then the text read on
    screen (when any) as an "On screen" section of the same lines, then the minutes if given."""
    lines = [f"- [{hms(row.t0)}] {_cue_text(row.text)}" for row in rows if _cue_text(row.text or "")]
    parts = [f"# {title}", "\n".join(lines) or "_nothing was said_"]
    on_screen = [f"- [{hms(row.t)}] {_cue_text(row.text)}" for row in shown if _cue_text(row.text or "")]
    if on_screen:
        parts += ["## On screen", "\n".join(on_screen)]
    if minutes is not None:
        parts.append(minutes.to_markdown(level=2).rstrip("\n"))
    return "\n\n".join(parts) + "\n"


def export(store: MemoryStore, stream: str, fmt: str) -> str:
    """Stream `stream`'s transcript as `fmt` (vtt, srt or md); a one-line ValueError for a bad stream or
    format. The Markdown export includes the minutes saved for the stream, if any."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    rows = transcript_rows(store, stream)
    if fmt == "vtt":
        return to_vtt(rows)
    if fmt == "srt":
        return to_srt(rows)
    return to_markdown(
        rows,
        load_minutes(store.data_dir, stream),
        title=f"Transcript: {stream}",
        shown=screen_rows(store, stream),
    )


# ----- saved minutes ---------------------------------------------------------------------------------------


def minutes_paths(data_dir: Path, stream: str) -> tuple[Path, Path]:
    """Where a stream's minutes are saved: ``<data>/minutes/<stream>.md`` (to read), ``.json`` (to load)."""
    folder = Path(data_dir) / MINUTES_DIR
    return folder / f"{stream}.md", folder / f"{stream}.json"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def save_minutes(data_dir: Path, minutes: Minutes) -> Path:
    """Write `minutes` to ``<data>/minutes/<stream>.md`` (and its ``.json``), each file replaced whole."""
    md, js = minutes_paths(data_dir, minutes.stream)
    _write_atomic(js, minutes.model_dump_json(indent=2))
    _write_atomic(md, minutes.to_markdown())
    return md


def load_minutes(data_dir: Path, stream: str) -> Minutes | None:
    """The minutes saved for `stream`, or None (none saved, or a file that does not read back)."""
    _, js = minutes_paths(data_dir, stream)
    try:
        return Minutes.model_validate(json.loads(js.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
