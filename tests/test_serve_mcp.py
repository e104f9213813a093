"""The MCP faces of the memory, each with the client a user would point at it.

The MCP SDK's own client over stdio (``vsalmonn mcp`` as a subprocess, started once) and over streamable
HTTP (``/mcp`` of a live uvicorn server on 127.0.0.1), and langchain-mcp-adapters' MultiServerMCPClient
feeding a LangGraph agent. The store is the session's spoken clip (tests/talk_store.py): a 40 s clip with
spoken prompts at known times, ingested with the real encoders; nothing here may change it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from vsalmonn.plugins.config import PluginConfig
from vsalmonn.settings import DATA_ENV

from .talk_store import Ingested
from .test_cli import assert_one_line_error, in_process
from .test_serve import TOKEN, serving, settings_of
from .test_tools import TOOL_NAMES, store_snapshot

REPO = Path(__file__).resolve().parent.parent
# langchain-mcp-adapters 0.3 needs mcp<2; the Makefile installs it with mcp 1.x into this folder of the venv
ADAPTERS = Path(sys.prefix) / "mcp1-client"
DATA_DIR_ENV = "VSALMONN_DATA_DIR"


def run(check: Callable[[], Awaitable[None]]) -> None:
    anyio.run(check)


@pytest.fixture(scope="module")
def http_url(ingested: Ingested, encoders: Any) -> Iterator[str]:
    with serving(settings_of(ingested.data), encoders.text) as client:
        yield f"{client.base_url}/mcp"


async def assert_serves_the_memory(client: Client, ingested: Ingested) -> None:
    """What every transport must give: the tools with their schemas, search with structured content,
    errors as results, the transcripts as resources."""
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert list(tools)[:5] == TOOL_NAMES
    search = tools["search_video_memory"].input_schema
    assert search["type"] == "object" and search["required"] == ["query"], search
    assert search["properties"]["k"]["minimum"] == 1 and search["additionalProperties"] is False
    assert set(tools["get_transcript"].input_schema["required"]) == {"stream", "start", "end"}

    at = ingested.said_at["goodbye"]
    found = await client.call_tool("search_video_memory", {"query": "goodbye", "k": 3})
    assert not found.is_error, found.content
    moments = found.structured_content["moments"]
    assert found.structured_content["query"] == "goodbye" and 1 <= len(moments) <= 3
    best = moments[0]
    assert best["stream"] == "talk" and best["t0"] - 2 <= at <= best["t1"] + 2, (at, moments)
    assert "goodbye" in found.content[0].text.lower()

    for bad, fragment in (
        ({"query": "goodbye", "k": 0}, "k"),
        ({"query": "goodbye", "stream": "nope"}, "nope"),
        ({"query": "goodbye", "start": 30, "end": 10}, "start"),
    ):
        refused = await client.call_tool("search_video_memory", bad)
        assert refused.is_error and refused.structured_content is None, (bad, refused)
        (line,) = [c.text for c in refused.content]
        assert "\n" not in line and fragment in line, line
    unknown = await client.call_tool("no_such_tool", {})
    assert unknown.is_error and "search_video_memory" in unknown.content[0].text

    uri = "vsalmonn://streams/talk/transcript"
    assert [r.uri for r in (await client.list_resources()).resources] == [uri]
    templates = (await client.list_resource_templates()).resource_templates
    assert [t.uri_template for t in templates] == ["vsalmonn://streams/{name}/transcript"]
    (text,) = [c.text for c in (await client.read_resource(uri)).contents]
    assert "transcript of talk" in text and "goodbye" in text.lower(), text
    with pytest.raises(MCPError, match="nope"):
        await client.read_resource("vsalmonn://streams/nope/transcript")


def test_the_sdk_client_over_stdio_gets_tools_results_errors_and_transcripts(
    ingested: Ingested, caplog: pytest.LogCaptureFixture
) -> None:
    """``vsalmonn mcp`` started as a desktop client starts it, the data directory from the environment;
    its stdout carries the protocol and nothing else (the client logs any line that is not JSON-RPC)."""
    before = store_snapshot(ingested.data)
    env = {k: v for k, v in os.environ.items() if k not in (DATA_ENV, DATA_DIR_ENV)}
    env[DATA_DIR_ENV] = str(ingested.data)
    params = StdioServerParameters(command=sys.executable, args=["-m", "vsalmonn", "mcp"], env=env, cwd=REPO)

    async def check() -> None:
        async with Client(params, read_timeout_seconds=120) as client:
            assert client.server_info is not None and client.server_info.name == "vsalmonn"
            await assert_serves_the_memory(client, ingested)

    with caplog.at_level(logging.WARNING, logger="mcp"):
        run(check)
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("mcp.")]
    assert store_snapshot(ingested.data) == before


def test_the_sdk_client_over_streamable_http_at_slash_mcp(http_url: str, ingested: Ingested) -> None:
    async def check() -> None:
        async with Client(http_url, read_timeout_seconds=120) as client:
            await assert_serves_the_memory(client, ingested)

    run(check)


def test_mcp_over_http_needs_the_token_and_offers_the_plugins_tools(ingested: Ingested) -> None:
    """/mcp behind serve.token like /api/*; with the meeting monitor enabled its tool is offered too."""
    plugins = PluginConfig(enabled=["meeting_monitor"], settings={"meeting_monitor": {"llm": "extractive"}})
    settings = settings_of(ingested.data, token=TOKEN).model_copy(update={"plugins": plugins})
    with serving(settings) as rest:
        url = f"{rest.base_url}/mcp"
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            refused = rest.post("/mcp", json=ping, headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.json() == {"detail": "missing or wrong token: send 'Authorization: Bearer TOKEN'"}

        async def check() -> None:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with (
                httpx2.AsyncClient(headers=auth, timeout=60) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                tools = {t.name: t for t in (await client.list_tools()).tools}
                assert list(tools) == [*TOOL_NAMES, "meeting_minutes"]
                assert tools["meeting_minutes"].input_schema["required"] == ["stream"]
                assert all(tools[n].annotations.read_only_hint for n in TOOL_NAMES)
                assert tools["meeting_minutes"].annotations is None  # it saves the minutes it writes
                refused = await client.call_tool("meeting_minutes", {"stream": "nope"})
                assert refused.is_error and "nope" in refused.content[0].text, refused

        run(check)
        assert rest.get("/health/live").status_code == 200


def test_a_server_started_before_any_ingest_says_why_in_one_line(tmp_path: Path) -> None:
    """`serve` may start before the daemon has made a catalog: MCP answers with the reason, not a crash."""
    with serving(settings_of(tmp_path / "empty")) as rest:

        async def check() -> None:
            async with Client(f"{rest.base_url}/mcp") as client:
                with pytest.raises(MCPError, match="no catalog"):
                    await client.list_tools()
                refused = await client.call_tool("search_video_memory", {"query": "goodbye"})
                assert refused.is_error and "no catalog" in refused.content[0].text

        run(check)
        assert rest.get("/health/live").status_code == 200
    assert not (tmp_path / "empty").exists()


def test_mcp_without_a_catalog_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = in_process(capsys, "--data", str(tmp_path / "nothing"), "mcp")
    assert_one_line_error(result, "no catalog")
    assert result.stdout == "" and not (tmp_path / "nothing").exists()


AGENT = textwrap.dedent(
    """
    import asyncio, json, sys, warnings

    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_mcp_adapters.client import MultiServerMCPClient

    warnings.simplefilter("ignore", DeprecationWarning)
    from langgraph.prebuilt import create_react_agent


    class ScriptedChatModel(GenericFakeChatModel):
        def bind_tools(self, tools, **kwargs):
            return self


    async def main(url):
        client = MultiServerMCPClient({"vsalmonn": {"transport": "streamable_http", "url": url}})
        tools = await client.get_tools()
        script = [
            AIMessage(content="", tool_calls=[
                {"name": "search_video_memory", "args": {"query": "goodbye", "k": 2}, "id": "search-1"}
            ]),
            AIMessage(content="Someone says goodbye."),
        ]
        agent = create_react_agent(ScriptedChatModel(messages=iter(script)), tools)
        result = await agent.ainvoke({"messages": [HumanMessage("When does someone say goodbye?")]})
        replies = [
            {"id": m.tool_call_id, "status": m.status, "content": m.content, "artifact": m.artifact}
            for m in result["messages"] if isinstance(m, ToolMessage)
        ]
        print(json.dumps({
            "tools": [t.name for t in tools], "replies": replies, "final": result["messages"][-1].content,
        }))


    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_langgraph_agent_uses_the_tools_through_langchain_mcp_adapters(
    http_url: str, ingested: Ingested
) -> None:
    """MultiServerMCPClient loads the tools over streamable HTTP; a scripted model calls search; the agent's
    tool message holds the live server's answer. The adapters need mcp<2, so they run in a process of their
    own with the Makefile's mcp 1.x folder first on the path, as a LangChain program in its own
    environment would."""
    if not (ADAPTERS / "langchain_mcp_adapters").is_dir():
        pytest.skip(f"langchain-mcp-adapters is not installed in {ADAPTERS} (see the Makefile)")
    env = os.environ | {"PYTHONPATH": str(ADAPTERS)}
    done = subprocess.run(
        [sys.executable, "-c", AGENT, http_url], env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["tools"][:5] == TOOL_NAMES and out["final"] == "Someone says goodbye."
    (reply,) = out["replies"]
    assert reply["id"] == "search-1" and reply["status"] == "success", reply
    moments = reply["artifact"]["structured_content"]["moments"]
    at = ingested.said_at["goodbye"]
    assert moments[0]["t0"] - 2 <= at <= moments[0]["t1"] + 2, (at, moments)
    text = reply["content"] if isinstance(reply["content"], str) else reply["content"][0]["text"]
    assert "goodbye" in text.lower()


def test_the_transcript_uri_round_trips_any_stream_name() -> None:
    from vsalmonn.serve.mcp import stream_of, transcript_uri

    for name in ("talk", "Kamera Eingang 1", "会议室", "a%b?c#d"):
        uri = transcript_uri(name)
        assert uri.startswith("vsalmonn://streams/") and " " not in uri and stream_of(uri) == name
    assert stream_of("vsalmonn://streams//transcript") is None
    assert stream_of("vsalmonn://other/talk/transcript") is None
