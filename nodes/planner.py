"""planner: ask the model for the next step, with every tool bound in strict form.

Reads `messages`; writes the assistant message, the turn's raw calls (`turn_calls`) and, when
the model cannot be reached or a limit is hit, a structured `failure`. A turn whose calls are all
valid is validated here (`validated_calls`, `verdicts`, with the validate node's own checks:
argument limits, strict JSON, run-unique call ids) and goes straight to the executors; any other
turn goes to the validate node. While the reply streams, each call whose
arguments are complete and valid is started at once (speculative dispatch); if the stream then
breaks, those calls are cancelled and recorded as such.

Limits (toolrail/limits.py): turns per run, the run's deadline, time to the first chunk, the
gap between chunks, the whole reply, calls per turn, and argument size — the stream is cut as
soon as one is crossed, so a model that never stops cannot keep the run going.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.errors import GraphBubbleUp

import httpx
import openai
from langchain_core.exceptions import ModelTimeoutError

from toolrail.backoff import RetriesExhausted, RetryPolicy, call_with_backoff
from toolrail.calls import CallIds, history_message, ids_in_thread, raw_calls
from toolrail.errors import ModelUnavailable
from toolrail.final_answer import ResponseFormat
from toolrail.approval import ApprovalPolicy, per_run_setting
from toolrail.arguments import ArgumentLimits
from toolrail.limits import RunLimits, deadline_at, seconds_left, turns_this_run
from toolrail.nodes.validate import valid_turn, validate_arguments
from toolrail.providers import bind_tools_for_provider, explain_model_error, with_usage_reporting
from toolrail.speculation import Speculation, thread_of
from toolrail.stream_reply import CallWatcher, ModelTimedOut, stream_reply
from toolrail.state import AgentState, RawCall, RunFailure
from toolrail.tools.registry import InvalidToolCall, ToolRegistry
from toolrail.usage import UNLIMITED, Budget, budget_failure, current_run, model_call, run_total

DEFAULT_SYSTEM_PROMPT = (
    "You are a capable assistant with tools. When several tool calls are independent, make them "
    "all in the same turn (in parallel). If a call is rejected, read the error and send corrected "
    "calls. Answer in plain text once you have what you need."
)


def make_planner(model: BaseChatModel, tools: ToolRegistry, speculation: Speculation, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                 *, retry: RetryPolicy = RetryPolicy(), budget: Budget = UNLIMITED, response: ResponseFormat | None = None,
                 approval: ApprovalPolicy | None = None, parallel: bool = True, limits: RunLimits | None = None):
    limits = limits or RunLimits()
    # Tools go out in the form the model's provider takes, with strict/parallel asked for only
    # where the provider has them (toolrail/providers.py); toolrail validates every call anyway.
    bound = bind_tools_for_provider(with_usage_reporting(model), tools)
    if response is not None:
        bound = response.bind(bound, model, tools)
        system_prompt = f"{system_prompt}\n\n{response.instructions()}"

    async def planner(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        thread = thread_of(config)
        turns = turns_this_run(state["messages"])
        update: dict[str, Any] = {}
        run_deadline = deadline_at(config, None if turns == 0 else state.get("deadline_at"))
        if turns == 0 and limits.deadline_s is not None:
            update["deadline_at"] = time.time() + limits.deadline_s
            run_deadline = deadline_at(config, update["deadline_at"])
        if turns >= limits.max_turns:
            return {**update, "failure": _failure("turn_limit", f"the run reached its limit of {limits.max_turns} model turns (--max-turns)", state)}
        if seconds_left(run_deadline) <= 0:
            return {**update, "failure": _failure("deadline", "the run passed its deadline (--deadline) before the model's next turn", state)}
        prompt = [SystemMessage(system_prompt), *state["messages"]]
        run = current_run(state["messages"])
        earlier = state.get("model_calls") or []
        spent = run_total(earlier, run)
        if why := budget.exceeded(spent):
            return {**update, "failure": budget_failure(why, state), "usage_total": spent}
        started: list[RawCall] = []
        checked: dict[str, tuple[str, Any]] = {}  # call id -> (raw arguments, model): validated while streaming
        discarded: list = []
        waits: list[dict[str, Any]] = []
        writer = get_stream_writer()
        traced = {**config, "run_name": "model", "metadata": {**config.get("metadata", {}), "attempt": state.get("attempts", 0) + 1}}
        used_ids = ids_in_thread(state)
        watchers: list[CallWatcher] = []

        def on_wait(event: dict[str, Any]) -> None:
            waits.append(event)
            writer(event)
            discarded.extend(speculation.cancel_turn(thread, started, "the model's request failed and is sent again"))

        async def attempt() -> BaseMessage:
            checked.clear()
            ids = CallIds(used_ids)
            speculate = (lambda call: _speculate(call, tools, speculation, thread, started, checked, run_deadline, limits.arguments)
                         ) if speculation.enabled else None  # nothing to start: no need to watch for closing braces
            watchers.append(CallWatcher(speculate, ids, limits))
            return await stream_reply(bound, prompt, traced, watchers[-1], limits, run_deadline)

        turn = sum(1 for m in state["messages"] if m.type == "ai") + 1
        started_at, clock = time.time(), time.perf_counter()
        try:
            reply = await call_with_backoff(attempt, retry, on_wait=on_wait, deadline=run_deadline)
        except GraphBubbleUp:
            raise
        except Exception as exc:  # the model boundary: every provider error ends as a structured failure
            record = model_call(None, run=run, turn=turn, budget=budget, started_at=started_at,
                                duration_s=time.perf_counter() - clock, waits=waits, status="error")
            if isinstance(exc, ModelTimedOut):
                failure, why = _failure(exc.reason, str(exc), state), "the model's reply timed out"
            else:
                failure, why = _model_failure(exc, state), "the model's stream broke"
            return {**update, "failure": failure, "model_calls": [record], "usage_total": run_total([*earlier, record], run),
                    "results": discarded + speculation.cancel_turn(thread, started, why)}
        record = model_call(reply, run=run, turn=turn, budget=budget, started_at=started_at,
                            duration_s=time.perf_counter() - clock, waits=waits)
        total = run_total([*earlier, record], run)
        watcher = watchers[-1]
        found = watcher.raw_calls() if watcher.calls else raw_calls(reply)
        if watcher.too_many or len(found) > limits.max_calls_per_turn:
            cancelled = speculation.cancel_turn(thread, started, "the turn had too many calls")
            message = f"the model sent more than {limits.max_calls_per_turn} tool calls in one turn (--max-calls-per-turn); none ran"
            return {**update, "failure": _failure("call_limit", message, state), "model_calls": [record], "usage_total": total,
                    "results": discarded + cancelled}
        calls = [watcher.ids.assign(_capped(call, limits), position) for position, call in enumerate(found)]
        update.update({"messages": [history_message(reply, calls, limits.arguments)], "turn_calls": calls, "failure": None,
                       "model_calls": [record], "usage_total": total, "results": discarded})
        if calls and (why := budget.exceeded(total)):
            # The reply is kept, so the history shows what was asked, but nothing more runs.
            update["failure"] = budget_failure(why, state)
            update["results"] = discarded + speculation.cancel_turn(thread, started, "the run's budget is spent")
        elif calls:  # valid as it stands: straight to the executors; else the validate node words the errors
            planned = valid_turn(tools, speculation, calls, turn, checked, approval, parallel, per_run_setting(config),
                                 limits.arguments)
            update.update(planned or {"validated_calls": []})
        return update

    return planner


def _capped(call: RawCall, limits: RunLimits) -> RawCall:
    """Arguments over the size limit are kept only up to it (validation says they were cut)."""
    cap = limits.arguments.max_bytes + 1
    if len(call["arguments"]) > cap:
        return {**call, "arguments": call["arguments"][:cap]}
    return call


def _failure(reason: str, message: str, state: AgentState) -> RunFailure:
    return RunFailure(reason=reason, message=message, attempts=state.get("attempts", 0), errors=[])


def _speculate(call: RawCall, tools: ToolRegistry, speculation: Speculation, thread: str, started: list[RawCall],
               checked: dict[str, tuple[str, Any]], run_deadline: float | None = None,
               limits: ArgumentLimits | None = None) -> None:
    tool = tools.get(call["name"])
    if tool is None or not speculation.enabled or not tool.speculative or tool.side_effects:
        return
    try:  # the validate node's own strict check (limits, strict JSON): nothing starts that it would refuse
        model = validate_arguments(tool, call["arguments"], limits or ArgumentLimits())
    except InvalidToolCall:
        return  # the validate node will report it; nothing starts
    checked[call["id"]] = (call["arguments"], model)  # the turn's validation reuses it
    if speculation.start(thread, call["id"], tool, model.model_dump(mode="json", by_alias=True), validated=model,
                         within=seconds_left(run_deadline)):
        started.append(call)
        get_stream_writer()({"type": "speculative_start", "call_id": call["id"], "name": call["name"], "at": time.time()})


def _model_failure(exc: Exception, state: AgentState) -> RunFailure:
    reason = "model_timeout" if _is_timeout(exc.cause if isinstance(exc, RetriesExhausted) else exc) else "model_error"
    return RunFailure(reason=reason, message=_explain(exc), attempts=state.get("attempts", 0), errors=[])


def _causes(exc: BaseException) -> list[BaseException]:
    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _is_timeout(exc: BaseException) -> bool:
    """A read timeout (not a connect one): the endpoint was reached but did not answer in time."""
    chain = _causes(exc)
    if any(isinstance(e, (httpx.ConnectTimeout, httpx.ConnectError)) for e in chain):
        return False
    return any(isinstance(e, (openai.APITimeoutError, httpx.TimeoutException, ModelTimeoutError)) for e in chain)


def _explain(exc: Exception) -> str:
    """Say what to do, not just what broke (any provider; see toolrail/providers.py).

    Only a connection that could not be made is "cannot reach the model": a read timeout or a
    stream that broke after the endpoint answered is said as such."""
    if isinstance(exc, ModelUnavailable):
        return str(exc)
    cause = exc.cause if isinstance(exc, RetriesExhausted) else exc
    gave_up = f" Gave up: {exc}." if isinstance(exc, RetriesExhausted) else ""
    chain = _causes(cause)
    if _is_timeout(cause):
        return f"the model endpoint did not answer in time (read timeout): {str(cause)[:300]}{gave_up}"
    connect_failed = any(isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout, ConnectionRefusedError)) for e in chain)
    if not connect_failed and any(isinstance(e, (httpx.TransportError, openai.APIConnectionError)) for e in chain):
        broke = next((e for e in reversed(chain) if isinstance(e, httpx.TransportError)), cause)
        return f"the connection to the model broke mid-reply: {type(broke).__name__}: {str(broke)[:300]}{gave_up}"
    return f"{explain_model_error(cause)}{gave_up}"
