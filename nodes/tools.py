"""tools: run one validated call (LangGraph `Send` starts one task per call, all at once).

Reads the task's `call`; writes one ToolMessage and one timed `results` entry. A tool that
raises or times out yields an error message; the other calls' tasks are unaffected.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from langchain_core.messages import ToolMessage

from toolrail.state import CallResult, CallTask, ValidatedCall
from toolrail.tools.registry import ToolRegistry

DEFAULT_TOOL_TIMEOUT_S = 30.0


def make_tool_runner(tools: ToolRegistry, default_timeout: float = DEFAULT_TOOL_TIMEOUT_S):
    async def run_tool(task: CallTask) -> dict[str, Any]:
        call = task["call"]
        tool = tools.get(call["name"])
        timeout = tool.timeout or default_timeout
        started, clock = time.time(), time.perf_counter()
        try:
            output = await asyncio.wait_for(tool.run(tool.validate(call["args"])), timeout)
            status, content = "ok", render_output(output)
        except asyncio.TimeoutError:
            status, content = "timeout", f"Error: {call['name']} timed out after {timeout:g}s"
        except Exception as exc:  # a failing tool must not take the turn down
            status, content = "error", f"Error: {call['name']} raised {type(exc).__name__}: {exc}"
        return tool_outcome(call, status, content, started, time.perf_counter() - clock)

    return run_tool


def tool_outcome(call: ValidatedCall, status: str, content: str, started: float, duration: float, speculative: bool = False) -> dict[str, Any]:
    """The state update every executing node returns for one call."""
    result = CallResult(
        id=call["id"], name=call["name"], status=status, content=content,
        started_at=started, duration_s=round(duration, 6), speculative=speculative,
    )
    message = ToolMessage(
        content=content, tool_call_id=call["id"], name=call["name"],
        status="success" if status == "ok" else "error",
    )
    return {"messages": [message], "results": [result]}


def render_output(output: Any) -> str:
    if isinstance(output, str):
        return output
    return json.dumps(output, default=str, ensure_ascii=False)
