"""The agent: a question in, an answer with cited times out (DESIGN §6).

Two ways to answer, chosen by `AgentConfig.mode`:

- **tools**: a tool-calling loop over any langchain-core chat model that supports `bind_tools`. The model
  calls the memory's tools until it answers or `step_limit` turns have passed (then it is asked to answer
  from what it has, without tools).
- **retrieve** (retrieve-then-answer): the reader runs first (`search_video_memory` with the question), and
  the model only writes the answer from that evidence. This is how a small local model (the embedded
  135M default) is used: it can write a sentence from evidence but does not call tools reliably.

Either way the answer's text is checked sentence by sentence before anyone sees it (`grounding`): a time
outside every moment the tools returned, or a person the question and evidence never mention, drops its
sentence; the times kept are rewritten as HH:MM:SS. `on_token` receives only checked sentences, so what
streams is exactly the final text. Citations are the moments whose times the checked text names; where it
names none (small models often do not), the best moment is cited and its time appended by code, and where
nothing the model wrote survives, the code writes the answer from the best moment's own evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field

from vsalmonn.tools.timefmt import hms
from vsalmonn.tools.wallclock import TimeArg, question_window

from .config import AgentConfig
from .grounding import Grounding, SentenceGate, evidence_sentence
from .local_model import content_text

if TYPE_CHECKING:
    from vsalmonn.plugins import PluginManager

log = logging.getLogger(__name__)

SEARCH_TOOL = "search_video_memory"

SYSTEM_TOOLS = (
    "You answer questions about video streams (camera feeds, meetings, recordings) from their memory. "
    "Use the tools to find moments; every claim in your answer must name the time (HH:MM:SS) and the stream "
    "it comes from. If the tools find nothing relevant, say so."
)
SYSTEM_RETRIEVE = (
    "You answer a question about a video from the evidence lines given, each of which starts with a stream "
    "name and a time. Answer in one or two sentences and name the time (HH:MM:SS) of the evidence you use. "
    "If the evidence does not answer the question, say that it does not."
)


# One worked example: a small model follows a shown answer far better than a described one.
EXAMPLE: tuple[BaseMessage, ...] = (
    HumanMessage(
        "Evidence:\n[lobby 00:01:05-00:01:08] said: 'The meeting is over, thank you all.'\n\n"
        "Question: When does the meeting end?"
    ),
    AIMessage('At 00:01:05 in lobby, someone says: "The meeting is over, thank you all."'),
)


class Citation(BaseModel):
    stream: str
    t0: float
    t1: float


class Answer(BaseModel):
    """What `ask` returns; `ask --json` prints exactly this (DESIGN §9)."""

    answer: str
    citations: list[Citation] = Field(default_factory=list)
    steps: list[dict[str, Any]] = Field(default_factory=list)


class VideoAgent:
    """Answers questions over the memory's tools with one chat model (see the module docstring)."""

    def __init__(
        self,
        model: BaseChatModel,
        tools: Sequence[BaseTool],
        config: AgentConfig | None = None,
        *,
        use_tools: bool | None = None,
        system_prompt: str | None = None,
        plugins: PluginManager | None = None,
    ) -> None:
        self.model = model
        self.tools = {t.name: t for t in tools}
        self.config = config or AgentConfig()
        if use_tools is None:
            from .models import tool_calling

            use_tools = tool_calling(self.config)
        self.use_tools = use_tools
        self.system_prompt = system_prompt
        self.plugins = plugins
        if SEARCH_TOOL not in self.tools:
            raise ValueError(f"the agent needs the {SEARCH_TOOL} tool")

    def ask(
        self,
        question: str,
        *,
        stream: str | None = None,
        start: TimeArg | None = None,
        end: TimeArg | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer `question` (about one stream, or all; about the moments between `start` and `end` when
        given: stream seconds or wall-clock datetimes, `tools.wallclock`); `on_token` receives the answer
        as it is written. Without `start` and `end`, a window the question names in words ("at 14:00
        today", "in the last hour", "since 1h": `wallclock.question_window`) is the window."""
        question = " ".join(question.split())
        if not question:
            raise ValueError("the question is empty")
        if start is None and end is None and (named := question_window(question)) is not None:
            start, end = named
            log.info("ask: the question names the window %s to %s", start, end)
        window = {k: _time_value(v) for k, v in (("start", start), ("end", end)) if v is not None}
        if self.use_tools:
            answer = self._ask_with_tools(question, stream, window, on_token)
        else:
            answer = self._retrieve_then_answer(question, stream, window, on_token)
        if self.plugins is not None:  # plugins post-process the answer (hook on_answer)
            changed = self.plugins.answer(question, answer.model_dump())
            try:
                answer = Answer.model_validate(changed)
            except ValueError as exc:
                log.warning("an on_answer plugin returned a malformed answer; kept the original: %s", exc)
        return answer

    # ----- retrieve-then-answer ---------------------------------------------------------------------------

    def _retrieve_then_answer(
        self,
        question: str,
        stream: str | None,
        window: dict[str, float | str],
        on_token: Callable[[str], None] | None,
    ) -> Answer:
        args: dict[str, Any] = {"query": question, "k": self.config.evidence_k, **window}
        if stream:
            args["stream"] = stream
        result = self._call_tool(SEARCH_TOOL, args, "retrieve-0")
        steps: list[dict[str, Any]] = [_tool_step(SEARCH_TOOL, args, result)]
        moments = _moments(result.artifact)
        if result.status == "error":
            return Answer(answer=str(result.content), steps=steps)
        if not moments:
            text = "The memory holds nothing that matches this question yet."
            return Answer(answer=text, steps=steps)
        # Only the moments that score near the best are shown: a small model picks among what it is given
        # with little judgement, and the reader's ranking is the better judge of relevance.
        best = max(float(m.get("score", 0.0)) for m in moments)
        moments = [m for m in moments if float(m.get("score", 0.0)) >= self.config.evidence_ratio * best]
        evidence = "\n".join(_evidence_line(m) for m in moments)
        prompt: list[BaseMessage] = [
            SystemMessage(self._system(SYSTEM_RETRIEVE)),
            *EXAMPLE,
            HumanMessage(f"Evidence:\n{evidence}\n\nQuestion: {question}"),
        ]
        gate = SentenceGate(Grounding(moments, question), on_token)
        text = self._write(prompt, gate.feed)
        return _cited(gate, text, steps)

    # ----- the tool-calling loop --------------------------------------------------------------------------

    def _ask_with_tools(
        self,
        question: str,
        stream: str | None,
        window: dict[str, float | str],
        on_token: Callable[[str], None] | None,
    ) -> Answer:
        bound = self.model.bind_tools(list(self.tools.values()))
        ask = question if stream is None else f"{question}\n(The question is about stream {stream!r}.)"
        if window:
            bounds = " and ".join(f"{k} {v!r}" for k, v in window.items())
            ask += f"\n(Only moments within this window count: search with {bounds}.)"
        messages: list[BaseMessage] = [SystemMessage(self._system(SYSTEM_TOOLS)), HumanMessage(ask)]
        steps: list[dict[str, Any]] = []
        moments: list[dict[str, Any]] = []
        results: list[str] = []  # what the tools said: people they name may be spoken of
        for turn in range(self.config.step_limit):
            reply = bound.invoke(messages)
            assert isinstance(reply, AIMessage)
            messages.append(reply)
            if not reply.tool_calls:
                gate = SentenceGate(Grounding(moments, question, " ".join(results)), on_token)
                text = content_text(reply.content)
                gate.feed(text)
                return _cited(gate, text, steps)
            for i, call in enumerate(reply.tool_calls):
                result = self._call_tool(call["name"], call["args"], call.get("id") or f"call-{turn}-{i}")
                messages.append(result)
                steps.append(_tool_step(call["name"], call["args"], result))
                moments += _moments(result.artifact)
                results.append(content_text(result.content))
        log.info("step limit of %d reached; asking for an answer without tools", self.config.step_limit)
        messages.append(HumanMessage("Answer now from what the tools returned, citing times."))
        gate = SentenceGate(Grounding(moments, question, " ".join(results)), on_token)
        text = self._write(messages, gate.feed, model=self.model)
        return _cited(gate, text, steps, note="step limit reached")

    # ----- parts ------------------------------------------------------------------------------------------

    def _system(self, base: str) -> str:
        return base if not self.system_prompt else f"{base}\n\n{self.system_prompt}"

    def _call_tool(self, name: str, args: dict[str, Any], call_id: str) -> ToolMessage:
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self.tools))
            return ToolMessage(
                f"no tool named {name!r}; available: {known}", tool_call_id=call_id, name=name, status="error"
            )
        result = tool.invoke({"type": "tool_call", "name": name, "args": args, "id": call_id})
        assert isinstance(result, ToolMessage)
        return result

    def _write(
        self, messages: list[BaseMessage], feed: Callable[[str], None], model: BaseChatModel | None = None
    ) -> str:
        """The model's text as it wrote it; each piece goes to `feed` (a SentenceGate) as it comes."""
        parts = []
        for chunk in (model or self.model).stream(messages):
            piece = content_text(chunk.content)
            parts.append(piece)
            if piece:
                feed(piece)
        return "".join(parts).strip()


