"""MCP servers' tools as toolrail tools, through the official MCP Python SDK (`mcp`).

    async with mcp_tools("python -m my_server", "http://127.0.0.1:8000/mcp") as registry:
        graph = build_graph(model=..., tools=all_tools(DEFAULT_TOOLS, registry))

A server is a command line (stdio: the command is started as a subprocess) or an http(s) URL
(streamable HTTP). Each tool's `inputSchema` goes through the JSON Schema front end
(`tool_from_json_schema`), so an MCP tool gets the same strict wire schema and the same
validator as a Python tool: a wrong type is refused before the server sees the call.

Execution follows the MCP spec's annotation defaults: `readOnlyHint: true` makes a tool
read-only, so it may start speculatively while the model is still streaming; any other tool
(the spec's default is "not read-only") is `side_effects=True`: never speculative, and it runs
through the side-effect ledger, so a resumed run never repeats it.

Results: `isError` comes back as a tool error; text, image, audio and resource blocks become
the tool message (binary data is described, not pasted); when a tool declares an
`outputSchema`, its `structuredContent` is checked against it.

Names: a tool keeps its name unless another server (or a tool already offered) has it; then
it is called `<server>_<tool>`, where `<server>` is the server's name (its `serverInfo.name`,
else the command's or host's name), made unique by a number when two servers share a name.

A server that fails to start or to list its tools within `startup_timeout` raises
`MCPServerError` (one line, naming the server); one that dies or hangs mid-run makes that call
a tool error (the call's timeout bounds it), never a hang.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from toolrail.errors import ToolrailError
from toolrail.tools.json_schema import compile_arguments, provider_name, tool_from_json_schema
from toolrail.tools.registry import Tool, ToolRegistry
from toolrail.tools.strict_schema import StrictSchemaError

DEFAULT_STARTUP_TIMEOUT_S = 20.0
DEFAULT_CALL_TIMEOUT_S = 30.0


class MCPServerError(ToolrailError):
    """An MCP server could not be started, reached or listed."""


class MCPToolError(Exception):
    """The server answered a call with `isError: true` (or a result its schema forbids)."""


@dataclass
class MCPServerSpec:
    """Where a server is: `target` is a command line or an http(s) URL."""

    target: str

    @property
    def is_http(self) -> bool:
        return self.target.startswith(("http://", "https://"))

    def fallback_name(self) -> str:
        if self.is_http:
            return urlparse(self.target).hostname or "mcp"
        words = shlex.split(self.target)
        module = next((w for w, prev in zip(words[1:], words) if prev == "-m"), None)
        return (module or os.path.basename(words[0]) if words else "mcp").rsplit(".", 1)[-1]


@asynccontextmanager
async def mcp_tools(
    *servers: str,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
    call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
    taken_names: Iterable[str] = (),
    on_skipped: Callable[[str], None] | None = None,
) -> AsyncIterator[ToolRegistry]:
    """Connect to every server, list its tools, and yield them as one `ToolRegistry`.

    The connections stay open for the `async with` block (enter and leave it in one task).
    `taken_names`: names already offered by other registries, which MCP tools must not reuse.
    A tool whose input schema cannot be compiled (an unknown type, a reference that does not
    resolve, arguments that are not an object) is left out, not the whole server: `on_skipped`
    hears one line about it (default: stderr).
    """
    async with AsyncExitStack() as stack:
        listed: list[tuple[str, Any, list[Any]]] = []
        for target in servers:
            spec = MCPServerSpec(target.strip())
            if not spec.target:
                raise MCPServerError("--mcp needs a command line or an http(s) URL, got an empty string")
            client = await _connect(stack, spec, startup_timeout)
            try:
                async with asyncio.timeout(startup_timeout):
                    tools = await _list_all_tools(client)
            except Exception as exc:  # noqa: BLE001 - any failure here is the server's: one line
                raise MCPServerError(f"MCP server {spec.target!r}: listing its tools failed: {_reason(exc)}") from None
            info = getattr(client, "server_info", None)
            listed.append((getattr(info, "name", None) or spec.fallback_name(), client, tools))
        yield _registry(listed, call_timeout, set(taken_names), on_skipped or _to_stderr)


async def _connect(stack: AsyncExitStack, spec: MCPServerSpec, timeout: float) -> Any:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    errlog = None
    if spec.is_http:
        transport: Any = spec.target
    else:
        words = shlex.split(spec.target)
        if not words:
            raise MCPServerError(f"MCP server {spec.target!r}: empty command")
        errlog = stack.enter_context(tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace"))
        transport = stdio_client(StdioServerParameters(command=words[0], args=words[1:]), errlog=errlog)
    client = Client(transport, read_timeout_seconds=timeout)
    try:
        # asyncio.timeout, not wait_for: the client's anyio task group must be entered in this task.
        async with asyncio.timeout(timeout):
            return await stack.enter_async_context(client)
    except asyncio.TimeoutError:
        raise MCPServerError(f"MCP server {spec.target!r}: no answer within {timeout:g}s{_stderr_tail(errlog)}") from None
    except Exception as exc:  # noqa: BLE001 - spawn errors, connection refused, protocol errors
        raise MCPServerError(f"MCP server {spec.target!r} failed to start: {_reason(exc)}{_stderr_tail(errlog)}") from None


async def _list_all_tools(client: Any) -> list[Any]:
    tools, cursor = [], None
    for _ in range(100):  # a paginator that never ends cannot hang start-up
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _to_stderr(line: str) -> None:
    sys.stderr.write(f"toolrail: {line}\n")


def _registry(listed: list[tuple[str, Any, list[Any]]], call_timeout: float, taken: set[str],
              on_skipped: Callable[[str], None]) -> ToolRegistry:
    counts: dict[str, int] = {}
    for _, _, tools in listed:
        for tool in tools:
            counts[tool.name] = counts.get(tool.name, 0) + 1
    server_names: set[str] = set()
    registry = ToolRegistry()
    for server_name, client, tools in listed:
        prefix = _unique_server_name(provider_name(server_name), server_names)
        for tool in tools:
            name = tool.name
            if counts[name] > 1 or name in taken or provider_name(name) in taken:
                name = f"{prefix}_{tool.name}"
            try:
                compiled = mcp_tool(client, tool, name=name, timeout=call_timeout)
            except (StrictSchemaError, ValueError) as exc:
                on_skipped(f"MCP tool {tool.name!r} of server {server_name!r} left out: {exc}")
                continue
            taken |= {name, provider_name(name)}
            registry.add(compiled)
    return registry


def _unique_server_name(name: str, seen: set[str]) -> str:
    candidate, n = name, 2
    while candidate in seen:
        candidate, n = f"{name}{n}", n + 1
    seen.add(candidate)
    return candidate


def mcp_tool(client: Any, tool: Any, *, name: str | None = None, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> Tool:
    """One listed MCP tool (an `mcp_types.Tool`) as a toolrail Tool calling `client`."""
    annotations = tool.annotations
    read_only = bool(annotations and annotations.read_only_hint)
    description = tool.description or (annotations.title if annotations and annotations.title else "") or ""
    definition = {"name": name or tool.name, "description": description, "parameters": tool.input_schema or {"type": "object"}}
    runnable = MCPCall(client, tool.name, tool.output_schema, timeout)
    return tool_from_json_schema(
        definition, runnable, timeout=timeout, speculative=read_only, side_effects=not read_only,
    )


class MCPCall:
    """Calls one tool on the server; the result becomes the tool message's text."""

    def __init__(self, client: Any, name: str, output_schema: dict[str, Any] | None, timeout: float):
        self.client, self.name, self.timeout = client, name, timeout
        self.output_model = _output_model(name, output_schema)

    async def ainvoke(self, fields: dict[str, Any]) -> str:
        arguments = to_jsonable_python(fields, by_alias=True)
        try:
            result = await self.client.call_tool(self.name, arguments, read_timeout_seconds=self.timeout)
        except Exception as exc:  # noqa: BLE001 - the server died, hung up or broke the protocol
            raise MCPToolError(f"the MCP server did not answer: {_reason(exc)}") from None
        text = content_text(result.content)
        if result.is_error:
            raise MCPToolError(text or "the tool reported an error")
        structured = result.structured_content
        if self.output_model is not None:
            if structured is None:
                raise MCPToolError("the tool declares an outputSchema but returned no structuredContent")
            try:
                self.output_model.model_validate_json(json.dumps(structured), strict=True)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'result'}: {e['msg']}" for e in exc.errors()[:5])
                raise MCPToolError(f"structuredContent does not match the tool's outputSchema: {problems}") from None
        if not text and structured is not None:
            return json.dumps(structured, ensure_ascii=False)
        return text


