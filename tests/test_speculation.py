"""Speculative dispatch and fan-out at scale, against the local streaming server."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from conftest import client_for
from toolrail.execution import DEFAULT_MAX_THREADS, CallExecutor
from toolrail.graphs.agent import build_graph
from toolrail.speculation import Speculation
from toolrail.testing.openai_server import ScriptedReply, answer, call, calls
from toolrail.tools.registry import ToolRegistry


class Probe:
    """Tools that record when they started, whether they finished, and if they were cancelled."""

    def __init__(self, seconds: float = 0.2):
        self.seconds = seconds
        self.started: dict[str, float] = {}
        self.cancelled: list[str] = []
        self.finished: list[str] = []
        self.registry = ToolRegistry()
        self.registry.register(self._make("lookup"), name="lookup", description="Look something up.")
        self.registry.register(self._make("pay"), name="pay", description="Pay (a side effect: never speculative).", speculative=False)

    def _make(self, name: str):
        async def tool(key: str) -> str:
            self.started[key] = time.perf_counter()
            try:
                await asyncio.sleep(self.seconds)
            except asyncio.CancelledError:
                self.cancelled.append(key)
                raise
            self.finished.append(key)
            return f"{name}:{key}"

        return tool


async def run(server, tools, **options):
    graph = build_graph(model=client_for(server), tools=tools, checkpointer=InMemorySaver(), **options)
    return await graph.ainvoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})


def slow_stream(*scripted, tail_s: float = 1.0) -> ScriptedReply:
    """The calls' arguments finish early; the stream itself ends `tail_s` later."""
    return calls(*scripted, tail_delay_s=tail_s)


async def test_a_call_starts_before_the_stream_ends(openai_server):
    probe = Probe()
    openai_server.script(slow_stream(call("lookup", {"key": "a"}, id="a"), call("lookup", {"key": "b"}, id="b", gap_before_s=0.6)), answer("ok"))
    state = await run(openai_server, probe.registry)
    stream_end = openai_server.stream_ended_at[0]
    assert probe.started["a"] < stream_end - 1.0, "a started ~1.6 s before the stream ended"
    assert probe.started["b"] < stream_end - 0.5
    assert [r["speculative"] for r in state["results"]] == [True, True]
    assert sorted(probe.finished) == ["a", "b"]


async def test_an_opted_out_tool_waits_for_the_whole_reply(openai_server):
    probe = Probe()
    openai_server.script(slow_stream(call("lookup", {"key": "a"}, id="a"), call("pay", {"key": "p"}, id="p")), answer("ok"))
    state = await run(openai_server, probe.registry)
    stream_end = openai_server.stream_ended_at[0]
    assert probe.started["a"] < stream_end - 0.5
    assert probe.started["p"] >= stream_end
    assert {r["id"]: r["speculative"] for r in state["results"]} == {"a": True, "p": False}


async def test_the_switch_turns_speculation_off(openai_server):
    probe = Probe()
    openai_server.script(slow_stream(call("lookup", {"key": "a"}, id="a")), answer("ok"))
    state = await run(openai_server, probe.registry, speculative=False)
    assert probe.started["a"] >= openai_server.stream_ended_at[0]
    assert state["results"][0]["speculative"] is False


async def test_a_turn_that_fails_validation_cancels_what_it_started(openai_server):
    probe = Probe(seconds=5)
    bad = call("lookup", {"key": 42}, id="bad")
    openai_server.script(slow_stream(call("lookup", {"key": "a"}, id="a"), bad, tail_s=0.3), answer("gave up"))
    state = await run(openai_server, probe.registry, max_retries=0)
    await asyncio.sleep(0.05)
    assert probe.cancelled == ["a"] and probe.finished == []
    assert [(r["id"], r["status"], r["speculative"]) for r in state["results"]] == [("a", "cancelled", True)]
    assert state["failure"]["reason"] == "retry_budget_exhausted"


async def test_a_broken_stream_cancels_what_it_started(openai_server):
    probe = Probe(seconds=5)
    openai_server.script(ScriptedReply(tool_calls=[call("lookup", {"key": "a"}, id="a")], fail_mid_stream=True, tail_delay_s=0.3))
    state = await run(openai_server, probe.registry)
    await asyncio.sleep(0.05)
    assert probe.cancelled == ["a"]
    assert state["failure"]["reason"] == "model_error"
    assert [(r["id"], r["status"]) for r in state["results"]] == [("a", "cancelled")]


def test_changed_arguments_are_not_reused():
    async def scenario():
        probe = Probe(seconds=5)
        speculation = Speculation(CallExecutor())
        tool = probe.registry.get("lookup")
        assert speculation.start("t", "c1", tool, {"key": "a"})
        await asyncio.sleep(0.01)
        assert speculation.take("t", "c1", {"key": "b"}) is None
        await asyncio.sleep(0.01)
        return probe

    assert asyncio.run(scenario()).cancelled == ["a"]


def _fan_out_registry(in_flight: list[int], peak: list[int], sync: bool, cap: int) -> ToolRegistry:
    """Calls hold their slot until `cap` of them run at once (or 5 s pass), so reaching the cap
    does not depend on how fast threads start on a loaded machine."""
    lock = threading.Lock()
    full = threading.Event()
    registry = ToolRegistry()

    def enter():
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            if in_flight[0] >= cap:
                full.set()

    def leave():
        with lock:
            in_flight[0] -= 1

    if sync:
        def work(n: int) -> int:
            enter()
            full.wait(5)
            time.sleep(0.01)
            leave()
            return n
    else:
        async def work(n: int) -> int:
            enter()
            while not full.is_set() and time.perf_counter() - started < 5:
                await asyncio.sleep(0.005)
            leave()
            return n

        started = time.perf_counter()

    registry.register(work, name="work", description="Some work.")
    return registry


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("cap", [100, 10])
async def test_a_hundred_calls_fan_out_under_the_concurrency_cap(openai_server, sync, cap):
    in_flight, peak = [0], [0]
    registry = _fan_out_registry(in_flight, peak, sync, cap)
    openai_server.script(calls(*[call("work", {"n": i}, id=f"w{i}") for i in range(100)]), answer("done"))
    ticks = []

    async def heartbeat():
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.02)

    beat = asyncio.create_task(heartbeat())
    state = await run(openai_server, registry, max_concurrency=cap, speculative=False)
    beat.cancel()
    assert len(state["results"]) == 100 and {r["status"] for r in state["results"]} == {"ok"}
    assert peak[0] == cap, f"peak concurrency {peak[0]} should reach the cap {cap}"
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) < 1.0, "sync tools must not block the event loop"
    sent_back = [m for m in openai_server.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in sent_back] == [f"w{i}" for i in range(100)]


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_by_default_async_calls_all_run_at_once_and_sync_calls_share_the_thread_pool(openai_server, sync):
    in_flight, peak = [0], [0]
    expected_peak = DEFAULT_MAX_THREADS if sync else 100
    registry = _fan_out_registry(in_flight, peak, sync, expected_peak)
    openai_server.script(calls(*[call("work", {"n": i}, id=f"w{i}") for i in range(100)]), answer("done"))
    state = await run(openai_server, registry, speculative=False)
    assert [r["id"] for r in state["results"]] == [f"w{i}" for i in range(100)]
    assert {r["status"] for r in state["results"]} == {"ok"}
    assert peak[0] == expected_peak
