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
    max_connection_retries: int = 2  # a refused or dropped connection: retried less (the endpoint may be down)

    def __post_init__(self) -> None:
        if min(self.max_retries, self.base_delay_s, self.max_delay_s, self.budget_s, self.max_connection_retries) < 0:
            raise ValueError(f"retry policy values must be >= 0, got {self}")


NO_RETRIES = RetryPolicy(max_retries=0, max_connection_retries=0)


class RetriesExhausted(Exception):
    """The endpoint kept failing; `cause` is its last error, `why` says which limit stopped us."""

    def __init__(self, cause: BaseException, attempts: int, waited_s: float, why: str):
        self.cause, self.attempts, self.waited_s, self.why = cause, attempts, waited_s, why
        super().__init__(f"{why} after {attempts} request(s), {waited_s:.1f} s of waiting")


def is_connection_error(exc: BaseException) -> bool:
    """The request never got an HTTP answer (refused, reset): transient under load. Timeouts are not
    retried here: the model may still be working on the request."""
    import httpx
    import openai
    from langchain_core.exceptions import ModelConnectionError, ModelTimeoutError

    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, (openai.APITimeoutError, ModelTimeoutError, httpx.TimeoutException)):
            return False
        if isinstance(candidate, (openai.APIConnectionError, ModelConnectionError, httpx.TransportError)):
            return True
        if type(candidate).__name__ == "APIConnectionError":  # other SDKs built like OpenAI's (anthropic)
            return "Timeout" not in type(candidate).__name__
    return False


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
            connection = status is None and is_connection_error(exc)
            if status not in RETRYABLE_STATUSES and not connection:
                raise
            limit = min(policy.max_retries, policy.max_connection_retries) if connection else policy.max_retries
            if connection and retry >= limit:
                if limit == 0:
                    raise
                raise RetriesExhausted(exc, retry + 1, waited, f"connection failed: retries exhausted ({limit})") from exc
            if retry >= policy.max_retries:
                if policy.max_retries == 0:
                    raise
                raise RetriesExhausted(exc, retry + 1, waited, f"HTTP {status}: retries exhausted ({policy.max_retries})") from exc
            hinted = None if connection else retry_after_s(exc)
            delay = next_delay(policy, retry, hinted, rng)
            what = "connection failed" if connection else f"HTTP {status}"
            if delay > policy.max_delay_s:
                raise RetriesExhausted(exc, retry + 1, waited, f"{what}: the server asks to wait {delay:.1f} s, over the {policy.max_delay_s:g} s limit") from exc
            if waited + delay > policy.budget_s:
                raise RetriesExhausted(exc, retry + 1, waited, f"{what}: retry budget of {policy.budget_s:g} s spent") from exc
            if deadline is not None and time.time() + delay > deadline:
                raise RetriesExhausted(exc, retry + 1, waited, f"{what}: waiting {delay:.1f} s would pass the run's deadline") from exc
            on_wait({
                "type": "model_retry", "status": status, "error": type(exc).__name__ if connection else None,
                "retry": retry + 1, "of": limit,
                "wait_s": round(delay, 3), "retry_after": hinted is not None, "at": time.time(),
            })
            await asyncio.sleep(delay)
            waited += delay
    raise AssertionError("unreachable")
