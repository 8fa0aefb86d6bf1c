"""Tools for the crash-resume harness: slow calls, one kind with a side effect on a ledger file.

`charge` appends one line per execution to $TOOLRAIL_HARNESS_LEDGER: a duplicate line is a
side effect that happened twice. `lookup` has no side effect; it may legitimately run again.
"""

from __future__ import annotations

import asyncio
import os

from toolrail.tools.registry import ToolRegistry

harness_tools = ToolRegistry()


def _append(line: str) -> None:
    with open(os.environ["TOOLRAIL_HARNESS_LEDGER"], "a") as ledger:
        ledger.write(line + "\n")
        ledger.flush()
        os.fsync(ledger.fileno())


@harness_tools.register(side_effects=True, timeout=10)
async def charge(order: str, thread: str) -> str:
    """Charge an order (a side effect: must never happen twice).

    Args:
        order: Order id.
        thread: The conversation it belongs to.
    """
    _append(f"charge {thread} {order}")
    await asyncio.sleep(0.3)
    return f"charged {order}"


@harness_tools.register(timeout=10)
async def lookup(key: str) -> str:
    """Look something up (no side effect).

    Args:
        key: What to look up.
    """
    await asyncio.sleep(0.3)
    return f"value of {key}"