def _output_model(name: str, schema: dict[str, Any] | None) -> Any:
    if not schema:
        return None
    try:
        return compile_arguments(f"{name} output", {**schema, "additionalProperties": schema.get("additionalProperties", False)}).model
    except StrictSchemaError:
        return None  # an output schema the front end cannot compile is not checked


def content_text(blocks: list[Any]) -> str:
    """MCP content blocks as the text of one tool message."""
    parts = []
    for block in blocks or []:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            size = len(block.data) * 3 // 4
            parts.append(f"[{kind}: {block.mime_type}, {size} bytes]")
        elif kind == "resource":
            resource = block.resource
            text = getattr(resource, "text", None)
            if text is not None:
                parts.append(f"[resource {resource.uri}]\n{text}")
            else:
                parts.append(f"[resource {resource.uri}: {getattr(resource, 'mime_type', None) or 'binary'}, {len(getattr(resource, 'blob', '')) * 3 // 4} bytes]")
        elif kind == "resource_link":
            parts.append(f"[resource link {block.uri}{': ' + block.description if block.description else ''}]")
        else:
            parts.append(json.dumps(block.model_dump(mode="json", exclude_none=True), ensure_ascii=False))
    return "\n".join(parts)


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _stderr_tail(errlog: Any) -> str:
    if errlog is None:
        return ""
    try:
        errlog.flush()
        errlog.seek(0)
        lines = [line.strip() for line in errlog.read().splitlines() if line.strip()]
    except (OSError, ValueError):
        return ""
    last = re.sub(r"\s+", " ", lines[-1])[:300] if lines else ""
    return f" (server stderr: {last})" if last else ""
