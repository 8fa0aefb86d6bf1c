"""Hostile code against the local bubblewrap sandbox.

Every test checks two things: the host is unharmed (no connection, no file, no secret, no stray
process) and the same session still serves a normal run afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from conftest import TEST_LIMITS, assert_still_works, host_processes_containing, sandbox_driver_processes
from toolrail.sandbox import make_sandbox

PROJECT_DIR = Path(__file__).resolve().parents[1]


def test_bubblewrap_is_installed():
    assert shutil.which("bwrap"), "install the Debian package bubblewrap: apt-get install bubblewrap"


async def test_no_network_to_the_outside(sandbox):
    code = """
import socket
outcomes = []
for host in ("1.1.1.1", "8.8.8.8"):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, 80)); outcomes.append("CONNECTED")
    except OSError as e:
        outcomes.append(type(e).__name__)
try:
    socket.getaddrinfo("example.com", 80); outcomes.append("RESOLVED")
except OSError as e:
    outcomes.append("noresolve")
print(outcomes)
"""
    result = await sandbox.run_to_end(code)
    assert result.exit_reason == "ok", result
    assert "CONNECTED" not in result.stdout and "RESOLVED" not in result.stdout
    await assert_still_works(sandbox)


async def test_host_loopback_services_are_unreachable(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def accept_loop():
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        code = f"""
import socket
s = socket.socket(); s.settimeout(1)
try:
    s.connect(("127.0.0.1", {port})); print("CONNECTED")
except OSError as e:
    print("refused", type(e).__name__)
"""
        result = await sandbox.run_to_end(code)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert result.exit_reason == "ok", result
    assert "refused" in result.stdout and "CONNECTED" not in result.stdout
    assert accepted == []
    await assert_still_works(sandbox)


async def test_host_files_are_invisible(sandbox):
    home = Path.home()
    paths = ["/etc/shadow", str(PROJECT_DIR), str(Path(__file__).resolve()), "/work", str(home / ".bashrc")]
    code = f"""
import os
for p in {paths!r}:
    print(p, "VISIBLE" if os.path.exists(p) else "absent")
print("home:", sorted(os.listdir({str(home)!r})) if os.path.isdir({str(home)!r}) else "absent")
"""
    result = await sandbox.run_to_end(code)
    assert result.exit_reason == "ok", result
    assert "VISIBLE" not in result.stdout, result.stdout
    # The home dir may exist only as the path down to the Python install, never its content.
    home_line = result.stdout.splitlines()[-1]
    visible = set() if home_line == "home: absent" else set(eval(home_line.removeprefix("home: ")))
    allowed = {Path(os.sys.base_prefix).resolve().relative_to(home).parts[0]} if str(
        Path(os.sys.base_prefix).resolve()
    ).startswith(str(home) + "/") else set()
    assert visible <= allowed, visible
    await assert_still_works(sandbox)


async def test_host_environment_secrets_do_not_leak(monkeypatch):
    canary = "sk-canary-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    monkeypatch.setenv("E2B_API_KEY", canary)
    code = f"""
import os
hits = [k for k, v in os.environ.items() if {canary!r} in v]
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            if {canary!r}.encode() in open(f"/proc/{{pid}}/environ", "rb").read():
                hits.append("proc:" + pid)
        except OSError:
            pass
print("hits", hits, "OPENAI_API_KEY" in os.environ)
"""
    async with make_sandbox("local", limits=TEST_LIMITS) as sb:
        result = await sb.run_to_end(code)
        assert result.exit_reason == "ok", result
        assert result.stdout == "hits [] False\n"
        await assert_still_works(sb)


async def test_writes_outside_scratch_fail(sandbox):
    canary = f"toolrail-canary-{uuid.uuid4().hex}"
    targets = ["/", "/usr", "/etc", "/opt/toolrail", str(Path(os.sys.base_prefix).resolve()), "/dev", "/root"]
    code = f"""
