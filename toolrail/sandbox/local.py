"""The local backend: one bubblewrap jail per session, one Python interpreter inside it.

Isolation (bubblewrap): new user, pid, net, ipc, uts, mount and cgroup namespaces; the sandbox
runs as uid 1000 with no capabilities, and on the host never as root (see policy.py: the one table
of what the jail allows, from which masks, the seccomp filter and the host identity are built); only /usr, the /lib* and /bin links and the Python
install prefix are visible, read-only; the root, /dev and /etc are read-only; the only writable
places are size-capped tmpfs mounts (/scratch, /tmp, /dev/shm); the environment is rebuilt from
nothing. Limits: rlimits set on the way into bwrap (inherited by everything inside), a cgroup for
processes and total memory when the host lets us create one, and wall-clock/output caps enforced
here on the host side, which the code inside cannot touch.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import concurrent.futures
import contextlib
import ctypes
import errno
import functools
import hmac
import importlib.util
import itertools
import json
import marshal
import os
import platform
import secrets
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from toolrail.sandbox import policy
from toolrail.sandbox._cgroup import Cgroup, create_cgroup
from toolrail.sandbox.base import (
    DoneEvent,
    ExecError,
    FileInfo,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxEvent,
    SandboxLimits,
    SkippedFile,
    StderrEvent,
    StdoutEvent,
)
from toolrail.sandbox.policy import SANDBOX_UID, SCRATCH, HostIdentity

BWRAP_MISSING = (
    "bubblewrap (bwrap) is not installed or not on PATH; the local sandbox needs it. "
    "Install the Debian package bubblewrap: apt-get install bubblewrap "
    "(or set TOOLRAIL_SANDBOX=e2b to run code on E2B instead)."
)
DRIVER_IN_SANDBOX = "/opt/toolrail/driver.py"
DRIVER_COMPILED_IN_SANDBOX = DRIVER_IN_SANDBOX + "c"  # the same driver, compiled on the host
DRIVER_ON_HOST = Path(__file__).with_name("_driver.py")
READ_CHUNK = 64 * 1024
START_TIMEOUT_S = 15.0
# how a jail's start says it hit the process limit (EAGAIN from bwrap's clone, or Python's thread start)
_PROCESS_LIMIT_SIGNS = ("Resource temporarily unavailable", "can't start new thread")
REQUEST_TIMEOUT_S = 60.0
MARKER_DRAIN_S = 2.0
TRUNCATION_NOTE = "\n[toolrail: output truncated after {n} bytes]\n"


def find_bwrap() -> str:
    """The bwrap binary, or a SandboxError that says how to install it."""
    path = os.environ.get("TOOLRAIL_BWRAP") or shutil.which("bwrap")
    if not path or not os.access(path, os.X_OK):
        raise SandboxError(BWRAP_MISSING)
    return path


def sandbox_python() -> tuple[Path, Path]:
    """(install prefix, interpreter) of the Python running us: the sandbox reuses it read-only."""
    prefix = Path(sys.base_prefix).resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (prefix / "bin" / version, prefix / "bin" / "python3"):
        if candidate.exists():
            return prefix, candidate
    raise SandboxError(f"no Python interpreter found under {prefix}/bin for the sandbox")


# --- output handling -------------------------------------------------------------------------


class OutputStream:
    """One stream (stdout or stderr) of one run: finds the end marker, caps and decodes."""

    def __init__(self, marker: bytes, cap: int):
        self.marker, self.cap = marker, cap
        self.pending = b""
        self.ended = False
        self.kept = 0
        self.seen = 0
        self.truncated = False
        self.parts: list[str] = []
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, chunk: bytes) -> str:
        """Take raw bytes; return the text to show now (possibly empty)."""
        if self.ended:
            return ""  # output of background processes after the cell ended: not this run's
        data = self.pending + chunk
        index = data.find(self.marker)
        if index >= 0:
            self.pending, self.ended = b"", True
            return self._take(data[:index], final=True)
        split = len(data) - _partial_marker_length(data, self.marker)
        self.pending = data[split:]  # a marker may be split across reads: hold only that part
        return self._take(data[:split], final=False)

    def finish(self) -> str:
        """The stream ended without its marker (the interpreter died): flush what is left."""
        if self.ended:
            return ""
        self.ended = True
        data, self.pending = self.pending, b""
        return self._take(data, final=True)

    def _take(self, data: bytes, final: bool) -> str:
        self.seen += len(data)
        if self.truncated:
            return ""
        room = self.cap - self.kept
        piece = data[:room]
        self.kept += len(piece)
        cut = len(piece) < len(data)
        text = self.decoder.decode(piece, final=final or cut)
        if cut:
            self.truncated = True
            text += TRUNCATION_NOTE.format(n=self.cap)
        if text:
            self.parts.append(text)
        return text

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _partial_marker_length(data: bytes, marker: bytes) -> int:
    """Length of the longest end of `data` that is a start of `marker` (0 almost always)."""
    start = data.rfind(marker[:1], max(0, len(data) - len(marker) + 1))
    while start >= 0:
        if marker.startswith(data[start:]):
            return len(data) - start
        start = data.rfind(marker[:1], max(0, len(data) - len(marker) + 1), start)
    return 0


async def _wait_for(awaitable: Any, timeout: float) -> Any:
    """`awaitable`'s result, or TimeoutError after `timeout` seconds. Not `asyncio.wait_for`: on
    Python 3.11 it returns the result, swallowing the cancellation, when the task is cancelled
    just as its awaitable completes (CPython gh-86296). A task that loses its cancellation so runs
    on: a pool keeper cancelled by the loop's end mid-refill then waits for its next claim
    forever, and `asyncio.run` (a CLI exit, a test's teardown) with it. `asyncio.timeout` keeps
    an outside cancellation a cancellation."""
    async with asyncio.timeout(timeout):
        return await awaitable


# --- one jail process ---------------------------------------------------------------------------


class JailLauncher:
    """The thread that starts jails for one host identity, holding the jail's credentials itself.

    Why a thread of its own: a launch that runs Python between fork and exec (preexec_fn) must
    fork, and a fork copies the page tables of everything the host holds: a cold start cost
    ~4 ms more per 100 MB the host process holds (49 ms from a 407 MB host against 35 ms from a
    37 MB one, measured side by side).
    Linux keeps credentials, the mount namespace and the session keyring per thread, so this
    thread takes on, once, what the launch child used to do before its exec: a private mount
    namespace where the Python install is reachable (`_expose`), then the host uid/gid with no
    supplementary groups, for good (raw syscalls: glibc's wrappers would change every thread
    of the process). Before each start it joins a new session keyring, then starts bwrap with
    no preexec_fn, so CPython can vfork: nothing is copied, and the child inherits this
    thread's credentials, namespace and keyring. Rlimits are per process, not per thread: the
    driver sets its own before it takes any code (`_driver.apply_limits`), and the cgroup join
    is the host's move of the started jail (Cgroup.adopt_tree).

    bwrap --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread* that started bwrap ends:
    launcher threads live as long as this process."""

    _by_identity: dict[tuple[int, int, str] | None, JailLauncher] = {}
    _lock = threading.Lock()

    def __init__(self, identity: HostIdentity | None, prefix: Path):
        self.identity, self.prefix = identity, prefix
        name = f"toolrail-jail-launcher-{identity.uid if identity else 'self'}"
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.failure: str | None = None  # why this thread cannot start jails (it is never retried)
        self.ready = False

    @classmethod
    def for_identity(cls, identity: HostIdentity | None, prefix: Path) -> JailLauncher:
        key = (identity.uid, identity.gid, str(prefix)) if identity else None
        with cls._lock:
            launcher = cls._by_identity.get(key)
            if launcher is None or launcher.failure is not None:
                launcher = cls._by_identity[key] = cls(identity, prefix)
            return launcher

    def start_bwrap(self, argv: list[str], pass_fds: tuple[int, ...], env: dict[str, str]) -> subprocess.Popen:
        """In the launcher thread: become the jail's identity once, check it, start bwrap."""
        if not self.ready:
            self._take_on_identity()
        self._check_identity()
        _join_new_session_keyring()
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
            pass_fds=pass_fds, env=env, start_new_session=True,
        )

    def _take_on_identity(self) -> None:
        identity = self.identity
        if identity is not None:
            try:
                hidden = _hidden_ancestor(self.prefix, identity)
                if hidden is not None:
                    _expose(self.prefix, hidden)
                _thread_syscall("setgroups", 0, None)
                _thread_syscall("setresgid", identity.gid, identity.gid, identity.gid)
                _thread_syscall("setresuid", identity.uid, identity.uid, identity.uid)
            except OSError as exc:
                self.failure = f"cannot become host uid {identity.uid}:{identity.gid} to start jails: {exc}"
                raise SandboxError(self.failure) from None
        self.ready = True

    def _check_identity(self) -> None:
        """getresuid, getresgid and getgroups are direct syscalls: this thread's own credentials;
        /proc/thread-self/status has its capabilities (all gone once every uid is not 0)."""
        identity = self.identity
        if identity is None:
            return
        capabilities = _thread_capabilities()
        if (os.getresuid() != (identity.uid,) * 3 or os.getresgid() != (identity.gid,) * 3
                or os.getgroups() != [] or any(capabilities.values())):
            self.failure = (f"the jail launcher thread is not host uid {identity.uid}:{identity.gid} with no groups "
                            f"and no capabilities (uids {os.getresuid()}, gids {os.getresgid()}, {capabilities}): "
                            "something changed every thread's credentials; no jail is started from it")
            raise SandboxError(self.failure)


