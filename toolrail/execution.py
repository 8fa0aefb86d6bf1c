"""Running one validated call: timeout, error capture, concurrency cap, thread pool for sync tools.

Both paths that start calls — the tools node and speculative dispatch — come through here, so
a call behaves the same however it was started.
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

from toolrail.state import CallResult, RawCall, ValidatedCall
from toolrail.tool_retry import retry_delay
from toolrail.tools.registry import Tool

DEFAULT_TOOL_TIMEOUT_S = 30.0
DEFAULT_MAX_CONCURRENCY = 64


@dataclass
class Outcome:
    status: str  # ok | error | timeout | cancelled
    content: str
    started_at: float
    duration_s: float
    attempts: int = 1

    def as_result(self, call: ValidatedCall | RawCall, speculative: bool = False) -> CallResult:
        result = CallResult(
            id=call["id"], name=call["name"], status=self.status, content=self.content,
            started_at=self.started_at, duration_s=round(self.duration_s, 6), speculative=speculative,
        )
        if self.attempts > 1:
            result["attempts"] = self.attempts
        return result


class CallExecutor:
    """Runs calls with a shared cap on how many run at once (sync tools included)."""

    def __init__(self, max_concurrency: int = DEFAULT_MAX_CONCURRENCY, default_timeout: float = DEFAULT_TOOL_TIMEOUT_S):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.max_concurrency, self.default_timeout = max_concurrency, default_timeout
        # Sync tools get their own pool, as wide as the cap: the default executor has ~6 threads
        # on a 2-core machine and would quietly serialise a 100-call fan-out.
        self.threads = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="toolrail-tool")
        self._caps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

    def _cap(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop not in self._caps:
            self._caps[loop] = asyncio.Semaphore(self.max_concurrency)
        return self._caps[loop]

    async def execute(self, tool: Tool, args: dict[str, Any], call_id: str = "", speculative: bool = False,
                      state: dict[str, Any] | None = None, within: float = float("inf")) -> Outcome:
        """Run one call; `within` (seconds left before the run's deadline) caps its timeout."""
        timeout = min(tool.timeout or self.default_timeout, max(within, 0.0))
        trace = {  # names and metadata for LangSmith; ignored when tracing is off
            "run_name": f"tool:{tool.name}", "tags": ["toolrail", "speculative" if speculative else "dispatched"],
            "metadata": {"tool": tool.name, "call_id": call_id, "speculative": speculative, "side_effects": tool.side_effects},
        }
        async with self._cap():
            started, clock = time.time(), time.perf_counter()
            for attempt in range(1, tool.retries + 2):  # retries only on idempotent tools (tool_retry.py)
                try:
                    output = await asyncio.wait_for(tool.run(tool.validate(args), self.threads, trace, call_id, state), timeout)
                    status, content = "ok", render_output(output)
                    break
                except asyncio.TimeoutError:
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


class AskedDuringSpeculation(Exception):
    """A tool called `interrupt()` while started speculatively: it is run again in its tools task,
    where the question can pause the graph and be answered."""


def render_output(output: Any) -> str:
    if isinstance(output, str):
        return output
    return json.dumps(output, default=str, ensure_ascii=False)
