"""Tool-level retries: `@tools.register(retries=N)` re-runs a call whose tool raised or timed out.

Only idempotent tools may retry: running one twice must do no more than running it once. A
tool without side effects is idempotent; a side-effecting tool must say so itself
(`side_effects=True, idempotent=True`, e.g. an upsert keyed by the call), otherwise
registering it with retries is refused. Waits between attempts back off with jitter.
"""

from __future__ import annotations

import random
from typing import Any

TOOL_RETRY_BASE_S = 0.1
TOOL_RETRY_MAX_S = 2.0


def check_retry_settings(tool: Any) -> None:
    """Refuse, at registration, retries the tool cannot safely have."""
    if tool.retries < 0:
        raise ValueError(f"tool {tool.name!r}: retries must be >= 0, got {tool.retries}")
    if tool.retries and tool.side_effects and not tool.idempotent:
        raise ValueError(
            f"tool {tool.name!r} has side effects: retries={tool.retries} could repeat them. "
            "Declare idempotent=True if running it twice does no more than once, or drop retries."
        )


def retry_delay(attempt: int, rng: random.Random = random.Random()) -> float:
    """Jittered exponential wait before re-run number `attempt` (1-based)."""
    ceiling = min(TOOL_RETRY_MAX_S, TOOL_RETRY_BASE_S * (2 ** (attempt - 1)))
    return rng.uniform(ceiling / 2, ceiling)
