"""The warm pool of spare jails (issue 14, goal 4): a spare serves exactly one session, only one
made with that session's configuration, counts its limits from the claim, and dies with the pool
(loop end, process exit, Ctrl-C/SIGTERM); a broken refill is a clear error at claim time.
Also: no "Unknown child process pid" warnings from asyncio around sandbox runs."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from conftest import TEST_LIMITS, host_processes_containing

from toolrail.sandbox import SandboxError, make_sandbox
from toolrail.sandbox.pool import POOL_ENV, config_key, pools, resolve_pool_size
from toolrail.sandbox.sessions import SandboxSessions

ROOT = Path(__file__).resolve().parents[1]


async def _ready_pool(limits=TEST_LIMITS, size=1, **options):
    sandbox = make_sandbox("local", limits=limits, pool_size=size, **options)
    sandbox.prewarm()
    pool = next(p for p in pools() if p.size == size and p.template.limits == limits)
    await pool.ready()
    return pool


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_a_spare_serves_exactly_one_session_and_is_torn_down_after_it():
    pool = await _ready_pool()
    spare = pool.spares[0]
    pid, dirs = spare.process.pid, list(spare.cgroup.dirs) if spare.cgroup else []
    async with make_sandbox("local", limits=TEST_LIMITS, pool_size=1) as first:
        assert first.from_pool and first.session_tag == spare.tag
        assert spare not in pool.spares
        await first.run_to_end("secret = 'first'\nopen('mine.txt', 'w').write('first')")
    assert not _alive(pid) and host_processes_containing(spare.tag) == []
    assert not any(d.exists() for d in dirs)  # its cgroup went with it, like a cold jail's
    await pool.ready()
    async with make_sandbox("local", limits=TEST_LIMITS, pool_size=1) as second:
        assert second.from_pool and second.session_tag != spare.tag
        result = await second.run_to_end("import os\nprint('secret' in globals(), os.listdir('.'))")
    assert result.stdout == "False []\n", result
    assert pool.claimed == 2


async def test_concurrent_claims_never_get_the_same_jail():
    pool = await _ready_pool(size=2)
    sessions = [make_sandbox("local", limits=TEST_LIMITS, pool_size=2) for _ in range(4)]
    try:
        await asyncio.gather(*(s.start() for s in sessions))
        pids = {s._interpreter.process.pid for s in sessions}
        assert len(pids) == 4 and len({s.session_tag for s in sessions}) == 4
        # two took the spares, one waited for the refill under way, one started cold
        assert sum(s.from_pool for s in sessions) == 3 == pool.claimed
        await asyncio.gather(*(s.run_to_end(f"mine = {i}") for i, s in enumerate(sessions)))
        seen = await asyncio.gather(*(s.run_to_end("print(mine)") for s in sessions))
        assert [r.stdout for r in seen] == ["0\n", "1\n", "2\n", "3\n"]
    finally:
        await asyncio.gather(*(s.close() for s in sessions))


async def test_a_session_with_another_configuration_never_gets_a_spare_made_for_a_different_one():
    pool = await _ready_pool()
    other = TEST_LIMITS.model_copy(update={"memory_bytes": 256 << 20, "max_processes": 16})
    assert config_key(make_sandbox("local", limits=other)) != config_key(make_sandbox("local", limits=TEST_LIMITS))
    if os.geteuid() == 0:  # another host uid is another configuration too
        assert config_key(make_sandbox("local", limits=TEST_LIMITS, host_uid="65533")) != config_key(
            make_sandbox("local", limits=TEST_LIMITS))
    async with make_sandbox("local", limits=other) as sandbox:
        result = await sandbox.run_to_end("import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0])")
        assert result.stdout == f"{256 << 20}\n", result
        assert sandbox.session_tag not in {s.tag for s in pool.spares}
    assert pool.claimed == 0 and len(pool.spares) == 1  # the other configuration's spare is untouched


async def test_files_given_to_sessions_arrive_after_the_claim_and_stay_in_their_session():
    sessions = SandboxSessions(factory=lambda: make_sandbox("local", limits=TEST_LIMITS, pool_size=1),
                               inputs={"data.csv": b"a,b\n1,2\n"}, prewarm=True)
    async with sessions:
        assert [p.size for p in pools()] == [1]  # entering started the pool (the CLI does this)
        await pools()[0].ready()
        first = await sessions.get("one")
        assert first.from_pool
        await first.run_to_end("open('only-one.txt', 'w').write('x')")
        second = await sessions.get("two")
        listing = await second.run_to_end("import os\nprint(sorted(os.listdir('.')))")
    assert listing.stdout == "['data.csv']\n", listing


async def test_limits_count_from_the_claim_not_from_when_the_spare_was_made():
    limits = TEST_LIMITS.model_copy(update={"wall_timeout_s": 1.5, "idle_timeout_s": 1.0})
    await _ready_pool(limits)
    await asyncio.sleep(2.0)  # the spare waits longer than both the wall-clock and idle limits
    async with make_sandbox("local", limits=limits, pool_size=1) as sandbox:
        assert sandbox.from_pool
        result = await sandbox.run_to_end("import time\ntime.sleep(0.5)\nprint('full time')")
    assert result.exit_reason == "ok" and result.stdout == "full time\n", result
    assert not result.state_reset and result.notes == []


async def test_pool_size_zero_always_starts_cold_and_keeps_no_spares():
    async with make_sandbox("local", limits=TEST_LIMITS, pool_size=0) as sandbox:
        assert not sandbox.from_pool
        assert (await sandbox.run_to_end("print(1)")).stdout == "1\n"
    assert pools() == []


def test_the_pool_size_comes_from_the_argument_else_the_environment_else_one(monkeypatch):
    monkeypatch.delenv(POOL_ENV, raising=False)
    assert make_sandbox("local").pool_size == 1
    monkeypatch.setenv(POOL_ENV, "3")
    assert make_sandbox("local").pool_size == 3
    assert make_sandbox("local", pool_size=0).pool_size == 0
    for bad in ("many", "-1", "99"):
        monkeypatch.setenv(POOL_ENV, bad)
        with pytest.raises(SandboxError, match=POOL_ENV):
            make_sandbox("local")
    with pytest.raises(SandboxError, match="from 0"):
        resolve_pool_size(17)


async def test_build_graph_sandbox_pool_sets_the_size_of_the_graphs_own_sessions(openai_server):
    from toolrail.graphs.agent import build_graph
    from toolrail.testing.openai_server import answer, call, calls

    from conftest import client_for

    openai_server.script(calls(call("run_python", {"code": "print(6 * 7)"})), answer("42"))
    graph = build_graph(model=client_for(openai_server), sandbox_pool=3)
    state = await graph.ainvoke({"messages": [("user", "compute")]})
    assert "42" in state["messages"][-2].content
    assert [p.size for p in pools()] == [3]
    with pytest.raises(ValueError, match="sandbox_pool"):
        build_graph(model=client_for(openai_server), sandbox_pool=-1)


async def test_a_refill_that_fails_is_a_clear_error_at_every_claim_never_a_hang(monkeypatch):
    folder = Path(tempfile.mkdtemp(prefix="toolrail-test-pool-"))
    try:
        folder.chmod(0o755)
        fake = folder / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: broken on purpose' >&2\nexit 1\n")
        fake.chmod(0o755)
        monkeypatch.setenv("TOOLRAIL_BWRAP", str(fake))
        for _ in range(2):
            sandbox = make_sandbox("local", limits=TEST_LIMITS, pool_size=1)
            with pytest.raises(SandboxError, match="pool could not start a spare jail.*broken on purpose"):
                await asyncio.wait_for(sandbox.start(), 30)
            await sandbox.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


SPARES_THEN_EXIT = """
import asyncio, json, sys
sys.path.insert(0, {tests!r})
from conftest import TEST_LIMITS
from toolrail.sandbox import make_sandbox
from toolrail.sandbox.pool import close_pools, pools

