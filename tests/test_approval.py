"""A person decides before a tool acts: approve, edit, reject — driven from code with
`Command(resume=...)`, over the real wire, with real checkpointers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from conftest import client_for
from toolrail.checkpoints import open_checkpointer
from toolrail.graphs.agent import build_graph
from toolrail.testing.openai_server import answer, call, calls
from toolrail.tools.registry import ToolRegistry

CONFIG = {"configurable": {"thread_id": "t"}}


class Payments:
    """A side-effecting `pay` (a marker file per payment proves whether it ran) and a free `lookup`."""

    def __init__(self, folder: Path, **pay_options):
        self.folder = folder
        self.registry = ToolRegistry()
        self.lookups: list[str] = []

        @self.registry.register(side_effects=True, **({"requires_approval": True} | pay_options))
        def pay(to: str, amount: int) -> str:
            """Pay someone (a side effect).

            Args:
                to: Who is paid.
                amount: How much, in dollars.
            """
            marker = folder / f"paid-{to}-{amount}"
            assert not marker.exists(), "paid twice"
            marker.write_text("paid")
            return f"paid {to} ${amount}"

        @self.registry.register
        async def lookup(key: str) -> str:
            """Look something up.

            Args:
                key: What to look up.
            """
            self.lookups.append(key)
            return f"value of {key}"

    def paid(self) -> list[str]:
        return sorted(p.name for p in self.folder.glob("paid-*"))


def graph_for(server, tools, checkpointer=None, **options):
    return build_graph(model=client_for(server), tools=tools, checkpointer=checkpointer or InMemorySaver(), **options)


def pending(result) -> dict:
    (only,) = result["__interrupt__"]
    assert only.value["type"] == "tool_approval"
    return only.value


async def test_a_call_needing_approval_waits_for_the_answer_while_free_calls_run_at_once(openai_server, tmp_path):
    shop = Payments(tmp_path)
    # the pay call's arguments are complete ~1 s before the stream ends: speculation would start it
    openai_server.script(
        calls(call("pay", {"to": "bob", "amount": 5}, id="p1"), call("lookup", {"key": "k"}, id="l1"), tail_delay_s=1.0),
        answer("Paid."),
    )
    graph = graph_for(openai_server, shop.registry)
    first = await graph.ainvoke({"messages": [("user", "pay bob")]}, CONFIG)
    question = pending(first)
    assert question["calls"] == [{"id": "p1", "name": "pay", "args": {"to": "bob", "amount": 5}, "reason": "pay requires approval"}]
    assert shop.paid() == [], "nothing is paid before the person answers"
    assert shop.lookups == ["k"], "the call that needs no approval ran at once"
    assert len(openai_server.requests) == 1, "the model is not asked again while a person decides"

    done = await graph.ainvoke(Command(resume={"decisions": {"p1": {"type": "approve"}}, "by": "alice"}), CONFIG)
    assert shop.paid() == ["paid-bob-5"] and shop.lookups == ["k"]
    assert done["messages"][-1].content == "Paid."
    sent_back = {m["tool_call_id"]: m["content"] for m in openai_server.requests[1]["messages"] if m["role"] == "tool"}
    assert sent_back == {"p1": "paid bob $5", "l1": "value of k"}
    assert [(d["id"], d["decision"], d["by"]) for d in done["decisions"]] == [("p1", "approve", "alice")]
    assert [r["speculative"] for r in done["results"] if r["name"] == "pay"] == [False]


async def test_a_rejected_call_never_runs_and_the_model_reads_why(openai_server, tmp_path):
    shop = Payments(tmp_path)
    openai_server.script(calls(call("pay", {"to": "eve", "amount": 900}, id="p1")), answer("Understood, not paying."))
    graph = graph_for(openai_server, shop.registry)
    pending(await graph.ainvoke({"messages": [("user", "pay eve")]}, CONFIG))
    done = await graph.ainvoke(Command(resume={"decisions": [{"type": "reject", "message": "eve is not a customer"}]}), CONFIG)
    assert shop.paid() == []
    (tool_message,) = [m for m in openai_server.requests[1]["messages"] if m["role"] == "tool"]
    assert "Rejected by a person" in tool_message["content"] and "eve is not a customer" in tool_message["content"]
    assert done["messages"][-1].content == "Understood, not paying."
    assert done["decisions"][0]["decision"] == "reject" and done["decisions"][0]["message"] == "eve is not a customer"


async def test_an_edit_is_validated_an_invalid_one_is_refused_back_and_never_runs(openai_server, tmp_path):
    shop = Payments(tmp_path)
    openai_server.script(calls(call("pay", {"to": "bob", "amount": 500}, id="p1")), answer("Paid a smaller amount."))
    graph = graph_for(openai_server, shop.registry)
    pending(await graph.ainvoke({"messages": [("user", "pay bob")]}, CONFIG))

    # LangChain's HITL middleware shape, `edited_action`, is understood too
    refused = await graph.ainvoke(Command(resume={"decisions": [{"type": "edit", "edited_action": {"name": "pay", "args": {"to": "bob", "amount": "fifty"}}}]}), CONFIG)
    again = pending(refused)
    assert shop.paid() == []
    assert len(again["errors"]) == 1 and "amount: Input should be a valid integer" in again["errors"][0]
    assert again["calls"][0]["args"] == {"to": "bob", "amount": 500}, "the same question, with the error"

    done = await graph.ainvoke(Command(resume={"decisions": {"p1": {"type": "edit", "args": {"to": "bob", "amount": 50}}}}), CONFIG)
    assert shop.paid() == ["paid-bob-50"]
    history_call = next(m for m in openai_server.requests[1]["messages"] if m["role"] == "assistant")["tool_calls"][0]
    assert json.loads(history_call["function"]["arguments"]) == {"to": "bob", "amount": 50}, "the model sees the call that ran"
    assert done["decisions"][0]["edited_args"] == {"to": "bob", "amount": 50}


async def test_an_approval_rule_decides_from_the_validated_arguments(openai_server, tmp_path):
    shop = Payments(tmp_path, requires_approval=lambda args: args["amount"] > 100 and f"amount ${args['amount']} is over $100")
    openai_server.script(calls(call("pay", {"to": "a", "amount": 20}, id="small"), call("pay", {"to": "b", "amount": 200}, id="big")), answer("ok"))
    graph = graph_for(openai_server, shop.registry)
    question = pending(await graph.ainvoke({"messages": [("user", "pay")]}, CONFIG))
    assert [(c["id"], c["reason"]) for c in question["calls"]] == [("big", "amount $200 is over $100")]
    assert shop.paid() == ["paid-a-20"]
    await graph.ainvoke(Command(resume={"decisions": {"big": "approve"}}), CONFIG)
    assert shop.paid() == ["paid-a-20", "paid-b-200"]


@pytest.mark.parametrize(("approval", "asked"), [
    ("side_effects", [("pay", "pay has side effects")]),
    ("all", [("pay", "every tool call requires approval (approval='all')"), ("lookup", "every tool call requires approval (approval='all')")]),
    (["lookup"], [("lookup", "lookup is on the approval list")]),
    (lambda tool, args: tool.name == "lookup" and f"looking up {args['key']}", [("lookup", "looking up k")]),
], ids=["side-effects", "all", "names", "callable"])
async def test_build_graph_can_require_approval_for_more_tools(openai_server, tmp_path, approval, asked):
    shop = Payments(tmp_path, requires_approval=False)
    openai_server.script(calls(call("pay", {"to": "a", "amount": 1}, id="p"), call("lookup", {"key": "k"}, id="l")), answer("ok"))
    graph = graph_for(openai_server, shop.registry, approval=approval)
    question = pending(await graph.ainvoke({"messages": [("user", "pay")]}, CONFIG))
    assert [(c["name"], c["reason"]) for c in question["calls"]] == asked


async def test_a_crash_while_waiting_resumes_into_the_same_question(openai_server, tmp_path):
    shop = Payments(tmp_path)
    openai_server.script(calls(call("pay", {"to": "bob", "amount": 5}, id="p1")), answer("Paid."))
    db = str(tmp_path / "runs.sqlite")
    async with open_checkpointer(db) as saver:
        asked = pending(await graph_for(openai_server, shop.registry, saver).ainvoke({"messages": [("user", "pay")]}, CONFIG))
    # the process is gone; another one opens the same checkpoints and continues the thread
    async with open_checkpointer(db) as saver:
        graph = graph_for(openai_server, shop.registry, saver)
        asked_again = pending(await graph.ainvoke(None, CONFIG))
        assert asked_again == asked and shop.paid() == []
        await graph.ainvoke(Command(resume={"decisions": {"p1": "approve"}}), CONFIG)
    assert shop.paid() == ["paid-bob-5"]


async def test_a_missing_or_unknown_decision_is_refused_back(openai_server, tmp_path):
    shop = Payments(tmp_path)
    openai_server.script(calls(call("pay", {"to": "bob", "amount": 5}, id="p1")), answer("ok"))
    graph = graph_for(openai_server, shop.registry)
    pending(await graph.ainvoke({"messages": [("user", "pay")]}, CONFIG))
    again = pending(await graph.ainvoke(Command(resume={"decisions": {"p9": "approve"}}), CONFIG))
    assert any("p9: no such call" in e for e in again["errors"]) and any("p1 (pay): no decision given" in e for e in again["errors"])
    assert shop.paid() == []


async def test_a_run_can_ask_for_approval_through_its_config(openai_server, tmp_path):
    """How a LangGraph server client or Studio turns approval on for one run, without rebuilding the graph."""
    shop = Payments(tmp_path, requires_approval=False)
    openai_server.script(
        calls(call("lookup", {"key": "k"}, id="l1"), tail_delay_s=0.5), answer("ok"),
    )
    graph = graph_for(openai_server, shop.registry)
    config = {"configurable": {"thread_id": "t", "approve_tools": ["lookup"]}}
    question = pending(await graph.ainvoke({"messages": [("user", "look")]}, config))
    assert [(c["name"], c["reason"]) for c in question["calls"]] == [("lookup", "lookup is on the approval list")]
    assert shop.lookups == [], "not even started speculatively"
    await graph.ainvoke(Command(resume={"decisions": {"l1": "approve"}}), config)
    assert shop.lookups == ["k"]


async def test_a_call_waiting_for_approval_is_not_in_the_ledger_and_an_ordered_one_waits_too(openai_server, tmp_path):
    from toolrail.ledger import SqliteSideEffectLedger
    import sqlite3

    shop = Payments(tmp_path)
    ledger = SqliteSideEffectLedger(tmp_path / "effects.sqlite")
    openai_server.script(calls(call("pay", {"to": "a", "amount": 1}, id="p1"), call("pay", {"to": "b", "amount": 2}, id="p2")), answer("ok"))
    graph = graph_for(openai_server, shop.registry, ledger=ledger, parallel=False)
    question = pending(await graph.ainvoke({"messages": [("user", "pay")]}, CONFIG))
    assert [c["id"] for c in question["calls"]] == ["p1", "p2"]
    ledger.check()  # the ledger opens its file on first use: open it, so its table is there to read
    rows = sqlite3.connect(tmp_path / "effects.sqlite").execute("SELECT call_id FROM toolrail_call_ledger").fetchall()
    assert rows == [], "nothing is claimed as started before the decision"
    done = await graph.ainvoke(Command(resume={"decisions": {"p1": "approve", "p2": {"type": "reject", "message": "no"}}}), CONFIG)
    assert shop.paid() == ["paid-a-1"]
    assert [r["id"] for r in done["results"]] == ["p1"]
    rows = sqlite3.connect(tmp_path / "effects.sqlite").execute("SELECT call_id, state FROM toolrail_call_ledger").fetchall()
    assert rows == [("p1", "finished")]


async def test_a_side_effecting_tool_that_asks_with_interrupt_runs_once_after_the_answer(openai_server, tmp_path):
    from langgraph.types import interrupt

    from toolrail.ledger import SqliteSideEffectLedger

    tools, ran = ToolRegistry(), []

    @tools.register(side_effects=True)
    def send_email(to: str) -> str:
        """Send an email after confirming.

        Args:
            to: Recipient.
        """
        if interrupt(f"send to {to}?") != "yes":
            return "not sent"
        ran.append(to)
        return f"sent to {to}"

    openai_server.script(calls(call("send_email", {"to": "x@y.z"}, id="e1")), answer("ok"))
    graph = graph_for(openai_server, tools, ledger=SqliteSideEffectLedger(tmp_path / "effects.sqlite"))
    paused = await graph.ainvoke({"messages": [("user", "mail")]}, CONFIG)
    assert paused["__interrupt__"][0].value == "send to x@y.z?" and ran == []
    done = await graph.ainvoke(Command(resume="yes"), CONFIG)
    assert ran == ["x@y.z"] and output_of(done, done["results"][0]) == "sent to x@y.z", "the claim was released, not reported unknown"


def test_a_per_run_setting_that_cannot_be_read_asks_for_every_call():
    from toolrail.approval import ApprovalPolicy

    lookup = Payments(Path("/nonexistent")).registry.get("lookup")
    policy = ApprovalPolicy()
    assert policy.reason(lookup, {"key": "k"}) is None
    assert policy.reason(lookup, {"key": "k"}, "lookup, other") == "lookup is on the approval list"
    assert "every call is asked" in policy.reason(lookup, {"key": "k"}, {"lookup": True})


def output_of(state: dict, result: dict) -> str:
    """A call's output: its ToolMessage (results carry status and timing, not the content)."""
    return next(str(m.content) for m in state["messages"] if getattr(m, "tool_call_id", None) == result["id"])


