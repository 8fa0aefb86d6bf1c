"""ordered: the turn's sequential calls, one after another in the model's order.

Some calls must not run at once ("create the ticket, then update it"): a tool marked
`sequential=True` (or every tool, with `build_graph(parallel=False)`) runs here, after the
turn's concurrent calls have finished, each call started only when the one before it ended.
Each call goes through the same runner as a concurrent one (ledger, timeout, sandbox), so a
crash mid-way resumes without repeating a finished side effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.runnables import RunnableConfig

from toolrail.nodes.approve import call_task
from toolrail.state import AgentState
from toolrail.tools.registry import ToolRegistry

Runner = Callable[[dict[str, Any], RunnableConfig], Awaitable[dict[str, Any]]]


def make_ordered(tools: ToolRegistry, runners: dict[str, Runner], rebuild_sandbox: bool = True):
    async def ordered(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        update: dict[str, Any] = {"messages": [], "results": []}
        for call in [c for c in state.get("validated_calls") or [] if c.get("sequential")]:
            done = await runners[call["target"]](call_task(call, state, tools, rebuild_sandbox), config)
            update["messages"] += done["messages"]
            update["results"] += done["results"]
        return update

    return ordered


def route_after_calls(state: AgentState) -> list[str] | str:
    """After a concurrent call: wait while a person decides (the approve node continues the
    turn), run the sequential calls next, or go back to the planner."""
    calls = state.get("validated_calls") or []
    if any(c.get("approval") for c in calls):
        return []
    if any(c.get("sequential") for c in calls):
        return "ordered"
    return "planner"