async def main():
    make_sandbox("local", limits=TEST_LIMITS, pool_size=2).prewarm()
    await pools()[0].ready()
    spares = pools()[0].spares
    print(json.dumps({{"pids": [s.process.pid for s in spares], "tags": [s.tag for s in spares],
                      "cgroups": [str(d) for s in spares for d in (s.cgroup.dirs if s.cgroup else [])]}}), flush=True)
    if {how!r} != "sigint":
        sys.stdin.readline()  # the test has seen the spares alive; only now may they go
    if {how!r} == "close_pools":
        await close_pools()
    elif {how!r} == "sigint":
        await asyncio.sleep(120)

asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["loop_end", "close_pools", "sigint"])
def test_spares_die_with_the_pool_at_exit_close_and_ctrl_c(how):
    import json

    script = SPARES_THEN_EXIT.format(tests=str(ROOT / "tests"), how=how)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = json.loads(process.stdout.readline())
        assert len(seen["pids"]) == 2 and all(_alive(pid) for pid in seen["pids"])
        if how == "sigint":
            process.send_signal(signal.SIGINT)
        _, stderr = process.communicate("go\n", timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert "Unknown child process pid" not in stderr
    assert not any(_alive(pid) for pid in seen["pids"])
    assert all(host_processes_containing(tag) == [] for tag in seen["tags"])
    assert not any(Path(d).exists() for d in seen["cgroups"])


async def test_sandbox_runs_log_no_unknown_child_process_pid_warning(caplog):
    """asyncio's child watcher warned when Popen.send_signal reaped a jail before it did (a race:
    on the old code about one run in two of this test showed it). Jails are now reaped in one
    place only. Cold and pooled sessions, killed interpreters, closes."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    for size in [0] * 16 + [1] * 4:
        async with make_sandbox("local", limits=TEST_LIMITS, pool_size=size) as sandbox:
            await sandbox.run_to_end("print('hi')")
    async with make_sandbox("local", limits=TEST_LIMITS, pool_size=0) as sandbox:
        lost = await sandbox.run_to_end("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        assert lost.interpreter_lost and lost.exit_reason == "killed"
    assert "Unknown child process pid" not in caplog.text


def _bwrap_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name, rest = stat.split(") ", 1)
            if name.endswith("(bwrap") and int(rest.split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_sandbox_pool_flag_and_signals_tear_down_the_spares_too(tmp_path, signum):
    from test_sandbox_security import _cli_process, _our_cgroups, _wait_for

    from toolrail.testing.openai_server import OpenAICompatibleServer, answer, call, calls

    marker = f"toolrail-pool-{uuid.uuid4().hex}"
    code = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import time; time.sleep(120)', {marker!r}])"
    with OpenAICompatibleServer([calls(call("run_python", {"code": code, "timeout_s": 100})), answer("x")]) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k"}
        process = _cli_process(tmp_path, env, "run", "--sandbox-pool", "2", "--tool-timeout", "100", "go")
        try:
            assert _wait_for(lambda: host_processes_containing(marker)), "the cell never started"
            # the session's jail and two spares (the flag's size), all children of the CLI
            assert _wait_for(lambda: len(_bwrap_children(process.pid)) == 3), _bwrap_children(process.pid)
            jails = _bwrap_children(process.pid)
            process.send_signal(signum)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == (143 if signum == signal.SIGTERM else 130), stderr
    assert "Traceback" not in stderr and "Unknown child process pid" not in stderr
    assert _wait_for(lambda: not any(_alive(pid) for pid in jails), 10)
    assert _our_cgroups(process.pid) == []


def test_cli_refuses_a_bad_pool_size_with_one_line(tmp_path):
    from test_cli import toolrail

    done = toolrail("run", "--sandbox-pool", "many", "hi", tmp_path=tmp_path)
    assert done.returncode == 2 and "--sandbox-pool" in done.stderr and "Traceback" not in done.stderr
    done = toolrail("run", "hi", tmp_path=tmp_path, env={POOL_ENV: "-3"})
    assert done.returncode != 0 and POOL_ENV in done.stderr and "Traceback" not in done.stderr


def test_the_sandbox_benchmark_reports_pooled_and_cold_starts_against_bare_python_with_and_without_site_and_bare_bwrap():
    import json

    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json", "--only", "sandbox"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)["sandbox"]
    for kind in ("subprocess", "subprocess_no_site", "bare_bwrap", "pooled", "cold", "warm"):
        assert figures[f"{kind}_p50_ms"] > 0
    assert {"pooled_p50_over_subprocess", "cold_p50_over_subprocess", "cold_p50_over_no_site",
            "cold_p50_over_bare_bwrap"} <= set(figures)
