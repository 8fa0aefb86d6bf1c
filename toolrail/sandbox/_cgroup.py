"""Optional cgroup limits for one sandbox: pids (fork bombs) and memory (all processes together).

RLIMIT_NPROC does not help when the host runs the sandbox as root (the kernel exempts uid 0
even inside a user namespace), so the process cap needs a cgroup. We use one when the hierarchy
is writable (root on cgroup v2 with the controllers enabled, or cgroup v1 like this host) and
say so otherwise; the caller reports what was really applied.
"""

from __future__ import annotations

import os
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "toolrail-sandbox-"
_swept = False


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks (field 22 of /proc/PID/stat), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]


def owner_tag() -> str:
    """`PID-STARTTIME` of this process: names our cgroups so a later sweep can tell whether
    their owner still lives (a reused pid has another start time)."""
    return f"{os.getpid()}-{_start_time(os.getpid())}"


def owner_is_alive(name: str) -> bool:
    """True unless `name` is ours by naming (PREFIX + PID-STARTTIME-ID) and its owner is dead."""
    parts = name[len(PREFIX):].split("-") if name.startswith(PREFIX) else []
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return True  # not in our naming: never ours to remove
    return _start_time(int(parts[0])) == parts[1]


def sweep_leftovers(parents: list[Path] | None = None) -> list[Path]:
    """Remove the cgroups a SIGKILLed toolrail left behind: only toolrail's own (by name) and
    only those whose owner process is dead; live ones (other runs on this host) are untouched."""
    removed = []
    for parent in _parents() if parents is None else parents:
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(PREFIX) and entry.is_dir() and not owner_is_alive(entry.name):
                Cgroup(dirs=[entry]).destroy()
                if not entry.exists():
                    removed.append(entry)
    return removed


def _parents() -> list[Path]:
    parents = [mount / _own_path("") for mount, _ in _mounts("cgroup2")]
    for mount, options in _mounts("cgroup"):
        for controller in ("pids", "memory"):
            if controller in options:
                parents.append(mount / _own_path(controller).lstrip("/"))
    return parents


@dataclass
class Cgroup:
    """One freshly created cgroup directory per controller hierarchy (v1) or one (v2)."""

    dirs: list[Path] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    memory_dir: Path | None = None
    version: int = 0

    def join_file_paths(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding this cgroup's memory."""
        if self.memory_dir is None:
            return 0
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (self.memory_dir / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def destroy(self) -> None:
        """Kill whatever is left inside and remove the directories."""
        for d in self.dirs:
            if (d / "cgroup.kill").exists():
                _write(d / "cgroup.kill", "1")
            for _ in range(100):
                pids = _pids(d)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                _sleep_briefly()
            try:
                d.rmdir()
            except OSError:
                pass


def create_cgroup(max_processes: int, memory_bytes: int) -> Cgroup | None:
    """A new cgroup capping processes and memory, or None when no hierarchy is writable."""
    if os.environ.get("TOOLRAIL_SANDBOX_NO_CGROUP"):
        return None
    global _swept
    if not _swept:  # once per process: what SIGKILLed runs left behind
        _swept = True
        sweep_leftovers()
    name = f"{PREFIX}{owner_tag()}-{uuid.uuid4().hex[:12]}"
    cgroup = _create_v2(name, max_processes, memory_bytes) or _create_v1(name, max_processes, memory_bytes)
    if cgroup is not None and not cgroup.applied:
        cgroup.destroy()
        return None
    return cgroup


def _create_v2(name: str, max_processes: int, memory_bytes: int) -> Cgroup | None:
    for mount, _ in _mounts("cgroup2"):
        base = mount / _own_path("")
        controllers = _read(base / "cgroup.controllers").split()
        if "pids" not in controllers and "memory" not in controllers:
            continue
        d = base / name
        try:
            d.mkdir()
        except OSError:
            continue
        cgroup = Cgroup(dirs=[d], version=2)
        if _write(d / "pids.max", str(max_processes)):
            cgroup.applied.append("pids")
        if _write(d / "memory.max", str(memory_bytes)):
            _write(d / "memory.swap.max", "0")
            cgroup.applied.append("memory")
            cgroup.memory_dir = d
        return cgroup
    return None


def _create_v1(name: str, max_processes: int, memory_bytes: int) -> Cgroup | None:
    cgroup = Cgroup(version=1)
    for mount, options in _mounts("cgroup"):
        for controller, limit_file, value in (
            ("pids", "pids.max", max_processes),
            ("memory", "memory.limit_in_bytes", memory_bytes),
        ):
            if controller not in options or controller in cgroup.applied:
                continue
            d = mount / _own_path(controller).lstrip("/") / name
            try:
                d.mkdir()
            except OSError:
                continue
            cgroup.dirs.append(d)
            if _write(d / limit_file, str(value)):
                cgroup.applied.append(controller)
                if controller == "memory":
                    _write(d / "memory.memsw.limit_in_bytes", str(value))
                    cgroup.memory_dir = d
    return cgroup if cgroup.dirs else None


def _mounts(fstype: str) -> list[tuple[Path, set[str]]]:
    found = []
    for line in _read(Path("/proc/self/mounts")).splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == fstype:
            found.append((Path(parts[1]), set(parts[3].split(","))))
    return found


def _own_path(controller: str) -> str:
    """This process's cgroup path for `controller` ('' means the v2 unified entry)."""
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller == "" and controllers == "") or controller in controllers.split(","):
            return path.lstrip("/")
    return ""


def _pids(d: Path) -> list[int]:
    return [int(p) for p in _read(d / "cgroup.procs").split() if p.isdigit()]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _sleep_briefly() -> None:
    import time

    time.sleep(0.01)
