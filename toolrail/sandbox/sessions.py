"""One sandbox session per graph thread: state persists across a run's `run_python` calls.

Sessions start lazily on a thread's first call (uploading the run's input files), hand back
the files a run produced, and are closed when the owner closes the pool (the CLI does at the
end of a run); an unused interpreter is also stopped by the sandbox's own idle timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolrail.sandbox import FileInfo, Sandbox, make_sandbox


class SandboxSessions:
    def __init__(
        self,
        factory: Callable[[], Sandbox] = make_sandbox,
        inputs: dict[str, bytes] | None = None,
        output_dir: Path | None = None,
    ):
        self.factory, self.inputs, self.output_dir = factory, dict(inputs or {}), output_dir
        self._sessions: dict[str, Sandbox] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, thread: str, rebuild: list[str] | None = None) -> Sandbox:
        """The thread's session; a new one first re-runs `rebuild` (the thread's completed cells,
        oldest first, their output discarded) so a resumed thread finds its variables again."""
        async with self._locks.setdefault(thread, asyncio.Lock()):
            if thread not in self._sessions:
                sandbox = self.factory()
                await sandbox.start()
                for name, data in self.inputs.items():
                    await sandbox.upload(name, data)
                for code in rebuild or []:
                    await sandbox.run_to_end(code)
                self._sessions[thread] = sandbox
            return self._sessions[thread]

    def has(self, thread: str) -> bool:
        return thread in self._sessions

    async def collect(self, thread: str, files: list[FileInfo]) -> tuple[list[Path], list[str]]:
        """Copy the files a run produced out of the sandbox, if an output folder is set.

        Returns what was saved and, for what could not be, why (it stays in the session)."""
        saved: list[Path] = []
        unsaved: list[str] = []
        if self.output_dir is None or not files:
            return saved, unsaved
        sandbox, folder = self._sessions[thread], self.output_dir / _safe(thread)
        for info in files:
            target = folder / Path(info.path).name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(await sandbox.download(info.path))
                saved.append(target)
            except OSError as exc:
                unsaved.append(f"{info.path}: cannot write {target}: {exc.strerror or exc}")
        return saved, unsaved

    async def close(self, thread: str | None = None) -> None:
        threads = [thread] if thread is not None else list(self._sessions)
        for name in threads:
            sandbox = self._sessions.pop(name, None)
            if sandbox is not None:
                await sandbox.close()

    async def __aenter__(self) -> "SandboxSessions":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _safe(thread: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in thread) or "default"
