"""Every limit a run has, with its default: a run always ends, on time, with a structured result.

A misbehaving model (endless tool calls, endless streams, keep-alive trickles, huge or deeply
nested arguments, thousands of calls in one turn) must not keep a run going. Each limit ends
the run with `failure.reason` naming it, or — for one call's arguments — makes that call
invalid with a short error the model can act on.

The deadline is per run: it starts at the run's first turn (kept in state as `deadline_at`,
so every node and every worker sees the same one) unless the caller sets
`config["configurable"]["deadline_at"]` (or `"deadline"`; a Unix time — the CLI does: a resume
gets a deadline of its own).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage

from toolrail.arguments import ArgumentLimits

DEFAULT_MAX_TURNS = 25
DEFAULT_DEADLINE_S = 900.0
DEFAULT_FIRST_CHUNK_TIMEOUT_S = 60.0
DEFAULT_CHUNK_GAP_TIMEOUT_S = 30.0
DEFAULT_REPLY_TIMEOUT_S = 300.0
DEFAULT_MAX_CALLS_PER_TURN = 256
# LangGraph steps per turn at most: planner, validate, the tools/sandbox step (with approve beside
# it), the approved calls, the ordered calls. Its recursion limit is set above what `max_turns`
# allows, so the turn limit (a structured failure) always comes first.
STEPS_PER_TURN = 6


@dataclass(frozen=True)
class RunLimits:
    max_turns: int = DEFAULT_MAX_TURNS
    deadline_s: float | None = DEFAULT_DEADLINE_S
    first_chunk_timeout_s: float = DEFAULT_FIRST_CHUNK_TIMEOUT_S
    chunk_gap_timeout_s: float = DEFAULT_CHUNK_GAP_TIMEOUT_S
    reply_timeout_s: float = DEFAULT_REPLY_TIMEOUT_S
    max_calls_per_turn: int = DEFAULT_MAX_CALLS_PER_TURN
    arguments: ArgumentLimits = field(default_factory=ArgumentLimits)

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_calls_per_turn"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("deadline_s", "first_chunk_timeout_s", "chunk_gap_timeout_s", "reply_timeout_s"):
            value = getattr(self, name)
            if value is None and name == "deadline_s":
                continue
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")

    @property
    def recursion_limit(self) -> int:
        return STEPS_PER_TURN * (self.max_turns + 1) + 4


def turns_this_run(messages: list[BaseMessage]) -> int:
    """Model turns since the latest user message (retries of invalid turns count)."""
    turns = 0
    for message in reversed(messages):
        if message.type == "human":
            break
        turns += message.type == "ai"
    return turns


def deadline_at(config: Any, state_deadline: float | None) -> float | None:
    """The run's deadline (epoch seconds): the caller's, else the one the run started with."""
    configurable = (config or {}).get("configurable") or {}
    configured = configurable.get("deadline_at", configurable.get("deadline"))
    return float(configured) if configured is not None else state_deadline


def seconds_left(deadline: float | None) -> float:
    return math.inf if deadline is None else deadline - time.time()
