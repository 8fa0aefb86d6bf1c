"""MCP servers' tools through the graph: a real MCP server (the SDK's own), over stdio and HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from conftest import client_for
from toolrail.graphs.agent import build_graph
from toolrail.testing.openai_server import answer, call, calls
from toolrail.tools.mcp_tools import MCPCall, MCPServerError, mcp_tools

SERVER = f"{sys.executable} -m toolrail.testing.mcp_server"


def logged_server(log: Path) -> str:
    """The demo server over stdio, logging every call that reaches it to `log`."""
    return f"env TOOLRAIL_MCP_DEMO_LOG={log} {SERVER}"


def arrived(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def run(server, tools, prompt="find me a book", **options):
    graph = build_graph(model=client_for(server), tools=tools, checkpointer=InMemorySaver(), **options)
    return await graph.ainvoke({"messages": [("user", prompt)]}, {"configurable": {"thread_id": "t"}})


async def test_mcp_tools_run_end_to_end_and_wrong_types_never_reach_the_server(openai_server, tmp_path):
    log = tmp_path / "calls.jsonl"
    wrong = call("add_note", {"note": {"book": 7, "text": "x", "rating": [], "tags": None}}, id="bad")
    find = call("find_books", {"query": "e", "filters": {"genre": "sf", "after_year": None}, "limit": None}, id="find")
    note = call("add_note", {"note": {"book": "Dune", "text": "spice", "rating": None, "tags": ["sf"]}}, id="note")
    openai_server.script(calls(wrong), calls(find, note, tail_delay_s=0.8), answer("Found Dune and Neuromancer; noted."))
    async with mcp_tools(logged_server(log)) as tools:
        assert tools.get("find_books").parameters["properties"]["filters"]["anyOf"][0] == {"$ref": "#/$defs/Filters"}
        assert all(t.strict for t in tools)
        state = await run(openai_server, tools, max_retries=1)
    rejected = state["verdicts"][0]
    assert rejected["id"] == "bad" and not rejected["valid"]
    assert "note.book: Input should be a valid string" in rejected["error"] and "note.rating" in rejected["error"]
    # What reached the server: only the valid turn, with defaults filled at every depth.
    assert sorted(arrived(log), key=lambda c: c["tool"]) == [
        {"tool": "add_note", "arguments": {"book": "Dune", "text": "spice", "rating": "unrated", "tags": ["sf"]}},
        {"tool": "find_books", "arguments": {"query": "e", "filters": {"genre": "sf", "after_year": None}, "limit": 5}},
    ]
    results = {r["id"]: r for r in state["results"]}
    assert results["find"]["status"] == "ok" and [b["title"] for b in json.loads(results["find"]["content"])["books"]] == ["Dune", "Neuromancer"]
    assert results["note"]["content"] == "saved a note on Dune"
    # readOnlyHint: true may start while the reply streams; a tool without it never does.
    assert results["find"]["speculative"] is True
    assert results["note"]["speculative"] is False
    assert state["messages"][-1].content == "Found Dune and Neuromancer; noted."


async def test_annotations_decide_side_effects_and_results_keep_errors_and_images(openai_server, tmp_path):
    openai_server.script(
        calls(call("borrow_status", {"title": "Ulysses"}, id="err"), call("cover", {"title": "Dune"}, id="img"),
              call("slow_count", {"seconds": 30}, id="slow")),
        answer("done"),
    )
    async with mcp_tools(SERVER, call_timeout=1.0) as tools:
        note, find = tools.get("add_note"), tools.get("find_books")
        assert (note.side_effects, note.speculative) == (True, False)  # not read-only: the MCP default
        assert (find.side_effects, find.speculative) == (False, True)
        state = await run(openai_server, tools)
    results = {r["id"]: r for r in state["results"]}
    assert results["err"]["status"] == "error" and "the library has no book called 'Ulysses'" in results["err"]["content"]
    assert results["img"]["status"] == "ok" and results["img"]["content"].startswith("[image: image/png, ")
    assert results["slow"]["status"] == "timeout"  # a hung call is bounded by its timeout
    sent_back = {m["tool_call_id"]: m["content"] for m in openai_server.requests[1]["messages"] if m["role"] == "tool"}
    assert "no book called 'Ulysses'" in sent_back["err"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(tmp_path):
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "toolrail.testing.mcp_server", "--http", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_streamable_http_server_and_name_clashes_get_the_server_prefix(openai_server, http_server):
    openai_server.script(calls(call("library2_find_books", {"query": "Emma", "filters": None, "limit": None}, id="h")), answer("ok"))
    async with mcp_tools(SERVER, http_server) as tools:
        names = set(tools.names())
        assert {"library_find_books", "library2_find_books", "library_add_note", "library2_add_note"} <= names
        assert "find_books" not in names
        state = await run(openai_server, tools)
    assert state["results"][0]["status"] == "ok" and "Jane Austen" in state["results"][0]["content"]


async def test_a_server_that_fails_to_start_is_one_clear_error():
    with pytest.raises(MCPServerError, match=r"MCP server .* failed to start: .*server stderr: boom"):
        async with mcp_tools(f"{sys.executable} -c \"import sys; sys.exit('boom')\"", startup_timeout=20):
            pass
    with pytest.raises(MCPServerError, match="failed to start: FileNotFoundError"):
        async with mcp_tools("no-such-mcp-server-binary"):
            pass


def test_cli_lists_mcp_tools_and_reports_a_dead_server_in_one_line(tmp_path):
    listed = subprocess.run([sys.executable, "-m", "toolrail.cli", "tools", "--json", "--mcp", SERVER],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    wire = {t["function"]["name"]: t["function"] for t in json.loads(listed.stdout)}
    assert wire["add_note"]["strict"] is True and "get_weather" in wire
    dead = subprocess.run([sys.executable, "-m", "toolrail.cli", "tools", "--mcp", "no-such-mcp-server-binary"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert dead.returncode == 2 and dead.stderr.count("\n") == 1 and "failed to start" in dead.stderr


class _Answers:
    """A stand-in session answering `call_tool` with a fixed result (for the output-schema check)."""

    def __init__(self, result):
        self.result = result

    async def call_tool(self, name, arguments, read_timeout_seconds=None):
        return self.result


async def test_structured_content_is_checked_against_the_output_schema():
    from mcp_types import CallToolResult, TextContent

    schema = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
    good = CallToolResult(content=[TextContent(type="text", text="3")], structured_content={"count": 3})
    bad = CallToolResult(content=[TextContent(type="text", text="three")], structured_content={"count": "three"})
    assert await MCPCall(_Answers(good), "count", schema, 5).ainvoke({}) == "3"
    with pytest.raises(Exception, match="structuredContent does not match the tool's outputSchema: count"):
        await MCPCall(_Answers(bad), "count", schema, 5).ainvoke({})


def test_cli_run_with_mcp_offers_and_calls_the_servers_tools(tmp_path):
    from toolrail.testing.openai_server import OpenAICompatibleServer

    log = tmp_path / "calls.jsonl"
    replies = [calls(call("find_books", {"query": "Emma", "filters": None, "limit": 1}), call("add_note", {"note": {"book": "Emma", "text": "witty", "rating": 5, "tags": None}})),
               answer("Emma is in; note saved.")]
    with OpenAICompatibleServer(replies) as server:
        env = {**{k: v for k, v in __import__("os").environ.items() if not k.startswith(("OPENAI_", "LANGSMITH_"))},
               "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k", "TOOLRAIL_DB": str(tmp_path / "runs.sqlite")}
        done = subprocess.run([sys.executable, "-m", "toolrail.cli", "run", "--json", "Emma?", "--mcp", logged_server(log)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    offered = {t["function"]["name"]: t["function"] for t in server.requests[0]["tools"]}
    assert offered["add_note"]["strict"] is True and "get_weather" in offered
    state = json.loads(done.stdout)
    assert state["answer"] == "Emma is in; note saved."
    assert sorted(c["tool"] for c in arrived(log)) == ["add_note", "find_books"]
    assert {r["name"]: r["status"] for r in state["results"]} == {"find_books": "ok", "add_note": "ok"}


def _server_pids(marker: str) -> list[int]:
    """Pids of demo servers started with `marker` in their environment (no one else's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


async def test_a_server_that_dies_mid_run_makes_the_call_a_tool_error_not_a_hang(tmp_path):
    import asyncio
    import os
    import signal

    log = tmp_path / "dying.jsonl"
    async with mcp_tools(logged_server(log), call_timeout=60) as tools:
        slow = tools.get("slow_count")
        running = asyncio.create_task(slow.run(slow.validate({"seconds": 50})))
        while not arrived(log):
            await asyncio.sleep(0.05)
        pids = _server_pids(str(log))
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(Exception, match="MCP server did not answer"):
            await running
        with pytest.raises(Exception, match="MCP server did not answer"):
            await tools.get("cover").run(tools.get("cover").validate({"title": "Dune"}))


def test_a_tool_whose_schema_cannot_compile_is_left_out_with_one_line_not_the_server():
    from mcp_types import Tool as ListedTool

    from toolrail.tools.mcp_tools import _registry

    listed = [ListedTool(name="odd", input_schema={"type": "object", "properties": {"x": {"type": "datetime"}}}),
              ListedTool(name="fine", input_schema={"type": "object", "properties": {"x": {"type": "integer"}}})]
    said: list[str] = []
    registry = _registry([("srv", None, listed)], 5.0, set(), said.append)
    assert registry.names() == ["fine"]
    assert said == ["MCP tool 'odd' of server 'srv' left out: tool 'odd', field 'x': unknown type 'datetime'"]