def _moments(artifact: Any) -> list[dict[str, Any]]:
    """The moments a tool result holds: a search's, or a transcript's lines (a model may cite those too)."""
    if not isinstance(artifact, dict):
        return []
    found = artifact.get("moments") or []
    moments = [m for m in found if isinstance(m, dict) and {"stream", "t0", "t1"} <= m.keys()]
    if isinstance(artifact.get("stream"), str) and isinstance(artifact.get("lines"), list):
        moments += [
            {"stream": artifact["stream"], "t0": line["t0"], "t1": line["t1"], "modality": "audio",
             "evidence": [f"said: {line.get('text', '')}"]}
            for line in artifact["lines"]
            if isinstance(line, dict) and {"t0", "t1"} <= line.keys()
        ]  # fmt: skip
    return moments


def _time_value(value: TimeArg) -> float | str:
    """A window bound as a tool argument: seconds, or the wall-clock instant in ISO 8601 (JSON-safe)."""
    return value.isoformat() if isinstance(value, datetime) else float(value)


def _evidence_line(moment: dict[str, Any]) -> str:
    """One moment as the model reads it: "[talk 00:00:17-00:00:18] said: Goodbye.; seen: ..."."""
    # Only the evidence of the moment's own modality: what was said for speech, what was seen for pictures.
    # A small model otherwise answers a question about speech with the labels of the frames around it.
    # The audio bank also holds on-screen text (perception.ocr): its evidence is "shown:".
    own = ("said:", "shown:") if moment.get("modality") == "audio" else ("seen:",)
    found = [str(e) for e in moment.get("evidence") or [] if str(e).startswith(own)]
    what = "; ".join(found) or f"{moment.get('modality', '')} match"
    return f"[{moment['stream']} {hms(moment['t0'])}-{hms(moment['t1'])}] {what}"


