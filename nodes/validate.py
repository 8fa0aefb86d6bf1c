"""validate: every call of the turn must parse and validate before any of them runs.

Reads `turn_calls`, `attempts`; writes `validated_calls` (all-or-nothing), `verdicts`,
`attempts`, and on an invalid turn one ToolMessage per call with the exact error, or a
structured `failure` once the retry budget is spent.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END
from langgraph.types import Send

from toolrail.approval import ApprovalPolicy, per_run_setting
from toolrail.nodes.approve import dispatch
from toolrail.arguments import DEFAULT_LIMITS, ArgumentLimits, ArgumentsRejected, parse_arguments
from toolrail.calls import wire_id
from toolrail.speculation import Speculation, thread_of
from toolrail.state import AgentState, CallVerdict, RawCall, RunFailure, ValidatedCall
from toolrail.tools.registry import FieldError, InvalidToolCall, ToolRegistry

NOT_RUN = (
    "Not run: another call in this turn was invalid, and no call of a turn runs until all of "
    "them are valid. Send this call again together with the corrected ones."
)


def make_validate(tools: ToolRegistry, speculation: Speculation, max_retries: int = 2,
                  approval: ApprovalPolicy | None = None, parallel: bool = True, limits: ArgumentLimits = DEFAULT_LIMITS):
    approval = approval or ApprovalPolicy()

    async def validate(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        turn = sum(1 for m in state["messages"] if m.type == "ai")
        checked = [_check(tools, call, limits) for call in state.get("turn_calls", [])]
        verdicts = [_verdict(call, turn, error) for call, (_, error) in zip(state["turn_calls"], checked)]
        if all(error is None for _, error in checked):
            calls = [_plan(tools, v, approval, parallel, per_run_setting(config)) for v, _ in checked]
            return {"validated_calls": calls, "verdicts": verdicts, "attempts": 0}
        attempts = state.get("attempts", 0) + 1
        discarded = speculation.cancel_turn(thread_of(config), state["turn_calls"], "another call of its turn was invalid")
        update: dict[str, Any] = {
            "validated_calls": [],
            "verdicts": verdicts,
            "results": discarded,
            "attempts": attempts,
            "messages": [_feedback(call, error) for call, (_, error) in zip(state["turn_calls"], checked)],
        }
        if attempts > max_retries:
            update["failure"] = _exhausted(attempts, verdicts)
        return update

    return validate


def make_route_after_validate(tools: ToolRegistry, rebuild_sandbox: bool = True):
    def route_after_validate(state: AgentState) -> list[Send] | str:
        """Valid turn: fan out one task per call (calls waiting for a person go to the approve
        node; sequential ones run after the others). Invalid: back to the planner, or stop."""
        if state.get("failure"):
            return END
        if not state.get("validated_calls"):
            return "planner"
        return dispatch(state, tools, rebuild_sandbox=rebuild_sandbox)

    return route_after_validate


def _plan(tools: ToolRegistry, call: ValidatedCall, approval: ApprovalPolicy, parallel: bool, per_run: Any) -> ValidatedCall:
    """Mark a valid call: does a person approve it first, does it run in the model's order."""
    tool = tools.get(call["name"])
    reason = approval.reason(tool, call["args"], per_run)
    if reason:
        call["approval"] = reason
    if tool.sequential or not parallel:
        call["sequential"] = True
    return call


def _check(tools: ToolRegistry, call: RawCall, limits: ArgumentLimits = DEFAULT_LIMITS) -> tuple[ValidatedCall | None, InvalidToolCall | None]:
    tool = tools.get(call["name"])
    if tool is None:
        known = ", ".join(t.wire_name or t.name for t in tools)
        error = FieldError("name", f"unknown tool {call['name'][:100]!r}; available tools: {known}", kind="unknown_tool")
        return None, InvalidToolCall(call["name"][:100], [error])
    text = call["arguments"].strip()
    try:  # size, depth, NaN/Infinity, duplicate keys: before any validator sees the arguments
        parsed = parse_arguments(text, limits) if text else {}
    except ArgumentsRejected as exc:
        return None, InvalidToolCall(tool.name, [FieldError("arguments", str(exc), kind="json")])
    try:
        args = tool.validate(parsed if isinstance(parsed, dict) else text)
    except InvalidToolCall as exc:
        return None, exc
    validated = ValidatedCall(id=call["id"], name=tool.name, args=args.model_dump(mode="json", by_alias=True), target=tool.target)
    if call.get("wire_id"):
        validated["wire_id"] = call["wire_id"]
    return validated, None


def _verdict(call: RawCall, turn: int, error: InvalidToolCall | None) -> CallVerdict:
    return CallVerdict(
        id=call["id"], name=call["name"][:100], turn=turn, valid=error is None,
        error=None if error is None else error.feedback(),
    )


def _feedback(call: RawCall, error: InvalidToolCall | None) -> ToolMessage:
    text = NOT_RUN if error is None else error.feedback()
    return ToolMessage(content=text, tool_call_id=wire_id(call), name=call["name"][:100] or "unknown", status="error")


def _exhausted(attempts: int, verdicts: list[CallVerdict]) -> RunFailure:
    return RunFailure(
        reason="retry_budget_exhausted",
        message=f"the model sent invalid tool calls {attempts} turns in a row; giving up",
        attempts=attempts,
        errors=[v for v in verdicts if not v["valid"]],
    )
