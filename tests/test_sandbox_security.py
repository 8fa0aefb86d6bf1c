"""Hostile code against the local bubblewrap sandbox.

Every test checks two things: the host is unharmed (no connection, no file, no secret, no stray
process) and the same session still serves a normal run afterwards.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyseccomp
import pytest

from conftest import TEST_LIMITS, assert_still_works, eventually, host_processes_containing, sandbox_driver_processes
from toolrail.sandbox import make_sandbox
from toolrail.sandbox import policy
from toolrail.sandbox._cgroup import PREFIX as CGROUP_PREFIX, owner_tag, sweep_leftovers
from toolrail.sandbox.sessions import SandboxSessions, thread_folder
from toolrail.testing.openai_server import OpenAICompatibleServer, answer, call, calls

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
        try:
            assert not (Path(d) / canary).exists()
        except PermissionError:  # an unprivileged test user cannot look into /root: nor could the jail
            pass
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
    assert sandbox_driver_processes(sandbox) == []


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
    # it did start, and it outlived its parent (/proc shows its command line a moment after its exec)
    assert await eventually(lambda: len(host_processes_containing(marker)) == 1, 10)
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
    seconds = f"300.{uuid.uuid4().int % 10**9}"  # a sleep no other run on this host has
    # a wall clock that a loaded machine cannot hit: the run must end by itself, leaving the sleep
    async with make_sandbox("local", limits=TEST_LIMITS.model_copy(update={"wall_timeout_s": 60.0})) as sb:
        started = await sb.run_to_end(f"import subprocess\nsubprocess.Popen(['sleep', {seconds!r}])")
        assert started.exit_reason == "ok", started
        assert sandbox_driver_processes(sb)
        # Popen returns when the child's exec closes its close-on-exec pipe, a moment before
        # the kernel has set up the new command line that /proc shows: wait for it
        assert await eventually(lambda: host_processes_containing(f"sleep {seconds}"), 10)
    assert sandbox_driver_processes(sb) == []
    assert host_processes_containing(f"sleep {seconds}") == []


# --- issue 10: the sandbox is a security boundary, even when toolrail runs as root -----------
# Each test names the finding it covers. They run twice in scripts/test.sh: as root and as an
# unprivileged user; every host setting a test reads is put back in a `finally`.

LIBC = ctypes.CDLL(None, use_errno=True)
KEY_SPEC_SESSION_KEYRING = -3


def _syscall_number(name: str) -> int:
    return pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)


def _host_uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def _expected_host_uid() -> int:
    return policy.DEFAULT_HOST_UID if os.geteuid() == 0 else os.geteuid()


async def test_finding_uid_map_jail_processes_never_run_as_host_root(sandbox):
    """Finding: the jail's uid 1000 mapped to host uid 0. Now: an unprivileged host uid
    (65534 when toolrail is root, the caller's own otherwise), an ordinary uid inside."""
    marker = f"toolrail-uid-{uuid.uuid4().hex}"
    code = f"""
import os, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", {marker!r}])
print(os.getuid(), os.getgid())
"""
    result = await sandbox.run_to_end(code)
    assert result.stdout == "1000 1000\n", result
    assert await eventually(lambda: host_processes_containing(marker), 20), "the jail's child never showed up"
    jail = host_processes_containing(marker) + [sandbox._interpreter.process.pid]
    assert len(jail) == 2
    assert {_host_uid_of(pid) for pid in jail} == {_expected_host_uid()}
    assert 0 not in {_host_uid_of(pid) for pid in jail}
    await sandbox.close()
    assert host_processes_containing(marker) == []


async def test_finding_core_pattern_kernel_settings_cannot_be_written_from_the_jail(sandbox):
    """Finding: /proc/sys was writable and core_uses_pid changed on the host (core_pattern: full
    escape). We only open core_pattern for writing (never write it) and write core_uses_pid's
    own value back; the host values are compared and restored in `finally`."""
    settings = [Path("/proc/sys/kernel/core_pattern"), Path("/proc/sys/kernel/core_uses_pid")]
    before = {p: p.read_text() for p in settings}
    code = """
import os
for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/core_uses_pid"):
    value = open(path).read()
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        print(path, "refused", e.errno)
        continue
    try:
        if path.endswith("core_uses_pid"):
            os.write(fd, value.encode())
        print(path, "WRITABLE")
    except OSError as e:
        print(path, "refused", e.errno)
    finally:
        os.close(fd)
"""
    try:
        result = await sandbox.run_to_end(code)
    finally:
        for path, value in before.items():
            if path.read_text() != value and os.geteuid() == 0:
                path.write_text(value)
    assert "WRITABLE" not in result.stdout and result.stdout.count("refused") == 2, result
    assert {p: p.read_text() for p in settings} == before


async def test_finding_proc_sys_kernel_interfaces_are_read_only_or_masked(sandbox):
    """Docker's readonlyPaths are read-only mounts; its maskedPaths show nothing; no /sys."""
    read_only = [p for p in policy.READ_ONLY_PROC if os.path.exists(p)]
    masked_files = [p for p in policy.MASKED_FILES if os.path.exists(p)]
    masked_dirs = [p for p in policy.MASKED_DIRS if os.path.isdir(p)]
    code = f"""
import os
mounts = {{}}
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    mounts[fields[4]] = fields[5].split(",")
for p in {read_only!r}:
    print("ro", p, "ro" in mounts.get(p, []))
for p in {masked_files!r}:
    try:
        print("masked", p, len(open(p, "rb").read(4096)) == 0)
    except OSError:
        print("masked", p, True)
for p in {masked_dirs!r}:
    print("masked", p, os.listdir(p) == [] and "ro" in mounts.get(p, []))
print("sys", os.path.exists("/sys/firmware"), os.path.exists("/sys"))
"""
    result = await sandbox.run_to_end(code)
    assert result.exit_reason == "ok", result
    lines = result.stdout.splitlines()
    assert len(lines) == len(read_only) + len(masked_files) + len(masked_dirs) + 1
    assert all(line.endswith("True") for line in lines[:-1]), result.stdout
    assert lines[-1] == "sys False False"
    assert "/proc/sys" in read_only and "/proc/keys" in masked_files
    await assert_still_works(sandbox)


DENIED_PROBES = {  # syscall: arguments that are harmless even where the call is allowed
    "keyctl": (0, KEY_SPEC_SESSION_KEYRING, 0, 0, 0),
    "add_key": (0, 0, 0, 0, 0),
    "request_key": (0, 0, 0, 0),
    "ptrace": (16, 999999, 0, 0),  # PTRACE_ATTACH to a pid that does not exist
    "io_uring_setup": (0, 0),
    "bpf": (0, 0, 0),
    "perf_event_open": (0, 0, -1, -1, 0),
    "userfaultfd": (0,),
    "unshare": (0x10000000,),  # CLONE_NEWUSER
    "setns": (-1, 0),
    "mount": (0, 0, 0, 0, 0),
    "process_vm_readv": (1, 0, 0, 0, 0, 0),
    "kcmp": (1, 1, 0, 0, 0),
}


async def test_finding_no_syscall_filter_dangerous_syscalls_fail_with_eperm(sandbox):
    """Finding: io_uring_setup, keyctl, add_key, ptrace were all allowed. Probed in a child
    process so nothing they might do on an unfiltered kernel touches the driver."""
    probes = {name: (_syscall_number(name), args) for name, args in DENIED_PROBES.items()}
    probe = f"""
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
out = {{}}
for name, (nr, args) in {probes!r}.items():
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    out[name] = ctypes.get_errno() if rc == -1 else "allowed"
ctypes.set_errno(0)
rc = libc.personality(ctypes.c_ulong(0x0040000))  # ADDR_NO_RANDOMIZE
out["personality(ADDR_NO_RANDOMIZE)"] = ctypes.get_errno() if rc == -1 else "allowed"
out["personality(query)"] = "allowed" if libc.personality(ctypes.c_ulong(0xffffffff)) != -1 else "denied"
print(json.dumps(out))
"""
    code = f"import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', {probe!r}], capture_output=True, text=True).stdout, end='')"
    result = await sandbox.run_to_end(code)
    outcome = json.loads(result.stdout)
    assert outcome.pop("personality(query)") == "allowed"
    assert outcome == {name: errno.EPERM for name in outcome}, outcome
    await assert_still_works(sandbox)


async def test_finding_shared_keyring_host_session_keyring_is_unreachable_and_jail_keys_vanish(sandbox):
    """Finding: a secret in the host's session keyring was read from inside the jail, and a key
    the jail added stayed after it closed. The canary key is unlinked in `finally`."""
    description = f"toolrail-canary-{uuid.uuid4().hex}".encode()
    payload = b"host-secret"
    add_key, keyctl = _syscall_number("add_key"), _syscall_number("keyctl")
    key = LIBC.syscall(add_key, b"user", description, payload, len(payload), KEY_SPEC_SESSION_KEYRING)
    assert key > 0, f"the host cannot add a key to its session keyring (errno {ctypes.get_errno()})"
    jail_description = description + b"-from-jail"
    code = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
ctypes.set_errno(0)
found = libc.syscall({keyctl}, 10, {KEY_SPEC_SESSION_KEYRING}, b"user", {description!r}, 0)  # KEYCTL_SEARCH
print("search", found, ctypes.get_errno())
try:
    print("proc_keys", {description.decode()!r} in open("/proc/keys").read())
except OSError:
    print("proc_keys", False)
added = libc.syscall({add_key}, b"user", {jail_description!r}, b"x", 1, {KEY_SPEC_SESSION_KEYRING})
print("add", added, ctypes.get_errno())
"""
    try:
        result = await sandbox.run_to_end(code)
        await sandbox.close()
        left = LIBC.syscall(keyctl, 10, KEY_SPEC_SESSION_KEYRING, b"user", jail_description, 0)
    finally:
        LIBC.syscall(keyctl, 9, key, KEY_SPEC_SESSION_KEYRING)  # KEYCTL_UNLINK
    assert result.stdout.splitlines() == [f"search -1 {errno.EPERM}", "proc_keys False", f"add -1 {errno.EPERM}"], result
    assert left == -1  # nothing the jail did is in the host's keyring


async def test_finding_fifo_and_device_links_in_scratch_never_hang_and_output_is_kept(tmp_path):
    """Finding: a FIFO or a link to /dev/zero made the session 'unavailable' after 60 s and
    threw the cell's output away. They are listed as skipped, never opened."""
    code = """
import os
print("the cell's own output")
os.mkfifo("pipe")
os.symlink("/dev/zero", "zero")
os.symlink("/usr/bin/python3", "big")
_ = open("real.txt", "w").write("real")
"""
    async with SandboxSessions(factory=lambda: make_sandbox("local", limits=TEST_LIMITS), output_dir=tmp_path) as sessions:
        session = await sessions.get("t")
        result = await session.run_to_end(code)
        saved, unsaved = await sessions.collect("t", result.files)
        assert await session.download("real.txt") == b"real"
        for special in ("pipe", "zero", "big"):
            with pytest.raises(Exception, match="not a regular file|symbolic|Too many levels|ELOOP|Errno 40"):
                await session.download(special)
        await assert_still_works(session)
    assert result.stdout == "the cell's own output\n" and result.exit_reason == "ok", result
    assert [f.path for f in result.files] == ["real.txt"]
    assert {(s.path, s.reason) for s in result.skipped_files} == {("pipe", "FIFO"), ("zero", "symlink"), ("big", "symlink")}
    assert [p.name for p in saved] == ["real.txt"] and unsaved == []
    assert "[skipped, not regular files]" in result.render()


def _forging_code(frame: dict, keyed: bool) -> str:
    """Cell code that writes a 'done' frame for its own cell on the driver's event channel:
    blindly on every pipe it can write (no key), or through the driver's own Channel object."""
    return f"""
import gc, json, os, stat, struct, fcntl
frame = {frame!r}
driver = next(o for o in gc.get_objects() if type(o).__name__ == "Driver")
frame["id"] = driver.busy_cell
if {keyed!r}:
    driver.channel.send(frame)
else:
    data = json.dumps(frame).encode()
    for fd in range(3, 64):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                os.write(fd, struct.pack(">I", len(data)) + data)
        except OSError:
            pass
import time; time.sleep(0.5)
print("after")
"""


async def test_finding_forged_frame_ends_the_session_with_one_clear_error_not_a_traceback(sandbox):
    """Finding: a forged 'done' frame crashed the host with a pydantic ValidationError."""
    forged = {"type": "done", "reason": "ok", "error": {"bogus": 1}, "files": [{"path": "/etc/passwd", "size": 5}]}
    result = await sandbox.run_to_end(_forging_code(forged, keyed=False))
    assert result.exit_reason == "crashed" and result.interpreter_lost, result
    assert any("protocol error" in note and "key" in note for note in result.notes), result.notes
    assert result.files == []
    await assert_still_works(sandbox)


async def test_finding_forged_file_list_paths_outside_scratch_are_never_downloaded(tmp_path):
    """Finding: a forged file list with absolute paths was downloaded. Even a frame sent with
    the driver's own channel (and key) cannot name a file outside scratch."""
    forged = {"type": "done", "reason": "ok", "error": None,
              "files": [{"path": "/etc/passwd", "size": 5}, {"path": "../../x", "size": 1}, {"path": "ok.txt", "size": 0}]}
    async with SandboxSessions(factory=lambda: make_sandbox("local", limits=TEST_LIMITS), output_dir=tmp_path / "out") as sessions:
        session = await sessions.get("t")
        await session.run_to_end("open('ok.txt', 'w').close()")
        result = await session.run_to_end(_forging_code(forged, keyed=True))
        saved, unsaved = await sessions.collect("t", result.files)
        with pytest.raises(Exception, match="inside the scratch"):
            await session.download("/etc/passwd")
    assert [f.path for f in result.files] == ["ok.txt"]
    assert {s.path for s in result.skipped_files} >= {"/etc/passwd", "../../x"}
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in written] == ["ok.txt"] and all(tmp_path / "out" in p.parents for p in written)


