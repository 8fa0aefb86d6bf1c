"""planner: ask the model for the next step, with every tool bound in strict form.

Reads `messages`; writes the assistant message, the turn's raw calls (`turn_calls`) and, when
the model cannot be reached, a structured `failure`. A turn whose calls are all valid is
validated here (`validated_calls`, `verdicts`) and goes straight to the executors; any other
turn goes to the validate node. While the reply streams, each call whose
arguments are complete and valid is started at once (speculative dispatch); if the stream then
breaks, those calls are cancelled and recorded as such.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.runnables import RunnableBinding, RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.errors import GraphBubbleUp

from toolrail.backoff import RetriesExhausted, RetryPolicy, call_with_backoff
from toolrail.calls import add_fragment, as_raw_call, history_message, merge_chunks, raw_calls
from toolrail.errors import ModelUnavailable
from toolrail.final_answer import ResponseFormat
from toolrail.approval import ApprovalPolicy, per_run_setting
from toolrail.nodes.validate import valid_turn
from toolrail.providers import bind_tools_for_provider, explain_model_error, with_usage_reporting
from toolrail.speculation import Speculation, thread_of
from toolrail.state import AgentState, RawCall, RunFailure
from toolrail.tools.registry import InvalidToolCall, ToolRegistry, _traced
from toolrail.usage import UNLIMITED, Budget, budget_failure, current_run, model_call, run_total

DEFAULT_SYSTEM_PROMPT = (
    "You are a capable assistant with tools. When several tool calls are independent, make them "
    "all in the same turn (in parallel). If a call is rejected, read the error and send corrected "
    "calls. Answer in plain text once you have what you need."
)


def make_planner(model: BaseChatModel, tools: ToolRegistry, speculation: Speculation, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                 *, retry: RetryPolicy = RetryPolicy(), budget: Budget = UNLIMITED, response: ResponseFormat | None = None,
                 approval: ApprovalPolicy | None = None, parallel: bool = True):
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
        checked: dict[str, tuple[str, Any]] = {}  # call id -> (raw arguments, model): validated while streaming
        discarded: list = []
        waits: list[dict[str, Any]] = []
        writer = get_stream_writer()
        traced = {**config, "run_name": "model", "metadata": {**config.get("metadata", {}), "attempt": state.get("attempts", 0) + 1}}

        def on_wait(event: dict[str, Any]) -> None:
            waits.append(event)
            writer(event)
            discarded.extend(speculation.cancel_turn(thread, started, "the model's request failed and is sent again"))

        async def attempt() -> BaseMessage:
            checked.clear()
            watcher = CallWatcher(lambda call: _speculate(call, tools, speculation, thread, started, checked))
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
        elif calls:  # valid as it stands: straight to the executors; else the validate node words the errors
            planned = valid_turn(tools, speculation, calls, turn, checked, approval, parallel, per_run_setting(config))
            update.update(planned or {"validated_calls": []})
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
        self.open: dict[Any, None] = {}  # calls not yet complete, in order (usually one): O(1) per fragment
        self.position: dict[Any, int] = {}

    def feed(self, chunk: BaseMessage) -> None:
        for fragment in getattr(chunk, "tool_call_chunks", None) or []:
            index = fragment.get("index", 0)
            for earlier in [i for i in self.open if i != index]:
                self._complete(earlier)
            self.position.setdefault(index, len(self.position))
            add_fragment(self.calls, fragment)
            if index not in self.done:
                self.open[index] = None
            piece = fragment.get("args") or ""
            if "}" in piece and index not in self.done and _is_json_object(self.calls[index]["arguments"]):
                self._complete(index)

    def _complete(self, index: Any) -> None:
        self.done.add(index)
        self.open.pop(index, None)
        call = self.calls[index]
        self.on_complete(as_raw_call(call["id"], call["name"], call["arguments"], self.position[index]))


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _speculate(call: RawCall, tools: ToolRegistry, speculation: Speculation, thread: str, started: list[RawCall],
               checked: dict[str, tuple[str, Any]]) -> None:
    tool = tools.get(call["name"])
    if tool is None or not speculation.enabled or not tool.speculative or tool.side_effects:
        return
    try:
        model = tool.validate(call["arguments"])
    except InvalidToolCall:
        return  # the validate node will report it; nothing starts
    checked[call["id"]] = (call["arguments"], model)  # the turn's validation reuses it
    if speculation.start(thread, call["id"], tool, model.model_dump(mode="json", by_alias=True), validated=model):
        started.append(call)
        get_stream_writer()({"type": "speculative_start", "call_id": call["id"], "name": call["name"], "at": time.time()})


async def _stream_reply(model: Any, prompt: list[BaseMessage], config: RunnableConfig, watcher: CallWatcher) -> BaseMessage:
    """Stream the reply (so calls start and text shows as they are generated); merge the chunks."""
    chunks: list[BaseMessage] = []
    async for chunk in _chunks(model, prompt, config):
        watcher.feed(chunk)
        chunks.append(chunk)
    if not chunks:
        raise ModelUnavailable("the model returned an empty stream")
    return merge_chunks(chunks)


async def _chunks(model: Any, prompt: list[BaseMessage], config: RunnableConfig) -> AsyncIterator[BaseMessage]:
    """The reply's chunks. When nothing listens to callbacks (no tracing, no token streaming to a
    client), they come straight from the chat model's own `_astream`: `BaseChatModel.astream`
    merges every chunk once more for `on_llm_end`, with a list merge that is O(fragments × calls)
    — 1,000 streamed calls cost it ~1 s. Anything listening gets the ordinary `astream`."""
    direct = _direct_stream(model)
    if direct is None:
        async for chunk in model.astream(prompt, config):
            yield chunk
        return
    chat, kwargs = direct
    async for generation in chat._astream(chat._convert_input(prompt).to_messages(), **kwargs):
        message = generation.message
        if generation.generation_info:  # what astream moves into the message's metadata
            message.response_metadata = {**generation.generation_info, **message.response_metadata}
        yield message


def _direct_stream(model: Any) -> tuple[BaseChatModel, dict[str, Any]] | None:
    chat, kwargs = (model.bound, dict(model.kwargs)) if isinstance(model, RunnableBinding) else (model, {})
    if not isinstance(chat, BaseChatModel) or type(chat)._astream is BaseChatModel._astream:
        return None
    if chat.rate_limiter is not None or kwargs.get("ls_structured_output_format") or _traced():
        return None
    if not chat._should_stream(async_api=True, **{**kwargs, "stream": True}):
        return None  # streaming disabled: astream falls back to one non-streamed reply
    return chat, kwargs


def _model_failure(exc: Exception, state: AgentState) -> RunFailure:
    return RunFailure(reason="model_error", message=_explain(exc), attempts=state.get("attempts", 0), errors=[])


def _explain(exc: Exception) -> str:
    """Say what to do, not just what broke (any provider; see toolrail/providers.py)."""
    if isinstance(exc, ModelUnavailable):
        return str(exc)
    if isinstance(exc, RetriesExhausted):
        return f"{explain_model_error(exc.cause)} Gave up: {exc}."
    return explain_model_error(exc)
