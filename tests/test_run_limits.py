"""Every run ends with a structured `failure` naming the limit it hit, never a traceback or a hang.

A misbehaving model over the real wire: endless tool calls, endless streams, stalls, keep-alive
comment trickles, huge, deep and non-finite arguments, too many calls in a turn.
"""

from __future__ import annotations

import json

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from conftest import client_for
from toolrail.graphs.agent import build_graph
from toolrail.testing.openai_server import ScriptedReply, answer, call, calls

WEATHER = {"location": "New York"}


async def run(server, streaming=True, **options):
    graph = build_graph(model=client_for(server, streaming=streaming), checkpointer=InMemorySaver(), **options)
    return await graph.ainvoke({"messages": [("user", "weather?")]}, {"configurable": {"thread_id": "t"}})


def sent_back(server, turn: int) -> dict[str, str]:
    return {m["tool_call_id"]: m["content"] for m in server.requests[turn]["messages"] if m["role"] == "tool"}


async def test_a_model_that_never_stops_calling_tools_ends_at_the_turn_limit_not_a_recursion_error(openai_server, streaming):
    openai_server._script = lambda body: calls(call("get_weather", WEATHER))  # valid calls, forever
    state = await run(openai_server, streaming)  # default limits: 25 turns, LangGraph's recursion limit above it
    assert state["failure"]["reason"] == "turn_limit"
    assert "25" in state["failure"]["message"]
    assert len(openai_server.requests) == 25


async def test_the_turn_limit_is_per_run_and_configurable(openai_server):
    openai_server._script = lambda body: calls(call("get_weather", WEATHER))
    graph = build_graph(model=client_for(openai_server), checkpointer=InMemorySaver(), max_turns=2)
    config = {"configurable": {"thread_id": "t"}}
    first = await graph.ainvoke({"messages": [("user", "one")]}, config)
    second = await graph.ainvoke({"messages": [("user", "two")]}, config)
    assert first["failure"]["reason"] == second["failure"]["reason"] == "turn_limit"
    assert len(openai_server.requests) == 4


async def test_the_run_deadline_ends_a_run_of_slow_turns(openai_server):
    openai_server._script = lambda body: calls(call("get_weather", WEATHER), delay_s=0.3)
    state = await run(openai_server, deadline=0.5)
    assert state["failure"]["reason"] == "deadline"
    assert len(openai_server.requests) < 25


async def test_a_tool_call_running_at_the_deadline_is_cut_and_the_run_ends(openai_server):
    import asyncio

    from toolrail.tools.registry import ToolRegistry

    tools = ToolRegistry()

    @tools.register(timeout=60)
    async def slow_report(topic: str) -> str:
        """Write a long report.

        Args:
            topic: What about.
        """
        await asyncio.sleep(30)
        return "never"

    openai_server._script = lambda body: calls(call("slow_report", {"topic": "x"}))
    state = await run(openai_server, tools=tools, deadline=1.0)
    assert state["results"][0]["status"] == "timeout"
    assert state["failure"]["reason"] == "deadline"


@pytest.mark.parametrize(
    "misbehaviour, option",
    [
        ("no first chunk", {"model_first_chunk_timeout": 0.5}),
        ("keep-alive comments only", {"model_first_chunk_timeout": 0.5}),
        ("stall between chunks", {"model_chunk_timeout": 0.5}),
        ("endless stream", {"model_reply_timeout": 1.0}),
    ],
)
async def test_model_timeouts_end_the_run_with_model_timeout(openai_server, misbehaviour, option):
    reply = {
        "no first chunk": ScriptedReply(content="late", delay_s=3),
        "keep-alive comments only": ScriptedReply(content="late", keepalive_s=3),
        "stall between chunks": calls(call("get_weather", WEATHER), tail_delay_s=3),
        "endless stream": ScriptedReply(content="and", endless=True),
    }[misbehaviour]
    openai_server.script(reply)
    state = await run(openai_server, **option)
    assert state["failure"]["reason"] == "model_timeout", state["failure"]
    flag = {"model_first_chunk_timeout": "--model-first-chunk-timeout", "model_chunk_timeout": "--model-chunk-timeout",
            "model_reply_timeout": "--model-reply-timeout"}[next(iter(option))]
    assert flag in state["failure"]["message"]
    assert all(r["status"] == "cancelled" for r in state.get("results", []))  # what started early was cancelled