async def test_finding_file_budget_structure_kept_budget_enforced_and_one_line_for_the_rest(tmp_path):
    """Finding: sparse files and links filled the --out disk; 8,000 of 10,000 files were never
    mentioned; a/b/report.txt and c/report.txt were saved to the same path."""
    out = tmp_path / "out"
    code = """
import os
os.makedirs("a/b"); os.makedirs("c")
open("a/b/report.txt", "w").write("from a/b")
open("c/report.txt", "w").write("from c")
for i in range(2100):
    open(f"n{i:04}.txt", "w").close()
"""
    factory = lambda: make_sandbox("local", limits=TEST_LIMITS)  # noqa: E731
    async with SandboxSessions(factory=factory, output_dir=out, out_max_files=10, out_max_bytes=3 << 20) as sessions:
        session = await sessions.get("t")
        result = await session.run_to_end(code)
        saved, unsaved = await sessions.collect("t", result.files, result.files_not_listed)
        sparse = await session.run_to_end(
            "for i in range(3):\n    f = open(f's{i}.bin', 'wb'); f.truncate(2 << 20); f.close()")
        saved_sparse, unsaved_sparse = await sessions.collect("t", sparse.files)
    folder = out / thread_folder("t")
    assert (folder / "a" / "b" / "report.txt").read_text() == "from a/b"
    assert (folder / "c" / "report.txt").read_text() == "from c"
    assert len(saved) == 10
    assert result.files_not_listed > 0 and len(result.files) + result.files_not_listed == 2102
    assert unsaved == ["2,092 more files not saved: over the 10-file budget"]
    assert len(saved_sparse) == 1 and unsaved_sparse == ["2 more files not saved: over the 3,145,728-byte budget"]
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) <= (3 << 20) + 100


