"""Built-in plugin `meeting_monitor` (DESIGN §7): live transcript, keyword alerts, minutes and exports.

Enable it with ``[plugins] enabled = ["meeting_monitor"]``; its settings table is `MeetingSettings`::

    [plugins.settings.meeting_monitor]
    keywords = ["budget", "action item"]   # alert when said: case-insensitive, whole words
    cooldown_s = 30                        # per stream and keyword, in stream seconds
    minutes_at_end = true                  # write minutes when a stream ends (done or stopped)
    llm = "smollm2"                        # who writes them (as agent.llm); "extractive": rules only
    live_transcript_file = true            # append each segment to <data>/transcripts/<stream>.txt

What it does:

- **Live transcript.** Each recognised segment is logged at info as ``STREAM [HH:MM:SS] text`` and, with
  `live_transcript_file`, appended to ``<data>/transcripts/<stream>.txt``.
- **Keyword alerts.** A segment saying a keyword raises an event ``meeting.keyword`` (`t`: the stream time
  of the word, payload ``{"keyword", "text"}``), at most one per stream and keyword every `cooldown_s`.
- **Minutes** (`Minutes`: summary, decisions, action items), written over the stream's whole transcript by
  the chat model `llm` (`write_minutes`), saved to ``<data>/minutes/<stream>.md`` (and ``.json``) and
  announced by an event ``meeting.minutes``: when a stream ends (hook `on_stream_end`; `finish_stream` does
  the same for a caller of its own), and on demand through the agent's tool ``meeting_minutes``. Saved
  minutes that cover the whole transcript are reused rather than written again.
- **Exports**: ``vsalmonn export STREAM --format vtt|srt|md`` (`vsalmonn.tools.exports`); the Markdown export
  carries the saved minutes.

About the minutes: the model is asked for a fixed format (``SUMMARY:`` / ``DECISIONS:`` / ``ACTIONS:``
with ``-`` items), one call per chunk of about `chunk_chars` characters of transcript, and the replies are
parsed leniently and merged. The embedded default, SmolLM2-135M, writes poor prose and may invent or miss
items: treat its minutes as a draft. When a reply does not parse, or no model can be loaded, the minutes
are *extractive* instead (``method = "extractive"``): the summary quotes the first and last lines, and
decisions and action items are the transcript lines that contain words such as "decided", "agreed" or
"will", each with its time. They never claim more than the transcript says, but they are only as good as
those word lists.

Where the transcript is read from and the minutes' events go: the store given to the plugin
(`MeetingMonitor(store=...)`), else the program's store from the plugin context (`configure`'s
``context.store``: the store the daemon writes to, so the catalog ``[store] catalog_url`` of the settings
names, PostgreSQL included), else that of the agent's view once the agent has asked for tools. Without any
(a bare plugin manager with no store) there are no minutes, with the reason logged; the plugin never opens
a catalog of its own.

The module itself is a plugin too (its hooks are those of a default instance, `MONITOR`), so that
``vsalmonn.plugins.builtin.meeting_monitor`` can be named as a plugin; naming the class
(``vsalmonn.plugins.builtin.meeting_monitor:MeetingMonitor``) gives each plugin manager its own instance.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vsalmonn.memory_store.retention import plugin_paths
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.plugins import hookimpl
from vsalmonn.plugins.context import PluginContext
from vsalmonn.tools.exports import Minutes, load_minutes, save_minutes, transcript_rows
from vsalmonn.tools.schemas import StreamName, validation_message
from vsalmonn.tools.timefmt import hms

log = logging.getLogger(__name__)

NAME = "meeting_monitor"
KEYWORD_EVENT = "meeting.keyword"
MINUTES_EVENT = "meeting.minutes"
TOOL_NAME = "meeting_minutes"
EXTRACTIVE_MAX_ITEMS = 20  # per list of extractive minutes; the rest is counted


class MeetingSettings(BaseModel):
    """The ``[plugins.settings.meeting_monitor]`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keywords: list[str] = Field(
        default_factory=list, description="words or phrases that raise meeting.keyword (case-insensitive)"
    )
    cooldown_s: float = Field(30.0, ge=0, description="stream seconds between two alerts of one keyword")
    minutes_at_end: bool = Field(True, description="write minutes when a stream ends (done or stopped)")
    live_transcript_file: bool = Field(True, description="append segments to <data>/transcripts/<stream>.txt")
    llm: str = Field(
        "smollm2", description="the chat model of the minutes, as agent.llm names one; 'extractive': none"
    )
    max_minutes_tokens: int = Field(200, ge=16, le=4096, description="longest reply per transcript chunk")
    chunk_chars: int = Field(3000, ge=200, description="transcript characters shown to the model per call")

    @field_validator("keywords")
    @classmethod
    def _clean(cls, words: list[str]) -> list[str]:
        out: list[str] = []
        for word in words:
            word = " ".join(word.split())
            if not word:
                raise ValueError("a keyword must not be empty")
            if word.lower() not in (w.lower() for w in out):
                out.append(word)
        return out


# ----- minutes ---------------------------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You write the minutes of a meeting from its transcript. Reply in exactly this format and nothing else:\n"
    "SUMMARY: one or two sentences on what the meeting was about\n"
    "DECISIONS:\n- a decision that was taken\n"
    "ACTIONS:\n- a task someone will do\n"
    "Write '- none' under DECISIONS or ACTIONS when the transcript has none. "
    "Use only what the transcript says."
)

# A heading: the word alone on its line, or followed by a colon and maybe the first item (Markdown allowed).
_HEADING = re.compile(
    r"^[\s#*_>]*(summary|decisions?|action[ _-]*items?|actions?|tasks?|next steps)[\s*_]*(?::[\s*_]*(.*)|$)",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s*")
_EMPTY_ITEMS = {"", "none", "n/a", "na", "nothing", "no decisions", "no actions", "...", "…", "-"}
_PLACEHOLDERS = (
    "one or two sentences",
    "a decision that was taken",
    "a task someone will do",
)
_DECISION_WORDS = re.compile(
    r"\b(decided|decide|decision|agreed|agree|approved|approve|resolved|concluded|settled on|go with)\b",
    re.IGNORECASE,
)
_ACTION_WORDS = re.compile(
    r"\b(will|action|actions|todo|to-do|follow[- ]?up|assigned|assign|need to|needs to|should|must|"
    r"deadline|by (?:monday|tuesday|wednesday|thursday|friday|tomorrow|next week))\b",
    re.IGNORECASE,
)


def _section(name: str) -> str:
    name = name.lower()
    if name.startswith("summ"):
        return "summary"
    return "decisions" if name.startswith("decision") else "actions"


def _item(text: str) -> str | None:
    text = " ".join(_BULLET.sub("", text).split()).strip("*_ ")
    if text.lower().rstrip(".") in _EMPTY_ITEMS or (text.startswith("<") and text.endswith(">")):
        return None
    if any(p in text.lower() for p in _PLACEHOLDERS):
        return None
    return text


def parse_minutes(reply: str) -> tuple[str, list[str], list[str]] | None:
    """(summary, decisions, action items) of a model's reply in the SUMMARY/DECISIONS/ACTIONS format, read
    leniently (any case, Markdown decoration, bullets of any kind, items on the heading's line); None when
    there is no non-empty summary."""
    found: dict[str, list[str]] = {"summary": [], "decisions": [], "actions": []}
    current: str | None = None
    seen_summary = False
    for line in reply.splitlines():
        heading = _HEADING.match(line)
        if heading:
            current = _section(heading.group(1))
            seen_summary |= current == "summary"
            line = heading.group(2) or ""
        if current is None:
            continue
        item = _item(line)
        if item:
            found[current].append(item)
    summary = " ".join(found["summary"])
    if not seen_summary or not summary:
        return None
    return summary, _unique(found["decisions"]), _unique(found["actions"])


def _unique(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item.lower() not in (o.lower() for o in out):
            out.append(item)
    return out


def _lines(source: Any) -> list[tuple[float, float, str]]:
    """(t0, t1, text) of the non-empty rows or segments of `source`, in time order."""
    rows = sorted(source, key=lambda r: r.t0)
    return [(r.t0, r.t1, " ".join((r.text or "").split())) for r in rows if (r.text or "").strip()]


def _covered(lines: Sequence[tuple[float, float, str]]) -> float | None:
    """How far a transcript goes: the latest end of its lines (None when empty)."""
    return max((t1 for _, t1, _ in lines), default=None)


def _chunks(lines: Sequence[tuple[float, float, str]], chunk_chars: int) -> list[str]:
    """The transcript as ``[HH:MM:SS] text`` lines, cut into chunks of at most about `chunk_chars`."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for t0, _, text in lines:
        line = f"[{hms(t0)}] {text}"
        if current and size + len(line) + 1 > chunk_chars:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(line[: max(chunk_chars, 1)])
        size += len(line) + 1
    if current:
        chunks.append("\n".join(current))
    return chunks


def _capped(items: list[str]) -> list[str]:
    if len(items) <= EXTRACTIVE_MAX_ITEMS:
        return items
    more = len(items) - EXTRACTIVE_MAX_ITEMS
    return [*items[:EXTRACTIVE_MAX_ITEMS], f"… and {more} more in the transcript"]


def extractive_minutes(lines: Sequence[tuple[float, float, str]], stream: str) -> Minutes:
    """Minutes picked from the transcript by rule: its first and last lines, and the lines with decision or
    action words, each with its time."""
    if not lines:
        return Minutes(stream=stream, summary="Nothing was said.", method="extractive")
    first, last = lines[0], lines[-1]
    summary = f"{len(lines)} transcript line(s) from {hms(first[0])} to {hms(last[1])}."
    summary += f' It opens with "{first[2]}"'
    summary += f' and closes with "{last[2]}".' if len(lines) > 1 else "."
    decisions = [f"[{hms(t0)}] {text}" for t0, _, text in lines if _DECISION_WORDS.search(text)]
    actions = [
        f"[{hms(t0)}] {text}"
        for t0, _, text in lines
        if _ACTION_WORDS.search(text) and not _DECISION_WORDS.search(text)
    ]
    return Minutes(
        stream=stream, summary=summary, decisions=_capped(decisions), action_items=_capped(actions),
        method="extractive", covered_until=_covered(lines),
    )  # fmt: skip


def _reply_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        return "\n".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content)
    return str(content)


def write_minutes(source: Any, stream: str, model: Any = None, *, chunk_chars: int = 3000) -> Minutes:
    """The minutes of `stream`'s transcript written by the chat `model` (anything with `.invoke(messages)`,
    such as a langchain-core chat model), or extractive ones (see the module docstring) when `model` is None,
    fails, or gives a reply that does not parse.

    `source`: a `MemoryStore` (the stream's rows are read from its catalog; ValueError for an unknown stream)
    or the rows themselves (anything with `t0`, `t1`, `text`: `TranscriptSegment` rows, `Segment`s). A long
    transcript is shown to the model in chunks of about `chunk_chars` characters, one call each; their
    summaries are joined and their items merged. Nothing is saved: see `MeetingMonitor.minutes`.
    """
    rows = transcript_rows(source, stream) if isinstance(source, MemoryStore) else list(source)
    lines = _lines(rows)
    if model is None or not lines:
        return extractive_minutes(lines, stream)
    from langchain_core.messages import HumanMessage, SystemMessage

    summaries: list[str] = []
    decisions: list[str] = []
    actions: list[str] = []
    chunks = _chunks(lines, chunk_chars)
    for n, chunk in enumerate(chunks, 1):
        part = f" (part {n} of {len(chunks)})" if len(chunks) > 1 else ""
        messages = [SystemMessage(SYSTEM_PROMPT), HumanMessage(f"Transcript{part}:\n{chunk}\n\nThe minutes:")]
        try:
            reply = _reply_text(model.invoke(messages).content)
        except Exception as exc:
            log.warning("minutes of %s: the model failed (%s); extractive minutes instead", stream, exc)
            return extractive_minutes(lines, stream)
        parsed = parse_minutes(reply)
        if parsed is None:
            log.warning(
                "minutes of %s: the model's reply does not parse (%r); extractive minutes instead",
                stream, reply[:200],
            )  # fmt: skip
            return extractive_minutes(lines, stream)
        summaries.append(parsed[0])
        decisions += parsed[1]
        actions += parsed[2]
    return Minutes(
        stream=stream, summary=" ".join(summaries), decisions=_unique(decisions),
        action_items=_unique(actions), method="model", covered_until=_covered(lines),
    )  # fmt: skip


# ----- the plugin ------------------------------------------------------------------------------------------


class MinutesArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: StreamName = Field(description="Name of a stream, exactly as list_streams shows it.")
    refresh: bool = Field(False, description="Write the minutes again even if saved ones cover everything.")


TOOL_DESCRIPTION = (
    "The minutes of a meeting recorded in a stream: a short summary, the decisions taken and the action "
    "items, written from the stream's whole transcript (items carry their times as HH:MM:SS when they are "
    "quoted from it). Saved minutes are reused while the transcript has not grown."
)


class MeetingMonitor:
    """The meeting monitor plugin; see the module docstring. `model`: the chat model of the minutes (default:
    the one the `llm` setting names, loaded on first use); `store`: where transcripts are read."""

    def __init__(self, *, model: Any = None, store: MemoryStore | None = None) -> None:
        self.settings = MeetingSettings()
        self.data_dir: Path | None = None
        self._emit: Callable[..., Any] | None = None
        self._model = model
        self._model_failed = False
        self._store = store
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        self._last_alert: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()  # alerts, files, the store
        self._minutes_lock = threading.Lock()  # one minutes at a time: the model is not shared across threads

    # ----- hooks ------------------------------------------------------------------------------------------

    @hookimpl
    def plugin_settings_model(self) -> type[BaseModel]:
        return MeetingSettings

    @hookimpl
    def configure(
        self,
        config: Any,
        emit: Callable[..., Any],
        data_dir: Path | None,
        context: PluginContext | None = None,
    ) -> None:
        settings = config if isinstance(config, MeetingSettings) else MeetingSettings.model_validate(config)
        with self._lock:
            if self._store is None and context is not None and isinstance(context.store, MemoryStore):
                self._store = context.store
            self.settings = settings
            self._emit = emit
            self.data_dir = Path(data_dir) if data_dir is not None else None
            self._patterns = [
                (word, re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE))
                for word in settings.keywords
            ]
            self._last_alert.clear()
            self._model_failed = False

    @hookimpl
    def on_transcript(self, stream: str, segment: Any) -> None:
        text = " ".join((segment.text or "").split())
        if not text:
            return
        log.info("%s [%s] %s", stream, hms(segment.t0), text)
        _, path = plugin_paths(self.data_dir, stream) if self.data_dir is not None else (None, None)
        if self.settings.live_transcript_file and path is not None:
            with self._lock:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8") as f:
                    f.write(f"[{hms(segment.t0)}] {text}\n")
        for word, pattern in self._patterns:
            if pattern.search(text):
                self._alert(stream, word, _word_time(segment, word), text)

    @hookimpl
    def on_stream_end(self, stream: str, state: str) -> None:
        if self.settings.minutes_at_end and state in ("done", "stopped"):
            self.finish_stream(stream)

    @hookimpl
    def register_tools(self, register: Callable[[Any], None], view: Any) -> None:
        store = getattr(view, "store", None)
        with self._lock:
            if self._store is None and isinstance(store, MemoryStore):
                self._store = store
        register(self.minutes_tool())

    # ----- alerts -----------------------------------------------------------------------------------------

    def _alert(self, stream: str, word: str, t: float, text: str) -> None:
        key = (stream, word.lower())
        with self._lock:
            last = self._last_alert.get(key)
            if last is not None and 0 <= t - last < self.settings.cooldown_s:
                return
            self._last_alert[key] = t
            emit = self._emit
        message = f"{word!r} said in {stream} at {hms(t)}: {text}"
        log.info("meeting_monitor: %s", message)
        if emit is not None:
            emit(KEYWORD_EVENT, message, stream=stream, t=t, keyword=word, text=text)

    # ----- minutes ----------------------------------------------------------------------------------------

    def _transcript_store(self) -> MemoryStore:
        with self._lock:
            if self._store is None:
                raise ValueError("meeting_monitor has no store to read transcripts from (none was given)")
            return self._store

    def chat_model(self) -> Any:
        """The chat model of the minutes (loaded on first use), or None: setting ``llm = "extractive"``, or a
        model that cannot be loaded (logged once)."""
        if self._model is None and not self._model_failed and self.settings.llm != "extractive":
            from vsalmonn.agent.config import AgentConfig
            from vsalmonn.agent.models import chat_model

            config = AgentConfig(llm=self.settings.llm, max_new_tokens=self.settings.max_minutes_tokens)
            data_dir = self.data_dir or (self._store.data_dir if self._store is not None else Path.cwd())
            try:
                self._model = chat_model(config, data_dir)
            except Exception as exc:  # ModelError, or a back-end that cannot start
                self._model_failed = True
                log.warning("meeting_monitor: no chat model for minutes (%s); they will be extractive", exc)
        return self._model

    def minutes(self, stream: str, *, refresh: bool = False) -> Minutes:
        """Stream `stream`'s minutes: the saved ones if they cover its whole transcript (and not `refresh`),
        else written now, saved and announced (event ``meeting.minutes``); ValueError: unknown stream."""
        store = self._transcript_store()
        data_dir = self.data_dir or store.data_dir
        with self._minutes_lock:
            rows = transcript_rows(store, stream)
            saved = None if refresh else load_minutes(data_dir, stream)
            if saved is not None and saved.covered_until == _covered(_lines(rows)):
                return saved
            model = self.chat_model() if rows else None
            minutes = write_minutes(rows, stream, model, chunk_chars=self.settings.chunk_chars)
            path = save_minutes(data_dir, minutes)
        log.info("meeting_monitor: minutes of %s (%s) saved to %s", stream, minutes.method, path)
        if self._emit is not None:
            self._emit(
                MINUTES_EVENT, f"minutes of {stream} written ({minutes.method}): {minutes.summary[:200]}",
                stream=stream, t=minutes.covered_until, path=str(path), method=minutes.method,
                summary=minutes.summary, decisions=minutes.decisions, action_items=minutes.action_items,
            )  # fmt: skip
        return minutes

    def finish_stream(self, stream: str) -> Minutes | None:
        """End-of-stream work: the stream's minutes, when it has a transcript (None otherwise, or when they
        cannot be written: logged). Called by `on_stream_end`; callable by anyone who ends a stream."""
        try:
            store = self._transcript_store()
            if not transcript_rows(store, stream):
                log.info("meeting_monitor: %s ended without speech; no minutes", stream)
                return None
            return self.minutes(stream)
        except Exception as exc:
            log.warning("meeting_monitor: no minutes for %s: %s", stream, exc)
            return None

    def minutes_tool(self) -> Any:
        """The LangChain tool ``meeting_minutes(stream, refresh=False)``: the minutes as Markdown (content)
        and as a dict (artifact)."""
        from langchain_core.tools import StructuredTool, ToolException

        def meeting_minutes(stream: str, refresh: bool = False) -> tuple[str, dict[str, Any]]:
            try:
                minutes = self.minutes(stream, refresh=refresh)
            except ValueError as exc:
                raise ToolException(" ".join(str(exc).split())) from exc
            except Exception as exc:
                log.exception("tool %s failed", TOOL_NAME)
                raise ToolException(f"{TOOL_NAME} failed: {type(exc).__name__}: {exc}"[:300]) from exc
            return minutes.to_markdown(), minutes.model_dump()

        return StructuredTool.from_function(
            func=meeting_minutes, name=TOOL_NAME, description=TOOL_DESCRIPTION, args_schema=MinutesArgs,
            response_format="content_and_artifact", handle_tool_error=True,
            handle_validation_error=validation_message(TOOL_NAME),
        )  # fmt: skip


def _norm(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


def _word_time(segment: Any, keyword: str) -> float:
    """The stream time of `keyword`'s first word in `segment` (its start when the words carry no times)."""
    first = _norm(keyword.split()[0])
    for word in getattr(segment, "words", None) or ():
        if _norm(word.text) == first:
            return float(word.t0)
    return float(segment.t0)


# The module as a plugin: the hooks of one default instance (see the module docstring).
MONITOR = MeetingMonitor()
plugin_settings_model = MONITOR.plugin_settings_model
configure = MONITOR.configure
on_transcript = MONITOR.on_transcript
on_stream_end = MONITOR.on_stream_end
register_tools = MONITOR.register_tools
finish_stream = MONITOR.finish_stream
