"""Tokens per model call, totals per run, budgets and (optionally) cost.

Each planner request leaves one `ModelCall` record in state: tokens in and out as the provider
reported them (LangChain's `usage_metadata`), the waits backoff made before it, its cost when a
price table knows the model. A *run* is everything since the latest user message, so a thread
continued with `--thread` starts a new run with a fresh budget.

A `Budget` stops a run with `failure.reason = "budget"` once its tokens (or its cost) pass the
limit: checked before each model request (nothing is sent once the limit is reached) and after
each reply (a reply that crossed it is kept in history but its tool calls do not run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage

from toolrail.errors import ConfigError
from toolrail.state import ModelCall, RunFailure, UsageTotal


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input_per_mtok: float
    output_per_mtok: float


@dataclass(frozen=True)
class Budget:
    """Limits on one run's spending; None means no limit."""

    max_tokens_total: int | None = None
    max_cost_usd: float | None = None
    prices: dict[str, Price] = field(default_factory=dict)  # model name -> price

    def __post_init__(self) -> None:
        if self.max_tokens_total is not None and self.max_tokens_total < 1:
            raise ValueError(f"max_tokens_total must be >= 1, got {self.max_tokens_total}")
        if self.max_cost_usd is not None and self.max_cost_usd <= 0:
            raise ValueError(f"max_cost_usd must be > 0, got {self.max_cost_usd}")
        if self.max_cost_usd is not None and not self.prices:
            raise ValueError("max_cost_usd needs a price table (prices=...) to turn tokens into cost")

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        price = self.prices.get(model) or _longest_prefix(self.prices, model)
        if price is None:
            return None
        return round((input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6, 8)

    def exceeded(self, total: UsageTotal) -> str | None:
        """Why the run must stop, or None."""
        if self.max_tokens_total is not None and total["total_tokens"] >= self.max_tokens_total:
            return f"the run used {total['total_tokens']} tokens; its budget is {self.max_tokens_total} (--max-tokens-total)"
        if self.max_cost_usd is not None and (total.get("cost_usd") or 0) >= self.max_cost_usd:
            return f"the run cost ${total['cost_usd']:.4f}; its budget is ${self.max_cost_usd:g}"
        return None


UNLIMITED = Budget()


def load_prices(path: str | Path) -> dict[str, Price]:
    """A JSON price table: {"model-name": {"input": USD per 1M tokens, "output": USD per 1M tokens}}."""
    try:
        table = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--prices {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"--prices {path}: not JSON ({exc})") from None
    if not isinstance(table, dict):
        raise ConfigError(f"--prices {path}: expected an object of model name -> {{input, output}}")
    prices = {}
    for model, entry in table.items():
        try:
            prices[model] = Price(float(entry["input"]), float(entry["output"]))
        except (TypeError, KeyError, ValueError):
            raise ConfigError(f"--prices {path}: {model!r} needs numeric \"input\" and \"output\" (USD per 1M tokens)") from None
    return prices


FEEDBACK_ID_PREFIX = "toolrail-feedback-"  # user-role messages toolrail writes itself: not a new run


def current_run(messages: list[BaseMessage]) -> int:
    """Runs are numbered by the user's messages: the latest one starts the current run."""
    return sum(1 for m in messages if m.type == "human" and not str(m.id or "").startswith(FEEDBACK_ID_PREFIX))


def model_call(reply: BaseMessage | None, *, run: int, turn: int, budget: Budget, started_at: float,
               duration_s: float, waits: list[dict[str, Any]], status: str = "ok") -> ModelCall:
    usage = (getattr(reply, "usage_metadata", None) or {}) if reply is not None else {}
    metadata = (getattr(reply, "response_metadata", None) or {}) if reply is not None else {}
    model = str(metadata.get("model_name") or metadata.get("model") or "")
    input_tokens, output_tokens = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return ModelCall(
        run=run, turn=turn, status=status, model=model, reported=bool(usage),
        input_tokens=input_tokens, output_tokens=output_tokens,
        total_tokens=int(usage.get("total_tokens", input_tokens + output_tokens)),
        cost_usd=budget.cost(model, input_tokens, output_tokens),
        started_at=started_at, duration_s=round(duration_s, 6), waits=waits,
    )


def run_total(calls: list[ModelCall], run: int) -> UsageTotal:
    mine = [c for c in calls if c["run"] == run]
    costs = [c["cost_usd"] for c in mine if c["cost_usd"] is not None]
    return UsageTotal(
        run=run, model_calls=len(mine),
        input_tokens=sum(c["input_tokens"] for c in mine),
        output_tokens=sum(c["output_tokens"] for c in mine),
        total_tokens=sum(c["total_tokens"] for c in mine),
        cost_usd=round(sum(costs), 8) if costs else None,
        retries=sum(len(c["waits"]) for c in mine),
    )


def budget_failure(why: str, state: dict) -> RunFailure:
    return RunFailure(reason="budget", message=why, attempts=state.get("attempts", 0), errors=[])


def _longest_prefix(prices: dict[str, Price], model: str) -> Price | None:
    """Providers answer with dated names (gpt-4o-mini-2024-07-18): match the table's base name."""
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None
