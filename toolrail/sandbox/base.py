"""The one sandbox interface every backend speaks, and the records it hands back.

A sandbox is a *session*: one long-lived Python interpreter whose variables and files persist
between `run` calls (like a notebook kernel or E2B's code interpreter). `run` streams events as
they happen so the caller can show output live; the last event is always a `DoneEvent` with the
structured `RunResult`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ExitReason = Literal[
    "ok",  # the cell ran to the end
    "error",  # the cell raised; the interpreter is still alive
    "timeout",  # wall-clock limit hit
    "cpu",  # CPU-time limit hit (RLIMIT_CPU)
    "memory",  # MemoryError or an out-of-memory kill
    "output_limit",  # the cell kept printing far past the output cap and was stopped
    "killed",  # the interpreter died from a signal nobody on our side sent (e.g. SIGKILL)
    "crashed",  # the interpreter exited on its own (os._exit, segfault, protocol garbage)
]

# Reasons after which the interpreter (and so all session state) is gone.
STATE_LOSING = frozenset({"killed", "crashed"})


class SandboxError(RuntimeError):
    """The sandbox itself could not be used (missing bubblewrap, no E2B key, closed session)."""


class SandboxLimits(BaseModel):
    """Per-session resource limits. Defaults suit an LLM's analysis snippets, not heavy jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_timeout_s: float = Field(30.0, gt=0, description="Wall-clock limit of one run.")
    cpu_time_s: int = Field(30, gt=0, description="CPU seconds one run may use (RLIMIT_CPU).")
    session_cpu_time_s: int = Field(600, gt=0, description="CPU seconds for the whole session.")
    memory_bytes: int = Field(1 << 30, gt=0, description="Address-space / memory cap.")
    max_processes: int = Field(64, gt=0, description="Processes and threads in the sandbox.")
    max_file_bytes: int = Field(64 << 20, gt=0, description="Largest single file (RLIMIT_FSIZE).")
    scratch_bytes: int = Field(128 << 20, gt=0, description="Size of the writable scratch dir.")
    max_output_bytes: int = Field(1 << 20, gt=0, description="Output kept per run and stream.")
    output_stop_factor: int = Field(
        16, ge=1, description="Stop the run once it printed this many times max_output_bytes."
    )
    idle_timeout_s: float = Field(600.0, gt=0, description="Close an unused interpreter after this.")
    kill_grace_s: float = Field(1.0, ge=0, description="After interrupting, wait this before SIGKILL.")


class ExecError(BaseModel):
    """An exception raised by the cell, as the interpreter reported it."""

    name: str
    value: str
    traceback: str


class FileInfo(BaseModel):
    """A regular file in the sandbox's scratch dir (path relative to it)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    size: int = Field(ge=0)


class SkippedFile(BaseModel):
    """Something in scratch that is not a regular file (symlink, FIFO, device...): never copied."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    reason: str = Field(max_length=200)


class RunResult(BaseModel):
    """Everything one run produced, shaped for both the model and the trace."""

    stdout: str = ""
    stderr: str = ""
    error: ExecError | None = None
    exit_reason: ExitReason = "ok"
    duration_s: float = 0.0
    files: list[FileInfo] = Field(default_factory=list, description="Files created or changed.")
    skipped_files: list[SkippedFile] = Field(
        default_factory=list, description="New symlinks, FIFOs, devices...: never followed, opened or copied."
    )
    files_not_listed: int = Field(0, ge=0, description="Files beyond the listing cap, not reported one by one.")
    truncated: bool = False
    state_reset: bool = Field(
        False, description="This run started in a fresh interpreter: earlier variables are gone."
    )
    interpreter_lost: bool = Field(
        False, description="The interpreter died during this run; the next run starts fresh."
    )
    notes: list[str] = Field(default_factory=list, description="Human-readable remarks.")

    @property
    def ok(self) -> bool:
        return self.exit_reason == "ok"

    def render(self, limit: int = 8000) -> str:
        """One text block for a tool message: output, error, reason and notes."""
        parts = []
        if self.stdout:
            parts.append(self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append("[stderr]\n" + self.stderr.rstrip("\n"))
        if self.error is not None:
            parts.append(self.error.traceback.rstrip("\n") or f"{self.error.name}: {self.error.value}")
        if self.exit_reason not in ("ok", "error"):
            parts.append(f"[run stopped: {self.exit_reason}]")
        if self.files:
            parts.append("[files] " + ", ".join(f"{f.path} ({f.size} B)" for f in self.files))
        if self.skipped_files:
            parts.append("[skipped, not regular files] " + ", ".join(f"{f.path} ({f.reason})" for f in self.skipped_files[:20])
                         + (f" and {len(self.skipped_files) - 20} more" if len(self.skipped_files) > 20 else ""))
        if self.files_not_listed:
            parts.append(f"[files] {self.files_not_listed:,} more files not listed (over the listing cap)")
        parts += [f"[note] {note}" for note in self.notes]
        text = "\n".join(parts) or "(no output)"
        return text if len(text) <= limit else text[: limit // 2] + "\n...\n" + text[-limit // 2 :]


class StdoutEvent(BaseModel):
    type: Literal["stdout"] = "stdout"
    text: str


class StderrEvent(BaseModel):
    type: Literal["stderr"] = "stderr"
    text: str


class DoneEvent(BaseModel):
    type: Literal["done"] = "done"
    result: RunResult


SandboxEvent = Annotated[StdoutEvent | StderrEvent | DoneEvent, Field(discriminator="type")]


class Sandbox(abc.ABC):
    """A stateful, isolated Python session. Use as `async with make_sandbox() as sb: ...`."""

    backend: str = "abstract"

    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the sandbox (idempotent). `run` starts it lazily too."""

    def prewarm(self) -> None:
        """Get ready for sessions like this one ahead of time (the local backend fills its pool
        of spare jails in the background). Default: nothing to do."""

    @abc.abstractmethod
    def run(self, code: str, *, timeout: float | None = None) -> AsyncIterator[SandboxEvent]:
        """Run one cell; yield stdout/stderr events live, then exactly one DoneEvent."""

    @abc.abstractmethod
    async def upload(self, path: str, data: bytes) -> None:
        """Write `data` to `path` (relative paths are inside the scratch dir)."""

    @abc.abstractmethod
    async def download(self, path: str) -> bytes:
        """Read a file from the sandbox."""

    @abc.abstractmethod
    async def list_files(self) -> list[FileInfo]:
        """The files in the scratch dir, recursively."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop everything the sandbox started (idempotent)."""

    async def run_to_end(self, code: str, *, timeout: float | None = None) -> RunResult:
        """Run a cell and return only its result (events are dropped)."""
        result = None
        async for event in self.run(code, timeout=timeout):
            if isinstance(event, DoneEvent):
                result = event.result
        assert result is not None, "a backend ended a run without a DoneEvent"
        return result

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
