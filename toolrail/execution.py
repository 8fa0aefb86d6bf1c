"""Running one validated call: timeout, error capture, concurrency cap, thread pool for sync tools.

Both paths that start calls — the tools node and speculative dispatch — come through here, so
a call behaves the same however it was started.

Limits: sync tools run in a thread pool of `max_threads` (default 64) so they never block the
event loop; async calls are not capped by default (an `await` on the network costs no thread,
and capping it only makes a fan-out run in waves). `max_concurrency` caps every call when set.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from langgraph.errors import GraphBubbleUp
from pydantic import BaseModel

from toolrail.state import CallResult, RawCall, ValidatedCall
from toolrail.tool_retry import retry_delay
from toolrail.tools.registry import Tool

DEFAULT_TOOL_TIMEOUT_S = 30.0
DEFAULT_MAX_CONCURRENCY: int | None = None  # no cap on async calls unless asked for
DEFAULT_MAX_THREADS = 64  # threads for sync tools


@dataclass
class Outcome:
    status: str  # ok | error | timeout | cancelled
    content: str
    started_at: float
    duration_s: float
    attempts: int = 1

    def as_result(self, call: ValidatedCall | RawCall, speculative: bool = False) -> CallResult:
        """The call's timed record. Its output is not repeated here: it is the call's ToolMessage
        (checkpoints would otherwise store every tool output twice, in every checkpoint). Only a
        cancelled call, which has no ToolMessage, keeps its explanation as `content`."""
        result = CallResult(
            id=call["id"], name=call["name"], status=self.status,
            started_at=self.started_at, duration_s=round(self.duration_s, 6), speculative=speculative,
        )
        if self.status == "cancelled":
            result["content"] = self.content
        if self.attempts > 1:
            result["attempts"] = self.attempts
        return result


class CallExecutor:
    """Runs calls: sync tools on a bounded thread pool, and an optional cap on all calls at once."""

    def __init__(self, max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY, default_timeout: float = DEFAULT_TOOL_TIMEOUT_S,
                 max_threads: int | None = None):
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_threads is not None and max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {max_threads}")
        self.max_concurrency, self.default_timeout = max_concurrency, default_timeout
        # Sync tools get their own pool: the default executor has ~6 threads on a 2-core machine
        # and would quietly serialise a 100-call fan-out. Threads start lazily, as calls need them.
        # Without a thread count, a cap on calls sizes the pool too (else DEFAULT_MAX_THREADS).
        self.max_threads = max_threads or max_concurrency or DEFAULT_MAX_THREADS
        self.threads = ThreadPoolExecutor(max_workers=self.max_threads, thread_name_prefix="toolrail-tool")
        self._caps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

    def _cap(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop not in self._caps:
            self._caps[loop] = asyncio.Semaphore(self.max_concurrency)
        return self._caps[loop]

    async def execute(self, tool: Tool, args: dict[str, Any], call_id: str = "", speculative: bool = False,
                      state: dict[str, Any] | None = None, *, validated: BaseModel | None = None,
                      within: float = float("inf")) -> Outcome:
        """Run one call. `validated` is the arguments' model when the caller already has it, so
        a call is validated once on its way to the tool; without it, `args` is validated here.
        `within` (seconds left before the run's deadline) caps its timeout."""
        if self.max_concurrency is None:
            return await self._execute(tool, args, call_id, speculative, validated, state, within)
        async with self._cap():
            return await self._execute(tool, args, call_id, speculative, validated, state, within)

    async def _execute(self, tool: Tool, args: dict[str, Any], call_id: str, speculative: bool, validated: BaseModel | None,
                       state: dict[str, Any] | None = None, within: float = float("inf")) -> Outcome:
        timeout = min(tool.timeout or self.default_timeout, max(within, 0.0))
        trace = {  # names and metadata for LangSmith; ignored when tracing is off
            "run_name": f"tool:{tool.name}", "tags": ["toolrail", "speculative" if speculative else "dispatched"],
            "metadata": {"tool": tool.name, "call_id": call_id, "speculative": speculative, "side_effects": tool.side_effects},
        }
        started, clock = time.time(), time.perf_counter()
        for attempt in range(1, tool.retries + 2):  # retries only on idempotent tools (tool_retry.py)
            try:
                async with asyncio.timeout(timeout):
                    output = await tool.run(validated if validated is not None else tool.validate(args), self.threads, trace, call_id, state)
                status, content = "ok", render_output(output)
                break
            except TimeoutError:
                status, content = "timeout", f"Error: {tool.name} timed out after {timeout:g}s"
            except (asyncio.CancelledError, GraphBubbleUp, AskedDuringSpeculation):
                # LangGraph's control flow (an `interrupt()` in the tool, a Command to the parent)
                # is not a tool error: it must reach the graph.
                raise
            except Exception as exc:  # a failing tool must not take the turn down
                status, content = "error", f"Error: {tool.name} raised {type(exc).__name__}: {exc}"
            if attempt <= tool.retries:
                await asyncio.sleep(retry_delay(attempt))
        if attempt > 1 and status != "ok":
            content += f" (after {attempt} attempts)"
        return Outcome(status, content, started, time.perf_counter() - clock, attempts=attempt)


class ValidatedArgs:
    """The validated model of each call's `args`, from the validate node to the tools node.

    State carries `args` as plain JSON (checkpoints need that); the tools node would otherwise
    have to validate them again to get typed values. Keyed by the identity of the `args` dict
    that travels from state into the tools task: after a resume (or anything else that made a
    new dict) there is no entry and the call is simply validated again. Bounded, so a turn whose
    tools never run cannot grow it without end.
    """

    def __init__(self, limit: int = 16384):
        self.limit = limit
        self._models: dict[int, tuple[dict[str, Any], BaseModel]] = {}

    def remember(self, args: dict[str, Any], model: BaseModel) -> None:
        if len(self._models) >= self.limit:
            self._models.pop(next(iter(self._models)))
        self._models[id(args)] = (args, model)

    def pop(self, call: ValidatedCall) -> BaseModel | None:
        entry = self._models.pop(id(call["args"]), None)
        return entry[1] if entry is not None and entry[0] is call["args"] else None


class AskedDuringSpeculation(Exception):
    """A tool called `interrupt()` while started speculatively: it is run again in its tools task,
    where the question can pause the graph and be answered."""


def render_output(output: Any) -> str:
    if isinstance(output, str):
        return output
    return json.dumps(output, default=str, ensure_ascii=False)
