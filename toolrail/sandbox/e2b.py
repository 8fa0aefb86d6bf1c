"""The E2B backend: the same `Sandbox` interface on an E2B code-interpreter microVM.

Isolation and resource limits are E2B's (a Firecracker VM per session); here we map the
interface: streamed stdout/stderr through the SDK callbacks, the host-side output cap, the
wall-clock timeout, files through `files.write/read/list`, and `kill()` on close. Internet
access is switched off by default (`allow_internet_access=False`), like the local backend.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from toolrail.sandbox.base import (
    DoneEvent,
    ExecError,
    FileInfo,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxEvent,
    SandboxLimits,
    StderrEvent,
    StdoutEvent,
)

HOME = "/home/user"
NO_KEY = (
    "the E2B sandbox backend needs an API key: set E2B_API_KEY (https://e2b.dev/dashboard) "
    "or pass api_key=...; or use the local bubblewrap backend (TOOLRAIL_SANDBOX=local)."
)
NO_SDK = "the E2B backend needs the e2b-code-interpreter package: pip install 'toolrail[e2b]'"
TRUNCATION_NOTE = "\n[toolrail: output truncated after {n} bytes]\n"


class _CappedText:
    """Keeps at most `cap` bytes of one stream and says once where it cut."""

    def __init__(self, cap: int):
        self.cap, self.kept, self.truncated, self.parts = cap, 0, False, []

    def take(self, text: str) -> str:
        if self.truncated:
            return ""
        data = text.encode()
        room = self.cap - self.kept
        if len(data) <= room:
            self.kept += len(data)
            self.parts.append(text)
            return text
        self.truncated = True
        text = data[:room].decode(errors="ignore") + TRUNCATION_NOTE.format(n=self.cap)
        self.parts.append(text)
        return text

    @property
    def text(self) -> str:
        return "".join(self.parts)


class E2BSandbox(Sandbox):
    """A stateful Python session in an E2B cloud sandbox."""

    backend = "e2b"

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        api_key: str | None = None,
        template: str | None = None,
        allow_internet_access: bool = False,
    ):
        super().__init__(limits)
        try:
            from e2b_code_interpreter import AsyncSandbox
        except ImportError as exc:
            raise SandboxError(NO_SDK) from exc
        self.api_key = api_key or os.environ.get("E2B_API_KEY")
        if not self.api_key:
            raise SandboxError(NO_KEY)
        self._sdk_class = AsyncSandbox
        self.template = template
        self.allow_internet_access = allow_internet_access
        self._sdk: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._sdk is None:
            try:
                self._sdk = await self._sdk_class.create(
                    template=self.template,
                    timeout=int(self.limits.idle_timeout_s),
                    api_key=self.api_key,
                    allow_internet_access=self.allow_internet_access,
                )
            except Exception as exc:
                raise SandboxError(f"could not create the E2B sandbox: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        sdk, self._sdk = self._sdk, None
        if sdk is not None:
            try:
                await sdk.kill()
            except Exception:
                pass  # already gone (timed out on E2B's side): nothing left to stop

    async def run(self, code: str, *, timeout: float | None = None) -> AsyncIterator[SandboxEvent]:
        async with self._lock:
            await self.start()
            timeout = timeout or self.limits.wall_timeout_s
            queue: asyncio.Queue = asyncio.Queue()
            stdout, stderr = _CappedText(self.limits.max_output_bytes), _CappedText(self.limits.max_output_bytes)
            started = time.monotonic()
            task = asyncio.create_task(
                self._sdk.run_code(
                    code,
                    on_stdout=lambda m: queue.put_nowait(("stdout", m.line)),
                    on_stderr=lambda m: queue.put_nowait(("stderr", m.line)),
                    timeout=timeout,
                )
            )
            task.add_done_callback(lambda _: queue.put_nowait(("end", None)))
            try:
                while (item := await queue.get())[0] != "end":
                    kind, text = item
                    shown = (stdout if kind == "stdout" else stderr).take(text)
                    if shown:
                        yield (StdoutEvent if kind == "stdout" else StderrEvent)(text=shown)
            finally:
                task.cancel()  # no-op when finished; stops the call if the caller walked away
            yield DoneEvent(result=self._result(task, stdout, stderr, time.monotonic() - started))

    def _result(self, task: asyncio.Task, stdout: _CappedText, stderr: _CappedText, duration: float) -> RunResult:
        from e2b.exceptions import TimeoutException

        common = dict(duration_s=round(duration, 4), truncated=stdout.truncated or stderr.truncated)
        exc = task.exception()
        if isinstance(exc, TimeoutException):
            return RunResult(stdout=stdout.text, stderr=stderr.text, exit_reason="timeout", **common)
        if exc is not None:
            return RunResult(
                stdout=stdout.text,
                stderr=stderr.text,
                exit_reason="crashed",
                interpreter_lost=True,
                notes=[f"E2B call failed: {type(exc).__name__}: {exc}"],
                **common,
            )
        execution = task.result()
        if execution.text:  # the value of a final bare expression, as the local backend echoes it
            stdout.take(execution.text + "\n")
        error = execution.error
        reason = "ok"
        if error is not None:
            reason = "memory" if error.name == "MemoryError" else "error"
        return RunResult(
            stdout=stdout.text,
            stderr=stderr.text,
            error=ExecError(name=error.name, value=error.value, traceback=error.traceback) if error else None,
            exit_reason=reason,
            **common,
        )

    async def upload(self, path: str, data: bytes) -> None:
        await self.start()
        await self._sdk.files.write(_absolute(path), data)

    async def download(self, path: str) -> bytes:
        await self.start()
        return bytes(await self._sdk.files.read(_absolute(path), format="bytes"))

    async def list_files(self) -> list[FileInfo]:
        await self.start()
        entries = await self._sdk.files.list(HOME, depth=5)
        return [
            FileInfo(path=os.path.relpath(e.path, HOME), size=e.size)
            for e in entries
            if str(getattr(e.type, "value", e.type)) == "file"
        ]


def _absolute(path: str) -> str:
    return path if path.startswith("/") else f"{HOME}/{path}"
