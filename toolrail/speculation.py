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

from toolrail.execution import AskedDuringSpeculation, CallExecutor, Outcome, ValidatedArgs
from toolrail.state import CallResult, RawCall
from toolrail.tools.registry import Tool


@dataclass
class _Started:
    args: dict[str, Any]
    task: asyncio.Task[Outcome]


class Speculation:
    """In-flight speculative calls, keyed by (thread id, tool call id)."""

    def __init__(self, executor: CallExecutor, enabled: bool = True, hold: Any = None):
        self.executor, self.enabled = executor, enabled
        # hold(tool, args) -> truthy: the call waits for the graph (e.g. a person must approve it first)
        self.hold = hold
        self._running: dict[tuple[str, str], _Started] = {}
        # Validated models from the validate node to the tools node (one validation per call).
        self.validated = ValidatedArgs()

    def start(self, thread: str, call_id: str, tool: Tool, args: dict[str, Any], validated: Any = None,
              within: float = float("inf")) -> bool:
        """Start `tool(args)` now, if speculation is on and the tool allows it (`within`: seconds
        left before the run's deadline, which the call may not outlive)."""
        if not self.enabled or not tool.speculative or tool.side_effects or (thread, call_id) in self._running:
            return False
        if self.hold is not None and self.hold(tool, args):
            return False
        task = asyncio.get_running_loop().create_task(
            self.executor.execute(tool, args, call_id, speculative=True, validated=validated, within=within),
            context=_speculative_context()
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


class _NoQuestionsWhileSpeculating:
    """Stands in for LangGraph's task scratchpad: `interrupt()` in a speculative call defers it."""

    resume: list[Any] = []

    def interrupt_counter(self) -> int:
        raise AskedDuringSpeculation()

    def get_null_resume(self, consume: bool = False) -> None:
        raise AskedDuringSpeculation()


def _speculative_context() -> contextvars.Context:
    """The context a speculative call runs in: the planner's runtime, nothing else.

    `get_stream_writer()`, `get_store()` and `get_runtime()` work as in a node (the runtime is
    the planner's, so custom stream events arrive while the model still streams); the planner's
    callbacks are left out, so its model run is not the parent of a call that outlives it; and
    `interrupt()` cannot borrow the planner's scratchpad: it defers the call to its tools task.
    """
    from langchain_core.runnables.config import var_child_runnable_config
    from langgraph._internal._constants import CONFIG_KEY_RUNTIME, CONFIG_KEY_SCRATCHPAD

    context = contextvars.Context()
    planner = var_child_runnable_config.get() or {}
    configurable = planner.get("configurable") or {}
    if CONFIG_KEY_RUNTIME in configurable:
        kept = {key: configurable[key] for key in ("thread_id", "checkpoint_ns", CONFIG_KEY_RUNTIME) if key in configurable}
        kept[CONFIG_KEY_SCRATCHPAD] = _NoQuestionsWhileSpeculating()
        context.run(var_child_runnable_config.set, {"configurable": kept})
    return context


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def thread_of(config: Any) -> str:
    return str(((config or {}).get("configurable") or {}).get("thread_id", ""))