import os
for d in {targets!r}:
    try:
        open(os.path.join(d, {canary!r}), "w").write("x"); print(d, "WROTE")
    except OSError as e:
        print(d, "refused")
open({canary!r}, "w").write("scratch is fine"); print("scratch ok")
"""
    result = await sandbox.run_to_end(code)
    assert result.exit_reason == "ok", result
    assert "WROTE" not in result.stdout and "scratch ok" in result.stdout
    for d in targets:
        assert not (Path(d) / canary).exists()
    await assert_still_works(sandbox)


async def test_scratch_and_file_sizes_are_capped(sandbox):
    code = """
import errno
try:
    with open("big.bin", "wb") as f:
        for _ in range(64):
            f.write(b"x" * (1 << 20))
    print("WROTE 64 MB")
except OSError as e:
    print("stopped", errno.errorcode.get(e.errno))
"""
    result = await sandbox.run_to_end(code)
    assert "WROTE" not in result.stdout and "stopped" in result.stdout, result
    assert "ENOSPC" in result.stdout or "EFBIG" in result.stdout
    await assert_still_works(sandbox)


async def test_fork_bomb_is_contained(sandbox):
    mechanism = sandbox.mechanisms["processes"]
    if mechanism.startswith("NOT ENFORCED"):  # do not throw a real fork bomb at this host
        pytest.fail(f"no process limit on this host: {mechanism}; run as non-root or allow cgroups")
    code = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    result = await sandbox.run_to_end(code)
    assert result.exit_reason == "timeout", result
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork
    await assert_still_works(sandbox)
    await sandbox.close()
    assert sandbox_driver_processes() == []


async def test_memory_bomb_is_contained(sandbox):
    result = await sandbox.run_to_end("x = 1\nhog = []\nwhile True:\n    hog.append(bytearray(32 << 20))")
    assert result.exit_reason == "memory", result
    assert result.error is not None and result.error.name == "MemoryError"
    await assert_still_works(sandbox)
    child = await sandbox.run_to_end(
        "import subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-c', 'b = bytearray(2 << 30)'], capture_output=True, text=True)\n"
        "print(r.returncode, 'MemoryError' in r.stderr)"
    )
    assert child.stdout == "1 True\n", child
    await assert_still_works(sandbox)


async def test_infinite_loop_hits_the_wall_clock_and_keeps_state(sandbox):
    await sandbox.run_to_end("kept = 'yes'")
    result = await sandbox.run_to_end("import time\nwhile True:\n    time.sleep(0.05)")
    assert result.exit_reason == "timeout" and not result.interpreter_lost, result
    follow = await sandbox.run_to_end("print(kept)")
    assert follow.stdout == "yes\n" and not follow.state_reset


async def test_loop_that_swallows_interrupts_is_killed(sandbox):
    code = "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except BaseException:\n        pass"
    result = await sandbox.run_to_end(code)
    assert result.exit_reason == "timeout" and result.interpreter_lost, result
    follow = await sandbox.run_to_end("print('kept' in globals())")
    assert follow.stdout == "False\n" and follow.state_reset, follow
    assert any("Fresh interpreter" in note for note in follow.notes)


async def test_cpu_spin_hits_the_cpu_limit(sandbox):
    result = await sandbox.run_to_end("while True:\n    pass", timeout=10)
    assert result.exit_reason == "cpu", result
    await assert_still_works(sandbox)


async def test_orphaned_cpu_spinner_dies_with_the_session(sandbox):
    marker = f"toolrail-spin-{uuid.uuid4().hex}"
    code = f"""
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import sys\\nwhile True: pass", {marker!r}], start_new_session=True)
print("spawned")
"""
    result = await sandbox.run_to_end(code)
    assert result.stdout == "spawned\n", result
    await assert_still_works(sandbox)
    assert len(host_processes_containing(marker)) == 1  # it did start, and it outlived its parent
    await sandbox.close()
    assert host_processes_containing(marker) == []


async def test_stray_processes_of_a_timed_out_run_are_killed(sandbox):
    marker = f"toolrail-stray-{uuid.uuid4().hex}"
    code = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "while True: pass", {marker!r}])
while True:
    time.sleep(0.1)
"""
    result = await sandbox.run_to_end(code)
    assert result.exit_reason == "timeout", result
    assert host_processes_containing(marker) == []
    await assert_still_works(sandbox)


