"""The model's door into the sandbox: one `run_python` tool, routed to the graph's sandbox node.

The graph never calls the function body: calls with `target="sandbox"` go to the sandbox node,
which runs `code` in the thread's long-lived sandbox session and streams its output. The body
below is the same behaviour for use outside the graph (scripts, tests): a one-off session,
started and closed around the call, so nothing persists between direct calls.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from toolrail.tools.registry import ToolRegistry

MAX_TIMEOUT_S = 120
DEFAULT_TIMEOUT_S = 30

sandbox_tools = ToolRegistry()


# Not speculative: a cell changes the session's state, so it must only run once it is certain.
# The registry timeout covers the run plus starting the sandbox.
@sandbox_tools.register(target="sandbox", timeout=MAX_TIMEOUT_S + 15, speculative=False, side_effects=True)
async def run_python(
    code: str,
    timeout_s: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_S)] = DEFAULT_TIMEOUT_S,
) -> str:
    """Run Python 3 code in an isolated sandbox and return what it printed.

    The sandbox has no network and no access to the user's machine; only the standard library
    and preinstalled packages are available. Variables, imports and files in the working
    directory persist between calls in this conversation. The value of a final bare expression
    is printed, as in a notebook. Output beyond about 1 MB is truncated.

    Args:
        code: Python source to execute, e.g. "import statistics\\nstatistics.mean([1, 2, 3])".
        timeout_s: Wall-clock limit in seconds for this run (1-120).
    """
    from toolrail.sandbox import make_sandbox

    async with make_sandbox() as sandbox:
        result = await sandbox.run_to_end(code, timeout=float(timeout_s))
    return result.render()
