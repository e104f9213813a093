"""The memory over the Model Context Protocol, with the official SDK (`mcp` 2.x): tools and transcripts.

The server offers exactly the tools an agent of this process gets (`vsalmonn.app.agent_tools`: the toolkit's
five and every plugin's), with each tool's pydantic argument schema as its input schema, so there is one
schema whichever face a program uses. A call answers with the tool's text as text content and its artifact
(the result model's JSON) as structured content. Whatever goes wrong in a call (a bad argument, an unknown
stream or tool, the tool's own error status, an exception) is a result with ``isError`` and one line of
text: the calling model can act on it, and the server keeps serving. Each stream's transcript is a
resource, ``vsalmonn://streams/{name}/transcript``.

Two transports share one `build_server`: stdio for desktop clients (`serve_stdio`, the ``vsalmonn mcp``
command) and streamable HTTP at ``/mcp`` of `vsalmonn serve`'s app (`mount`). The low-level
`mcp.server.lowlevel.Server` is used, not `MCPServer`: that one derives schemas from Python signatures,
and ours already exist as the tools' pydantic models.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import anyio
import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import to_jsonable_python

from vsalmonn import __version__
from vsalmonn.errors import one_line
from vsalmonn.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from langchain_core.tools import BaseTool
    from mcp.server.context import ServerRequestContext
    from starlette.types import ASGIApp, Receive, Scope, Send

    from vsalmonn.plugins import PluginManager
    from vsalmonn.plugins.context import Shared
    from vsalmonn.tools.memory_view import MemoryView

log = logging.getLogger(__name__)

PATH = "/mcp"
URI_PREFIX = "vsalmonn://streams/"
URI_SUFFIX = "/transcript"
TRANSCRIPT_TEMPLATE = URI_PREFIX + "{name}" + URI_SUFFIX
INSTRUCTIONS = (
    "The committed memory of vsalmonn's video streams. Call list_streams first to learn the stream names "
    "and the time each one covers; search_video_memory finds moments (times in HH:MM:SS and seconds) to "
    "check with get_transcript and describe_moment. Cite moments by their times."
)


def transcript_uri(stream: str) -> str:
    """The resource URI of a stream's transcript (the name percent-encoded: names may hold spaces)."""
    return f"{URI_PREFIX}{quote(stream, safe='')}{URI_SUFFIX}"


def stream_of(uri: str) -> str | None:
    """The stream name a transcript URI names, or None for a URI that is not one."""
    if not (uri.startswith(URI_PREFIX) and uri.endswith(URI_SUFFIX)):
        return None
    name = uri[len(URI_PREFIX) : len(uri) - len(URI_SUFFIX)]
    return unquote(name) if name and "/" not in name else None


class MemoryTools:
    """The tools and the view a server answers from, made on first need (a server may start before anything
    is ingested) and closed with the server.

    `view` gives the read-only view (it may raise while the data directory has no catalog yet); the plugins
    are opened over its store with `text_encoder`, the holder the view embeds prompts with, so a process
    loads one text model.
    """

    def __init__(
        self, settings: Settings, view: Callable[[], MemoryView], text_encoder: Shared | None = None
    ) -> None:
        self._settings = settings
        self._view = view
        self._text_encoder = text_encoder
        self._tools: dict[str, BaseTool] | None = None
        self._listed: dict[str, types.Tool] | None = None
        self._plugins: PluginManager | None = None
        self._lock = threading.Lock()

    def view(self) -> MemoryView:
        return self._view()

    def tools(self) -> dict[str, BaseTool]:
        """The tools by name, in the agent's order: the toolkit's five, then the plugins'."""
        with self._lock:
            if self._tools is None:
                from vsalmonn.app import agent_tools, open_plugins
                from vsalmonn.tools.toolkit import build_tools

                view = self._view()
                plugins = open_plugins(self._settings, view.store, text_encoder=self._text_encoder)
                try:
                    tools = agent_tools(view, plugins)
                except BaseException:
                    plugins.close()
                    raise
                # the toolkit's tools only read; a plugin's may write its own files (minutes are saved)
                reading = {t.name for t in build_tools(view)}
                self._plugins, self._tools = plugins, {t.name: t for t in tools}
                self._listed = {t.name: describe(t, read_only=t.name in reading) for t in tools}
            return self._tools

    def listing(self) -> list[types.Tool]:
        """The tools as MCP lists them (made once: a schema does not change while the server runs)."""
        self.tools()
        assert self._listed is not None
        return list(self._listed.values())

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """Tool `name`'s input schema for the SDK's check of ``Mcp-Param-*`` headers; called on the event
        loop, so it never waits: None (the check is skipped) until the tools are loaded."""
        listed = self._listed
        tool = listed.get(name) if listed is not None else None
        return tool.input_schema if tool is not None else None

    def call(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Run tool `name` as a model's tool call would; every failure is an error result, never raised."""
        try:
            tools = self.tools()
        except Exception as exc:
            return error_result(one_line(exc))
        tool = tools.get(name)
        if tool is None:
            return error_result(f"unknown tool {name[:80]!r}; the tools are: {', '.join(tools)}")
        try:
            message = tool.invoke({"name": name, "args": arguments, "id": "mcp", "type": "tool_call"})
        except ValidationError as exc:  # a plugin's tool without its own handle_validation_error
            fields = ", ".join(sorted({".".join(map(str, e["loc"])) or "arguments" for e in exc.errors()}))
            return error_result(f"invalid arguments for {name}: {fields}; check them against its schema")
        except Exception as exc:  # the tools turn their own failures into messages; this is a bug's path
            log.exception("tool %s failed", name)
            return error_result(f"{name} failed: {one_line(exc, typed=True)}")
        text = _text_of(getattr(message, "content", message))
        if getattr(message, "status", "success") == "error":
            return error_result(text)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content=structured(getattr(message, "artifact", None)),
        )

    def close(self) -> None:
        with self._lock:
            if self._plugins is not None:
                self._plugins.close()
            self._plugins = self._tools = self._listed = None


