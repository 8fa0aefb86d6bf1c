"""Retrying the model when its endpoint says "not now": 429 and 5xx, with backoff.

Exponential backoff with full jitter (so a fleet of workers that were throttled together do
not come back together), and `Retry-After` honoured when the server sends it. Waiting is
bounded three ways: a number of retries, a total wait (the retry budget) and the run's
deadline; past any of them the run ends with a structured `model_error` that says so.

Every wait is announced before it starts (`on_wait`), so the CLI and the trace show it: a
retry is never silent. SDK-level retries are switched off where toolrail builds the client
(`max_retries=0`) so these are the only ones.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from toolrail.providers import status_of

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry a throttled or failing model endpoint, per planner turn."""

    max_retries: int = 4  # requests after the first
    base_delay_s: float = 0.5  # first wait, doubled each time
    max_delay_s: float = 20.0  # one wait, at most (a longer Retry-After ends the turn)
    budget_s: float = 60.0  # all waits of one turn together

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_delay_s < 0 or self.max_delay_s < 0 or self.budget_s < 0:
            raise ValueError(f"retry policy values must be >= 0, got {self}")


NO_RETRIES = RetryPolicy(max_retries=0)


class RetriesExhausted(Exception):
    """The endpoint kept failing; `cause` is its last error, `why` says which limit stopped us."""

    def __init__(self, cause: BaseException, attempts: int, waited_s: float, why: str):
        self.cause, self.attempts, self.waited_s, self.why = cause, attempts, waited_s, why
        super().__init__(f"{why} after {attempts} request(s), {waited_s:.1f} s of waiting")


def retry_after_s(exc: BaseException) -> float | None:
    """The server's `retry-after-ms` / `Retry-After` (seconds or an HTTP date), if any."""
    for candidate in (exc, exc.__cause__):
        headers = getattr(getattr(candidate, "response", None), "headers", None)
        if not headers:
            continue
        if (ms := headers.get("retry-after-ms")) is not None:
            try:
                return max(0.0, float(ms) / 1000)
            except ValueError:
                pass
        if (value := headers.get("retry-after")) is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                try:
                    return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
                except (TypeError, ValueError):
                    return None
    return None


def next_delay(policy: RetryPolicy, retry: int, retry_after: float | None, rng: random.Random) -> float:
    """Retry-After when given; else full jitter over base * 2^retry, capped."""
    if retry_after is not None:
        return retry_after
    ceiling = min(policy.max_delay_s, policy.base_delay_s * (2 ** retry))
    return rng.uniform(ceiling / 2, ceiling)


async def call_with_backoff(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_wait: Callable[[dict[str, Any]], None] = lambda event: None,
    deadline: float | None = None,
    rng: random.Random | None = None,
) -> T:
    """`await call()`, retrying retryable HTTP statuses; raises RetriesExhausted when a limit is hit.

    `deadline` is a wall-clock time (time.time()) the run must end by: a wait that would pass it
    is not started.
    """
    rng = rng or random.Random()
    waited = 0.0
    for retry in range(policy.max_retries + 1):
        try:
            return await call()
        except Exception as exc:
            status = status_of(exc)
            if status not in RETRYABLE_STATUSES:
                raise
            if retry >= policy.max_retries:
                if policy.max_retries == 0:
                    raise
                raise RetriesExhausted(exc, retry + 1, waited, f"HTTP {status}: retries exhausted ({policy.max_retries})") from exc
            hinted = retry_after_s(exc)
            delay = next_delay(policy, retry, hinted, rng)
            if delay > policy.max_delay_s:
                raise RetriesExhausted(exc, retry + 1, waited, f"HTTP {status}: the server asks to wait {delay:.1f} s, over the {policy.max_delay_s:g} s limit") from exc
            if waited + delay > policy.budget_s:
                raise RetriesExhausted(exc, retry + 1, waited, f"HTTP {status}: retry budget of {policy.budget_s:g} s spent") from exc
            if deadline is not None and time.time() + delay > deadline:
                raise RetriesExhausted(exc, retry + 1, waited, f"HTTP {status}: waiting {delay:.1f} s would pass the run's deadline") from exc
            on_wait({
                "type": "model_retry", "status": status, "retry": retry + 1, "of": policy.max_retries,
                "wait_s": round(delay, 3), "retry_after": hinted is not None, "at": time.time(),
            })
            await asyncio.sleep(delay)
            waited += delay
    raise AssertionError("unreachable")
