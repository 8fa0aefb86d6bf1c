"""Each call is validated once on its way to its tool, streamed or not, speculative or not."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel, model_validator

from conftest import client_for
from toolrail.graphs.agent import build_graph
from toolrail.testing.openai_server import answer, call, calls
from toolrail.tools.registry import ToolRegistry

VALIDATIONS: list[str] = []


class LookupArgs(BaseModel):
    key: str

    @model_validator(mode="after")
    def count(self):
        VALIDATIONS.append(self.key)
        return self


@pytest.mark.parametrize("speculative", [True, False], ids=["speculative", "dispatched"])
@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_every_call_is_validated_exactly_once_before_its_tool_runs(openai_server, streaming, speculative, sync):
    VALIDATIONS.clear()
    registry, ran = ToolRegistry(), []
    if sync:
        def lookup(key: str) -> str:
            ran.append(key)
            return f"value {key}"
    else:
        async def lookup(key: str) -> str:
            ran.append(key)
            return f"value {key}"
    registry.register(lookup, name="lookup", description="Look up a key.", args_model=LookupArgs)
    openai_server.script(calls(*[call("lookup", {"key": k}, id=f"c{k}") for k in "abc"]), answer("done"))
    graph = build_graph(model=client_for(openai_server, streaming=streaming), tools=registry,
                        checkpointer=InMemorySaver(), speculative=speculative)
    state = await graph.ainvoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    assert sorted(ran) == ["a", "b", "c"] and state["messages"][-1].content == "done"
    assert sorted(VALIDATIONS) == ["a", "b", "c"], f"validations: {VALIDATIONS}"


FAST_PATH_REFUSES = {
    "NaN": '{"key": NaN}',
    "duplicate key": '{"key": "a", "key": "b"}',
    "10,000 deep": '{"key": ' + "[" * 10_000 + "]" * 10_000 + "}",
    "over 1 MiB": '{"key": "' + "x" * (1 << 20) + '"}',
}


@pytest.mark.parametrize("case", list(FAST_PATH_REFUSES))
def test_the_planners_own_check_of_its_reply_refuses_what_the_validate_node_refuses(case):
    """A valid turn skips the validate node (the planner checks its own reply), so that check must
    apply the same argument limits and strict JSON: such a turn goes to the validate node instead."""
    from toolrail.nodes.validate import _check, valid_turn
    from toolrail.speculation import Speculation

    registry = ToolRegistry()
    registry.register(lambda key: key, name="lookup", description="Look up a key.", args_model=LookupArgs)
    bad = {"id": "call_bad", "name": "lookup", "arguments": FAST_PATH_REFUSES[case]}
    good = {"id": "call_good", "name": "lookup", "arguments": '{"key": "k"}'}
    assert valid_turn(registry, Speculation(None, enabled=False), [good, bad], turn=1) is None
    assert _check(registry, bad)[1] is not None  # and the validate node words the error
    assert valid_turn(registry, Speculation(None, enabled=False), [good], turn=1)["validated_calls"][0]["id"] == "call_good"
