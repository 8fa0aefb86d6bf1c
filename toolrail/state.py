"""The graph's one state definition, and the records that travel in it.

Everything here is plain JSON-able data (TypedDicts), so SQLite and Postgres checkpoints,
`get_state_history`, the LangGraph server and `toolrail --json` all see the same thing.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph.message import _messages_delta_reducer


class RawCall(TypedDict):
    """A tool call exactly as the model sent it (arguments as the raw JSON text)."""

    id: str  # run-unique (toolrail's when the provider's was missing or repeated)
    name: str
    arguments: str
    wire_id: NotRequired[str]  # the id the model used, when it differs from `id`


class ValidatedCall(TypedDict):
    """A call that passed validation; `args` is the validated model dumped to JSON types."""

    id: str
    name: str
    args: dict[str, Any]
    target: Literal["tools", "sandbox"]
    approval: NotRequired[str]  # waiting for a person: why approval is needed
    decision: NotRequired[Literal["approve", "edit"]]  # what the person answered, once they did
    sequential: NotRequired[bool]  # runs after the concurrent calls, one at a time, in order
    wire_id: NotRequired[str]


class CallVerdict(TypedDict):
    """What validation said of one call of one planner turn."""

    id: str
    name: str
    turn: int
    valid: bool
    error: str | None


class CallResult(TypedDict):
    """One executed call: its status and timing (seconds, wall clock of this process)."""

    id: str
    name: str
    status: Literal["ok", "error", "timeout", "cancelled"]
    content: NotRequired[str]  # only for a cancelled call; an executed call's output is its ToolMessage
    started_at: float
    duration_s: float
    speculative: bool
    sandbox: NotRequired[dict[str, Any]]  # sandbox runs: the structured RunResult and saved files
    attempts: NotRequired[int]  # tools with retries=N: how many runs it took (only when > 1)


class ApprovalDecision(TypedDict):
    """What a person answered for one call that needed approval (kept for history and trace)."""

    id: str
    name: str
    turn: int
    decision: Literal["approve", "edit", "reject"]
    reason: str  # why the call needed approval
    args: dict[str, Any]  # what the model asked for
    edited_args: dict[str, Any] | None
    message: str | None  # a rejection's reason, given back to the model
    by: str
    at: float


class RunFailure(TypedDict):
    """Why a run stopped without an answer; a structured end, never an exception."""

    reason: Literal["retry_budget_exhausted", "model_error", "budget", "model_timeout", "turn_limit", "deadline", "call_limit"]
    message: str
    attempts: int
    errors: list[CallVerdict]


class ModelCall(TypedDict):
    """One model request of the planner: tokens, cost, and the backoff waits before it."""

    run: int  # which run of the thread (numbered by user messages)
    turn: int
    status: Literal["ok", "error"]
    model: str
    reported: bool  # False: the provider sent no usage for this call
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float | None  # None: no price known for the model
    started_at: float
    duration_s: float
    waits: list[dict[str, Any]]  # each backoff wait: status, wait_s, retry_after


class UsageTotal(TypedDict):
    """The current run's model usage, summed."""

    run: int
    model_calls: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float | None
    retries: int


def append_records(records: list[Any], writes: list[list[Any]]) -> list[Any]:
    """The reducer of the thread-long record lists: each write appends its records.

    Batching-invariant (folding two batches equals folding their concatenation), as LangGraph's
    `DeltaChannel` requires."""
    added = [record for write in writes for record in (write if isinstance(write, list) else [write])]
    return [*records, *added] if added else records


# The thread-long channels (the conversation and toolrail's records of it) are LangGraph
# `DeltaChannel`s: a checkpoint stores only what its step wrote, plus a full snapshot of the list
# every few turns, instead of the whole list in every checkpoint. A thread's checkpoints then grow
# with what was said, not with (turns x steps). Reading the state back walks the checkpoints since
# each channel's latest snapshot, so every channel snapshots about every `TURNS_PER_SNAPSHOT`
# turns (its writes per turn times that): the walk, and a turn's cost, stay bounded however long
# the thread gets. Values read back (state, get_state_history, replay, fork) are the same lists.
TURNS_PER_SNAPSHOT = 5


def _delta(reducer: Any, writes_per_turn: int) -> DeltaChannel:
    return DeltaChannel(reducer, snapshot_frequency=writes_per_turn * TURNS_PER_SNAPSHOT)


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], _delta(_messages_delta_reducer, 4)]  # user, planner, tools, planner
    # planner -> validate: the latest turn's calls, raw.
    turn_calls: list[RawCall]
    # validate -> tools/sandbox: the latest turn's calls once all of them are valid.
    validated_calls: list[ValidatedCall]
    # Every verdict of the run, in order (the trace of retries).
    verdicts: Annotated[list[CallVerdict], _delta(append_records, 1)]
    # Consecutive invalid turns; reset when a turn validates.
    attempts: int
    # Every executed call of the run, with timing.
    results: Annotated[list[CallResult], _delta(append_records, 2)]
    failure: RunFailure | None
    # Every model request of the thread, and the current run's totals.
    model_calls: Annotated[list[ModelCall], _delta(append_records, 2)]
    usage_total: UsageTotal
    # With response_format: the final answer, validated, as JSON.
    structured_response: dict[str, Any] | None
    # Every approval decision of the run, in order.
    decisions: Annotated[list[ApprovalDecision], operator.add]  # rare (approvals only): a plain list
    # When the current run must end (epoch seconds), set at its first turn (toolrail/limits.py).
    deadline_at: float | None


class CallTask(TypedDict):
    """What `Send` hands one sandbox task: a single validated call."""

    call: ValidatedCall
    state: NotRequired[dict[str, Any]]  # only for tools that declare InjectedState
    deadline_at: NotRequired[float | None]  # the run's deadline: a call may not outlive it
    rebuild: NotRequired[list[str]]  # sandbox tasks: the thread's completed cells, to rebuild a new session


class ToolsTask(TypedDict, total=False):
    """What `Send` hands the tools task: every validated call of the turn that goes to tools."""

    calls: list[ValidatedCall]
    call: ValidatedCall  # a single call (accepted for callers that send one task per call)
    state: dict[str, Any]  # only when one of the calls' tools declares InjectedState
    deadline_at: float | None  # the run's deadline: no call of the turn may outlive it
