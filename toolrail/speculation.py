"""Speculative dispatch: start a call the moment its arguments finish streaming.

The planner starts calls here while the model is still generating; the tools node later
*takes* the running task instead of starting the call again. A turn that is discarded (the
stream breaks, or the turn fails validation) cancels what it started. Tasks live in this
process only: after a crash, resume simply runs the calls again through the tools node.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from dataclasses import dataclass
from typing import Any

from toolrail.execution import CallExecutor, Outcome
from toolrail.state import CallResult, RawCall
from toolrail.tools.registry import Tool


@dataclass
class _Started:
    args: dict[str, Any]
    task: asyncio.Task[Outcome]


class Speculation:
    """In-flight speculative calls, keyed by (thread id, tool call id)."""

    def __init__(self, executor: CallExecutor, enabled: bool = True):
        self.executor, self.enabled = executor, enabled
        self._running: dict[tuple[str, str], _Started] = {}

    def start(self, thread: str, call_id: str, tool: Tool, args: dict[str, Any], within: float = float("inf")) -> bool:
        """Start `tool(args)` now, if speculation is on and the tool allows it (`within`: seconds
        left before the run's deadline, which the call may not outlive)."""
        if not self.enabled or not tool.speculative or tool.side_effects or (thread, call_id) in self._running:
            return False
        # A fresh context: the call must not inherit the planner's callbacks or stream writer.
        task = asyncio.get_running_loop().create_task(
            self.executor.execute(tool, args, call_id, speculative=True, within=within), context=contextvars.Context()
        )
        self._running[(thread, call_id)] = _Started(args, task)
        return True

    def take(self, thread: str, call_id: str, args: dict[str, Any]) -> asyncio.Task[Outcome] | None:
        """The running task for this call, if it was started with exactly these arguments."""
        started = self._running.pop((thread, call_id), None)
        if started is None:
            return None
        if _same(started.args, args):
            return started.task
        started.task.cancel()
        return None

    def cancel_turn(self, thread: str, calls: list[RawCall], why: str) -> list[CallResult]:
        """Cancel what a discarded turn started, leaving a trace of it for `results`."""
        outcome = Outcome("cancelled", f"Cancelled: started speculatively, but {why}", time.time(), 0.0)
        results = []
        for call in calls:
            started = self._running.pop((thread, call["id"]), None)
            if started is not None:
                started.task.cancel()
                results.append(outcome.as_result(call, speculative=True))
        return results


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def thread_of(config: Any) -> str:
    return str(((config or {}).get("configurable") or {}).get("thread_id", ""))
