"""planner: ask the model for the next step, with every tool bound in strict form.

Reads `messages`; writes the assistant message, the turn's raw calls (`turn_calls`) and, when
the model cannot be reached, a structured `failure`. While the reply streams, each call whose
arguments are complete and valid is started at once (speculative dispatch); if the stream then
breaks, those calls are cancelled and recorded as such.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.errors import GraphBubbleUp

from toolrail.backoff import RetriesExhausted, RetryPolicy, call_with_backoff
from toolrail.calls import add_fragment, as_raw_call, history_message, raw_calls
from toolrail.errors import ModelUnavailable
from toolrail.final_answer import ResponseFormat
from toolrail.providers import bind_tools_for_provider, explain_model_error, with_usage_reporting
from toolrail.speculation import Speculation, thread_of
from toolrail.state import AgentState, RawCall, RunFailure
from toolrail.tools.registry import InvalidToolCall, ToolRegistry
from toolrail.usage import UNLIMITED, Budget, budget_failure, current_run, model_call, run_total

DEFAULT_SYSTEM_PROMPT = (
    "You are a capable assistant with tools. When several tool calls are independent, make them "
    "all in the same turn (in parallel). If a call is rejected, read the error and send corrected "
    "calls. Answer in plain text once you have what you need."
)


def make_planner(model: BaseChatModel, tools: ToolRegistry, speculation: Speculation, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                 *, retry: RetryPolicy = RetryPolicy(), budget: Budget = UNLIMITED, response: ResponseFormat | None = None):
    # Tools go out in the form the model's provider takes, with strict/parallel asked for only
    # where the provider has them (toolrail/providers.py); toolrail validates every call anyway.
    bound = bind_tools_for_provider(with_usage_reporting(model), tools)
    if response is not None:
        bound = response.bind(bound, model, tools)
        system_prompt = f"{system_prompt}\n\n{response.instructions()}"

    async def planner(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        thread = thread_of(config)
        prompt = [SystemMessage(system_prompt), *state["messages"]]
        run = current_run(state["messages"])
        earlier = state.get("model_calls") or []
        spent = run_total(earlier, run)
        if why := budget.exceeded(spent):
            return {"failure": budget_failure(why, state), "usage_total": spent}
        started: list[RawCall] = []
        discarded: list = []
        waits: list[dict[str, Any]] = []
        writer = get_stream_writer()
        traced = {**config, "run_name": "model", "metadata": {**config.get("metadata", {}), "attempt": state.get("attempts", 0) + 1}}

        def on_wait(event: dict[str, Any]) -> None:
            waits.append(event)
            writer(event)
            discarded.extend(speculation.cancel_turn(thread, started, "the model's request failed and is sent again"))

        async def attempt() -> BaseMessage:
            watcher = CallWatcher(lambda call: _speculate(call, tools, speculation, thread, started))
            return await _stream_reply(bound, prompt, traced, watcher)

        turn = sum(1 for m in state["messages"] if m.type == "ai") + 1
        started_at, clock = time.time(), time.perf_counter()
        try:
            reply = await call_with_backoff(attempt, retry, on_wait=on_wait, deadline=(config.get("configurable") or {}).get("deadline"))
        except GraphBubbleUp:
            raise
        except Exception as exc:  # the model boundary: every provider error ends as a structured failure
            record = model_call(None, run=run, turn=turn, budget=budget, started_at=started_at,
                                duration_s=time.perf_counter() - clock, waits=waits, status="error")
            return {"failure": _model_failure(exc, state), "model_calls": [record], "usage_total": run_total([*earlier, record], run),
                    "results": discarded + speculation.cancel_turn(thread, started, "the model's stream broke")}
        record = model_call(reply, run=run, turn=turn, budget=budget, started_at=started_at,
                            duration_s=time.perf_counter() - clock, waits=waits)
        total = run_total([*earlier, record], run)
        calls = raw_calls(reply)
        update = {"messages": [history_message(reply, calls)], "turn_calls": calls, "failure": None,
                  "model_calls": [record], "usage_total": total, "results": discarded}
        if calls and (why := budget.exceeded(total)):
            # The reply is kept, so the history shows what was asked, but nothing more runs.
            update["failure"] = budget_failure(why, state)
            update["results"] = discarded + speculation.cancel_turn(thread, started, "the run's budget is spent")
        return update

    return planner


class CallWatcher:
    """Watches streamed tool-call fragments and reports each call once its arguments close.

    A call is complete when its accumulated arguments parse as a JSON object (nothing can
    legally follow the closing brace) or when the next call's first fragment arrives.
    """

    def __init__(self, on_complete: Callable[[RawCall], None]):
        self.on_complete = on_complete
        self.calls: dict[Any, dict[str, str]] = {}
        self.done: set[Any] = set()

    def feed(self, chunk: BaseMessage) -> None:
        for fragment in getattr(chunk, "tool_call_chunks", None) or []:
            index = fragment.get("index", 0)
            for earlier in [i for i in self.calls if i != index and i not in self.done]:
                self._complete(earlier)
            add_fragment(self.calls, fragment)
            piece = fragment.get("args") or ""
            if "}" in piece and index not in self.done and _is_json_object(self.calls[index]["arguments"]):
                self._complete(index)

    def _complete(self, index: Any) -> None:
        self.done.add(index)
        call = self.calls[index]
        self.on_complete(as_raw_call(call["id"], call["name"], call["arguments"], list(self.calls).index(index)))


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _speculate(call: RawCall, tools: ToolRegistry, speculation: Speculation, thread: str, started: list[RawCall]) -> None:
    tool = tools.get(call["name"])
    if tool is None:
        return
    try:
        args = tool.validate(call["arguments"]).model_dump(mode="json", by_alias=True)
    except InvalidToolCall:
        return  # the validate node will report it; nothing starts
    if speculation.start(thread, call["id"], tool, args):
        started.append(call)
        get_stream_writer()({"type": "speculative_start", "call_id": call["id"], "name": call["name"], "at": time.time()})


async def _stream_reply(model: Any, prompt: list[BaseMessage], config: RunnableConfig, watcher: CallWatcher) -> BaseMessage:
    """Stream the reply (so calls start and text shows as they are generated); merge the chunks."""
    reply: BaseMessage | None = None
    async for chunk in model.astream(prompt, config):
        watcher.feed(chunk)
        reply = chunk if reply is None else reply + chunk
    if reply is None:
        raise ModelUnavailable("the model returned an empty stream")
    return reply


def _model_failure(exc: Exception, state: AgentState) -> RunFailure:
    return RunFailure(reason="model_error", message=_explain(exc), attempts=state.get("attempts", 0), errors=[])


def _explain(exc: Exception) -> str:
    """Say what to do, not just what broke (any provider; see toolrail/providers.py)."""
    if isinstance(exc, ModelUnavailable):
        return str(exc)
    if isinstance(exc, RetriesExhausted):
        return f"{explain_model_error(exc.cause)} Gave up: {exc}."
    return explain_model_error(exc)