async def test_output_flood_is_truncated_and_stopped(sandbox):
    result = await sandbox.run_to_end("while True:\n    print('flood' * 100)", timeout=20)
    assert result.exit_reason == "output_limit", result
    assert result.truncated
    assert "[toolrail: output truncated after" in result.stdout
    assert len(result.stdout.encode()) < TEST_LIMITS.max_output_bytes + 200
    await assert_still_works(sandbox)


async def test_huge_single_line_is_truncated(sandbox):
    result = await sandbox.run_to_end("import sys\nsys.stdout.write('x' * 50_000_000)", timeout=20)
    assert result.truncated and result.exit_reason in ("ok", "output_limit"), result
    assert len(result.stdout.encode()) < TEST_LIMITS.max_output_bytes + 200
    await assert_still_works(sandbox)


async def test_killing_the_interpreter_is_reported_and_recovered(sandbox):
    await sandbox.run_to_end("secret = 42")
    result = await sandbox.run_to_end("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.exit_reason == "killed" and result.interpreter_lost, result
    follow = await sandbox.run_to_end("print(globals().get('secret'))")
    assert follow.exit_reason == "ok" and follow.stdout == "None\n" and follow.state_reset
    await assert_still_works(sandbox)


async def test_proc_does_not_lead_to_the_host(sandbox):
    host_pid = os.getpid()
    code = f"""
import os
for p in ("/proc/1/root/etc/shadow", "/proc/self/root/etc/shadow", "/proc/1/root/work",
          "/proc/{host_pid}/root/etc/shadow", "/proc/1/cwd/pyproject.toml"):
    print(p, "VISIBLE" if os.path.exists(p) else "absent")
pids = [p for p in os.listdir("/proc") if p.isdigit()]
print("pids", len(pids))
try:
    cmd = open("/proc/{host_pid}/cmdline", "rb").read()
    print("host pid", b"pytest" in cmd)
except OSError:
    print("host pid absent")
print("caps", [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0], os.getuid())
"""
    result = await sandbox.run_to_end(code)
    assert result.exit_reason == "ok", result
    assert "VISIBLE" not in result.stdout, result.stdout
    lines = result.stdout.splitlines()
    assert int(lines[-3].split()[1]) < 10  # only the jail's own processes are visible
    assert lines[-2] in ("host pid absent", "host pid False")
    assert lines[-1] == "caps 0000000000000000 1000"
    await assert_still_works(sandbox)


async def test_cannot_gain_privileges_or_new_namespaces(sandbox):
    code = """
import subprocess
r = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "true"], capture_output=True)
print("unshare", r.returncode)
"""
    result = await sandbox.run_to_end(code)
    assert result.exit_reason == "ok", result
    assert result.stdout != "unshare 0\n"  # no nested user namespace (bwrap --disable-userns)
    escalate = await sandbox.run_to_end("import os\ntry:\n    os.setuid(0); print('ROOT')\nexcept OSError:\n    print('denied')")
    assert escalate.stdout == "denied\n"
    await assert_still_works(sandbox)


async def test_no_sandbox_process_survives_close():
    async with make_sandbox("local", limits=TEST_LIMITS) as sb:
        await sb.run_to_end("import subprocess\nsubprocess.Popen(['sleep', '300'])")
        assert sandbox_driver_processes()
    assert sandbox_driver_processes() == []
    assert host_processes_containing("sleep 300") == []