async def test_too_many_calls_in_one_turn_end_the_run_and_none_runs(openai_server, streaming):
    openai_server.script(calls(*[call("get_weather", {"location": f"city {i}"}) for i in range(5)]))
    state = await run(openai_server, streaming, max_calls_per_turn=3)
    assert state["failure"]["reason"] == "call_limit"
    assert all(r["status"] == "cancelled" for r in state.get("results", []))  # what started early was cancelled


BAD_ARGUMENTS = {
    "NaN": ('{"location": NaN}', "NaN is not a JSON number"),
    "Infinity": ('{"location": -Infinity}', "-Infinity is not a JSON number"),
    "10,000 deep": ('{"location": ' + "[" * 10_000 + "]" * 10_000 + "}", "nested 10001 levels deep; the limit is 64"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
async def test_non_standard_or_deep_arguments_make_the_call_invalid_with_the_reason_sent_back(openai_server, streaming, case):
    text, reason = BAD_ARGUMENTS[case]
    openai_server.script(calls(call("get_weather", text, id="bad"), fragment_size=512), calls(call("get_weather", WEATHER, id="good")), answer("ok"))
    state = await run(openai_server, streaming)
    feedback = sent_back(openai_server, 1)["bad"]
    assert reason in feedback, feedback
    assert len(feedback) < 800
    assert [r["status"] for r in state["results"]] == ["ok"]  # only the corrected call ran
    assert state.get("failure") is None


async def test_a_duplicate_key_makes_a_streamed_call_invalid(openai_server):
    # Streamed only: langchain-openai parses a non-streamed reply itself, and the duplicate is gone
    # before toolrail sees the text (README, "Strict JSON").
    openai_server.script(calls(call("get_weather", '{"location": "Paris", "location": "Rome"}', id="bad")), calls(call("get_weather", WEATHER)), answer("ok"))
    state = await run(openai_server, streaming=True)
    assert '"location" appears twice' in sent_back(openai_server, 1)["bad"]
    assert [r["status"] for r in state["results"]] == ["ok"]


async def test_a_huge_argument_is_cut_at_the_limit_and_only_an_excerpt_goes_back(openai_server, streaming):
    huge = json.dumps({"location": "x" * (3 << 20)})  # 3 MiB
    openai_server.script(calls(call("get_weather", huge, id="big"), fragment_size=1 << 16), calls(call("get_weather", WEATHER)), answer("ok"))
    state = await run(openai_server, streaming)
    feedback = sent_back(openai_server, 1)["big"]
    assert "over the size limit of 1,048,576 bytes" in feedback
    assert len(feedback) < 800
    assert len(json.dumps(openai_server.requests[1])) < 100_000, "the 3 MiB never goes back to the model"
    assert state.get("failure") is None


async def test_argument_limits_are_build_graph_arguments(openai_server):
    openai_server.script(calls(call("get_weather", {"location": "x" * 200}, id="big")), answer("fine"))
    state = await run(openai_server, max_argument_bytes=100, max_retries=0)
    assert state["failure"]["reason"] == "retry_budget_exhausted"
    assert "over the size limit of 100 bytes" in state["failure"]["errors"][0]["error"]


def test_limits_must_be_finite_and_positive():
    for bad in ({"max_turns": 0}, {"deadline": float("nan")}, {"model_reply_timeout": float("inf")}, {"max_argument_depth": 0}):
        with pytest.raises(ValueError):
            build_graph(**bad)
