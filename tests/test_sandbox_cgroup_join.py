"""The jail joins its cgroup while it starts, and code runs only once the whole jail is inside:
the join's kernel grace period is off the start's critical path, never off the limits. These
tests need the root run (CI's first pass): as root this host's cgroups are writable, and an
unprivileged run has no cgroup to join."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from conftest import TEST_LIMITS, assert_start_refused, eventually
from toolrail.sandbox import make_sandbox
from toolrail.sandbox import _cgroup

# The jail's own view of its cgroups: the pids and memory lines of /proc/self/cgroup, and those
# of the jail's pid 1 (bwrap's reaper), printed by the session's very first cell.
PROBE = """
def lines(pid):
    return [l for l in open(f"/proc/{pid}/cgroup").read().splitlines() if l.split(":")[1] in ("pids", "memory")]
print(lines("self"))
print(lines(1))
"""


@pytest.fixture(autouse=True)
def as_root():
    if os.geteuid() != 0:
        pytest.fail("the cgroup join tests run in the root pass: only root can write this host's cgroups")


def _host_tree(root_pid: int) -> list[int]:
    pids, level = [root_pid], [root_pid]
    while level:
        level = [c for p in level for t in os.listdir(f"/proc/{p}/task")
                 for c in map(int, Path(f"/proc/{p}/task/{t}/children").read_text().split())]
        pids += level
    return pids


async def test_code_runs_only_after_every_jail_process_joined_its_cgroup(monkeypatch):
    """The join is slowed to a second, far past the interpreter's start: had the hello (and so
    the first cell) gone out before it finished, the cell would see itself outside."""
    real_adopt = _cgroup.Cgroup.adopt_tree
    adopted = []

    def slow_adopt(self, *args, **kwargs):
        adopted.append(self)
        time.sleep(1.0)
        return real_adopt(self, *args, **kwargs)

    monkeypatch.setattr(_cgroup.Cgroup, "adopt_tree", slow_adopt)
    async with make_sandbox("local", limits=TEST_LIMITS, pool_size=0) as sb:
        result = await sb.run_to_end(PROBE)
        assert result.exit_reason == "ok", result
        (cgroup,) = adopted
        assert sorted(cgroup.applied) == ["memory", "pids"]
        name = cgroup.dirs[0].name
        own, reaper = (eval(line) for line in result.stdout.splitlines())
        assert len(own) == 2 and all(line.endswith("/" + name) for line in own + reaper), result.stdout
        jail = _host_tree(sb._interpreter.process.pid)
        assert len(jail) == 3  # bwrap, its pid-1 reaper, the interpreter
        for d in cgroup.dirs:
            assert set(jail) <= set(map(int, (d / "cgroup.procs").read_text().split()))


async def test_limits_hold_when_the_jail_joined_after_its_start():
    """The process and memory caps still stop a fork bomb and a memory bomb."""
    async with make_sandbox("local", limits=TEST_LIMITS, pool_size=0) as sb:
        await sb.start()
        assert sb.mechanisms["processes"] == "cgroup pids.max"
        bomb = await sb.run_to_end("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
        assert bomb.exit_reason == "timeout", bomb
        memory = await sb.run_to_end("hog = []\nwhile True:\n    hog.append(bytearray(32 << 20))")
        assert memory.exit_reason == "memory", memory
        assert (await sb.run_to_end("print('alive')")).stdout == "alive\n"


async def test_a_failed_cgroup_move_kills_the_jail_and_says_so(monkeypatch):
    def refuse(path, value):
        raise PermissionError(13, "Permission denied", str(path))

    import toolrail.sandbox.local as local

    created = []
    real_create = _cgroup.create_cgroup
    monkeypatch.setattr(local, "create_cgroup", lambda *args: created.append(real_create(*args)) or created[-1])
    monkeypatch.setattr(_cgroup, "_write_or_raise", refuse)
    await assert_start_refused(make_sandbox("local", limits=TEST_LIMITS, pool_size=0),
                               "could not move the sandbox into its cgroup: .*Permission denied")
    (cgroup,) = created
    assert cgroup.dirs and not any(d.exists() for d in cgroup.dirs)  # removed with the jail


async def test_a_start_cancelled_while_its_cgroup_is_made_leaves_no_cgroup(monkeypatch):
    """Finding: a start cancelled while a worker thread made its cgroup (Ctrl-C or SIGTERM during a
    pool refill) left that cgroup on the host: the thread finished, and nobody removed it."""
    from toolrail.sandbox import local

    made, real = [], local._prepare_launch

    def slow(*args):
        cgroup = real(*args)
        made.append(cgroup)
        time.sleep(0.3)  # the cancellation arrives now
        return cgroup

    monkeypatch.setattr(local, "_prepare_launch", slow)
    sandbox = make_sandbox("local", limits=TEST_LIMITS, pool_size=0)
    start = asyncio.ensure_future(sandbox.start())
    while not made:
        await asyncio.sleep(0.01)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert made[0] is not None and made[0].dirs and all(d.exists() for d in made[0].dirs)  # still being made
    assert await eventually(lambda: not any(d.exists() for d in made[0].dirs)), made[0].dirs
    await sandbox.close()
