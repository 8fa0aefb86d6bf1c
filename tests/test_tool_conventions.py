"""LangGraph's and LangChain's own tool conventions work in toolrail tools, speculative or not:
`interrupt()` pauses the graph, injected arguments are filled in and never shown to the model,
`get_stream_writer()` streams; and sequential tools run in the model's order."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import pytest
from langchain_core.tools import InjectedToolCallId
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.prebuilt import InjectedState, InjectedStore, ToolRuntime
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command, interrupt

from conftest import client_for
from toolrail.graphs.agent import build_graph
from toolrail.testing.openai_server import answer, call, calls
from toolrail.tools.registry import ToolRegistry

CONFIG = {"configurable": {"thread_id": "t"}}


def graph_for(server, tools, **options):
    return build_graph(model=client_for(server), tools=tools, checkpointer=InMemorySaver(), **options)


@pytest.mark.parametrize("speculative", [True, False], ids=["speculative", "not-speculative"])
async def test_interrupt_inside_a_tool_pauses_the_graph_and_resumes_with_the_answer(openai_server, speculative):
    tools, asked = ToolRegistry(), []

    @tools.register
    def delete_file(path: str) -> str:
        """Delete a file after asking.

        Args:
            path: The file.
        """
        asked.append(path)
        reply = interrupt({"question": f"really delete {path}?"})
        return f"deleted {path}" if reply == "yes" else f"kept {path}"

    openai_server.script(calls(call("delete_file", {"path": "a.txt"}, id="d1"), tail_delay_s=0.3), answer("done"))
    graph = graph_for(openai_server, tools, speculative=speculative)
    paused = await graph.ainvoke({"messages": [("user", "delete a.txt")]}, CONFIG)
    (question,) = paused["__interrupt__"]
    assert question.value == {"question": "really delete a.txt?"}
    assert not paused.get("results"), "the question is not recorded as a tool error"
    done = await graph.ainvoke(Command(resume="yes"), CONFIG)
    assert [(r["status"], output_of(done, r)) for r in done["results"]] == [("ok", "deleted a.txt")]
    # started speculatively, the tool is run again in its tools task when it asks; then on resume
    assert len(asked) == (3 if speculative else 2)


async def test_injected_arguments_are_filled_in_and_never_shown_to_the_model(openai_server):
    tools, seen = ToolRegistry(), {}

    @tools.register
    def remember(note: str, tool_call_id: Annotated[str, InjectedToolCallId], messages: Annotated[list, InjectedState("messages")],
                 whole: Annotated[dict, InjectedState], store: Annotated[BaseStore, InjectedStore()]) -> str:
        """Remember a note.

        Args:
            note: What to remember.
        """
        store.put(("notes",), tool_call_id, {"note": note})
        seen.update(call_id=tool_call_id, first=messages[0].content, calls=[c["name"] for c in whole["validated_calls"]])
        return "remembered"

    openai_server.script(calls(call("remember", {"note": "milk"}, id="r1")), answer("ok"))
    store = InMemoryStore()
    graph = build_graph(model=client_for(openai_server), tools=tools, checkpointer=InMemorySaver(), store=store)
    done = await graph.ainvoke({"messages": [("user", "remember milk")]}, CONFIG)
    wire = openai_server.requests[0]["tools"][0]["function"]["parameters"]
    assert set(wire["properties"]) == {"note"} and wire["required"] == ["note"]
    assert seen == {"call_id": "r1", "first": "remember milk", "calls": ["remember"]}
    assert store.get(("notes",), "r1").value == {"note": "milk"}
    assert output_of(done, done["results"][0]) == "remembered"


async def test_a_model_cannot_forge_an_injected_argument(openai_server):
    tools = ToolRegistry()

    @tools.register
    def echo(text: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Echo.

        Args:
            text: Text.
        """
        return tool_call_id

    openai_server.script(calls(call("echo", {"text": "x", "tool_call_id": "forged"}, id="e1")), answer("ok"))
    done = await graph_for(openai_server, tools, max_retries=0).ainvoke({"messages": [("user", "x")]}, CONFIG)
    assert done["verdicts"][0]["valid"] is False and "tool_call_id: unknown argument" in done["verdicts"][0]["error"]


async def test_get_stream_writer_works_in_a_speculatively_started_tool(openai_server):
    tools = ToolRegistry()

    @tools.register
    async def progress(steps: int) -> str:
        """Report progress.

        Args:
            steps: How many steps.
        """
        write = get_stream_writer()
        for step in range(steps):
            write({"type": "progress", "step": step})
        return "done"

    openai_server.script(calls(call("progress", {"steps": 2}, id="p1"), tail_delay_s=0.5), answer("ok"))
    graph = graph_for(openai_server, tools)
    custom = [chunk async for mode, chunk in graph.astream({"messages": [("user", "go")]}, CONFIG, stream_mode=["custom", "values"]) if mode == "custom"]
    state = (await graph.aget_state(CONFIG)).values
    assert [r["speculative"] for r in state["results"]] == [True] and output_of(state, state["results"][0]) == "done"
    assert [c["step"] for c in custom if c.get("type") == "progress"] == [0, 1]