def _thread_capabilities() -> dict[str, int]:
    """The calling thread's permitted, effective and ambient capability sets."""
    found = {}
    for line in Path("/proc/thread-self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("CapPrm", "CapEff", "CapAmb"):
            found[key] = int(value.strip(), 16)
    return found


# The raw syscalls the launcher makes itself, for this machine ({} where they are not known).
_SYSCALLS = {
    "x86_64": {"setgroups": 116, "setresuid": 117, "setresgid": 119, "keyctl": 250},
    "aarch64": {"setgroups": 159, "setresuid": 147, "setresgid": 149, "keyctl": 219},
}.get(platform.machine().replace("arm64", "aarch64"), {})


def _thread_syscall(name: str, *args: Any) -> None:
    """A credentials syscall for the calling thread only (glibc's wrappers broadcast to all)."""
    number = _SYSCALLS.get(name)
    if number is None:
        raise OSError(errno.ENOSYS, f"{name}: no syscall number known for {platform.machine()}")
    if _LIBC.syscall(number, *args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")


class JailProcess:
    """bwrap, started from a worker thread and reaped by us alone.

    Why not asyncio.create_subprocess_exec: it starts the process on the event-loop thread,
    which does not hold the jail's credentials (JailLauncher does). And its child watcher reaps
    in a thread of its own, racing Popen.send_signal's own waitpid: the source of asyncio's
    "Unknown child process pid ..., will report returncode 255" warnings. Here Popen runs in a
    thread, the exit is seen through a pidfd on the loop, and only Popen.poll() ever reaps, so
    the pid stays ours until we have the exit status."""

    def __init__(self, popen: subprocess.Popen, stdin: asyncio.StreamWriter,
                 stdout: asyncio.StreamReader, stderr: asyncio.StreamReader):
        self.popen, self.stdin, self.stdout, self.stderr = popen, stdin, stdout, stderr
        self.pid = popen.pid
        self._exited = asyncio.get_running_loop().create_future()
        self._pidfd: int | None = None

    @classmethod
    async def start(cls, argv: list[str], *, pass_fds: tuple[int, ...], env: dict[str, str],
                    launcher: JailLauncher) -> JailProcess:
        launching = asyncio.get_running_loop().run_in_executor(
            launcher.executor, launcher.start_bwrap, argv, pass_fds, env)
        try:
            popen = await asyncio.shield(launching)
        except asyncio.CancelledError:
            # The start may be under way with our fds: let it finish, then kill what it started.
            await _abandon_launch(launching)
            raise
        loop = asyncio.get_running_loop()
        try:
            stdout = asyncio.StreamReader(limit=READ_CHUNK)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), popen.stdout)
            stderr = asyncio.StreamReader(limit=READ_CHUNK)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stderr), popen.stderr)
            transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, popen.stdin)
            stdin = asyncio.StreamWriter(transport, protocol, None, loop)
            process = cls(popen, stdin, stdout, stderr)
            process._watch_exit()
        except BaseException:
            await _kill_started(popen)
            raise
        return process

    def _watch_exit(self) -> None:
        loop = asyncio.get_running_loop()
        self._pidfd = os.pidfd_open(self.pid)  # the child is not reaped yet: this pid is ours
        loop.add_reader(self._pidfd, self._on_exit)
        self._on_exit()  # it may already be gone

    def _on_exit(self) -> None:
        if self.popen.poll() is None or self._exited.done():
            return
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._exited.set_result(self.popen.returncode)

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        """SIGKILL bwrap's process group: killing bwrap ends the pid namespace, so everything in
        it. Only a signal: the exit is collected by the pidfd watch, never by a second waitpid."""
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def kill_namespace(self) -> bool:
        """SIGKILL the init of the jail's pid namespace (bwrap's child): the kernel then kills
        every process in the namespace. False when there is none to signal."""
        if self.popen.returncode is not None:
            return False
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return False
        killed = False
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.kill(int(child), signal.SIGKILL)
                killed = True
        return killed

    def close_pipes(self) -> None:
        self.stdin.close()


