"""The toolrail agent graph.

    START -> planner --(all calls valid: one Send for the turn's tools calls)--> tools   -> planner -> ... -> END
                ^    |                    (one Send per code call)                sandbox -> planner
                |    +-- valid calls needing approval -> approve (interrupt: a person decides) -> tools / sandbox
                |    +-- sequential calls, after the concurrent ones -> ordered -> planner
                |    +-- any call invalid --> validate --> (errors) planner, within the retry budget
                +-----------------------------------------+                (valid) the same dispatch as above

The planner validates its own reply: a valid turn goes straight to the executors (one
checkpointed step per turn fewer) through the same dispatch as the validate node's, so a call
that needs approval always goes to the approve node first; an invalid one goes to the validate
node, which sends the exact errors back to the model.

`run_python` calls go to the sandbox node (isolated, one stateful session per thread); every
other call goes to the tools node.

While the planner streams, calls whose arguments are complete start at once (speculation);
the tools tasks then await those instead of starting them again.

`graph` (bottom) is what langgraph.json serves; apps call `build_graph` with their own
model, tools and checkpointer.

Exactly-once is on wherever checkpoints are: side-effecting calls (and `run_python`) go through
a ledger that lives with the checkpointer (toolrail/checkpoints.py); a checkpointer toolrail
cannot place a ledger beside, with side-effecting tools and no `ledger=`, is refused here.
Every limit of toolrail/limits.py is an argument; LangGraph's recursion limit is set above
what the turn limit allows, so a run ends with `failure.reason == "turn_limit"` first.
"""

from __future__ import annotations

import functools
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore

from toolrail.approval import ApprovalPolicy, ApprovalRule
from toolrail.arguments import DEFAULT_MAX_ARGUMENT_BYTES, DEFAULT_MAX_ARGUMENT_DEPTH, ArgumentLimits
from toolrail.backoff import RetryPolicy
from toolrail.checkpoints import ledger_for_checkpointer, ledger_from_environment
from toolrail.execution import DEFAULT_MAX_CONCURRENCY, DEFAULT_TOOL_TIMEOUT_S, CallExecutor
from toolrail.journal import ResultJournal, journal_beside
from toolrail.final_answer import ResponseFormat
from toolrail.ledger import SideEffectLedger
from toolrail.limits import (
    DEFAULT_CHUNK_GAP_TIMEOUT_S, DEFAULT_DEADLINE_S, DEFAULT_FIRST_CHUNK_TIMEOUT_S, DEFAULT_MAX_CALLS_PER_TURN,
    DEFAULT_MAX_TURNS, DEFAULT_REPLY_TIMEOUT_S, RunLimits,
)
from toolrail.models import default_model
from toolrail.nodes.answer import make_answer_check, route_after_answer
from toolrail.nodes.approve import dispatch, make_approve, make_route_after_approve
from toolrail.nodes.ordered import make_ordered, route_after_calls
from toolrail.nodes.planner import DEFAULT_SYSTEM_PROMPT, make_planner
from toolrail.nodes.tools import make_tool_runner
from toolrail.nodes.validate import make_route_after_validate, make_validate
from toolrail.nodes.sandbox import make_sandbox_node
from toolrail.sandbox import SandboxError, make_sandbox
from toolrail.sandbox.pool import resolve_pool_size
from toolrail.sandbox.sessions import SandboxSessions
from toolrail.snapshot_cache import cache_snapshots
from toolrail.speculation import Speculation
from toolrail.state import AgentState
from toolrail.tools.demo import demo_tools
from toolrail.tools.registry import ToolRegistry, all_tools
from toolrail.tools.sandbox_tools import sandbox_tools
from toolrail.usage import UNLIMITED, Budget

DEFAULT_TOOLS = all_tools(demo_tools, sandbox_tools)


def make_route_after_planner(tools: ToolRegistry, response: bool = False, rebuild_sandbox: bool = True):
    def route_after_planner(state: AgentState) -> Any:
        """No calls (or a failure): done (with a response format, a reply without calls is the
        final answer: check it). All calls valid: the same dispatch as after the validate node
        (approval first, sequential calls last). Else: the validate node."""
        if state.get("failure") or not state.get("turn_calls"):
            return "answer" if response and not state.get("failure") else END
        if state.get("validated_calls"):
            return dispatch(state, tools, rebuild_sandbox=rebuild_sandbox)
        return "validate"

    return route_after_planner


def on_the_loop(route: Any) -> Any:
    """A router as a coroutine function, so LangGraph runs it on the event loop: a sync router
    goes to a thread pool at every step (LangGraph's default for sync callables), and waking a
    thread costs more than the routing itself (a few dict lookups); that hop is on every turn's
    critical path."""

    @functools.wraps(route)
    async def routed(state: AgentState) -> Any:
        return route(state)

    return routed