def _tool_step(name: str, args: dict[str, Any], result: ToolMessage) -> dict[str, Any]:
    return {
        "tool": name,
        "args": args,
        "status": result.status,
        "result": content_text(result.content)[:2000],
    }


def _cited(gate: SentenceGate, raw: str, steps: list[dict[str, Any]], note: str | None = None) -> Answer:
    """The checked answer with its citations: the moments its times name, else the best one, by code.

    `gate` has passed on the model's checked sentences; what this adds (a citation's time, or an answer
    written from the best moment where nothing the model wrote survived) goes through it too, so the
    streamed text and the answer's text stay one.
    """
    gate.finish()
    moments = gate.grounding.moments
    step: dict[str, Any] = {"model": raw}
    if gate.dropped:
        step["dropped"] = [{"sentence": s, "reason": why} for s, why in gate.dropped]
    if note:
        step["note"] = note
    steps.append(step)
    cited = gate.grounding.cited(gate.times)
    if not gate.kept:
        if moments:
            best = moments[0]
            cited = [best]
            said = evidence_sentence(best)
            end = "" if said.rstrip('"').endswith((".", "!", "?")) else "."
            gate.emit(
                f"The evidence found shows no more than this: at {hms(best['t0'])}-{hms(best['t1'])} in "
                f"{best['stream']}, {said}{end}"
            )
        else:
            gate.emit("The tools found nothing that answers this question.")
    elif not cited and moments:
        best = moments[0]
        cited = [best]
        gate.emit(f" (see {best['stream']} at {hms(best['t0'])}-{hms(best['t1'])})")
    unique: dict[tuple[str, float, float], Citation] = {}
    for m in cited:
        c = Citation(stream=m["stream"], t0=float(m["t0"]), t1=float(m["t1"]))
        unique.setdefault((c.stream, c.t0, c.t1), c)
    return Answer(answer=gate.text, citations=list(unique.values()), steps=steps)