async def _abandon_launch(launching: asyncio.Future) -> None:
    """Wait for a launch nobody wants any more (bwrap's start is a vfork and an exec: it ends
    soon), and kill what it started."""
    try:
        late = await asyncio.shield(launching)
    except BaseException:  # the launch failed (or we are cancelled again): nothing was started
        return
    await _kill_started(late)


async def _kill_started(popen: subprocess.Popen) -> None:
    """SIGKILL a bwrap nobody will use, with its process group (start_new_session: it leads
    one), and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    await asyncio.to_thread(popen.wait)


# --- one interpreter process -------------------------------------------------------------------


@dataclass(eq=False)  # one object per jail: hashed by identity (the pool keeps sets of them)
class Interpreter:
    """A running bwrap + driver pair and the tasks that pump its pipes into one queue."""

    process: JailProcess
    events: asyncio.StreamReader
    queue: asyncio.Queue
    cgroup: Cgroup | None
    key: str = ""
    tag: str = ""  # the session tag on the driver's command line
    pumps: list[asyncio.Task] = field(default_factory=list)
    alive: bool = True
    oom_kills_at_start: int = 0

    async def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode()
        if len(data) > 0xFFFFFFFF:
            raise SandboxError("a command for the sandbox is too large to send")
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(struct.pack(">I", len(data)) + data)
        await stdin.drain()

    async def kill(self) -> int | None:
        """SIGKILL the jail. Killing bwrap kills the pid namespace and so everything in it."""
        self.alive = False
        if self.process.kill_namespace():
            # bwrap exits once the namespace's init is gone, and the kernel lets init go only
            # after every process of the namespace: then nothing of the jail is left (no cgroup
            # needed to know it, e.g. without root)
            with contextlib.suppress(asyncio.TimeoutError):
                await _wait_for(self.process.wait(), 2)
        self.process.kill()
        with contextlib.suppress(asyncio.TimeoutError):
            await _wait_for(self.process.wait(), 5)
        self.process.close_pipes()
        await asyncio.to_thread(self.cleanup)
        return self.process.returncode

    def kill_now(self) -> None:
        """Synchronous last resort (interpreter exit without a running loop): SIGKILL the jail
        and remove its cgroup; the kernel reaps what our exit orphans."""
        self.alive = False
        self.process.kill()
        self.cleanup()

    async def items_until(self, deadline: float) -> AsyncIterator[tuple[str, Any]]:
        """What the pumps deliver, until `deadline` passes or the driver exits or talks garbage."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, payload = await _wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:
                return
            yield kind, payload
            if kind in ("exit", "garbage"):
                return

    def stop_pumps(self) -> None:
        for task in self.pumps:
            task.cancel()

    def cleanup(self) -> None:
        if self.cgroup is not None:
            self.cgroup.destroy()
            self.cgroup = None


async def _pump_stream(reader: asyncio.StreamReader, kind: str, queue: asyncio.Queue) -> None:
    while chunk := await reader.read(READ_CHUNK):
        await queue.put((kind, chunk))
    await queue.put(("eof", kind))


class ProtocolError(ValueError):
    """A frame on the driver's channel that the driver did not send, or cannot have meant."""


async def _pump_events(reader: asyncio.StreamReader, queue: asyncio.Queue, max_frame: int, key: str) -> None:
    """Frames from the in-jail driver. Everything here is untrusted input: a frame without this
    session's key, or not a JSON object, ends the session with one clear error."""
    try:
        while True:
            (size,) = struct.unpack(">I", await reader.readexactly(4))
            if size > max_frame:
                raise ProtocolError(f"an event frame of {size} bytes exceeds {max_frame}")
            frame = json.loads(await reader.readexactly(size))
            if not isinstance(frame, dict):
                raise ProtocolError("an event frame is not a JSON object")
            if not hmac.compare_digest(str(frame.pop("key", "")), key):
                raise ProtocolError("an event frame without this session's key (forged by code in the sandbox?)")
            await queue.put(("event", frame))
    except asyncio.IncompleteReadError:
        await queue.put(("exit", None))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        await queue.put(("garbage", str(exc)))


# --- the sandbox -------------------------------------------------------------------------------


