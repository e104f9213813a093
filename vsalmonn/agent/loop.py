"""The agent: a question in, an answer with cited times out (DESIGN §6).

Two ways to answer, chosen by `AgentConfig.mode`:

- **tools**: a tool-calling loop over any langchain-core chat model that supports `bind_tools`. The model
  calls the memory's tools until it answers or `step_limit` turns have passed (then it is asked to answer
  from what it has, without tools).
- **retrieve** (retrieve-then-answer): the reader runs first (`search_video_memory` with the question), and
  the model only writes the answer from that evidence. This is how a small local model (the embedded
  135M default) is used: it can write a sentence from evidence but does not call tools reliably.

Either way the answer cites times. Citations are the moments the tools returned whose times the answer
names; where the answer names none (small models often do not), the best moment is cited and its time is
appended to the answer, so a reader can always go and look.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field

from vsalmonn.tools.timefmt import hms

from .config import AgentConfig
from .local_model import content_text

if TYPE_CHECKING:
    from vsalmonn.plugins import PluginManager

log = logging.getLogger(__name__)

SEARCH_TOOL = "search_video_memory"
_HMS = re.compile(r"\b(\d{1,3}):([0-5]\d):([0-5]\d)\b")

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
        self, question: str, *, stream: str | None = None, on_token: Callable[[str], None] | None = None
    ) -> Answer:
        """Answer `question` (about one stream, or all); `on_token` receives the answer as it is written."""
        question = " ".join(question.split())
        if not question:
            raise ValueError("the question is empty")
        if self.use_tools:
            answer = self._ask_with_tools(question, stream, on_token)
        else:
            answer = self._retrieve_then_answer(question, stream, on_token)
        if self.plugins is not None:  # plugins post-process the answer (hook on_answer)
            changed = self.plugins.answer(question, answer.model_dump())
            try:
                answer = Answer.model_validate(changed)
            except ValueError as exc:
                log.warning("an on_answer plugin returned a malformed answer; kept the original: %s", exc)
        return answer

    # ----- retrieve-then-answer ---------------------------------------------------------------------------

    def _retrieve_then_answer(
        self, question: str, stream: str | None, on_token: Callable[[str], None] | None
    ) -> Answer:
        args: dict[str, Any] = {"query": question, "k": self.config.evidence_k}
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
        text = self._write(prompt, on_token)
        steps.append({"model": text})
        return _cited(text, moments, steps, on_token)

    # ----- the tool-calling loop --------------------------------------------------------------------------

    def _ask_with_tools(
        self, question: str, stream: str | None, on_token: Callable[[str], None] | None
    ) -> Answer:
        bound = self.model.bind_tools(list(self.tools.values()))
        ask = question if stream is None else f"{question}\n(The question is about stream {stream!r}.)"
        messages: list[BaseMessage] = [SystemMessage(self._system(SYSTEM_TOOLS)), HumanMessage(ask)]
        steps: list[dict[str, Any]] = []
        moments: list[dict[str, Any]] = []
        for turn in range(self.config.step_limit):
            reply = bound.invoke(messages)
            assert isinstance(reply, AIMessage)
            messages.append(reply)
            if not reply.tool_calls:
                text = content_text(reply.content)
                steps.append({"model": text})
                if on_token:
                    on_token(text)
                return _cited(text, moments, steps, on_token)
            for i, call in enumerate(reply.tool_calls):
                result = self._call_tool(call["name"], call["args"], call.get("id") or f"call-{turn}-{i}")
                messages.append(result)
                steps.append(_tool_step(call["name"], call["args"], result))
                moments += _moments(result.artifact)
        log.info("step limit of %d reached; asking for an answer without tools", self.config.step_limit)
        messages.append(HumanMessage("Answer now from what the tools returned, citing times."))
        text = self._write(messages, on_token, model=self.model)
        steps.append({"model": text, "note": "step limit reached"})
        return _cited(text, moments, steps, on_token)

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
        self,
        messages: list[BaseMessage],
        on_token: Callable[[str], None] | None,
        model: BaseChatModel | None = None,
    ) -> str:
        parts = []
        for chunk in (model or self.model).stream(messages):
            piece = content_text(chunk.content)
            parts.append(piece)
            if on_token and piece:
                on_token(piece)
        return "".join(parts).strip()


def _moments(artifact: Any) -> list[dict[str, Any]]:
    if isinstance(artifact, dict):
        found = artifact.get("moments") or []
        return [m for m in found if isinstance(m, dict) and {"stream", "t0", "t1"} <= m.keys()]
    return []


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


def _cited(
    text: str,
    moments: list[dict[str, Any]],
    steps: list[dict[str, Any]],
    on_token: Callable[[str], None] | None,
) -> Answer:
    """The answer with its citations: the moments whose times it names, else the best one, appended."""
    named = {int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in _HMS.findall(text)}
    cited = [m for m in moments if any(int(m["t0"]) - 1 <= t <= int(m["t1"]) + 1 for t in named)]
    if not cited and moments:
        best = moments[0]
        cited = [best]
        tail = f" (see {best['stream']} at {hms(best['t0'])}-{hms(best['t1'])})"
        text = (text + tail).strip()
        if on_token:
            on_token(tail)
    unique: dict[tuple[str, float, float], Citation] = {}
    for m in cited:
        c = Citation(stream=m["stream"], t0=float(m["t0"]), t1=float(m["t1"]))
        unique.setdefault((c.stream, c.t0, c.t1), c)
    return Answer(answer=text, citations=list(unique.values()), steps=steps)
