# ruff: noqa: F811 (the module fixture client of test_serve, imported, is named as an argument)
"""``POST /api/ask`` on a live uvicorn server over the ingested spoken clip: the embedded SmolLM2 answering
(the JSON of `ask --json`, and its SSE stream), a scripted chat model for the stream's contract and its
failures, and the refusals, each one line of JSON with its status."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from vsalmonn.agent.loop import Answer
from vsalmonn.perception.ingest import Encoders
from vsalmonn.tools import hms

from .talk_store import Ingested
from .test_cli import in_process
from .test_serve import client, one_line_detail, serving, settings_of  # noqa: F401 (module fixture)

QUESTION = "When does someone say goodbye?"
SSE = {"Accept": "text/event-stream"}


class Scripted(BaseChatModel):
    """A chat model that writes `pieces` one by one, failing before piece `fail_at` when it is set."""

    pieces: list[str] = Field(default_factory=list)
    fail_at: int | None = None
    pause_s: float = 0.0  # between pieces
    seen: list[list[BaseMessage]] = Field(default_factory=list)
    writing: list[int] = Field(default_factory=lambda: [0, 0])  # now, most at once

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:  # fmt: skip
        text = "".join(chunk.text for chunk in self._stream(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:  # fmt: skip
        self.seen.append(list(messages))
        self.writing[0] += 1
        self.writing[1] = max(self.writing)
        try:
            for i, piece in enumerate(self.pieces):
                if i == self.fail_at:
                    raise RuntimeError("the model fell over\nmid-answer")
                time.sleep(self.pause_s)
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        finally:
            self.writing[0] -= 1


def read_sse(response: httpx.Response) -> list[tuple[str, Any]]:
    """Every (event name, parsed data) of a text/event-stream response, to its end."""
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    events, current = [], {}
    for line in response.iter_lines():
        if not line:
            if current:
                events.append((current.get("event", "message"), json.loads(current["data"])))
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = value
    return events


def ask_sse(c: httpx.Client, body: dict[str, Any]) -> list[tuple[str, Any]]:
    with c.stream("POST", "/api/ask", json=body, headers=SSE) as response:
        return read_sse(response)


@pytest.fixture(scope="module")
def model() -> Scripted:
    return Scripted()


@pytest.fixture(scope="module")
def scripted(ingested: Ingested, encoders: Encoders, model: Scripted) -> Iterator[httpx.Client]:
    """A server whose agent writes with the scripted model (brought through ``chat_model=``)."""
    with serving(settings_of(ingested.data), encoders.text, chat_model=model) as c:
        yield c


def test_the_embedded_model_answers_as_ask_json_and_streams_the_same_answer(
    client: httpx.Client, ingested: Ingested, capsys: pytest.CaptureFixture[str]
) -> None:
    served = client.post("/api/ask", json={"question": f"  {QUESTION}\n", "stream": "talk"})
    assert served.status_code == 200, served.text
    answer = Answer.model_validate(served.json())
    assert set(served.json()) == {"answer", "citations", "steps"} and answer.answer
    at = ingested.said_at["goodbye"]
    assert any(c.stream == "talk" and c.t0 - 2 <= at <= c.t1 + 2 for c in answer.citations), answer
    assert answer.steps[0]["tool"] == "search_video_memory" and answer.steps[0]["args"]["query"] == QUESTION

    events = ask_sse(client, {"question": QUESTION, "stream": "talk"})
    names = [name for name, _ in events]
    assert names[-1] == "answer" and set(names[:-1]) == {"token"} and len(names) >= 2, names
    streamed = Answer.model_validate(events[-1][1])
    assert streamed.citations == answer.citations  # the citations travel inside the stream
    assert "".join(data["text"] for _, data in events[:-1]).strip() == streamed.answer
    # Greedy decoding (agent.temperature 0) over the same evidence: the same answer, streamed or not, and
    # the same as `vsalmonn ask --json` prints (run here, with the model the server converted).
    assert streamed == answer
    cli = in_process(capsys, "--data", str(ingested.data), "ask", QUESTION, "--stream", "talk", "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == served.json()


def test_tokens_stream_in_order_before_the_answer(
    scripted: httpx.Client, model: Scripted, ingested: Ingested
) -> None:
    top = scripted.get("/api/search", params={"q": QUESTION, "k": 1, "stream": "talk"}).json()["moments"][0]
    model.pieces, model.fail_at = ["At ", hms(top["t0"]), " someone", " says", ' "goodbye".'], None
    events = ask_sse(scripted, {"question": QUESTION})
    # The agent passes text on a checked sentence at a time (agent.grounding): the tokens are the sentence.
    assert [name for name, _ in events[:-1]] == ["token"] * (len(events) - 1) and len(events) > 1
    name, data = events[-1]
    answer = Answer.model_validate(data)
    assert name == "answer" and answer.answer == "".join(model.pieces)  # the agent appended nothing
    assert "".join(piece["text"] for _, piece in events[:-1]) == answer.answer
    first = answer.citations[0]
    assert (first.stream, first.t0, first.t1) == ("talk", top["t0"], top["t1"])
    assert "Evidence:" in model.seen[-1][-1].content  # retrieve-then-answer, as the settings say

    # An answer that names no time gets the best moment appended: the answer event has it, as a last token.
    model.pieces = ["Someone", " says", " goodbye."]
    events = ask_sse(scripted, {"question": QUESTION})
    final = Answer.model_validate(events[-1][1])
    assert final.answer.startswith("Someone says goodbye. (see talk at") and final.citations
    assert "".join(data["text"] for _, data in events[:-1]) == final.answer


def test_a_failure_mid_stream_is_an_error_event_and_the_next_question_is_answered(
    scripted: httpx.Client, model: Scripted
) -> None:
    # Text streams a checked sentence at a time (agent.grounding): the first one is out when the model fails.
    model.pieces, model.fail_at = ["Someone says", " goodbye.", " Then", " someone"], 3
    events = ask_sse(scripted, {"question": QUESTION})
    assert events[:1] == [("token", {"text": "Someone says goodbye."})], events
    assert events[1][0] == "error" and len(events) == 2
    detail = events[1][1]["detail"]
    assert "the model fell over mid-answer" in detail and "\n" not in detail
    # Failing before any text: a JSON refusal with its status, streamed or not.
    model.fail_at = 0
    one_line_detail(scripted.post("/api/ask", json={"question": QUESTION}, headers=SSE), 500, "fell over")
    one_line_detail(scripted.post("/api/ask", json={"question": QUESTION}), 500, "fell over")
    model.fail_at = None  # the lock was released: the agent answers again
    answered = scripted.post("/api/ask", json={"question": QUESTION})
    assert answered.status_code == 200 and answered.json()["answer"].startswith("Someone says goodbye.")


def test_questions_asked_at_once_are_answered_one_at_a_time(scripted: httpx.Client, model: Scripted) -> None:
    from concurrent.futures import ThreadPoolExecutor

    model.pieces, model.fail_at, model.pause_s, model.writing[:] = (
        ["Some", "one", " says", " goodbye."],
        None,
        0.05,
        [0, 0],
    )

    def ask(i: int) -> tuple[int, str]:
        if i % 2:
            events = ask_sse(scripted, {"question": QUESTION})
            return 200, events[-1][1]["answer"]
        answered = scripted.post("/api/ask", json={"question": QUESTION})
        return answered.status_code, answered.json()["answer"]

    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, range(4)))
    finally:
        model.pause_s = 0.0
    assert all(code == 200 and text.startswith("Someone says goodbye.") for code, text in answers), answers
    assert model.writing == [0, 1]  # the model never wrote two answers at once


@pytest.mark.parametrize("headers", [{}, SSE], ids=["json", "sse"])
@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"question": QUESTION, "stream": "nope"}, 404, "no stream named 'nope'"),
        ({"question": QUESTION, "stream": "../x"}, 422, "stream"),
        ({"question": "  \n\t "}, 422, "question: Value error, the question is empty"),
        ({"question": "w" * 2001}, 422, "the limit is 2,000"),
        ({"question": "w " * 1000 + "w"}, 422, "2,001 characters"),
        ({}, 422, "question: Field required"),
        ({"question": 7}, 422, "question"),
        ({"question": QUESTION, "k": 3}, 422, "k: Extra inputs"),
        ("not json", 422, "JSON"),
        ({"question": QUESTION, "start": "soon"}, 422, "start: Value error, 'soon' is not a time"),
    ],
)
def test_bad_questions_are_one_line_json_errors(
    scripted: httpx.Client, model: Scripted, body: Any, status: int, fragment: str, headers: dict[str, str]
) -> None:
    asked = len(model.seen)
    if isinstance(body, str):
        response = scripted.post(
            "/api/ask", content=body, headers={**headers, "Content-Type": "application/json"}
        )
    else:
        response = scripted.post("/api/ask", json=body, headers=headers)
    one_line_detail(response, status, fragment)
    assert len(model.seen) == asked  # refused before the model was asked


def test_a_question_keeps_to_its_time_window(
    scripted: httpx.Client, model: Scripted, ingested: Ingested
) -> None:
    model.pieces, model.fail_at = ["Someone", " says", " something."], None
    answer = Answer.model_validate(
        scripted.post("/api/ask", json={"question": QUESTION, "start": "0:25", "end": 40}).json()
    )
    (search,) = [step for step in answer.steps if step.get("tool") == "search_video_memory"]
    assert (search["args"]["start"], search["args"]["end"]) == (25.0, 40.0)
    assert answer.citations and all(c.t1 >= 25 and c.t0 <= 40 for c in answer.citations)
    # A wall-clock window over a file's stream: the search refuses it, so the answer is refused.
    refused = scripted.post("/api/ask", json={"question": QUESTION, "start": "2026-12-03T14:00:00Z"})
    one_line_detail(refused, 422, "no stream has a wall-clock time")


def test_a_question_of_2000_characters_once_collapsed_is_answered(
    scripted: httpx.Client, model: Scripted
) -> None:
    model.pieces, model.fail_at = ["Nothing", " fits."], None
    question = "  ".join(["w"] * 1000)  # 2,998 characters as sent, 1,999 once collapsed
    answered = scripted.post("/api/ask", json={"question": question})
    assert answered.status_code == 200, answered.text
    assert answered.json()["steps"][0]["status"] == "success"  # the search tool takes it: one limit


class FailingEncoder:
    """A text encoder that cannot embed: the agent's search then fails as a tool error."""

    dim = 384

    def encode(self, texts: Sequence[str]) -> Any:
        raise OSError("the encoder's weights are gone")


def test_an_answer_that_is_only_a_tool_error_is_refused(
    ingested: Ingested, tmp_path: Path, model: Scripted
) -> None:
    with serving(settings_of(ingested.data), FailingEncoder(), chat_model=model) as c:
        for headers in ({}, SSE):
            detail = one_line_detail(
                c.post("/api/ask", json={"question": QUESTION}, headers=headers), 500, "search_video_memory"
            )
            assert "the encoder's weights are gone" in detail
    with serving(settings_of(tmp_path / "nothing"), FailingEncoder(), chat_model=model) as c:
        for headers in ({}, SSE):
            refused = c.post("/api/ask", json={"question": QUESTION}, headers=headers)
            one_line_detail(refused, 503, "no catalog")
    assert not (tmp_path / "nothing").exists()


def test_the_route_is_in_the_openapi_document(scripted: httpx.Client) -> None:
    document = scripted.get("/openapi.json").json()
    ask = document["paths"]["/api/ask"]["post"]
    assert "text/event-stream" in ask["responses"]["200"]["content"]
    schema = document["components"]["schemas"]["AskRequest"]
    assert set(schema["properties"]) == {"question", "stream", "start", "end"}
    assert schema["required"] == ["question"]