async def test_a_tool_that_asks_pauses_its_turn_without_running_the_turns_other_calls_again(openai_server, tmp_path):
    """The turn's tools calls share one task: the one that asks pauses it, the others finish
    first and are journaled, and on resume only the asking call runs again."""
    from langgraph.types import interrupt

    from toolrail.ledger import SqliteSideEffectLedger

    tools, looked = ToolRegistry(), []

    @tools.register(speculative=False)
    def confirm(what: str) -> str:
        """Ask a person to confirm.

        Args:
            what: What to confirm.
        """
        return f"{what}: {interrupt(f'confirm {what}?')}"

    @tools.register(speculative=False)
    def lookup(name: str) -> str:
        """Look someone up.

        Args:
            name: Who.
        """
        looked.append(name)
        return f"{name} found"

    openai_server.script(calls(call("confirm", {"what": "trip"}, id="c1"), call("lookup", {"name": "bob"}, id="l1")), answer("ok"))
    graph = graph_for(openai_server, tools, ledger=SqliteSideEffectLedger(tmp_path / "effects.sqlite"))
    paused = await graph.ainvoke({"messages": [("user", "go")]}, CONFIG)
    assert paused["__interrupt__"][0].value == "confirm trip?" and looked == ["bob"]
    done = await graph.ainvoke(Command(resume="yes"), CONFIG)
    assert looked == ["bob"], "the finished call was taken from the journal, not run again"
    assert {r["id"]: output_of(done, r) for r in done["results"]} == {"c1": "trip: yes", "l1": "bob found"}
