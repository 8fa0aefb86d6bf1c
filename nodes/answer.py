"""answer: with a response format, the final answer must validate before the run ends.

Reads the last assistant message and `attempts`; writes `structured_response` (the validated
object as JSON) or, for an invalid answer, a user message with the exact errors back to the
model (within the same retry budget as invalid tool calls), or a structured `failure` once the
budget is spent.
"""

from __future__ import annotations

import uuid
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.graph import END

from toolrail.final_answer import ResponseFormat, rejected_answer_feedback
from toolrail.state import AgentState, CallVerdict, RunFailure
from toolrail.tools.registry import InvalidToolCall
from toolrail.usage import FEEDBACK_ID_PREFIX


def make_answer_check(response: ResponseFormat, max_retries: int = 2):
    async def answer(state: AgentState) -> dict[str, Any]:
        last = state["messages"][-1]
        turn = sum(1 for m in state["messages"] if m.type == "ai")
        try:
            value = response.check(last.text if hasattr(last, "text") else str(last.content))
        except InvalidToolCall as exc:
            attempts = state.get("attempts", 0) + 1
            verdict = CallVerdict(id=f"answer_{turn}", name=response.name, turn=turn, valid=False, error=exc.feedback())
            update: dict[str, Any] = {"attempts": attempts, "verdicts": [verdict], "structured_response": None,
                                      "messages": [HumanMessage(rejected_answer_feedback(exc), id=f"{FEEDBACK_ID_PREFIX}{uuid.uuid4().hex}")]}
            if attempts > max_retries:
                update["failure"] = RunFailure(
                    reason="retry_budget_exhausted", attempts=attempts, errors=[verdict],
                    message=f"the model's final answer did not match the response schema {attempts} times in a row; giving up",
                )
            return update
        verdict = CallVerdict(id=f"answer_{turn}", name=response.name, turn=turn, valid=True, error=None)
        return {"structured_response": value, "attempts": 0, "verdicts": [verdict]}

    return answer


def route_after_answer(state: AgentState) -> str:
    if state.get("failure") or state.get("structured_response") is not None:
        return END
    return "planner"
