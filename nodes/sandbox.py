"""sandbox: run one validated `run_python` call in the thread's sandbox session.

Reads the task's `call`; writes one ToolMessage and one `results` entry carrying the sandbox's
structured result (stdout, stderr, error, exit reason, duration, produced files). stdout and
stderr chunks are streamed live through LangGraph's `custom` stream mode as they are printed.

`run_python` is declared side-effecting, so it goes through the ledger like any such call: a
cell that finished before a crash is not run again on resume (its recorded output is
returned), one that was running is reported as of unknown outcome.

A thread's interpreter lives in this process. When a thread is resumed, replayed or continued
by another process, its session is rebuilt first: the cells that completed earlier in the
thread (their code is in the checkpoints, passed in the task as `rebuild`) are re-run, in
order, in a fresh jail, their output discarded. `build_graph(rebuild_sandbox=False)` /
`--no-sandbox-rebuild` turns this off (a resumed thread then starts with an empty interpreter).
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer

from toolrail.execution import Outcome
from toolrail.ledger import SideEffectLedger
from toolrail.limits import deadline_at, seconds_left
from toolrail.nodes.tools import tool_outcome
from toolrail.sandbox import RunResult, SandboxError
from toolrail.sandbox.sessions import SandboxSessions
from toolrail.speculation import thread_of
from toolrail.state import CallTask
from toolrail.tools.sandbox_tools import DEFAULT_TIMEOUT_S

_STATUS = {"ok": "ok", "timeout": "timeout"}


def make_sandbox_node(sessions: SandboxSessions, ledger: SideEffectLedger | None = None):
    async def sandbox(task: CallTask, config: RunnableConfig) -> dict[str, Any]:
        call, thread = task["call"], thread_of(config)
        structured: dict[str, Any] = {}
        ran = False
        rebuild = task.get("rebuild") or []
        fresh = not sessions.has(thread)
        if rebuild and fresh:
            get_stream_writer()({"type": "sandbox_rebuild", "call_id": call["id"], "cells": len(rebuild)})

        async def run_cell() -> Outcome:
            nonlocal ran
            ran = True
            started, clock = time.time(), time.perf_counter()
            try:
                left = seconds_left(deadline_at(config, task.get("deadline_at")))
                result = await _run_streaming(sessions, thread, call, get_stream_writer(), rebuild, left)
            except SandboxError as exc:  # the sandbox itself cannot work: say so, keep the run going
                return Outcome("error", f"Error: the sandbox is unavailable: {exc}", started, time.perf_counter() - clock)
            try:  # whatever happens to its files, the cell's own output is kept
                saved, unsaved = await sessions.collect(thread, result.files, result.files_not_listed)
            except SandboxError as exc:
                saved, unsaved = [], [f"produced files: {exc}"]
            content = result.render() + "".join(f"\n[saved] {path}" for path in saved)
            content += "".join(f"\n[not saved] {why} (still in the sandbox session)" for why in unsaved)
            structured.update({**result.model_dump(mode="json"), "saved": [str(p) for p in saved], "unsaved": unsaved,
                               "code": call["args"]["code"], "rebuilt_cells": len(rebuild) if fresh else 0})
            return Outcome(_STATUS.get(result.exit_reason, "error"), content, started, time.perf_counter() - clock)

        if ledger is not None:
            outcome = await ledger.run_once(thread, call["id"], call["name"], call["args"], run_cell)
            if not ran and outcome.status == "ok" and task.get("rebuild") is not None:
                # Finished before a crash: its result stands, and its state joins the rebuilt session.
                try:
                    session = await sessions.get(thread, rebuild)
                    await session.run_to_end(call["args"]["code"])
                except SandboxError:
                    pass
                structured.update({"code": call["args"]["code"], "replayed_from_ledger": True})
        else:
            outcome = await run_cell()
        update = tool_outcome(call, outcome)
        if structured:
            update["results"][0]["sandbox"] = structured
        return update

    return sandbox


async def _run_streaming(sessions: SandboxSessions, thread: str, call: dict, write: Any, rebuild: list[str] | None = None,
                         left: float = float("inf")) -> RunResult:
    session = await sessions.get(thread, rebuild)
    result = None
    timeout = min(float(call["args"].get("timeout_s") or DEFAULT_TIMEOUT_S), max(left, 0.1))  # not past the run's deadline
    async for event in session.run(call["args"]["code"], timeout=timeout):
        if event.type == "done":
            result = event.result
        else:
            write({"type": "sandbox_output", "call_id": call["id"], "stream": event.type, "text": event.text})
    return result
