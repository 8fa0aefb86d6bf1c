"""approve: a person decides on the calls that need approval, before any of them runs.

Reads `validated_calls` (those carrying an `approval` reason); asks once per turn with
LangGraph's `interrupt()` (so the question survives a crash in the checkpoint, and the CLI,
code and the LangGraph server all answer it with `Command(resume=...)`); writes the calls back
with each decision applied (approved, edited: re-validated, or rejected: dropped, with a
ToolMessage giving the model the person's reason), and one `decisions` record per call.

An answer that cannot be applied (a missing decision, an edit that fails validation) is put
back to the person as a new question with the errors; nothing runs until every call is decided.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Send, interrupt

from toolrail.approval import question, read_answer, rejection
from toolrail.state import AgentState, ApprovalDecision, ValidatedCall
from toolrail.tools.registry import ToolRegistry


def make_approve(tools: ToolRegistry):
    async def approve(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        calls = state.get("validated_calls") or []
        pending = [c for c in calls if c.get("approval")]
        errors: list[str] = []
        while True:  # on resume LangGraph replays the earlier answers in order: this loop is deterministic
            answer = interrupt(question(pending, errors))
            decided, errors = read_answer(answer, pending, tools)
            if not errors:
                break
        by = str(answer.get("by") or "person") if isinstance(answer, dict) else "person"
        turn = sum(1 for m in state["messages"] if m.type == "ai")
        now = time.time()
        kept: list[ValidatedCall] = []
        messages: list[Any] = []
        records: list[ApprovalDecision] = []
        for call in calls:
            if not call.get("approval"):
                kept.append(call)
                continue
            decision = decided[call["id"]]
            records.append(ApprovalDecision(
                id=call["id"], name=call["name"], turn=turn, decision=decision["type"], reason=call["approval"],
                args=call["args"], edited_args=decision.get("args"), message=decision.get("message"), by=by, at=now,
            ))
            if decision["type"] == "reject":
                messages.append(ToolMessage(rejection(decision["message"]), tool_call_id=call["id"], name=call["name"], status="error"))
                continue
            done = {k: v for k, v in call.items() if k != "approval"}
            kept.append(ValidatedCall(**{**done, "args": decision.get("args", call["args"]), "decision": decision["type"]}))
        edited = {r["id"]: r["edited_args"] for r in records if r["decision"] == "edit"}
        if edited:
            messages.insert(0, _with_edited_args(state["messages"], edited))
        return {"validated_calls": kept, "decisions": records, "messages": messages}

    return approve


def _with_edited_args(messages: list[Any], edited: dict[str, dict[str, Any]]) -> AIMessage:
    """The turn's assistant message with the person's arguments (same id: it replaces the original),
    so the model's history shows the call that actually ran, as LangChain's HITL middleware does."""
    last = next(m for m in reversed(messages) if m.type == "ai")
    calls = [{**c, "args": edited.get(c["id"], c["args"])} for c in last.tool_calls]
    return last.model_copy(update={"tool_calls": calls})


def completed_cells(state: AgentState) -> list[str]:
    """The code of the thread's sandbox cells that completed, oldest first (for a rebuild)."""
    return [r["sandbox"]["code"] for r in state.get("results") or []
            if r["status"] == "ok" and isinstance(r.get("sandbox"), dict) and r["sandbox"].get("code")]


def call_task(call: ValidatedCall, state: AgentState, tools: ToolRegistry, rebuild_sandbox: bool = True) -> dict[str, Any]:
    """What one executing task receives: the call and the run's deadline; the state only for
    tools that inject it; for sandbox calls, the thread's completed cells (to rebuild a new
    session after a resume) unless `rebuild_sandbox` is off."""
    task: dict[str, Any] = {"call": call, "deadline_at": state.get("deadline_at")}
    tool = tools.get(call["name"])
    if tool is not None and tool.needs_state:
        task["state"] = {k: v for k, v in state.items()}
    if call["target"] == "sandbox" and rebuild_sandbox:
        task["rebuild"] = completed_cells(state)
    return task


def tools_task(calls: list[ValidatedCall], state: AgentState, tools: ToolRegistry) -> list[Send]:
    """One tools task for all of the turn's ready tools calls (`{"calls": [...]}`), with the run's
    deadline (no call may outlive it) and the state only when one of their tools injects it;
    none when there are no such calls."""
    batch = [c for c in calls if c["target"] == "tools"]
    if not batch:
        return []
    task: dict[str, Any] = {"calls": batch, "deadline_at": state.get("deadline_at")}
    if any((tool := tools.get(c["name"])) is not None and tool.needs_state for c in batch):
        task["state"] = {k: v for k, v in state.items()}
    return [Send("tools", task)]


def dispatch(state: AgentState, tools: ToolRegistry, only_decided: bool = False, rebuild_sandbox: bool = True) -> list[Send] | str:
    """Where the turn's calls go next: the concurrent tools calls as one `Send` together, each
    sandbox call as its own; the approve node
    while any call waits for a person; the ordered node for sequential calls; else the planner."""
    calls = state.get("validated_calls") or []
    waiting = any(c.get("approval") for c in calls)
    ready = [c for c in calls if not c.get("approval") and not c.get("sequential") and (c.get("decision") or not only_decided)]
    sends: list[Any] = tools_task(ready, state, tools)
    sends += [Send(c["target"], call_task(c, state, tools, rebuild_sandbox)) for c in ready if c["target"] != "tools"]
    if waiting:
        return [*sends, "approve"]
    if sends:
        return sends
    return "ordered" if any(c.get("sequential") for c in calls) else "planner"


def make_route_after_approve(tools: ToolRegistry, rebuild_sandbox: bool = True):
    def route_after_approve(state: AgentState) -> list[Send] | str:
        """The approved (or edited) concurrent calls start now; the others already ran."""
        return dispatch(state, tools, only_decided=True, rebuild_sandbox=rebuild_sandbox)

    return route_after_approve
