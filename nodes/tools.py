"""tools: run one validated call (LangGraph `Send` starts one task per call, all at once).

Reads the task's `call`; writes one ToolMessage and one timed `results` entry. If the planner
already started this call speculatively, the running task is awaited instead of starting the
call again; a side-effecting call goes through the ledger, so it never runs twice. A tool that raises or times out yields an error message; other calls' tasks are
unaffected.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig

from toolrail.calls import wire_id
from toolrail.execution import AskedDuringSpeculation, CallExecutor, Outcome
from toolrail.ledger import SideEffectLedger
from toolrail.limits import deadline_at, seconds_left
from toolrail.speculation import Speculation, thread_of
from toolrail.state import CallTask, ValidatedCall
from toolrail.tools.registry import ToolRegistry


def make_tool_runner(tools: ToolRegistry, executor: CallExecutor, speculation: Speculation, ledger: SideEffectLedger | None = None):
    async def run_tool(task: CallTask, config: RunnableConfig) -> dict[str, Any]:
        call, thread = task["call"], thread_of(config)
        tool = tools.get(call["name"])
        running = speculation.take(thread, call["id"], call["args"])
        left = seconds_left(deadline_at(config, task.get("deadline_at")))  # no call outlives the run's deadline
        if running is not None:
            try:
                return tool_outcome(call, await running, speculative=True)
            except AskedDuringSpeculation:
                pass  # the tool called interrupt(): run it here, where the question can pause the graph
        state = task.get("state")
        if tool.side_effects and ledger is not None:
            outcome = await ledger.run_once(thread, call["id"], tool.name, call["args"],
                                            lambda: executor.execute(tool, call["args"], call["id"], state=state, within=left))
        else:
            outcome = await executor.execute(tool, call["args"], call["id"], state=state, within=left)
        return tool_outcome(call, outcome)

    return run_tool


def tool_outcome(call: ValidatedCall, outcome: Outcome, speculative: bool = False) -> dict[str, Any]:
    """The state update every executing node returns for one call."""
    message = ToolMessage(
        content=outcome.content, tool_call_id=wire_id(call), name=call["name"],
        status="success" if outcome.status == "ok" else "error",
    )
    return {"messages": [message], "results": [outcome.as_result(call, speculative)]}