class LocalSandbox(Sandbox):
    """A stateful Python session in a bubblewrap jail on this machine."""

    backend = "local"

    def __init__(self, limits: SandboxLimits | None = None, host_uid: str | None = None,
                 pool_size: int | None = None):
        super().__init__(limits)
        from toolrail.sandbox.pool import resolve_pool_size

        # spare jails kept ready for sessions of this configuration (0: every start is cold)
        self.pool_size = resolve_pool_size(pool_size)
        self.from_pool = False  # this session's first interpreter was a claimed spare
        self.bwrap = find_bwrap()
        self.python_prefix, self.python = sandbox_python()
        try:
            self.identity: HostIdentity | None = policy.host_identity(host_uid)
        except ValueError as exc:
            raise SandboxError(str(exc)) from None
        self._garbage: str | None = None  # the protocol error that ended the last interpreter
        self.session_tag = f"toolrail-session-{secrets.token_hex(8)}"
        self.mechanisms: dict[str, str] = {}
        self._interpreter: Interpreter | None = None
        self._lost_reason: str | None = None  # why the previous interpreter is gone
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._last_used = time.monotonic()
        self._idle_watch: asyncio.Task | None = None
        self._closed = False
        self._started_once = False

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            await self._ensure_interpreter()

    def _template(self) -> LocalSandbox:
        """A pool-less copy that makes spares with this session's configuration (and no state)."""
        template = object.__new__(LocalSandbox)
        Sandbox.__init__(template, self.limits)
        template.bwrap, template.python_prefix, template.python = self.bwrap, self.python_prefix, self.python
        template.identity, template.session_tag, template.mechanisms = self.identity, self.session_tag, {}
        template.pool_size = 0
        return template

    def prewarm(self) -> None:
        """Start filling the spare-jail pool for this configuration now (in the background), so
        the first session does not wait for a cold start. No-op when the pool is off."""
        if self.pool_size:
            from toolrail.sandbox.pool import pool_for

            pool_for(self)

    async def close(self) -> None:
        self._closed = True
        if self._idle_watch is not None:
            self._idle_watch.cancel()
            self._idle_watch = None
        if self._interpreter is not None:
            interpreter, self._interpreter = self._interpreter, None
            await interpreter.kill()
            interpreter.stop_pumps()

    async def _ensure_interpreter(self) -> tuple[Interpreter, bool]:
        """The live interpreter, starting one if needed; True when this one replaces a lost one."""
        if self._closed:
            raise SandboxError("this sandbox session is closed")
        if self._interpreter is not None and self._interpreter.alive:
            return self._interpreter, False
        spare = None
        if self.pool_size and not self._started_once:
            from toolrail.sandbox.pool import pool_for

            spare = await pool_for(self).claim()
        self._started_once = True
        if spare is not None:  # made with exactly this session's configuration (pool.config_key)
            self.session_tag, self.from_pool = spare.tag, True
            self._record_mechanisms(spare.cgroup)
        self._interpreter = spare or await self._spawn()
        self._last_used = time.monotonic()
        if self._idle_watch is None:
            self._idle_watch = asyncio.create_task(self._watch_idle())
        return self._interpreter, self._lost_reason is not None

    async def _spawn(self, tag: str | None = None) -> Interpreter:
        """A new jail, ready for commands. The blocking parts (cgroup setup, bwrap's start, the
        move into the cgroup) run in worker threads, never on the event loop."""
        limits, tag = self.limits, tag or self.session_tag
        cgroup = await _cgroup_for_launch(self.bwrap, limits.max_processes + 2, limits.memory_bytes + self._tmpfs_bytes())
        self._record_mechanisms(cgroup)
        read_fd, write_fd = os.pipe()
        data_fds = _data_fds(self._jail_files())
        key = secrets.token_hex(16)
        try:
            process = await JailProcess.start(
                self._bwrap_argv(data_fds, write_fd, tag, cgroup),
                pass_fds=(write_fd, *data_fds.values()),
                env=_launch_environment(),
                launcher=JailLauncher.for_identity(self.identity, self.python_prefix),
            )
        except BaseException as exc:
            os.close(read_fd)
            if cgroup is not None:
                cgroup.destroy()
            if isinstance(exc, (PermissionError, subprocess.SubprocessError)):
                who = f"host uid {self.identity.uid}" if self.identity else "this user"
                raise SandboxError(f"cannot start {self.bwrap} as {who}: {exc}") from None
            raise
        finally:
            os.close(write_fd)
            for fd in data_fds.values():
                os.close(fd)
        queue: asyncio.Queue = asyncio.Queue(maxsize=256)
        interpreter = Interpreter(process, None, queue, cgroup, key, tag)  # type: ignore[arg-type]
        try:
            interpreter.events = await _stream_reader(read_fd)
            interpreter.oom_kills_at_start = cgroup.oom_kills() if cgroup else 0
            interpreter.pumps = [
                asyncio.create_task(_pump_stream(process.stdout, "stdout", queue)),
                asyncio.create_task(_pump_stream(process.stderr, "stderr", queue)),
                asyncio.create_task(_pump_events(interpreter.events, queue, self._max_frame(), key)),
            ]
            # No hello (so no code) before the whole jail is inside its cgroup.
            if await _joined_after_start(process, cgroup):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await interpreter.send({"op": "hello", "key": key})
            await self._await_ready(interpreter)
        except BaseException:
            if interpreter.alive:  # cancelled or failed half-way: nothing may outlive us
                await asyncio.shield(interpreter.kill())
                interpreter.stop_pumps()
            raise
        return interpreter

    def _jail_files(self) -> dict[str, bytes]:
        """Files copied into the jail (bwrap --ro-bind-data): nothing on the host is needed,
        so the jail user never has to reach our checkout, and nothing is left behind."""
        uid = SANDBOX_UID
        driver_path, driver = _driver_file(self.python)
        return {
            "/etc/passwd": f"root:x:0:0:root:/:/bin/false\nsandbox:x:{uid}:{uid}:sandbox:{SCRATCH}:/bin/sh\n".encode(),
            "/etc/group": f"root:x:0:\nsandbox:x:{uid}:\n".encode(),
            "/etc/hosts": b"127.0.0.1 localhost sandbox\n::1 localhost\n",
            driver_path: driver,
            "seccomp": policy.seccomp_program(),
        }

    async def _await_ready(self, interpreter: Interpreter) -> None:
        errors: list[bytes] = []
        async for kind, payload in interpreter.items_until(time.monotonic() + START_TIMEOUT_S):
            if kind == "event" and payload.get("type") == "ready":
                return
            if kind == "stderr":
                errors.append(payload)
            if kind == "garbage":
                errors.append(f"protocol error: {payload}".encode())
        await interpreter.kill()
        interpreter.stop_pumps()
        detail = b"".join(errors).decode(errors="replace").strip()
        raise SandboxError(
            "bubblewrap could not start the sandbox"
            + (f": {detail}" if detail else f" (exit code {interpreter.process.returncode})")
            + self._start_failure_hint(detail)
        )

    def _start_failure_hint(self, detail: str) -> str:
        """What to do about a jail that did not start. EAGAIN from a fork or a thread is the
        process limit, not missing user namespaces: without a cgroup the cap is RLIMIT_NPROC,
        which the kernel counts over every process and thread of the jail's host uid."""
        if any(sign in detail for sign in _PROCESS_LIMIT_SIGNS):
            uid = self.identity.uid if self.identity is not None else os.getuid()
            return (f". The process limit was reached: without a cgroup the jail's cap is RLIMIT_NPROC "
                    f"(max_processes {self.limits.max_processes} + 4), counted over every process and thread of "
                    f"host uid {uid}, other jails and this program's own threads included; raise the sandbox "
                    "limit max_processes, or run fewer sandboxes at once.")
        return (". Unprivileged user namespaces must be allowed (sysctl kernel.unprivileged_userns_clone=1; "
                "on Ubuntu 24.04 also kernel.apparmor_restrict_unprivileged_userns=0): the jail never runs as "
                "host root, toolrail drops to an unprivileged uid for it (--sandbox-uid).")

    async def _watch_idle(self) -> None:
        """Close an interpreter nobody used for idle_timeout_s; the next run starts fresh."""
        idle = self.limits.idle_timeout_s
        while not self._closed:
            await asyncio.sleep(min(idle, 5.0))
            unused = time.monotonic() - self._last_used
            interpreter = self._interpreter
            if interpreter is not None and interpreter.alive and unused >= idle and not self._lock.locked():
                self._interpreter = None
                self._lost_reason = f"the session was idle for {unused:.0f} s and was closed"
                await interpreter.kill()
                interpreter.stop_pumps()

    # --- running code --------------------------------------------------------------------

    async def run(self, code: str, *, timeout: float | None = None) -> AsyncIterator[SandboxEvent]:
        async with self._lock:
            interpreter, fresh = await self._ensure_interpreter()
            notes = [f"Fresh interpreter: {self._lost_reason}; earlier variables and files are gone."] if fresh else []
            self._lost_reason = None
            finished = False
            try:
                async for event in self._execute(interpreter, code, timeout or self.limits.wall_timeout_s):
                    if isinstance(event, DoneEvent):
                        event.result.state_reset = fresh
                        event.result.notes[:0] = notes
                        finished = True
                    yield event
            finally:
                self._last_used = time.monotonic()
                if not finished and interpreter.alive:  # the caller walked away mid-run
                    self._lost_reason = "a run was abandoned before it finished"
                    await interpreter.kill()

    async def _execute(self, interpreter: Interpreter, code: str, timeout: float) -> AsyncIterator[SandboxEvent]:
        limits = self.limits
        cell_id = next(self._ids)
        marker = f"\x1e[toolrail-end {secrets.token_hex(12)}]\x1e"
        streams = {k: OutputStream(marker.encode(), limits.max_output_bytes) for k in ("stdout", "stderr")}
        _drain_stale(interpreter.queue)
        started = time.monotonic()
        await interpreter.send(
            {"op": "exec", "id": cell_id, "code": code, "marker": marker, "cpu_s": limits.cpu_time_s}
        )
        deadline, stopping, done, died, stop_reason = started + timeout, False, None, False, None
        eofs: set[str] = set()
        while True:
            if done is not None and all(s.ended for s in streams.values()):
                break
            if died and (eofs >= {"stdout", "stderr"}):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                if done is not None or died:
                    break  # markers or pipe ends never came; take what we have
                if not stopping:
                    stop_reason = stop_reason or "timeout"
                    stopping, deadline = True, time.monotonic() + limits.kill_grace_s
                    await self._interrupt(interpreter, cell_id, stop_reason)
                    continue
                await interpreter.kill()
                died, deadline = True, time.monotonic() + MARKER_DRAIN_S
                continue
            try:
                kind, payload = await _wait_for(interpreter.queue.get(), left)
            except asyncio.TimeoutError:
                continue
            if kind in streams:
                text = streams[kind].feed(payload)
                if text:
                    yield (StdoutEvent if kind == "stdout" else StderrEvent)(text=text)
                seen = sum(s.seen for s in streams.values())
                if not stopping and seen > limits.max_output_bytes * limits.output_stop_factor:
                    stop_reason, stopping = "output_limit", True
                    deadline = time.monotonic() + limits.kill_grace_s
                    await self._interrupt(interpreter, cell_id, stop_reason)
            elif kind == "event" and payload.get("id") == cell_id and payload.get("type") == "done" and done is None:
                try:
                    done, deadline = _parse_done(payload), time.monotonic() + MARKER_DRAIN_S
                except ProtocolError as exc:  # one clear error for this session, never a traceback
                    stop_reason, self._garbage = "crashed", str(exc)
                    await interpreter.kill()
                    died, deadline = True, time.monotonic() + MARKER_DRAIN_S
            elif kind == "eof":
                eofs.add(payload)
            elif kind in ("exit", "garbage"):
                if kind == "garbage":
                    stop_reason = stop_reason or "crashed"
                    self._garbage = str(payload)
                if interpreter.alive:
                    interpreter.alive = False
                    with contextlib.suppress(asyncio.TimeoutError):
                        await _wait_for(interpreter.process.wait(), 2)
                    if interpreter.process.returncode is None:
                        await interpreter.kill()
                died, deadline = True, time.monotonic() + MARKER_DRAIN_S
        for kind, stream in streams.items():
            if text := stream.finish():
                yield (StdoutEvent if kind == "stdout" else StderrEvent)(text=text)
        if died:
            await interpreter.kill()  # make sure nothing is left, release the cgroup
            interpreter.stop_pumps()
        result = self._result(interpreter, streams, done, died, stop_reason, time.monotonic() - started)
        yield DoneEvent(result=result)

    async def _interrupt(self, interpreter: Interpreter, cell_id: int, reason: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await interpreter.send({"op": "interrupt", "id": cell_id, "reason": reason})

    def _result(
        self,
        interpreter: Interpreter,
        streams: dict[str, OutputStream],
        done: dict[str, Any] | None,
        died: bool,
        stop_reason: str | None,
        duration_s: float,
    ) -> RunResult:
        notes: list[str] = []
        error = done["error"] if done else None
        if self._garbage is not None:
            notes.append(f"The sandbox session was ended by a protocol error: {self._garbage}.")
            self._garbage = None
        if done is not None and not died:
            reason = done["reason"]
            if reason == "interrupted":
                reason = stop_reason or "timeout"
        else:
            reason = stop_reason or self._death_reason(interpreter)
            code = interpreter.process.returncode
            notes.append(
                f"The Python interpreter stopped ({reason}, exit status {code}); this session's "
                "variables and files are lost and the next run starts a fresh interpreter."
            )
            self._lost_reason = f"the previous interpreter stopped ({reason})"
            self._interpreter = None
        if reason in ("timeout", "output_limit") and error is not None and error.name == "KeyboardInterrupt":
            error = None  # our own interrupt, not the code's failure; exit_reason says it all
        if reason == "timeout":
            notes.append(f"Stopped after the wall-clock limit of {duration_s:.1f} s.")
        if reason == "output_limit":
            notes.append("Stopped because it kept printing far beyond the output cap.")
        if reason == "cpu":
            notes.append(f"Stopped at the CPU-time limit of {self.limits.cpu_time_s} s.")
        return RunResult(
            stdout=streams["stdout"].text,
            stderr=streams["stderr"].text,
            error=error,
            exit_reason=reason,
            duration_s=round(duration_s, 4),
            files=done["files"] if done else [],
            skipped_files=done["skipped"] if done else [],
            files_not_listed=done["omitted"] if done else 0,
            truncated=any(s.truncated for s in streams.values()),
            interpreter_lost=died,
            notes=notes,
        )

    def _death_reason(self, interpreter: Interpreter) -> str:
        code = interpreter.process.returncode
        if interpreter.cgroup is not None and interpreter.cgroup.oom_kills() > interpreter.oom_kills_at_start:
            return "memory"
        if code in (128 + signal.SIGXCPU, -signal.SIGXCPU):
            return "cpu"
        if code is not None and (code < 0 or code > 128):
            return "killed"
        return "crashed"

    # --- files ---------------------------------------------------------------------------

    async def upload(self, path: str, data: bytes) -> None:
        if len(data) > self.limits.scratch_bytes:
            raise SandboxError(f"{len(data)} bytes do not fit the {self.limits.scratch_bytes}-byte scratch dir")
        await self._request({"op": "write", "path": path, "data": base64.b64encode(data).decode()})

    async def download(self, path: str) -> bytes:
        if not _safe_relative(path):
            raise SandboxError(f"download {path!r}: only paths inside the scratch dir can be read")
        reply = await self._request({"op": "read", "path": path, "max_bytes": self.limits.scratch_bytes})
        try:
            return base64.b64decode(str(reply["data"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise SandboxError(f"download {path!r}: malformed reply from the sandbox ({exc})") from None

    async def list_files(self) -> list[FileInfo]:
        reply = await self._request({"op": "list"})
        try:
            return [FileInfo.model_validate(f) for f in reply["files"] if _safe_relative(str(f.get("path", "")))]
        except (KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise SandboxError(f"list_files: malformed reply from the sandbox ({type(exc).__name__})") from None

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            interpreter, _ = await self._ensure_interpreter()
            message["id"] = request_id = next(self._ids)
            await interpreter.send(message)
            async for kind, payload in interpreter.items_until(time.monotonic() + REQUEST_TIMEOUT_S):
                if kind == "garbage":
                    break
                if kind == "event" and payload.get("id") == request_id:
                    self._last_used = time.monotonic()
                    if payload.get("type") == "error":
                        raise SandboxError(f"{message['op']} failed in the sandbox: {payload.get('message')}")
                    return payload
            await interpreter.kill()
            interpreter.stop_pumps()
            self._interpreter, self._lost_reason = None, f"the interpreter was lost during a {message['op']} request"
            raise SandboxError(f"the sandbox interpreter died or hung during a {message['op']} request")

    # --- jail construction ---------------------------------------------------------------

    def _tmpfs_sizes(self) -> dict[str, int]:
        small = max(1 << 20, min(self.limits.scratch_bytes, 64 << 20))
        return {SCRATCH: self.limits.scratch_bytes, "/tmp": small, "/dev/shm": small}

    def _tmpfs_bytes(self) -> int:
        return sum(self._tmpfs_sizes().values()) + (64 << 20)

    def _max_frame(self) -> int:
        return self.limits.scratch_bytes * 4 // 3 + (1 << 20) + self.limits.max_output_bytes

    def _bwrap_argv(self, data_fds: dict[str, int], event_fd: int, tag: str | None = None,
                    cgroup: Cgroup | None = None) -> list[str]:
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        argv += ["--cap-drop", "ALL"]
        if _bwrap_supports(self.bwrap, "--disable-userns"):  # bwrap >= 0.8: no nested userns
            argv += ["--disable-userns"]
        argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
        argv += _system_binds()
        if not str(self.python_prefix).startswith("/usr/"):
            argv += ["--ro-bind", str(self.python_prefix), str(self.python_prefix)]
        argv += ["--proc", "/proc", *policy.mask_arguments(), "--dev", "/dev"]
        for target, size in self._tmpfs_sizes().items():
            argv += ["--size", str(size), "--tmpfs", target]
        for target, fd in data_fds.items():
            if target.startswith("/"):
                argv += ["--ro-bind-data", str(fd), target]
        for name in ("ld.so.cache", "localtime"):
            argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", SCRATCH, "--clearenv"]
        argv += ["--seccomp", str(data_fds["seccomp"])]
        for key, value in self._environment().items():
            argv += ["--setenv", key, value]
        # session_tag: a public random name on the driver's command line, so this session's
        # processes can be told from other sessions' on the same host (tests, operators).
        driver = _driver_file(self.python)[0]
        rlimits = json.dumps(_driver_limits(self.limits, cgroup, self.identity), separators=(",", ":"))
        return argv + ["--", str(self.python), "-u", "-I", "-S", "-B", driver, str(event_fd), tag or self.session_tag, rlimits]

    def _environment(self) -> dict[str, str]:
        return {
            "PATH": f"{self.python_prefix}/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": SCRATCH,
            "USER": "sandbox",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TMPDIR": "/tmp",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "MPLBACKEND": "Agg",
            "TOOLRAIL_SCRATCH": SCRATCH,
        }

    def _record_mechanisms(self, cgroup: Cgroup | None) -> None:
        """What enforces each limit on this host, for reports and tests."""
        applied = cgroup.applied if cgroup else []
        root = os.geteuid() == 0
        self.mechanisms = {
            "host_uid": f"bwrap started as host uid {self.identity.uid}:{self.identity.gid} (dropped from root)"
            if self.identity else f"the caller's own uid {os.geteuid()} (not root)",
            "masks": "bwrap --ro-bind (read-only /proc/sys ...), /dev/null and tmpfs over masked paths",
            "syscalls": "libseccomp filter loaded by bwrap --seccomp (EPERM)",
            "keyring": "new session keyring + keyring syscalls denied",
            "network": "bwrap --unshare-net (empty network namespace, own loopback)",
            "filesystem": "bwrap: read-only binds of /usr, /lib*, python prefix; ro root",
            "scratch": "bwrap --size --tmpfs (kernel-enforced size cap)",
            "wall_time": "host timer: interrupt, then SIGKILL of the pid namespace",
            "cpu_time": "RLIMIT_CPU (per process; soft limit re-armed per run)",
            "memory": "RLIMIT_AS per process"
            + (" + cgroup memory limit for the whole jail" if "memory" in applied else ""),
            "processes": "cgroup pids.max"
            if "pids" in applied
            else ("RLIMIT_NPROC" if not root else "NOT ENFORCED (root host without writable cgroup)"),
            "file_size": "RLIMIT_FSIZE",
            "output": "host-side cap with truncation marker; run stopped past output_stop_factor",
        }


# bwrap (host side) -> its pid-1 reaper in the new pid namespace -> the interpreter.
_JAIL_DEPTH = 2


async def _joined_after_start(process: JailProcess, cgroup: Cgroup | None) -> bool:
    """Move the started jail into its cgroup (Cgroup.adopt_tree). False: bwrap exited before
    its tree took shape, so no hello is sent and the start fails with bwrap's own message. A
    failed move kills the jail: it never runs without its limits."""
    if cgroup is None:
        return True
    try:
        return await asyncio.to_thread(cgroup.adopt_tree, process.pid, _JAIL_DEPTH, START_TIMEOUT_S)
    except OSError as exc:
        raise SandboxError(f"could not move the sandbox into its cgroup: {exc}") from None


async def _cgroup_for_launch(bwrap: str, max_processes: int, memory_bytes: int) -> Cgroup | None:
    """_prepare_launch in a worker thread. A start cancelled meanwhile (a teardown on Ctrl-C
    or SIGTERM, a pool refill stopped) cannot stop the thread: the cgroup it still makes is
    removed when it is made, instead of staying behind on the host."""
    preparing = asyncio.ensure_future(asyncio.to_thread(_prepare_launch, bwrap, max_processes, memory_bytes))
    try:
        return await asyncio.shield(preparing)
    except asyncio.CancelledError:
        preparing.add_done_callback(_destroy_unused_cgroup)
        raise


def _destroy_unused_cgroup(preparing: asyncio.Future) -> None:
    cgroup = None if preparing.cancelled() or preparing.exception() else preparing.result()
    if cgroup is not None:
        cgroup.destroy()  # nothing ever ran in it: removing its directories is all


def _prepare_launch(bwrap: str, max_processes: int, memory_bytes: int) -> Cgroup | None:
    """The blocking steps before a launch, for a worker thread: the cgroup (and, once per
    process, the sweep of dead runs' cgroups and the probe of bwrap's options)."""
    _bwrap_supports(bwrap, "--disable-userns")
    return create_cgroup(max_processes, memory_bytes)


@functools.cache
def _bwrap_supports(bwrap: str, option: str) -> bool:
    try:
        help_text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return option in help_text


def _system_binds() -> list[str]:
    """/usr read-only, and /bin, /sbin, /lib* as the host has them (links or directories)."""
    argv = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / name
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), f"/{name}"]
    return argv


def _launch_environment() -> dict[str, str]:
    """bwrap's own environment. Its pid-1 reaper never execs, so the code inside can read this
    through /proc/1/environ: it must hold nothing from ours (API keys!), not only --clearenv."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


_DRIVER_REASONS = frozenset({"ok", "error", "timeout", "output_limit", "interrupted", "memory", "cpu"})


def _parse_done(frame: dict[str, Any]) -> dict[str, Any]:
    """A validated 'done' frame: typed error and files; paths that are not plainly inside
    scratch become skipped entries and are never downloaded. Anything else: ProtocolError."""
    try:
        reason = frame.get("reason")
        if reason not in _DRIVER_REASONS:
            raise ValueError(f"unknown reason {str(reason)[:40]!r}")
        error = ExecError.model_validate(frame["error"]) if frame.get("error") is not None else None
        listed = [FileInfo.model_validate(f) for f in frame.get("files") or []]
        skipped = [SkippedFile.model_validate(f) for f in frame.get("skipped") or []]
        omitted = frame.get("omitted") or 0
        if not isinstance(omitted, int) or omitted < 0:
            raise ValueError("bad 'omitted' count")
    except (ValidationError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ProtocolError(f"a malformed 'done' frame ({type(exc).__name__})") from None
    files = [f for f in listed if _safe_relative(f.path)]
    skipped += [SkippedFile(path=f.path, reason="not a path inside scratch") for f in listed if not _safe_relative(f.path)]
    return {"reason": reason, "error": error, "files": files, "skipped": skipped, "omitted": omitted}


def _safe_relative(path: str) -> bool:
    """A path the host may ask for or save: relative, normalised, inside scratch, no NUL."""
    if not path or "\0" in path or len(path) > 4096 or path.startswith("/"):
        return False
    parts = path.split("/")
    return all(part not in ("", ".", "..") for part in parts)


@functools.cache
def _driver_source() -> bytes:
    return DRIVER_ON_HOST.read_bytes()


@functools.cache
def _driver_file(python: Path) -> tuple[str, bytes]:
    """(path in the jail, bytes) of the driver: compiled here once when the jail runs this very
    interpreter (sandbox_python: our own install, same version), so no start compiles its
    source again (~2 ms of each cold start); the source otherwise. Python runs a .pyc given
    on its command line directly."""
    if python.name != f"python{sys.version_info.major}.{sys.version_info.minor}":
        return DRIVER_IN_SANDBOX, _driver_source()
    code = compile(_driver_source(), DRIVER_IN_SANDBOX, "exec", dont_inherit=True, optimize=0)
    header = importlib.util.MAGIC_NUMBER + struct.pack("<III", 0, 0, 0)  # flags, mtime, size: unchecked
    return DRIVER_COMPILED_IN_SANDBOX, header + marshal.dumps(code)


def _data_fds(files: dict[str, bytes]) -> dict[str, int]:
    """One memfd per file, positioned at its start, for bwrap's --ro-bind-data / --seccomp."""
    fds: dict[str, int] = {}
    for target, data in files.items():
        fd = os.memfd_create("toolrail-jail", 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        fds[target] = fd
    return fds


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_CLONE_NEWNS, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x00020000, 4096, 1 << 14, 1 << 18
_KEYCTL_JOIN_SESSION_KEYRING = 1


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what} failed before starting bwrap")


def _hidden_ancestor(path: Path, identity: HostIdentity) -> Path | None:
    """The first folder above `path` that `identity` cannot traverse (e.g. /root, mode 700)."""
    current = Path("/")
    for part in path.parts[1:]:
        info = current.stat()
        mode = info.st_mode
        if not (mode & stat.S_IXOTH or (info.st_uid == identity.uid and mode & stat.S_IXUSR)
                or (info.st_gid == identity.gid and mode & stat.S_IXGRP)):
            return current
        current = current / part
    return None


def _expose(prefix: Path, hidden: Path) -> None:
    """In a private mount namespace of the launcher only: cover `hidden` with an empty tmpfs
    and bind `prefix` back at its own path, so the unprivileged bwrap can reach the Python
    install under e.g. /root without any change to the host's modes."""
    _check(_LIBC.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_LIBC.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "making mounts private")
    source = os.open(prefix, os.O_PATH | os.O_DIRECTORY)  # opened in this namespace, before covering
    _check(_LIBC.mount(b"tmpfs", bytes(hidden), b"tmpfs", 0, b"mode=0755,size=64k"), f"covering {hidden}")
    os.makedirs(prefix, exist_ok=True)
    _check(_LIBC.mount(f"/proc/self/fd/{source}".encode(), bytes(prefix), None, _MS_BIND | _MS_REC, None),
           f"binding {prefix}")
    os.close(source)


def _join_new_session_keyring() -> None:
    """A fresh anonymous session keyring: nothing of the host's session keyring is reachable."""
    if "keyctl" in _SYSCALLS:
        _LIBC.syscall(_SYSCALLS["keyctl"], _KEYCTL_JOIN_SESSION_KEYRING, None)


def _driver_limits(limits: SandboxLimits, cgroup: Cgroup | None, identity: HostIdentity | None) -> dict[str, int]:
    """The rlimits the driver sets on itself before it takes any code (`_driver.apply_limits`):
    soft and hard alike, so nothing the code starts can raise them (no CAP_SYS_RESOURCE in the
    host's user namespace). Every process the code starts inherits them."""
    settings = {
        "RLIMIT_AS": limits.memory_bytes,
        "RLIMIT_FSIZE": limits.max_file_bytes,
        "RLIMIT_CPU": limits.session_cpu_time_s,
        "RLIMIT_CORE": 0,
        "RLIMIT_NOFILE": 1024,
    }
    # root is exempt from RLIMIT_NPROC; the dropped uid is not, but it is shared by every jail
    # of this host, so the per-jail cgroup is preferred when there is one.
    if os.geteuid() != 0 or (identity is not None and not (cgroup and "pids" in cgroup.applied)):
        settings["RLIMIT_NPROC"] = limits.max_processes + 4
    return settings


async def _stream_reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
    return reader


def _drain_stale(queue: asyncio.Queue) -> None:
    """Drop output that background processes wrote between runs; it belongs to no run."""
    kept = []
    while not queue.empty():
        item = queue.get_nowait()
        if item[0] in ("eof", "exit", "garbage"):
            kept.append(item)
    for item in kept:
        queue.put_nowait(item)