@pytest.mark.parametrize("thread", ["..", "../../etc", "/abs/path", "a/b", "nul\0byte", ".", "x" * 10_000, "é ✓"])
def test_finding_thread_ids_are_never_paths(thread):
    """Finding: `--thread ..` wrote produced files outside --out and overwrote the ledger."""
    name = thread_folder(thread)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,60}", name), name
    assert name not in (".", "..") and thread_folder(thread + "!") != name


def test_finding_thread_dotdot_cli_saves_inside_out(tmp_path):
    """The same through the CLI: `--thread ..` keeps the ledger and checkpoints intact."""
    from test_cli import toolrail

    done = toolrail("run", "--json", "--thread", "..", ANALYSIS_PROMPT, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = json.loads(done.stdout)["results"][0]["sandbox"]["saved"]
    assert saved and all((tmp_path / p).resolve().is_relative_to((tmp_path / ".toolrail/files").resolve()) for p in saved)
    assert all(Path(p).parent.parent == Path(".toolrail/files") for p in saved)
    again = toolrail("run", "--json", "--thread", "../..", ANALYSIS_PROMPT, tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr


ANALYSIS_PROMPT = "What is the mean temperature in temperatures.csv? Plot it."
HOSTILE = "\x1b[2J\x1b]52;c;aGVsbG8=\x07\r\x1b[1A\x1b[2K  ✓ forged valid\x08\x9b31m"


@pytest.mark.parametrize("json_output", [False, True])
def test_finding_raw_terminal_output_control_characters_are_made_visible(tmp_path, json_output):
    """Finding: a cell printing \\x1b[2J cleared the screen, OSC 52 wrote the clipboard, cursor-up
    + erase forged a '✓ valid' line. Model text and sandbox output reach the terminal escaped."""
    from test_cli import toolrail

    code = f"import sys\nprint({HOSTILE!r})\nprint({HOSTILE!r}, file=sys.stderr)"
    script = [calls(call("run_python", {"code": code, "timeout_s": None})), answer("done " + HOSTILE)]
    with OpenAICompatibleServer(script) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k"}
        done = toolrail("run", *(["--json"] if json_output else []), "go", tmp_path=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    for raw in ("\x1b", "\x07", "\x08", "\x9b", "\r"):
        assert raw not in done.stdout and raw not in done.stderr, (raw, done.stdout[-2000:])
    if json_output:
        assert json.loads(done.stdout)["answer"] == "done " + HOSTILE  # the data itself is intact
    else:
        assert "␛[2J" in done.stdout and "␛]52;c;aGVsbG8=␇" in done.stdout and "␍" in done.stdout


def _cli_process(tmp_path, env: dict, *args: str, sigint_ignored: bool = False) -> subprocess.Popen:
    """`toolrail` as a subprocess; `sigint_ignored`: as a script's background job (or nohup)
    starts it, with SIGINT ignored, so Python and asyncio install no Ctrl-C handler."""
    from test_cli import SCRUBBED

    base = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    base.update({"TOOLRAIL_DB": str(tmp_path / "runs.sqlite")}, **env)
    ignore_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen([sys.executable, "-m", "toolrail.cli", *args], cwd=tmp_path, env=base,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint)


def _our_cgroups(pid: int) -> list[Path]:
    tag = f"{CGROUP_PREFIX}{pid}-"
    return [p for p in Path("/sys/fs/cgroup").glob(f"**/{tag}*") if p.is_dir()]


def _wait_for(predicate, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("signum, sigint_ignored", [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)],
                         ids=["sigterm", "sigint", "sigterm-in-a-background-job"])
def test_finding_sigterm_teardown_leaves_no_process_cgroup_or_temp_folder(tmp_path, signum, sigint_ignored):
    """Finding: SIGTERM was not handled; jails, cgroups and temp folders stayed behind. SIGTERM
    now takes Ctrl-C's path: everything torn down, the thread checkpointed and resumable. Also
    when toolrail was started with SIGINT ignored (a script's background job), where asyncio
    has no Ctrl-C handler to reuse."""
    marker = f"toolrail-term-{uuid.uuid4().hex}"
    code = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import time; time.sleep(120)', {marker!r}])"
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    with OpenAICompatibleServer([calls(call("run_python", {"code": code, "timeout_s": 100})), answer("x")]) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k", "TMPDIR": str(private_tmp)}
        process = _cli_process(tmp_path, env, "run", "--thread", "term", "--tool-timeout", "100", "go", sigint_ignored=sigint_ignored)
        try:
            assert _wait_for(lambda: host_processes_containing(marker)), "the cell never started"
            process.send_signal(signum)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == (143 if signum == signal.SIGTERM else 130), stderr
    assert "the run is checkpointed" in stderr and "Traceback" not in stderr
    assert _wait_for(lambda: host_processes_containing(marker) == [], 10)
    assert _our_cgroups(process.pid) == []
    assert list(private_tmp.iterdir()) == []  # no temp folder left (the local backend makes none)
    from test_cli import toolrail

    history = toolrail("history", "--json", "term", tmp_path=tmp_path)
    assert history.returncode == 0 and json.loads(history.stdout), history.stderr


def test_finding_sigkill_leftovers_are_swept_only_when_toolrail_owns_them_and_the_owner_is_dead(tmp_path):
    """A start-up sweep removes what a SIGKILLed run left, and nothing else: not another live
    toolrail's cgroup (other runs share this host), not a name outside toolrail's naming."""
    dead = subprocess.Popen(["sleep", "5"])
    dead_tag = f"{dead.pid}-{Path(f'/proc/{dead.pid}/stat').read_text().rsplit(')', 1)[1].split()[19]}"
    dead.kill()
    dead.wait()
    names = {
        "dead": f"{CGROUP_PREFIX}{dead_tag}-0123456789ab",
        "live": f"{CGROUP_PREFIX}{owner_tag()}-0123456789ab",
        "reused_pid": f"{CGROUP_PREFIX}{os.getpid()}-1-0123456789ab",  # our pid, another start time
        "old_format": f"{CGROUP_PREFIX}0123456789ab",
        "foreign": "someone-elses-cgroup",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    removed = sweep_leftovers([tmp_path])
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["reused_pid"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["live"], names["old_format"], names["foreign"]])


def test_finding_sigkill_of_the_cli_leaves_nothing_the_next_start_does_not_sweep(tmp_path):
    marker = f"toolrail-kill-{uuid.uuid4().hex}"
    code = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import time; time.sleep(120)', {marker!r}])"
    with OpenAICompatibleServer([calls(call("run_python", {"code": code, "timeout_s": 100})), answer("x")]) as server:
        process = _cli_process(tmp_path, {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k"},
                               "run", "--tool-timeout", "100", "go")
        try:
            assert _wait_for(lambda: host_processes_containing(marker)), "the cell never started"
            process.kill()
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert _wait_for(lambda: host_processes_containing(marker) == [], 20)  # bwrap --die-with-parent
    if os.geteuid() == 0:  # root: the jail had a cgroup; SIGKILL left it, named after its dead owner
        assert _our_cgroups(process.pid), "the killed run's cgroup does not carry its owner's pid"
    sweep_leftovers()
    assert _our_cgroups(process.pid) == []


@pytest.mark.parametrize("case", ["folder", "fifo", "duplicate", "over_limit"])
def test_finding_file_flag_edge_cases_are_one_clear_line_before_the_run(tmp_path, case):
    from test_cli import toolrail

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "data.csv").write_text("x\n1\n")
    (tmp_path / "b" / "data.csv").write_text("x\n2\n")
    if case == "fifo":
        os.mkfifo(tmp_path / "pipe")
    if case == "over_limit":
        with open(tmp_path / "huge.bin", "wb") as f:
            f.truncate((64 << 20) + 1)  # sparse: no disk used
    files = {"folder": ["a"], "fifo": ["pipe"], "duplicate": ["a/data.csv", "b/data.csv"], "over_limit": ["huge.bin"]}[case]
    says = {"folder": "is a folder", "fifo": "not a regular file", "duplicate": "same name as --file a/data.csv",
            "over_limit": "over the per-file limit of 67,108,864 bytes"}[case]
    flags = [arg for path in files for arg in ("--file", path)]
    done = toolrail("run", *flags, "--recorded", ANALYSIS_PROMPT, tmp_path=tmp_path, timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1 and says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_finding_policy_is_one_table_printed_by_the_cli(tmp_path):
    """`toolrail sandbox policy` prints the table the jail is built from."""
    from test_cli import toolrail

    done = toolrail("sandbox", "policy", tmp_path=tmp_path, env={"COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    for needle in ("/proc/sys", "/proc/keys", "/proc/acpi", "keyctl", "io_uring_setup", "ptrace", "CLONE_NEWUSER",
                   str(policy.DEFAULT_HOST_UID), "scratch_bytes", "--out-max-files"):
        assert needle in done.stdout, needle
    argv = make_sandbox("local")._bwrap_argv({"seccomp": 9}, 5)
    assert argv[argv.index("--seccomp") + 1] == "9"
    assert all(arg in argv for arg in policy.mask_arguments())


async def test_finding_uid_map_the_host_uid_is_configurable_and_never_root():
    """--sandbox-uid / TOOLRAIL_SANDBOX_HOST_UID pick the unprivileged host uid (used as root)."""
    async with make_sandbox("local", limits=TEST_LIMITS, host_uid="54321:54322") as sb:
        await sb.run_to_end("pass")
        expected = (54321, 54322) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
        status = Path(f"/proc/{sb._interpreter.process.pid}/status").read_text()
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        gid = int(next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1])
        assert (uid, gid) == expected


@pytest.mark.parametrize("value, says", [("0", "must not run as host root"), ("nobody", "expected UID or UID:GID")])
def test_finding_uid_map_a_root_host_uid_is_refused_with_one_line(tmp_path, value, says):
    from test_cli import toolrail

    done = toolrail("run", "--sandbox-uid", value, "--recorded", ANALYSIS_PROMPT, tmp_path=tmp_path, timeout=60)
    if os.geteuid() != 0:  # not root: nothing to drop, the setting is not used
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 2 and says in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_finding_file_budget_the_cli_shows_one_line_for_what_was_not_saved(tmp_path):
    from test_cli import toolrail

    code = "import os\nos.makedirs('a/b')\nfor i in range(30):\n    open(f'a/b/f{i:02}.txt', 'w').write('x')"
    with OpenAICompatibleServer([calls(call("run_python", {"code": code, "timeout_s": None})), answer("ok")]) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k"}
        done = toolrail("run", "--thread", "budget", "--out-max-files", "5", "go", tmp_path=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("25 more files not saved: over the 5-file budget") == 1, done.stdout
    saved = sorted((tmp_path / ".toolrail/files" / thread_folder("budget") / "a" / "b").iterdir())
    assert [p.name for p in saved] == [f"f{i:02}.txt" for i in range(5)]