def error_result(text: str) -> types.CallToolResult:
    """A tool's failure as MCP wants it: a result with ``isError`` (the model reads it), in one line."""
    line = " ".join(text.split()) or "the tool failed"
    return types.CallToolResult(content=[types.TextContent(type="text", text=line)], is_error=True)


def structured(artifact: Any) -> dict[str, Any] | None:
    """A tool's artifact as structured content: the JSON of its result model, always a JSON object (what
    protocol revisions before 2026 allow)."""
    if artifact is None:
        return None
    if isinstance(artifact, BaseModel):
        artifact = artifact.model_dump(mode="json")
    value = to_jsonable_python(artifact)
    return value if isinstance(value, dict) else {"result": value}


def _text_of(content: Any) -> str:
    """A ToolMessage's content as one string (LangChain allows a list of text blocks too)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content)
    return str(content)


def describe(tool: BaseTool, *, read_only: bool = False) -> types.Tool:
    """A LangChain tool as an MCP tool: its name, description and its pydantic argument schema; `read_only`
    hints to the client that calling it changes nothing."""
    schema = tool.args_schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        input_schema = schema.model_json_schema()
    elif isinstance(schema, dict):
        input_schema = dict(schema)
    else:
        input_schema = {"type": "object", "properties": {}}
    return types.Tool(
        name=tool.name, description=tool.description, input_schema=input_schema,
        annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False) if read_only else None,
    )  # fmt: skip


def build_server(memory: MemoryTools) -> Server[Any]:
    """The MCP server of `memory`: its tools and, as resources, each stream's transcript.

    The tools and the view are synchronous (SQLite, torch): every handler runs them in a worker thread, so
    one slow search holds up no other request.
    """

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=await _off_loop(memory.listing))

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        return await anyio.to_thread.run_sync(memory.call, params.name, arguments)

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        streams = await _off_loop(lambda: memory.view().streams())
        return types.ListResourcesResult(resources=[transcript_resource(s.name) for s in streams])

    async def list_templates(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        template = types.ResourceTemplate(
            uri_template=TRANSCRIPT_TEMPLATE, name="transcript", mime_type="text/plain",
            description="A stream's transcript, line by line with times (name: as list_streams shows it).",
        )  # fmt: skip
        return types.ListResourceTemplatesResult(resource_templates=[template])

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        text = await _off_loop(lambda: read_transcript(memory.view(), uri))
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type="text/plain", text=text)]
        )

    return Server(
        "vsalmonn", version=__version__, instructions=INSTRUCTIONS, get_tool_input_schema=memory.input_schema,
        on_list_tools=list_tools, on_call_tool=call_tool, on_list_resources=list_resources,
        on_list_resource_templates=list_templates, on_read_resource=read_resource,
    )  # fmt: skip


def transcript_resource(stream: str) -> types.Resource:
    return types.Resource(
        uri=transcript_uri(stream), name=f"{stream} transcript", mime_type="text/plain",
        description=f"What was said in stream {stream!r}, line by line with times, as far as committed.",
    )  # fmt: skip


def read_transcript(view: MemoryView, uri: str) -> str:
    """The text of a transcript resource: the whole committed transcript, as get_transcript renders it."""
    from vsalmonn.tools.render import render_transcript
    from vsalmonn.tools.results import ViewError

    name = stream_of(uri)
    if name is None:
        raise MCPError(types.INVALID_PARAMS, f"no such resource: {uri[:120]!r}", {"uri": uri})
    try:
        summary = next((s for s in view.streams() if s.name == name), None)
        if summary is None:
            view.stream(name)  # the view's own "no stream named ..." line, with its suggestion
        end = max(0.0, (summary.covered_until if summary else None) or 0.0)
        return render_transcript(view.transcript(name, 0.0, end))
    except ViewError as exc:
        raise MCPError(types.INVALID_PARAMS, one_line(exc), {"uri": uri}) from None


async def _off_loop(fn: Callable[[], Any]) -> Any:
    """`fn()` in a worker thread; a failure (no catalog yet, a catalog that cannot be read) becomes one
    line to the client instead of an anonymous internal error."""
    try:
        return await anyio.to_thread.run_sync(fn)
    except MCPError:
        raise
    except Exception as exc:
        log.warning("mcp: %s", one_line(exc, typed=True))
        raise MCPError(types.INTERNAL_ERROR, one_line(exc)) from None


# ---------------------------------------------------------------------------------------------- stdio


async def serve_stdio(server: Server[Any]) -> None:
    """Serve `server` over this process's stdin and stdout until the client closes stdin.

    While it serves, the SDK points file descriptor 1 at stderr, so a stray print of a library cannot break
    the protocol on stdout.
    """
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


# ------------------------------------------------------------------------------------ streamable HTTP


def mount(
    app: FastAPI, settings: Settings, view: Callable[[], MemoryView], text_encoder: Shared | None
) -> None:
    """Serve the MCP server at ``/mcp`` of `app` (streamable HTTP), behind ``serve.token`` when one is set.

    The SDK's session manager runs inside the app's lifespan: it starts before the first request and, at
    shutdown, ends the open sessions before the app's own clean-up closes the view.
    """
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
    from starlette.routing import Route

    memory = MemoryTools(settings, view, text_encoder)
    manager = StreamableHTTPSessionManager(app=build_server(memory), security_settings=_security(settings))
    endpoint = _TokenGuard(StreamableHTTPASGIApp(manager), settings.serve.token)
    app.router.routes.append(Route(PATH, endpoint=endpoint))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with inner(application) as state:
            try:
                async with manager.run():
                    yield state
            finally:
                await anyio.to_thread.run_sync(memory.close)

    app.router.lifespan_context = lifespan


def _security(settings: Settings) -> Any:
    """DNS-rebinding protection on loopback (a web page must not reach a local server through a name that
    resolves to 127.0.0.1); beyond loopback the token guards, and the Host names are the deployment's."""
    from mcp.server.transport_security import TransportSecuritySettings

    from vsalmonn.serve.config import is_loopback

    if not is_loopback(settings.serve.host):
        return None
    loopback = ["127.0.0.1", "localhost", "[::1]"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{h}:*" for h in loopback] + loopback,
        allowed_origins=[f"http://{h}:*" for h in loopback] + list(settings.serve.cors_origins),
    )


class _TokenGuard:
    """``Authorization: Bearer TOKEN`` in front of an ASGI app, as the REST routes ask it (constant-time
    comparison, a one-line JSON 401)."""

    def __init__(self, app: ASGIApp, token: SecretStr | None) -> None:
        self._app = app
        self._token = token.get_secret_value().encode() if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is not None and scope["type"] == "http" and not self._authorized(scope):
            from starlette.responses import JSONResponse

            refusal = JSONResponse(
                {"detail": "missing or wrong token: send 'Authorization: Bearer TOKEN'"}, status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
            await refusal(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        assert self._token is not None
        header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer":
            given = b""
        return hmac.compare_digest(given.strip(), self._token)


__all__ = [
    "PATH",
    "TRANSCRIPT_TEMPLATE",
    "MemoryTools",
    "build_server",
    "describe",
    "mount",
    "serve_stdio",
    "stream_of",
    "transcript_uri",
]
