"""validate: every call of the turn must parse and validate before any of them runs.

Reads `turn_calls`, `attempts`; writes `validated_calls` (all-or-nothing), `verdicts`,
`attempts`, and on an invalid turn one ToolMessage per call with the exact error, or a
structured `failure` once the retry budget is spent.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END
from langgraph.types import Send

from toolrail.approval import ApprovalPolicy, per_run_setting
from toolrail.nodes.approve import dispatch
from toolrail.arguments import DEFAULT_LIMITS, ArgumentLimits, ArgumentsRejected, check_arguments
from toolrail.calls import wire_id
from toolrail.speculation import Speculation, thread_of
from toolrail.strict_proof import proves_strict
from toolrail.state import AgentState, CallVerdict, RawCall, RunFailure, ValidatedCall
from toolrail.tools.registry import FieldError, InvalidToolCall, Tool, ToolRegistry

NOT_RUN = (
    "Not run: another call in this turn was invalid, and no call of a turn runs until all of "
    "them are valid. Send this call again together with the corrected ones."
)


def valid_turn(tools: ToolRegistry, speculation: Speculation, calls: list[RawCall], turn: int,
               checked: dict[str, tuple[str, Any]] | None = None, approval: ApprovalPolicy | None = None,
               parallel: bool = True, per_run: Any = None, limits: ArgumentLimits = DEFAULT_LIMITS) -> dict[str, Any] | None:
    """The validate node's update for a turn whose calls are all valid, or None.

    The planner calls this on its own reply, so a valid turn goes straight to the executors:
    one checkpointed step fewer per turn (on SQLite, one fsync fewer) and no extra copy of the
    state. An invalid turn still goes through the validate node, which words the errors.
    The checks are the validate node's own (`_check`, with the same argument limits and strict
    JSON), on calls that already carry their run-unique ids (assigned by the planner).
    Calls are marked exactly as the validate node marks them (approval, sequential), so the
    same dispatch sends those needing a person to the approve node first.
    """
    known = checked or {}
    results = [_check(tools, call, limits, known.get(call["id"])) for call in calls]
    if not calls or any(error is not None for _, error in results):
        return None
    _hand_over(results, speculation)
    planned = [_plan(tools, v, approval or ApprovalPolicy(), parallel, per_run) for v, _ in results]
    return {"validated_calls": planned, "verdicts": [_verdict(c, turn, None) for c in calls], "attempts": 0}


def make_validate(tools: ToolRegistry, speculation: Speculation, max_retries: int = 2,
                  approval: ApprovalPolicy | None = None, parallel: bool = True, limits: ArgumentLimits = DEFAULT_LIMITS):
    approval = approval or ApprovalPolicy()

    async def validate(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        turn = sum(1 for m in state["messages"] if m.type == "ai")
        checked = [_check(tools, call, limits) for call in state.get("turn_calls", [])]
        verdicts = [_verdict(call, turn, error) for call, (_, error) in zip(state["turn_calls"], checked)]
        if all(error is None for _, error in checked):
            _hand_over(checked, speculation)
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


def _hand_over(checked: list[tuple[ValidatedCall | None, Any]], speculation: Speculation) -> None:
    """Keep each validated model for the tools node (so it does not validate again); state gets plain JSON."""
    for call, _ in checked:
        model = call.pop("model")
        if call["target"] == "tools":
            speculation.validated.remember(call["args"], model)


def validate_arguments(tool: Tool, text: str, limits: ArgumentLimits = DEFAULT_LIMITS) -> BaseModel:
    """The call's arguments as the tool's model, or InvalidToolCall. Size, depth, NaN/Infinity and
    duplicate keys are refused (toolrail/arguments.py) before any validator's verdict counts.
    The one strict path for every validation of a call: the validate node, the planner's own
    check of its reply, and the check that starts a call speculatively while the reply streams."""
    text = text.strip()
    if not text:
        return tool.validate({})
    model = None
    if len(text) * 4 <= limits.max_bytes:  # over that, the size rule decides before any parse
        model = tool.validate_json_fast(text)
        # a valid call needs no second parse when the model itself proves the text strict
        # (toolrail/strict_proof.py: no key sent twice, no NaN/Infinity, within the depth limit)
        if model is not None and proves_strict(text, model, limits):
            return model
    try:
        check_arguments(text, limits)
    except ArgumentsRejected as exc:
        raise InvalidToolCall(tool.name, [FieldError("arguments", str(exc), kind="json")]) from None
    # the text is now known to be strict JSON, so Pydantic's verdict on the text itself stands
    return model if model is not None else tool.validate_slow(text)


def _check(tools: ToolRegistry, call: RawCall, limits: ArgumentLimits = DEFAULT_LIMITS,
           earlier: tuple[str, Any] | None = None) -> tuple[ValidatedCall | None, InvalidToolCall | None]:
    """Validate one call; `earlier` is (raw arguments, model) when it was validated while streaming
    (by `validate_arguments` with the same limits, so it is reused only for the same raw text)."""
    tool = tools.get(call["name"])
    if tool is None:
        known = ", ".join(t.wire_name or t.name for t in tools)
        error = FieldError("name", f"unknown tool {call['name'][:100]!r}; available tools: {known}", kind="unknown_tool")
        return None, InvalidToolCall(call["name"][:100], [error])
    if earlier is not None and earlier[0] == call["arguments"] and isinstance(earlier[1], tool.args_model):
        args = earlier[1]
    else:
        try:
            args = validate_arguments(tool, call["arguments"], limits)
        except InvalidToolCall as exc:
            return None, exc
    validated = ValidatedCall(id=call["id"], name=tool.name, args=args.model_dump(mode="json", by_alias=True), target=tool.target)
    validated["model"] = args  # taken off before the call enters state
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
