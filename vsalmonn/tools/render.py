"""The tools' answers as short text for a model: every time as HH:MM:SS and seconds, one fact per line.

The structured form of the same answer travels in the tool's artifact; this text is what the model reads, so
it stays concise (bounded in lines and characters) and says what to do when there is nothing to show.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .memory_view import Description, Events, Hit, StreamSummary, Transcript
from .timefmt import at_text, hms, span_text

CONTENT_CHARS = 8000  # a tool's text answer is cut here, with a note saying how to get the rest
LINE_CHARS = 400  # one transcript line or event message in the text answer


def clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded(lines: list[str], hint: str) -> str:
    """Join `lines`, dropping the tail past CONTENT_CHARS with a note that ends in `hint`."""
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        if used + len(line) + 1 > CONTENT_CHARS and out:
            out.append(f"… {len(lines) - i} more lines left out; {hint}")
            break
        out.append(line)
        used += len(line) + 1
    return "\n".join(out)


def short_label(label: str) -> str:
    """An ImageNet class name's first synonym: "web site, website" -> "web site"."""
    return label.split(",")[0].strip() or label


def when(t: datetime | None) -> str:
    if t is None:
        return "-"
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def wall_span(t0: datetime | None, t1: datetime | None) -> str:
    """A span on the wall clock: "2026-12-03 14:03:05-14:03:12 UTC" (the date once when it is one day)."""
    if t0 is None or t1 is None:
        return ""
    a, b = when(t0), when(t1)
    return f"{a.removesuffix(' UTC')}-{b[11:] if a[:10] == b[:10] else b}"


def hit_line(hit: Hit) -> str:
    """ "cam 00:01:05-00:01:12 (65.0-72.0 s) score 0.41 visual; seen: street sign (0.31); said: 'hi'",
    with "[wall clock 2026-12-03 14:03:05-14:03:12 UTC]" after the span for a live stream."""
    wall = wall_span(hit.wall_t0, hit.wall_t1)
    span = f"{span_text(hit.t0, hit.t1)}" + (f" [wall clock {wall}]" if wall else "")
    head = f"{hit.stream} {span} score {hit.score:.2f} {hit.modality}"
    seen = [e.removeprefix("seen: ") for e in hit.evidence if e.startswith("seen: ")]
    said = [e.removeprefix("said: ") for e in hit.evidence if e.startswith("said: ")]
    other = [e for e in hit.evidence if not e.startswith(("seen: ", "said: "))]
    parts = [head]
    if seen:
        parts.append("seen: " + ", ".join(seen))
    if said:
        parts.append("said: " + " ".join(said))
    return "; ".join(parts + other)


def render_hits(query: str, hits: list[Hit], scope: str) -> str:
    if not hits:
        return f"no moments found for {clip(query, 80)!r} {scope}"
    lines = [
        f"{len(hits)} moment{'s' if len(hits) != 1 else ''} for {clip(query, 80)!r} {scope}, best first:"
    ]
    lines += [f"{i}. {hit_line(h)}" for i, h in enumerate(hits, 1)]
    return bounded(lines, "ask for fewer moments (k)")


def render_transcript(tr: Transcript) -> str:
    head = f"transcript of {tr.stream} {span_text(tr.start, tr.end)}"
    if tr.epoch is not None:
        head += f" (stream time 0 = {when(tr.epoch)})"
    if tr.end > tr.covered_until:
        head += f" (committed up to {at_text(tr.covered_until)})"
    if not tr.lines:
        return f"{head}: nothing was said in this range"
    lines = [f"{head}, {len(tr.lines) + tr.more} line{'s' if len(tr.lines) + tr.more != 1 else ''}:"]
    lines += [f"[{span_text(line.t0, line.t1)}] {clip(line.text, LINE_CHARS)}" for line in tr.lines]
    if tr.more:
        lines.append(f"… {tr.more} more lines left out; ask for a shorter range")
    return bounded(lines, "ask for a shorter range")


def render_description(d: Description) -> str:
    wall = f", {when(d.wall)}" if d.wall is not None else ""
    lines = [f"{d.stream} at {at_text(d.t)}{wall} (checkpoint {d.checkpoint_seq}):"]
    if d.seen:
        frames = [
            f"frame {hms(s.t)} ({s.t:.1f} s): "
            + (", ".join(f"{short_label(lb)} ({p:.2f})" for lb, p in s.labels[:3]) or "-")
            for s in d.seen
        ]
        lines.append("seen: " + "; ".join(frames))
    else:
        lines.append("seen: no frame labels within 3 s")
    if d.said:
        lines.append(
            "said: " + " ".join(f"[{span_text(x.t0, x.t1)}] {clip(x.text, LINE_CHARS)}" for x in d.said)
        )
    else:
        lines.append("said: nothing within 10 s")
    if d.shown:  # only with OCR on: without it, "nothing shown" would be a claim nobody checked
        lines.append("shown: " + " ".join(f"[{hms(x.t)}] '{clip(x.text, LINE_CHARS)}'" for x in d.shown))
    if d.memory:
        covers = [
            f"{c.slots} {c.modality} slot{'s' if c.slots != 1 else ''} spanning {span_text(c.t0, c.t1)}"
            for c in d.memory
        ]
        lines.append("memory: " + "; ".join(covers))
    else:
        lines.append("memory: no slot contains this time (reduced away or never written)")
    return bounded(lines, "ask about a narrower moment")


def render_streams(streams: list[StreamSummary]) -> str:
    if not streams:
        return "no streams yet: nothing has been ingested"
    lines = [f"{len(streams)} stream{'s' if len(streams) != 1 else ''}:"]
    for s in streams:
        parts = [f"- {s.name}: {s.kind or 'source'} {s.source or '-'}"]
        if s.epoch is not None:
            parts.append(f"live since {when(s.epoch)} (stream time 0; wall-clock times work)")
        if s.checkpoint_seq is None:
            parts.append("no committed checkpoint yet (not searchable)")
        else:
            if s.t_start is not None and s.t_end is not None:
                parts.append(f"memory covers {span_text(s.t_start, s.t_end)}")
            if s.covered_until is not None:
                parts.append(f"committed up to {at_text(s.covered_until)}")
            parts.append(f"checkpoint {s.checkpoint_seq} at {when(s.checkpoint_at)}")
        if s.state:
            parts.append(f"state {s.state} (reported {when(s.status_at)})")
        if s.last_error:
            parts.append(f"last error: {clip(s.last_error, 160)}")
        lines.append("; ".join(parts))
    return bounded(lines, "name a stream to narrow the question")


def render_events(ev: Events, scope: str) -> str:
    if not ev.events:
        known = f"; kinds recorded: {', '.join(ev.kinds)}" if ev.kinds else ""
        return f"no events {scope}{known}"
    n = len(ev.events)
    lines = [f"{n}{'+' if ev.more else ''} event{'s' if n != 1 or ev.more else ''} {scope}, newest first:"]
    for e in ev.events:
        at = f" at {at_text(e.t)}" if e.t is not None else ""
        lines.append(
            f"- {when(e.created_at)} {e.stream or '(no stream)'} {e.kind}{at}: {clip(e.message, LINE_CHARS)}"
        )
    if ev.more:
        lines.append("… more events left out; narrow by stream, kind or since, or raise limit")
    return bounded(lines, "narrow by stream, kind or since")