class OrderProbe:
    def __init__(self, *, sequential: bool):
        self.log: list[tuple[str, str, float]] = []
        self.registry = ToolRegistry()

        @self.registry.register(name="ticket", description="Create or update a ticket.", sequential=sequential)
        async def ticket(step: str) -> str:
            self.log.append(("start", step, time.perf_counter()))
            await asyncio.sleep(0.05)
            self.log.append(("end", step, time.perf_counter()))
            return step

        @self.registry.register(name="lookup", description="Look up.")
        async def lookup(key: str) -> str:
            self.log.append(("start", key, time.perf_counter()))
            await asyncio.sleep(0.2)
            self.log.append(("end", key, time.perf_counter()))
            return key


@pytest.mark.parametrize("how", ["tool-flag", "build-graph"])
async def test_sequential_calls_run_one_after_another_in_the_models_order_after_the_concurrent_ones(openai_server, how):
    probe = OrderProbe(sequential=how == "tool-flag")
    turn = [call("ticket", {"step": "create"}, id="c"), call("lookup", {"key": "k"}, id="l"), call("ticket", {"step": "update"}, id="u")]
    openai_server.script(calls(*turn), answer("ok"))
    options = {} if how == "tool-flag" else {"parallel": False}
    done = await graph_for(openai_server, probe.registry, **options).ainvoke({"messages": [("user", "go")]}, CONFIG)
    events = [(kind, name) for kind, name, _ in probe.log]
    if how == "tool-flag":  # lookup runs concurrently first; the tickets follow, one at a time, in order
        assert events == [("start", "k"), ("end", "k"), ("start", "create"), ("end", "create"), ("start", "update"), ("end", "update")]
    else:  # every call waits for the one before it, in the model's order
        assert events == [("start", "create"), ("end", "create"), ("start", "k"), ("end", "k"), ("start", "update"), ("end", "update")]
    assert sorted(r["id"] for r in done["results"]) == ["c", "l", "u"]
    sent_back = {m["tool_call_id"] for m in openai_server.requests[1]["messages"] if m["role"] == "tool"}
    assert sent_back == {"c", "l", "u"}


async def test_without_the_flag_a_turns_calls_overlap(openai_server):
    """The control for the ordered test: the same turn, no flag, and the calls run at once."""
    probe = OrderProbe(sequential=False)
    turn = [call("ticket", {"step": "create"}, id="c"), call("lookup", {"key": "k"}, id="l"), call("ticket", {"step": "update"}, id="u")]
    openai_server.script(calls(*turn), answer("ok"))
    await graph_for(openai_server, probe.registry, speculative=False).ainvoke({"messages": [("user", "go")]}, CONFIG)
    events = [kind for kind, _, _ in probe.log]
    assert events[:3] == ["start", "start", "start"]


async def test_call_id_and_store_are_injected_into_a_speculatively_started_tool(openai_server):
    tools = ToolRegistry()

    @tools.register
    async def save(note: str, tool_call_id: Annotated[str, InjectedToolCallId], store: Annotated[BaseStore, InjectedStore()]) -> str:
        """Save a note.

        Args:
            note: The note.
        """
        await store.aput(("notes",), tool_call_id, {"note": note})
        return f"saved as {tool_call_id}"

    openai_server.script(calls(call("save", {"note": "milk"}, id="s1"), tail_delay_s=0.5), answer("ok"))
    store = InMemoryStore()
    graph = build_graph(model=client_for(openai_server), tools=tools, checkpointer=InMemorySaver(), store=store)
    done = await graph.ainvoke({"messages": [("user", "save milk")]}, CONFIG)
    assert [(r["speculative"], output_of(done, r)) for r in done["results"]] == [(True, "saved as s1")]
    assert store.get(("notes",), "s1").value == {"note": "milk"}
    assert set(openai_server.requests[0]["tools"][0]["function"]["parameters"]["properties"]) == {"note"}


async def test_a_tool_taking_langchains_tool_runtime_gets_state_call_id_and_stream_writer(openai_server):
    tools = ToolRegistry()

    @tools.register
    def summarize(topic: str, runtime: ToolRuntime) -> str:
        """Summarize.

        Args:
            topic: What about.
        """
        runtime.stream_writer({"type": "note", "call": runtime.tool_call_id})
        return f"{topic}: {len(runtime.state['messages'])} messages, call {runtime.tool_call_id}"

    openai_server.script(calls(call("summarize", {"topic": "x"}, id="s1")), answer("ok"))
    graph = graph_for(openai_server, tools)
    custom = [c async for mode, c in graph.astream({"messages": [("user", "go")]}, CONFIG, stream_mode=["custom", "values"]) if mode == "custom"]
    state = (await graph.aget_state(CONFIG)).values
    assert output_of(state, state["results"][0]) == "x: 2 messages, call s1"
    assert {"type": "note", "call": "s1"} in custom
    assert set(openai_server.requests[0]["tools"][0]["function"]["parameters"]["properties"]) == {"topic"}


def output_of(state: dict, result: dict) -> str:
    """A call's output: its ToolMessage (results carry status and timing, not the content)."""
    return next(str(m.content) for m in state["messages"] if getattr(m, "tool_call_id", None) == result["id"])
