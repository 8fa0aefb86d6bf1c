"""Who must approve what: the approval policy, the question put to a person, and their answers.

A call needs approval when its tool says so (`requires_approval=True`, or a rule on the
validated arguments) or when the graph's policy says so (`build_graph(approval=...)`). The
question is one LangGraph `interrupt()` per turn listing every pending call; the answer is a
decision per call: approve, edit (new arguments, validated like the model's) or reject (with a
message the model reads as the call's result).

The question (the interrupt's value) and the answer (`Command(resume=...)`) are plain JSON, so
the CLI, code and the LangGraph server / Studio all speak the same shape:

    question: {"type": "tool_approval", "calls": [{"id", "name", "args", "reason"}], "errors": [...]}
    answer:   {"decisions": {CALL_ID: {"type": "approve"}
                                    | {"type": "edit", "args": {...}}
                                    | {"type": "reject", "message": "..."}},
               "by": "who decided"}     # optional
    (decisions may also be a list, in the order of `calls`, as LangChain's HITL middleware takes them)
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Literal, Union

from toolrail.tools.registry import InvalidToolCall, Tool, ToolRegistry

ApprovalRule = Union[
    None, Literal["all", "side_effects", "none"], Collection[str], Callable[[Tool, dict[str, Any]], Union[bool, str, None]]
]
"""`build_graph(approval=...)`: None (only the tools' own `requires_approval`), "all",
"side_effects", a collection of tool names, or a callable `(tool, args) -> bool | reason`.
A tool's own `requires_approval` always applies on top ("none" switches every approval off)."""

QUESTION_TYPE = "tool_approval"
DECISIONS = ("approve", "edit", "reject")


class ApprovalPolicy:
    """Decides, from a validated call, whether a person must approve it, and says why."""

    def __init__(self, rule: ApprovalRule = None):
        if isinstance(rule, str) and rule not in ("all", "side_effects", "none"):
            raise ValueError(f"approval must be 'all', 'side_effects', 'none', tool names or a callable, got {rule!r}")
        self.rule = rule

    def reason(self, tool: Tool, args: dict[str, Any], per_run: Any = None) -> str | None:
        """Why this call needs a person's approval, or None when it does not.

        `per_run` is the run's `configurable["approve_tools"]` (tool names, "all" or
        "side_effects"): how a LangGraph server client or Studio asks for approval per run.
        """
        rule = self.rule
        if rule == "none":
            return None
        if per_run:
            extra = _per_run_policy(per_run).reason(tool, args)
            if extra:
                return extra
        own = tool.requires_approval(args) if callable(tool.requires_approval) else tool.requires_approval
        if own:
            return own if isinstance(own, str) else f"{tool.name} requires approval"
        if rule == "all":
            return "every tool call requires approval (approval='all')"
        if rule == "side_effects":
            return f"{tool.name} has side effects" if tool.side_effects else None
        if callable(rule):
            said = rule(tool, args)
            return (said if isinstance(said, str) else f"the approval rule matched {tool.name}") if said else None
        if rule is not None and tool.name in rule:
            return f"{tool.name} is on the approval list"
        return None

    def holds(self, tool: Tool, args: dict[str, Any]) -> bool:
        """For speculation: a call that needs approval must never start before the decision."""
        return self.reason(tool, args, per_run_setting()) is not None


def _per_run_policy(setting: Any) -> "ApprovalPolicy":
    """A run's setting as a policy; one that cannot be read fails closed (every call is asked)."""
    if isinstance(setting, str):
        names = [n.strip() for n in setting.split(",") if n.strip()]
        return ApprovalPolicy(setting if setting in ("all", "side_effects") else names)
    if isinstance(setting, (list, tuple, set)) and all(isinstance(n, str) for n in setting):
        return ApprovalPolicy(list(setting))
    return ApprovalPolicy(lambda tool, args: f"approve_tools={setting!r} is not tool names, 'all' or 'side_effects': every call is asked")


def per_run_setting(config: Any = None) -> Any:
    """The run's `approve_tools` setting, from its config (or the current LangGraph context)."""
    if config is None:
        from langgraph.config import get_config

        try:
            config = get_config()
        except RuntimeError:
            return None
    return ((config or {}).get("configurable") or {}).get("approve_tools")


def question(calls: list[dict[str, Any]], errors: list[str] | None = None) -> dict[str, Any]:
    """The interrupt value: every call of the turn waiting for a person."""
    return {
        "type": QUESTION_TYPE,
        "calls": [{"id": c["id"], "name": c["name"], "args": c["args"], "reason": c["approval"]} for c in calls],
        "allowed_decisions": list(DECISIONS),
        "errors": list(errors or []),
    }


def read_answer(answer: Any, calls: list[dict[str, Any]], tools: ToolRegistry) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The person's answer as {call id: decision}, edits validated; or the problems to put back to them.

    Every call needs a decision; an edit must validate exactly like a model's call (it is then
    stored as the validated, JSON-dumped arguments). Nothing runs while any problem remains.
    """
    if isinstance(answer, dict) and "decisions" in answer:
        raw = answer["decisions"]
    else:
        raw = answer
    ids = [c["id"] for c in calls]
    if isinstance(raw, list):
        if len(raw) != len(calls):
            return {}, [f"expected {len(calls)} decision(s), one per call in order, got {len(raw)}"]
        raw = dict(zip(ids, raw))
    if not isinstance(raw, dict):
        return {}, [f"expected {{'decisions': {{call id: decision}}}}, got {type(raw).__name__}"]
    decided, problems = {}, []
    for unknown in [k for k in raw if k not in ids]:
        problems.append(f"{unknown}: no such call waiting for approval (waiting: {', '.join(ids)})")
    for call in calls:
        decision = raw.get(call["id"])
        if isinstance(decision, str):
            decision = {"type": decision}
        kind = decision.get("type") if isinstance(decision, dict) else None
        if decision is None:
            problems.append(f"{call['id']} ({call['name']}): no decision given")
        elif kind not in DECISIONS:
            problems.append(f"{call['id']} ({call['name']}): decision must be one of {', '.join(DECISIONS)}, got {kind!r}")
        elif kind == "edit":
            tool = tools.get(call["name"])
            try:
                # "edited_action" is the shape LangChain's HITL middleware (and UIs built on it) send
                edited = decision["args"] if "args" in decision else (decision.get("edited_action") or {}).get("args", {})
                args = tool.validate(edited).model_dump(mode="json", by_alias=True)
            except InvalidToolCall as exc:
                problems.append(f"{call['id']} ({call['name']}): the edited arguments are invalid; nothing ran:\n{_indent(exc.feedback())}")
            else:
                decided[call["id"]] = {"type": "edit", "args": args}
        elif kind == "reject":
            decided[call["id"]] = {"type": "reject", "message": str(decision.get("message") or "no reason given")}
        else:
            decided[call["id"]] = {"type": "approve"}
    return decided, problems


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def rejection(message: str) -> str:
    """What the model reads as the result of a call a person rejected."""
    return f"Rejected by a person; the call was not run. Their reason: {message}"
