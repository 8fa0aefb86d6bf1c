"""Optional cgroup limits for one sandbox: pids (fork bombs) and memory (all processes together).

RLIMIT_NPROC does not help when the host runs the sandbox as root (the kernel exempts uid 0
even inside a user namespace), so the process cap needs a cgroup. We use one when the hierarchy
is writable (root on cgroup v2 with the controllers enabled, or cgroup v1 like this host) and
say so otherwise; the caller reports what was really applied.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "toolrail-sandbox-"
_swept = False


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on, past the command name; None if the process is gone."""
    text = _read(Path(f"/proc/{pid}/stat"))
    return text.rsplit(")", 1)[1].split() if text else None


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks (field 22 of /proc/PID/stat), or None if gone."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


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

    def adopt_tree(self, root_pid: int, depth: int, timeout: float) -> bool:
        """Move `root_pid` and every process below it into this cgroup, until a process
        `depth` levels down exists and no process of the tree is left outside.

        Why after the start: bwrap is started with no code of ours between fork and exec (see
        local.JailLauncher), and on cgroup v1 each join waits for a kernel RCU grace period
        (~10 ms on an idle host), which here runs while bwrap and the interpreter start up. Nothing
        untrusted runs meanwhile: the driver runs no code before the host's hello, which is
        sent only once this returns True. The cost: pages a jail process touched before its
        move (bwrap's set-up, the interpreter's first moments; v1 no longer moves charges) stay
        charged to the host's cgroup; all the code allocates counts against the limit, and
        RLIMIT_AS caps each process whole. False: the root exited first (bwrap failed; its stderr says why).
        OSError: a move failed, or the tree did not take shape in `timeout` seconds."""
        deadline = time.monotonic() + timeout
        moved: set[int] = set()
        while True:
            levels = _tree(root_pid, depth)
            if not levels:
                return False
            fresh = [pid for level in levels for pid in level if pid not in moved]
            for pid in fresh:
                for d in self.dirs:
                    try:
                        _write_or_raise(d / "cgroup.procs", str(pid))
                    except ProcessLookupError:
                        break  # gone (a failing bwrap): the next scan tells
                moved.add(pid)
            if not fresh and len(levels) > depth:
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(f"the jail's processes did not appear within {timeout:.0f} s")
            if not fresh:
                time.sleep(0.0005)

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
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:  # EBUSY: killed tasks listed nowhere yet still let go of it
                    if exc.errno != errno.EBUSY:
                        break
                    _sleep_briefly()


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


def _tree(root_pid: int, depth: int) -> list[list[int]]:
    """[[root], [its children], ...] down to `depth` levels below the root; [] if it is gone
    (or a zombie: exited, not reaped yet)."""
    fields = _stat_fields(root_pid)
    if not fields or fields[0] in ("Z", "X"):
        return []
    levels = [[root_pid]]
    while len(levels) <= depth:
        below = [child for pid in levels[-1] for child in _children(pid)]
        if not below:
            break
        levels.append(below)
    return levels


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        found += [int(p) for p in _read(Path(f"/proc/{pid}/task/{task}/children")).split()]
    return found


def _write_or_raise(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


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
    time.sleep(0.01)
