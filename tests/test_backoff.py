"""Backoff: 429/5xx from the model are retried visibly, within limits; tools retry only when idempotent."""

from __future__ import annotations

import random
import time

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from conftest import client_for
from test_anthropic_wire import claude
from test_cli import toolrail
from toolrail.backoff import RetryPolicy, next_delay, retry_after_s
from toolrail.graphs.agent import build_graph
from toolrail.providers import chat_model
from toolrail.testing.anthropic_server import AnthropicMessagesServer
from toolrail.testing.openai_server import OpenAICompatibleServer, ScriptedReply, answer, call, calls
from toolrail.tools.registry import ToolRegistry

FAST = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=1.0, budget_s=5.0)


def throttled(seconds: str | None = None, status: int = 429) -> ScriptedReply:
    return ScriptedReply(http_status=status, headers={"Retry-After": seconds} if seconds else {})


async def run_streamed(model, **options) -> tuple[dict, list[dict]]:
    graph = build_graph(model=model, checkpointer=InMemorySaver(), **options)
    config = {"configurable": {"thread_id": "t"}}
    events = []
    async for mode, chunk in graph.astream({"messages": [("user", "hi")]}, config, stream_mode=["custom", "updates"]):
        if mode == "custom" and chunk.get("type") == "model_retry":
            events.append(chunk)
    return (await graph.aget_state(config)).values, events


async def test_429_429_200_is_retried_honouring_retry_after_and_each_wait_is_announced(openai_server, streaming):
    openai_server.script(throttled("0.3"), throttled(), answer("finally"))
    state, events = await run_streamed(client_for(openai_server, streaming=streaming), model_retry=FAST)
    assert len(openai_server.requests) == 3
    assert state.get("failure") is None and state["messages"][-1].content.strip() == "finally"
    assert [(e["status"], e["retry"], e["retry_after"]) for e in events] == [(429, 1, True), (429, 2, False)]
    assert events[0]["wait_s"] == 0.3  # the server's Retry-After, exactly
    assert 0.01 <= events[1]["wait_s"] <= 0.02  # base * 2^1, jittered into [half, full]
    # the waits are in state too, for history and trace
    assert [w["status"] for w in state["model_calls"][0]["waits"]] == [429, 429]
    assert state["usage_total"]["retries"] == 2


async def test_anthropic_overloaded_529_is_retried_over_its_own_wire():
    with AnthropicMessagesServer([throttled(status=529), answer("ok")]) as server:
        state, events = await run_streamed(claude(server), model_retry=FAST)
    assert [e["status"] for e in events] == [529] and state.get("failure") is None


async def test_exhausted_retries_end_with_a_model_error_that_says_so(openai_server):
    openai_server.script(*[throttled(status=503) for _ in range(4)])
    state, events = await run_streamed(client_for(openai_server), model_retry=RetryPolicy(max_retries=2, base_delay_s=0.01))
    assert len(openai_server.requests) == 3 and len(events) == 2
    failure = state["failure"]
    assert failure["reason"] == "model_error"
    assert "HTTP 503" in failure["message"] and "retries exhausted (2) after 3 request(s)" in failure["message"]


async def test_a_retry_after_longer_than_allowed_is_not_waited_for(openai_server):
    openai_server.script(throttled("3600"))
    state, events = await run_streamed(client_for(openai_server), model_retry=FAST)
    assert events == [] and len(openai_server.requests) == 1
    assert "asks to wait 3600.0 s, over the 1 s limit" in state["failure"]["message"]


async def test_the_wait_budget_bounds_all_waits_of_a_turn(openai_server):
    openai_server.script(throttled("0.2"), throttled("0.2"), throttled("0.2"), answer("late"))
    policy = RetryPolicy(max_retries=5, base_delay_s=0.01, max_delay_s=1.0, budget_s=0.3)
    state, events = await run_streamed(client_for(openai_server), model_retry=policy)
    assert len(events) == 1 and "retry budget of 0.3 s spent" in state["failure"]["message"]


async def test_no_wait_passes_the_runs_deadline(openai_server):
    openai_server.script(throttled("0.5"), answer("late"))
    graph = build_graph(model=client_for(openai_server), checkpointer=InMemorySaver(), model_retry=FAST)
    config = {"configurable": {"thread_id": "t", "deadline": time.time() + 0.2}}
    state = await graph.ainvoke({"messages": [("user", "hi")]}, config)
    assert len(openai_server.requests) == 1 and "would pass the run's deadline" in state["failure"]["message"]


async def test_client_errors_are_not_retried(openai_server):
    openai_server.script(ScriptedReply(http_status=400), answer("never"))
    state, events = await run_streamed(client_for(openai_server), model_retry=FAST)
    assert events == [] and len(openai_server.requests) == 1 and "HTTP 400" in state["failure"]["message"]


