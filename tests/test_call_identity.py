"""Call ids that cannot collide: the ledger never hands one call another call's result.

Several OpenAI-compatible servers send tool calls without ids (or number them the same way in
every turn); some repeat one id within a turn. Over the real wire, with the default ledger a
SQLite checkpointer brings with it.
"""

from __future__ import annotations

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from conftest import client_for
from toolrail.graphs.agent import build_graph
from toolrail.testing.openai_server import ScriptedReply, answer, call
from toolrail.tools.registry import ToolRegistry


def charging_tools(charged: list[str]) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.register(side_effects=True)
    def charge(order: str) -> str:
        """Charge an order.

        Args:
            order: Order id.
        """
        charged.append(order)
        return f"charged {order}"

    return tools


def results_seen_by_model(request: dict) -> dict[str, str]:
    """Each tool result of the request, named by the order its call charged."""
    orders = {}
    for message in request["messages"]:
        for tool_call in message.get("tool_calls") or []:
            orders[tool_call["id"]] = tool_call["function"]["arguments"]
    import json

    return {json.loads(orders[m["tool_call_id"]])["order"]: m["content"] for m in request["messages"] if m["role"] == "tool"}


async def test_calls_without_ids_in_every_turn_and_every_run_each_run_and_get_their_own_result(openai_server, streaming, tmp_path):
    charged: list[str] = []
    no_ids = dict(omit_ids=True)
    openai_server.script(
        ScriptedReply(tool_calls=[call("charge", {"order": "order-1"})], **no_ids),
        ScriptedReply(tool_calls=[call("charge", {"order": "order-2"})], **no_ids),
        answer("first done"),
        ScriptedReply(tool_calls=[call("charge", {"order": "order-3"})], **no_ids),
        answer("second done"),
    )
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "runs.sqlite")) as saver:
        graph = build_graph(model=client_for(openai_server, streaming=streaming), tools=charging_tools(charged), checkpointer=saver)
        config = {"configurable": {"thread_id": "same-thread"}}
        await graph.ainvoke({"messages": [("user", "charge two orders")]}, config)
        state = await graph.ainvoke({"messages": [("user", "and a third")]}, config)

    assert charged == ["order-1", "order-2", "order-3"]  # nothing answered from another call's ledger row
    assert results_seen_by_model(openai_server.requests[2]) == {"order-1": "charged order-1", "order-2": "charged order-2"}
    assert results_seen_by_model(openai_server.requests[4])["order-3"] == "charged order-3"
    ids = [r["id"] for r in state["results"]]
    assert len(set(ids)) == 3 and all(ids)
    assert (tmp_path / "runs-side-effects.sqlite").exists(), "the default ledger sits beside the SQLite checkpoints"


async def test_one_id_repeated_within_a_turn_runs_both_calls_and_the_model_can_tell_them_apart(openai_server, streaming):
    from langgraph.checkpoint.memory import InMemorySaver

    charged: list[str] = []
    openai_server.script(
        ScriptedReply(tool_calls=[call("charge", {"order": "A"}, id="dup"), call("charge", {"order": "B"}, id="dup")]),
        answer("done"),
    )
    graph = build_graph(model=client_for(openai_server, streaming=streaming), tools=charging_tools(charged), checkpointer=InMemorySaver())
    state = await graph.ainvoke({"messages": [("user", "charge A and B")]}, {"configurable": {"thread_id": "t"}})

    assert sorted(charged) == ["A", "B"]
    follow_up = openai_server.requests[1]
    sent_ids = [c["id"] for m in follow_up["messages"] for c in m.get("tool_calls") or []]
    assert len(set(sent_ids)) == 2 and "dup" in sent_ids  # the first keeps the provider's id
    assert results_seen_by_model(follow_up) == {"A": "charged A", "B": "charged B"}
    # results carry status and timing; each call's output is its ToolMessage
    assert not any("Outcome unknown" in str(m.content) for m in state["messages"] if m.type == "tool")


async def test_the_ledger_reuses_a_row_only_for_the_same_tool_and_arguments(tmp_path):
    from toolrail.execution import Outcome
    from toolrail.ledger import UNKNOWN, SqliteSideEffectLedger

    ledger = SqliteSideEffectLedger(tmp_path / "effects.sqlite")
    ran: list[str] = []

    def charging(order: str):
        async def run() -> Outcome:
            ran.append(order)
            return Outcome("ok", f"charged {order}", 0.0, 0.1)
        return run

    first = await ledger.run_once("t", "call_0", "charge", {"order": "1"}, charging("1"))
    same_id_other_call = await ledger.run_once("t", "call_0", "charge", {"order": "2"}, charging("2"))
    same_id_other_tool = await ledger.run_once("t", "call_0", "refund", {"order": "1"}, charging("r1"))
    the_same_call_again = await SqliteSideEffectLedger(tmp_path / "effects.sqlite").run_once("t", "call_0", "charge", {"order": "1"}, charging("1"))
    assert ran == ["1", "2", "r1"]
    assert (first.content, same_id_other_call.content, the_same_call_again.content) == ("charged 1", "charged 2", "charged 1")

    from toolrail.ledger import fingerprint

    await ledger.claim("t", "call_9", fingerprint("charge", {"order": "9"}), "charge")  # started, then the process died
    unknown = await ledger.run_once("t", "call_9", "charge", {"order": "9"}, charging("9"))
    assert unknown.content == UNKNOWN and "9" not in ran


def test_side_effecting_tools_without_a_ledger_toolrail_can_place_are_refused_at_build_time():
    from langgraph.checkpoint.base import BaseCheckpointSaver

    class CustomSaver(BaseCheckpointSaver):
        pass

    with pytest.raises(ValueError, match="need a ledger"):
        build_graph(tools=charging_tools([]), checkpointer=CustomSaver())