def build_graph(
    model: BaseChatModel | None = None,
    tools: ToolRegistry | None = None,
    checkpointer: BaseCheckpointSaver | None = None,
    *,
    max_retries: int = 2,
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT_S,
    max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY,
    max_threads: int | None = None,
    speculative: bool = True,
    sandboxes: SandboxSessions | None = None,
    ledger: SideEffectLedger | None = None,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    model_retry: RetryPolicy | None = None,
    budget: Budget | int | None = None,
    response_format: type | dict | ResponseFormat | None = None,
    journal: ResultJournal | None = None,
    approval: ApprovalRule = None,
    parallel: bool = True,
    store: BaseStore | None = None,
    max_turns: int = DEFAULT_MAX_TURNS,
    deadline: float | None = DEFAULT_DEADLINE_S,
    model_first_chunk_timeout: float = DEFAULT_FIRST_CHUNK_TIMEOUT_S,
    model_chunk_timeout: float = DEFAULT_CHUNK_GAP_TIMEOUT_S,
    model_reply_timeout: float = DEFAULT_REPLY_TIMEOUT_S,
    max_calls_per_turn: int = DEFAULT_MAX_CALLS_PER_TURN,
    max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES,
    max_argument_depth: int = DEFAULT_MAX_ARGUMENT_DEPTH,
    rebuild_sandbox: bool = True,
    sandbox_pool: int | None = None,
):
    """The agent graph. `model` is any LangChain chat model that binds tools.

    `model_retry`: backoff for 429/5xx from the model (toolrail/backoff.py). `budget`: a Budget,
    or an int as the run's token limit. `response_format`: a Pydantic model or JSON Schema the
    final answer must match (validated into `structured_response`). `journal` keeps finished
    calls' results for crash-resume (default: beside `ledger`; none without one, e.g. an
    in-memory run that cannot outlive its process anyway).

    `approval`: which calls a person approves first, on top of the tools' own
    `requires_approval` (see toolrail.approval); `parallel=False` runs every call of a turn one
    after another in the model's order. Approval needs a checkpointer (LangGraph interrupts).
    `store` is what tools declaring `InjectedStore` receive (and `get_store()` returns).
    `sandbox_pool`: spare local jails kept ready when the graph makes its own sandbox sessions
    (default $TOOLRAIL_SANDBOX_POOL or 1; 0 = off); with `sandboxes`, their factory decides.
    """
    tools = DEFAULT_TOOLS if tools is None else tools
    model = default_model() if model is None else model
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    limits = RunLimits(
        max_turns=max_turns, deadline_s=deadline, first_chunk_timeout_s=model_first_chunk_timeout,
        chunk_gap_timeout_s=model_chunk_timeout, reply_timeout_s=model_reply_timeout,
        max_calls_per_turn=max_calls_per_turn, arguments=ArgumentLimits(max_argument_bytes, max_argument_depth),
    )
    if ledger is None:
        ledger = ledger_for_checkpointer(checkpointer)
    if ledger is None and any(tool.side_effects for tool in tools):
        effectful = ", ".join(tool.name for tool in tools if tool.side_effects)
        raise ValueError(
            f"tools with side effects ({effectful}) need a ledger to run exactly once, and toolrail cannot place one "
            f"beside a {type(checkpointer).__name__}: pass ledger=SqliteSideEffectLedger(...) or PostgresSideEffectLedger(...)"
        )

    budget = Budget(max_tokens_total=budget) if isinstance(budget, int) else (budget or UNLIMITED)
    response = response_format if isinstance(response_format, ResponseFormat) or response_format is None else ResponseFormat(response_format)

    executor = CallExecutor(max_concurrency=max_concurrency, default_timeout=tool_timeout, max_threads=max_threads)
    policy = ApprovalPolicy(approval)
    # a call that needs a person's approval, or must wait its turn, never starts speculatively
    speculation = Speculation(executor, enabled=speculative and parallel, hold=policy.holds)

    builder = StateGraph(AgentState)
    builder.add_node("planner", make_planner(model, tools, speculation, system_prompt, retry=model_retry or RetryPolicy(),
                                             budget=budget, response=response, approval=policy, parallel=parallel,
                                             limits=limits))
    builder.add_node("validate", make_validate(tools, speculation, max_retries, policy, parallel, limits.arguments))
    runners = {"tools": make_tool_runner(tools, executor, speculation, ledger, journal or journal_beside(ledger))}
    builder.add_node("tools", runners["tools"])

    executors = ["tools"]
    if any(tool.target == "sandbox" for tool in tools):
        if sandboxes is None:
            try:
                if sandbox_pool is not None:
                    resolve_pool_size(sandbox_pool)  # a bad size fails here, not at the first call
            except SandboxError as exc:
                raise ValueError(f"sandbox_pool: {exc}") from None
            sandboxes = SandboxSessions(factory=functools.partial(make_sandbox, pool_size=sandbox_pool))
        runners["sandbox"] = make_sandbox_node(sandboxes, ledger)
        builder.add_node("sandbox", runners["sandbox"])
        executors.append("sandbox")
    builder.add_node("approve", make_approve(tools))
    builder.add_node("ordered", make_ordered(tools, runners, rebuild_sandbox))

    after_calls = ["planner", "ordered", *executors]
    builder.add_edge(START, "planner")
    if response is None:
        builder.add_conditional_edges("planner", on_the_loop(make_route_after_planner(tools, rebuild_sandbox=rebuild_sandbox)), ["validate", *after_calls, "approve", END])
    else:
        builder.add_node("answer", make_answer_check(response, max_retries))
        builder.add_conditional_edges("planner", on_the_loop(make_route_after_planner(tools, response=True, rebuild_sandbox=rebuild_sandbox)), ["validate", "answer", *after_calls, "approve", END])
        builder.add_conditional_edges("answer", on_the_loop(route_after_answer), ["planner", END])
    builder.add_conditional_edges("validate", on_the_loop(make_route_after_validate(tools, rebuild_sandbox)), [*after_calls, "approve", END])
    builder.add_conditional_edges("approve", on_the_loop(make_route_after_approve(tools, rebuild_sandbox)), after_calls)
    for executor_node in executors:
        builder.add_conditional_edges(executor_node, on_the_loop(route_after_calls), ["planner", "ordered"])
    builder.add_edge("ordered", "planner")
    compiled = builder.compile(checkpointer=checkpointer, store=store, name="toolrail")
    cache_snapshots(compiled.checkpointer)  # the thread's conversation is not decoded anew every turn
    return compiled.with_config(recursion_limit=limits.recursion_limit)


graph = build_graph(ledger=ledger_from_environment())