async def test_models_toolrail_builds_have_no_hidden_sdk_retries(openai_server):
    """One request per attempt: the SDK's own retries (max_retries=0) never add invisible ones."""
    openai_server.script(throttled(), throttled(), throttled())
    model = chat_model("openai:scripted", base_url=openai_server.base_url)
    state, _ = await run_streamed(model, model_retry=RetryPolicy(max_retries=1, base_delay_s=0.01))
    assert len(openai_server.requests) == 2 and state["failure"]["reason"] == "model_error"


def test_retry_after_forms_and_jitter_bounds():
    class Response:
        def __init__(self, headers):
            self.headers = headers

    class Error(Exception):
        def __init__(self, headers):
            self.response = Response(headers)

    assert retry_after_s(Error({"retry-after": "2"})) == 2.0
    assert retry_after_s(Error({"retry-after-ms": "150"})) == 0.15
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_s(Error({"retry-after": http_date})) <= 30
    assert retry_after_s(Error({})) is None
    rng, policy = random.Random(7), RetryPolicy(base_delay_s=1.0, max_delay_s=5.0)
    waits = [next_delay(policy, retry, None, rng) for retry in range(6)]
    assert all(min(5.0, 2 ** r) / 2 <= w <= min(5.0, 2 ** r) for r, w in enumerate(waits))


def test_the_cli_shows_each_wait(tmp_path):
    with OpenAICompatibleServer([throttled("0.2"), throttled("0.1"), answer("Sunny.")]) as server:
        done = toolrail("run", "hi", "--model", "scripted", "--base-url", server.base_url, tmp_path=tmp_path)
        requests = len(server.requests)
    assert done.returncode == 0, done.stderr
    assert requests == 3  # the SDK's own retries are off: each request is one toolrail shows
    assert "⏳ model answered HTTP 429: retry 1/4 in 0.20 s (as Retry-After asks)" in done.stdout
    assert "⏳ model answered HTTP 429: retry 2/4 in 0.10 s (as Retry-After asks)" in done.stdout
    assert "usage: 1 model call(s) · 20 tokens (10 in, 10 out) · 2 model retries" in done.stdout
    trace = toolrail("trace", _thread_of(done.stdout), tmp_path=tmp_path)
    assert "⏳ model answered HTTP 429: retry 1/4 in 0.20 s" in trace.stdout


def _thread_of(output: str) -> str:
    return output.split("continue with: toolrail run --thread ")[1].split()[0]


# --- tool-level retries ----------------------------------------------------------------------


def _flaky_registry(fails: int, **options) -> tuple[ToolRegistry, list[int]]:
    runs: list[int] = []
    registry = ToolRegistry()

    @registry.register(**options)
    async def flaky(n: int) -> str:
        """Fails its first runs.

        Args:
            n: anything
        """
        runs.append(n)
        if len(runs) <= fails:
            raise ConnectionError("transient")
        return "ok"

    return registry, runs


async def test_an_idempotent_tool_with_retries_recovers_from_transient_errors(openai_server):
    registry, runs = _flaky_registry(fails=2, retries=2)
    openai_server.script(calls(call("flaky", {"n": 1}, id="f")), answer("done"))
    graph = build_graph(model=client_for(openai_server), tools=registry, checkpointer=InMemorySaver())
    state = await graph.ainvoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    assert len(runs) == 3
    assert [(r["status"], r["content"], r["attempts"]) for r in state["results"]] == [("ok", "ok", 3)]


async def test_a_tool_out_of_retries_reports_how_many_attempts_it_made(openai_server):
    registry, runs = _flaky_registry(fails=5, retries=1)
    openai_server.script(calls(call("flaky", {"n": 1}, id="f")), answer("done"))
    graph = build_graph(model=client_for(openai_server), tools=registry, checkpointer=InMemorySaver())
    state = await graph.ainvoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    assert len(runs) == 2 and state["results"][0]["status"] == "error"
    assert state["results"][0]["content"].endswith("raised ConnectionError: transient (after 2 attempts)")


def test_a_side_effecting_tool_may_retry_only_if_it_says_it_is_idempotent():
    with pytest.raises(ValueError, match="has side effects: retries=2 could repeat them"):
        _flaky_registry(fails=0, retries=2, side_effects=True)
    registry, _ = _flaky_registry(fails=0, retries=2, side_effects=True, idempotent=True)
    assert registry.get("flaky").retries == 2


async def test_tools_without_retries_run_once(openai_server):
    registry, runs = _flaky_registry(fails=1)
    openai_server.script(calls(call("flaky", {"n": 1}, id="f")), answer("done"))
    graph = build_graph(model=client_for(openai_server), tools=registry, checkpointer=InMemorySaver())
    state = await graph.ainvoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    assert len(runs) == 1 and state["results"][0]["status"] == "error" and "attempts" not in state["results"][0]
