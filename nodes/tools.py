"""tools: run every validated call of the turn at once, in one task.

Reads the task's `calls` (one `Send` for the whole turn; a single `call` is accepted too);
writes one ToolMessage and one timed `results` entry per call, in the turn's order. All calls
run concurrently with asyncio (sync tools on the executor's thread pool), like LangGraph's
`ToolNode`: one task per turn instead of one per call keeps LangGraph's per-task cost out of a
large fan-out.

Crash-resume still keeps every finished call: each outcome is recorded in toolrail's result
journal (batched, beside the side-effect ledger) as soon as the call finishes, and a resumed
task takes the recorded outcomes instead of running those calls again. If the planner already
started a call speculatively, the running task is awaited instead of starting the call again; a
side-effecting call goes through the ledger, so it never runs twice. A tool that raises or times
out yields an error message; the other calls are unaffected.

A tool that asks a person (`interrupt()`) pauses the graph: the task waits for the turn's other
calls (their outcomes are journaled), then raises the interrupt; on resume only the asking call
runs again. A speculative call that asked is run again here, where the question can be answered.
Tools that declare InjectedState get the state the dispatch put in the task.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig

try:
    from langgraph._internal._constants import CONFIG_KEY_RESUMING
except ImportError:  # pragma: no cover - the name LangGraph has used for it throughout
    CONFIG_KEY_RESUMING = "__pregel_resuming"

from toolrail.calls import wire_id
from toolrail.execution import AskedDuringSpeculation, CallExecutor, Outcome
from toolrail.journal import ResultJournal
from toolrail.ledger import SideEffectLedger, fingerprint
from toolrail.limits import deadline_at, seconds_left
from toolrail.speculation import Speculation, thread_of
from toolrail.state import ToolsTask, ValidatedCall
from toolrail.tools.registry import ToolRegistry


def make_tool_runner(tools: ToolRegistry, executor: CallExecutor, speculation: Speculation,
                     ledger: SideEffectLedger | None = None, journal: ResultJournal | None = None):
    async def run_call(call: ValidatedCall, thread: str, state: dict[str, Any] | None, left: float) -> tuple[Outcome, bool]:
        """One call, however it gets there: (outcome, whether it was started speculatively).
        `left`: seconds before the run's deadline, which no call may outlive."""
        tool = tools.get(call["name"])
        running = speculation.take(thread, call["id"], call["args"])
        if running is not None:
            try:
                return await running, True
            except AskedDuringSpeculation:
                pass  # the tool called interrupt(): run it here, where the question can pause the graph
        validated = speculation.validated.pop(call)
        if tool.side_effects and ledger is not None:
            outcome = await ledger.run_once(thread, call["id"], tool.name, call["args"],
                                            lambda: executor.execute(tool, call["args"], call["id"], state=state, validated=validated, within=left))
        else:
            outcome = await executor.execute(tool, call["args"], call["id"], state=state, validated=validated, within=left)
        return outcome, False

    async def run_tools(task: ToolsTask, config: RunnableConfig) -> dict[str, Any]:
        calls, thread, state = task.get("calls") or [task["call"]], thread_of(config), task.get("state")
        left = seconds_left(deadline_at(config, task.get("deadline_at")))  # no call outlives the run's deadline
        scope = f"{thread}/{(config.get('configurable') or {}).get('checkpoint_ns', '')}"
        # A single call needs no journal: its result is kept by the task's own writes, exactly
        # as with one task per call. (Nor is the last call to finish recorded, for that reason.)
        journaled = journal is not None and len(calls) > 1
        # Only a task that runs again (a resumed or retried run's first step) can find outcomes of
        # its own: any later step runs on a checkpoint this run just made, a scope never used.
        # Reading the journal there would put a database round trip before every turn's calls.
        earlier = await journal.finished(scope) if journaled and may_run_again(config) else {}
        if journaled and not earlier:
            journal.prepare()  # the file opens (or is created) while the calls run, not after the first finishes
        batch = journal.batch(scope) if journaled else None
        outstanding = [len(calls) - len(earlier)]

        async def one(call: ValidatedCall) -> tuple[Outcome, bool]:
            # keyed like the side-effect ledger: the call's run-unique id and its fingerprint
            key = journal_key(call) if journaled else call["id"]
            if key in earlier:
                return earlier[key]
            outcome, speculative = await run_call(call, thread, state, left)
            outstanding[0] -= 1
            if batch is not None and outstanding[0] > 0:
                batch.record(key, call["name"], outcome, speculative)
            return outcome, speculative

        try:
            # every call finishes (or asks) before anything is raised, so the journal has them all
            outcomes = await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)
        finally:
            if batch is not None:
                await batch.close()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # an interrupt (or a cancellation) reaches the graph
        updates = [tool_outcome(call, outcome, speculative) for call, (outcome, speculative) in zip(calls, outcomes)]
        return {"messages": [u["messages"][0] for u in updates], "results": [u["results"][0] for u in updates]}

    return run_tools


def may_run_again(config: RunnableConfig) -> bool:
    """Whether this task may be a second attempt, with outcomes journaled by the first: LangGraph
    marks the first step of a run that resumes a thread (after a crash, an interrupt, a replay)
    and every retry as "resuming", and clears the mark after that first step."""
    return bool((config.get("configurable") or {}).get(CONFIG_KEY_RESUMING, False))


def journal_key(call: ValidatedCall) -> str:
    """A call's key in the result journal, as in the side-effect ledger: its run-unique id and the
    fingerprint of its tool and arguments (a different call under a reused id is not taken)."""
    return f"{call['id']}:{fingerprint(call['name'], call['args'])}"


def tool_outcome(call: ValidatedCall, outcome: Outcome, speculative: bool = False) -> dict[str, Any]:
    """The state update every executing node returns for one call."""
    message = ToolMessage(
        content=outcome.content, tool_call_id=wire_id(call), name=call["name"],
        status="success" if outcome.status == "ok" else "error",
    )
    return {"messages": [message], "results": [outcome.as_result(call, speculative)]}
