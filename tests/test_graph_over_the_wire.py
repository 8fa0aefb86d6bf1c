"""The agent graph driven by the real ChatOpenAI client against a local scripted server."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from conftest import client_for
from toolrail.graphs.agent import DEFAULT_TOOLS, build_graph
from toolrail.tools.demo import demo_tools
from toolrail.tools.registry import ToolRegistry, all_tools
from toolrail.testing.openai_server import ScriptedReply, answer, call, calls

WEATHER = call("get_weather", {"location": "New York"}, id="call_w")
FLIGHTS = call("search_flights", {"origin": "SF", "destination": "NYC", "date": None, "max_stops": 0}, id="call_f")


def tool_messages(request: dict) -> dict[str, str]:
    return {m["tool_call_id"]: m["content"] for m in request["messages"] if m["role"] == "tool"}


async def run(server, streaming=True, tools=None, **options):
    graph = build_graph(model=client_for(server, streaming=streaming), tools=tools, checkpointer=InMemorySaver(), **options)
    config = {"configurable": {"thread_id": "t"}}
    return await graph.ainvoke({"messages": [("user", "Plan a trip from SF to NYC.")]}, config)


async def test_request_carries_strict_tool_schemas_and_parallel_calls(openai_server, streaming):
    openai_server.script(answer("hi"))
    await run(openai_server, streaming)
    body = openai_server.requests[0]
    assert body["parallel_tool_calls"] is True
    assert body.get("stream", False) is streaming
    sent = {t["function"]["name"]: t["function"] for t in body["tools"]}
    assert set(sent) == {"get_weather", "search_flights", "estimate_trip_cost", "run_python"}
    for name, function in sent.items():
        assert function["strict"] is True
        assert function["parameters"] == DEFAULT_TOOLS.get(name).parameters
        assert function["parameters"]["additionalProperties"] is False


async def test_parallel_calls_both_run_and_their_results_reach_the_model(openai_server, streaming):
    openai_server.script(calls(WEATHER, FLIGHTS), answer("Rain in NYC; B6 916 is cheapest."))
    state = await run(openai_server, streaming)
    assert [r["status"] for r in state["results"]] == ["ok", "ok"]
    results = tool_messages(openai_server.requests[1])
    assert json.loads(results["call_w"])["high_c"] == 9
    assert json.loads(results["call_f"])["flights"][0]["flight"] == "B6 916"
    assert state["messages"][-1].content.strip() == "Rain in NYC; B6 916 is cheapest."
    assert state.get("failure") is None


BAD_CALLS = {
    "broken_json": (call("search_flights", '{"origin": "SF", "destination": "NYC"', id="bad"), "not valid JSON"),
    "unknown_tool": (call("search_hotels", {"city": "NYC"}, id="bad"), "unknown tool 'search_hotels'"),
    "wrong_type": (call("search_flights", {"origin": "SF", "destination": "NYC", "date": None, "max_stops": "none"}, id="bad"), "max_stops: Input should be a valid integer"),
    "missing_argument": (call("search_flights", {"origin": "SF", "date": None, "max_stops": 0}, id="bad"), "destination: required argument is missing"),
    "extra_argument": (call("search_flights", {"origin": "SF", "destination": "NYC", "date": None, "max_stops": 0, "cabin": "economy"}, id="bad"), "cabin: unknown argument"),
    "out_of_bounds": (call("search_flights", {"origin": "SF", "destination": "NYC", "date": None, "max_stops": 7}, id="bad"), "max_stops: Input should be less than or equal to 2"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
async def test_invalid_calls_are_sent_back_to_the_model_and_the_corrected_call_runs(openai_server, streaming, case):
    bad, expected_error = BAD_CALLS[case]
    openai_server.script(calls(WEATHER, bad), calls(WEATHER, FLIGHTS), answer("done"))
    ran: list[str] = []
    tools = _spying(demo_tools, ran)
    # Speculation off: this proves the validate node alone never lets a bad turn's calls run.
    # (With speculation, a valid sibling may start early and is cancelled: tests/test_speculation.py.)
    state = await run(openai_server, streaming, tools=tools, speculative=False)

    feedback = tool_messages(openai_server.requests[1])
    assert expected_error in feedback["bad"], feedback["bad"]
    assert "Not run" in feedback["call_w"]  # the valid sibling waited: none of a bad turn runs
    assert sorted(ran) == ["get_weather", "search_flights"]  # once each: the corrected turn only
    assert [v["valid"] for v in state["verdicts"]] == [True, False, True, True]
    assert state.get("failure") is None and state["messages"][-1].content.strip() == "done"


async def test_truncated_streamed_json_is_rejected_not_silently_repaired(openai_server):
    truncated = call("get_weather", '{"location": "New Yo', id="bad")
    openai_server.script(calls(truncated), calls(WEATHER), answer("ok"))
    state = await run(openai_server, streaming=True)
    assert "not valid JSON" in tool_messages(openai_server.requests[1])["bad"]
    assert state["verdicts"][0]["valid"] is False


async def test_exhausted_retry_budget_ends_the_run_with_a_structured_failure(openai_server, streaming):
    bad = call("get_weather", {"city": "NYC"}, id="bad")
    openai_server.script(*[calls(bad) for _ in range(5)])
    state = await run(openai_server, streaming, max_retries=1)
    failure = state["failure"]
    assert failure["reason"] == "retry_budget_exhausted" and failure["attempts"] == 2
    assert "location: required argument is missing" in failure["errors"][0]["error"]
    assert len(openai_server.requests) == 2
    assert state["results"] == [] if "results" in state else True


def _extra_tools(delay_s: float = 0.0) -> ToolRegistry:
    registry = ToolRegistry()

    @registry.register
    async def explode(reason: str) -> str:
        """Always fails.

        Args:
            reason: Why.
        """
        raise RuntimeError(f"boom: {reason}")

    @registry.register(timeout=0.5)
    async def hang(seconds: float) -> str:
        """Sleeps for a long time.

        Args:
            seconds: How long.
        """
        await asyncio.sleep(seconds)
        return "woke"

    return all_tools(demo_tools, registry)


@pytest.mark.parametrize("failing", [call("explode", {"reason": "test"}, id="x"), call("hang", {"seconds": 60}, id="x")], ids=["raising", "hanging"])
async def test_a_failing_tool_does_not_lose_the_other_calls_result(openai_server, failing):
    openai_server.script(calls(WEATHER, failing), answer("partial"))
    started = time.perf_counter()
    state = await run(openai_server, tools=_extra_tools())
    assert time.perf_counter() - started < 30  # the hang was cut by its own timeout, not the test's
    by_id = {r["id"]: r for r in state["results"]}
    assert by_id["call_w"]["status"] == "ok"
    assert by_id["x"]["status"] in ("error", "timeout")
    sent = tool_messages(openai_server.requests[1])
    assert json.loads(sent["call_w"])["location"] == "New York, NY"
    assert sent["x"].startswith("Error:")
    assert ("boom: test" in sent["x"]) or ("timed out after 0.5s" in sent["x"])


async def test_parallel_calls_overlap_in_time(openai_server):
    registry = ToolRegistry()

    @registry.register
    async def slow(n: int) -> int:
        """Slow echo.

        Args:
            n: number
        """
        await asyncio.sleep(0.3)
        return n

    openai_server.script(calls(*[call("slow", {"n": i}, id=f"s{i}") for i in range(4)]), answer("ok"))
    state = await run(openai_server, tools=registry)
    starts = sorted(r["started_at"] for r in state["results"])
    ends = sorted(r["started_at"] + r["duration_s"] for r in state["results"])
    assert len(starts) == 4 and starts[-1] < ends[0], "every call started before any finished"


async def test_a_model_endpoint_error_ends_the_run_with_a_clear_failure(openai_server, streaming):
    openai_server.script(ScriptedReply(http_status=500))
    state = await run(openai_server, streaming)
    assert state["failure"]["reason"] == "model_error"
    assert "HTTP 500" in state["failure"]["message"]


def _spying(registry: ToolRegistry, ran: list[str]) -> ToolRegistry:
    """Same tools, same schemas; records which implementations actually ran."""
    spied = ToolRegistry()
    for tool in registry:
        original = tool.runnable

        async def invoke(fields, *a, _name=tool.name, _orig=original, **kw):
            ran.append(_name)
            return await _orig.ainvoke(fields)

        spied.add(type(tool)(**{**tool.__dict__, "runnable": _Spy(invoke)}))
    return spied


class _Spy:
    def __init__(self, invoke):
        self.ainvoke = invoke
