"""One sandbox session per graph thread: state persists across a run's `run_python` calls.

Sessions start lazily on a thread's first call (uploading the run's input files), hand back
the files a run produced, and are closed when the owner closes the pool (the CLI does at the
end of a run); an unused interpreter is also stopped by the sandbox's own idle timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolrail.sandbox import FileInfo, Sandbox, SandboxError, SandboxLimits, make_sandbox

# What one call may save under --out, at most. Defaults no larger than the default scratch dir.
DEFAULT_OUT_MAX_BYTES = SandboxLimits().scratch_bytes
DEFAULT_OUT_MAX_FILES = 1000


class SandboxSessions:
    def __init__(
        self,
        factory: Callable[[], Sandbox] = make_sandbox,
        inputs: dict[str, bytes] | None = None,
        output_dir: Path | None = None,
        out_max_bytes: int = DEFAULT_OUT_MAX_BYTES,
        out_max_files: int = DEFAULT_OUT_MAX_FILES,
        prewarm: bool = False,
    ):
        """`prewarm`: on entering (`async with`), have the backend get ready for the first
        session now (the local backend starts a spare jail in the background)."""
        self.factory, self.inputs, self.output_dir = factory, dict(inputs or {}), output_dir
        self.prewarm = prewarm
        self.out_max_bytes, self.out_max_files = out_max_bytes, out_max_files
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

    async def collect(self, thread: str, files: list[FileInfo], not_listed: int = 0) -> tuple[list[Path], list[str]]:
        """Copy the files a run produced out of the sandbox, if an output folder is set.

        Keeps their folder structure under `<out>/<thread folder>/`, within this call's budget
        (bytes and count); returns what was saved and, for what was not, why (one line for all
        that went over the budget). Never raises for a file: the run's own output is kept."""
        saved: list[Path] = []
        unsaved: list[str] = []
        if self.output_dir is None or not (files or not_listed):
            return saved, unsaved
        sandbox, folder = self._sessions[thread], self.output_dir / thread_folder(thread)
        budget_bytes, over_count, over_bytes = self.out_max_bytes, not_listed, 0
        for index, info in enumerate(files):
            if len(saved) >= self.out_max_files:
                over_count += len(files) - index
                break
            if info.size > budget_bytes:
                over_bytes += 1
                continue
            try:
                target = folder.joinpath(*_checked_parts(info.path))
            except ValueError as exc:
                unsaved.append(f"{info.path}: {exc}")
                continue
            try:
                data = await sandbox.download(info.path)
                if len(data) > budget_bytes:  # it grew since it was listed
                    over_bytes += 1
                    continue
                _write_new(folder, target, data)
                budget_bytes -= len(data)
                saved.append(target)
            except SandboxError as exc:
                unsaved.append(f"{info.path}: {exc}")
            except OSError as exc:
                unsaved.append(f"{info.path}: cannot write {target}: {exc.strerror or exc}")
        if over_count:
            unsaved.append(f"{over_count:,} more files not saved: over the {self.out_max_files:,}-file budget")
        if over_bytes:
            unsaved.append(f"{over_bytes:,} more files not saved: over the {self.out_max_bytes:,}-byte budget")
        return saved, unsaved

    async def close(self, thread: str | None = None) -> None:
        threads = [thread] if thread is not None else list(self._sessions)
        for name in threads:
            sandbox = self._sessions.pop(name, None)
            if sandbox is not None:
                await sandbox.close()

    async def __aenter__(self) -> "SandboxSessions":
        if self.prewarm:
            try:
                self.factory().prewarm()
            except SandboxError:
                pass  # only a head start: the first session reports what is wrong, in its result
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def thread_folder(thread: str) -> str:
    """A safe folder name for any thread id ('..', '/', NUL, 10 KB...): a short readable slug
    plus a hash of the whole id, so two ids never share a folder and none is ever a path."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", thread).strip("-")[:40] or "thread"
    digest = hashlib.sha256(thread.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}-{digest}"


def _checked_parts(path: str) -> list[str]:
    """The parts of a produced file's relative path; ValueError if it could leave the folder."""
    parts = path.split("/")
    if path.startswith("/") or "\0" in path or any(p in ("", ".", "..") for p in parts):
        raise ValueError("not a plain path inside the scratch dir; not saved")
    return parts


def _write_new(folder: Path, target: Path, data: bytes) -> None:
    """Write `data` at `target` inside `folder`, creating folders; never through a symlink."""
    folder.mkdir(parents=True, exist_ok=True)
    current = folder
    for part in target.relative_to(folder).parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise OSError(f"{current} is a symlink")
        current.mkdir(exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
