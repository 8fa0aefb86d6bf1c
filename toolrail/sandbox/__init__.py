"""Isolated, stateful Python sessions for model-written code (GitHub issue 3).

`make_sandbox()` picks the backend: local bubblewrap by default, E2B when asked
(`backend="e2b"` or `TOOLRAIL_SANDBOX=e2b`). Both speak the `Sandbox` interface in `base`.

Consuming a run (what a graph node does), output shown live, result at the end::

    async with make_sandbox() as sandbox:           # one session = one interpreter; keep it
        async for event in sandbox.run(code, timeout=30):   # per thread to keep state
            if event.type == "stdout":   ...  # event.text, a decoded chunk, as it arrives
            elif event.type == "stderr": ...  # same, for stderr
            else:                        ...  # event.type == "done": event.result (RunResult)

Exactly one DoneEvent ends every run, and `run` never raises for what the code did (errors,
timeouts, kills are in `result.exit_reason`); it raises SandboxError only when the sandbox
itself cannot work. Runs of one session are serialised; stopping iteration early kills the
interpreter (the next run starts fresh and says so).
"""

from __future__ import annotations

import os

from toolrail.sandbox.base import (
    STATE_LOSING,
    DoneEvent,
    ExecError,
    ExitReason,
    FileInfo,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxEvent,
    SandboxLimits,
    SkippedFile,
    StderrEvent,
    StdoutEvent,
)

BACKENDS = ("local", "e2b")


def backend_name(backend: str | None = None) -> str:
    """`backend`, else $TOOLRAIL_SANDBOX, else 'local'; an unknown name is a SandboxError."""
    name = (backend or os.environ.get("TOOLRAIL_SANDBOX") or "local").strip().lower()
    if name not in BACKENDS:
        source = "TOOLRAIL_SANDBOX" if not backend else "sandbox backend"
        raise SandboxError(f"{source}: unknown sandbox backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def make_sandbox(backend: str | None = None, limits: SandboxLimits | None = None, *,
                 pool_size: int | None = None, **options) -> Sandbox:
    """A new, not yet started session on `backend` (default: $TOOLRAIL_SANDBOX or 'local').

    `pool_size`: spare jails the local backend keeps ready (default $TOOLRAIL_SANDBOX_POOL or 1;
    0 = off; see toolrail/sandbox/pool.py). E2B sandboxes are remote: it does not apply."""
    name = backend_name(backend)
    if name == "local":
        from toolrail.sandbox.local import LocalSandbox

        return LocalSandbox(limits, pool_size=pool_size, **options)
    if name == "e2b":
        from toolrail.sandbox.e2b import E2BSandbox

        return E2BSandbox(limits, **options)


__all__ = [
    "BACKENDS",
    "backend_name",
    "STATE_LOSING",
    "DoneEvent",
    "ExecError",
    "ExitReason",
    "FileInfo",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "SandboxEvent",
    "SandboxLimits",
    "SkippedFile",
    "StderrEvent",
    "StdoutEvent",
    "make_sandbox",
]
