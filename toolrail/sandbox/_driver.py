"""The interpreter that lives inside the sandbox: runs cells in one persistent namespace.

Runs with the sandbox's Python and nothing but the standard library. It reads framed JSON
commands on a private copy of stdin and answers framed JSON on a private event fd; the cell's
own stdout/stderr stay on fds 1 and 2 so the host streams them raw (prints, os.write and
subprocesses alike). After each cell it writes an end marker to both, so the host knows where
the cell's output stops.

Frame: 4-byte big-endian length, then UTF-8 JSON. The host's first command carries a
per-session key; every event frame carries it back, so bytes the cell writes blindly to some fd
are never taken for the driver's. The host still validates every frame as untrusted input.

Files: only regular files are listed, read or counted; symlinks, FIFOs, sockets and devices are
reported as skipped and never opened (a FIFO or a link to /dev/zero must not hang the driver).
"""

import _ast  # the C module: `ast` (its Python layer) costs ~1 ms of every cold start
import _json  # json's C scanner and encoder: `json` itself imports `re` (with enum, functools...)
import _signal  # `signal` wraps this in enums (imports enum)
import _thread  # `threading` imports functools, collections, itertools...
import binascii  # what base64's two calls used (base64 imports re)
import os
import resource
import stat
import sys
import time
from _frozen_importlib_external import PathFinder  # loaded at start-up: `importlib` is not
from _queue import SimpleQueue  # what queue.Queue would add (~0.7 ms to import) is unused here

# The jail's interpreter starts with -S, so nothing runs before the driver's own code (see main):
# every import above is paid by every cold start, hence the C modules instead of their wrappers.
# `traceback` and `linecache` (~7 ms with tokenize and re) are imported when first needed: see
# describe and LinecacheSeeder.

STANDARD_LIBRARY_PATH = tuple(sys.path)  # -I -S: the standard library only, before site and scratch

SCRATCH = os.environ.get("TOOLRAIL_SCRATCH", "/scratch")
MAX_LISTED_FILES = 2000  # changed files reported one by one per run; the rest are counted
MAX_SCANNED_FILES = 100_000  # files looked at in scratch, at most (bounded memory and time)


class _StandardJSON:
    """What `json.JSONDecoder` hands the C scanner: strict standard JSON, no NaN or Infinity."""

    strict, object_hook, object_pairs_hook, parse_float, parse_int = True, None, None, float, int

    @staticmethod
    def parse_constant(name):
        raise ValueError(f"{name} is not standard JSON")


def _not_json(value):
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_scan_json = _json.make_scanner(_StandardJSON)
# Like json.dumps(ensure_ascii=True) with compact separators; markers=None: our messages are trees.
_encode_json = _json.make_encoder(None, _not_json, _json.encode_basestring_ascii, None, ":", ",", False, False, True)


def loads(data):
    """json.loads for one whole JSON text, as bytes or str."""
    text = (data.decode() if isinstance(data, bytes) else data).strip(" \t\n\r")
    try:
        value, end = _scan_json(text, 0)
    except StopIteration as exc:
        raise ValueError(f"not JSON at character {exc.value}") from None
    if end != len(text):
        raise ValueError(f"extra data after JSON at character {end}")
    return value


def dumps(value):
    """json.dumps: the same text json's C encoder makes, without importing json."""
    return "".join(_encode_json(value, 0))


class CpuLimitExceeded(Exception):
    """The cell used its CPU-time budget (SIGXCPU from RLIMIT_CPU)."""


def _on_sigxcpu(signum, frame):
    raise CpuLimitExceeded("CPU time limit of this run exceeded")


class Channel:
    """Framed JSON over two private fds; user code never sees these fds (CLOEXEC, moved)."""

    def __init__(self, command_fd, event_fd):
        self.command_fd, self.event_fd = command_fd, event_fd
        self.key = None  # the host's per-session key, sent back on every frame

    def _read_exact(self, n):
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            count = os.readv(self.command_fd, [view[got:]])
            if not count:
                raise EOFError
            got += count
        return bytes(buf)

    def receive(self):
        size = int.from_bytes(self._read_exact(4), "big")
        return loads(self._read_exact(size))

    def send(self, message):
        data = dumps(dict(message, key=self.key)).encode()
        view = memoryview(len(data).to_bytes(4, "big") + data)
        while view:
            written = os.write(self.event_fd, view)
            view = view[written:]


class Driver:
    def __init__(self, channel):
        self.channel = channel
        self.namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        self.commands = SimpleQueue()
        self.busy_cell = None  # id of the running cell, for interrupts
        self.interrupt_reason = None
        self.lock = _thread.allocate_lock()

    # --- the reader thread: interrupts must get through while a cell runs -------------------

    def read_commands(self):
        try:
            while True:
                message = self.channel.receive()
                if message.get("op") == "interrupt":
                    self.interrupt(message)
                else:
                    self.commands.put(message)
        except (EOFError, OSError, ValueError):
            self.commands.put({"op": "exit"})

    def interrupt(self, message):
        with self.lock:
            if self.busy_cell is not None and self.busy_cell == message.get("id"):
                self.interrupt_reason = message.get("reason", "interrupted")
                os.kill(os.getpid(), _signal.SIGINT)

    # --- the main loop -------------------------------------------------------------------------

    def serve(self):
        hello = self.channel.receive()
        self.channel.key = str(hello.get("key", ""))
        _thread.start_new_thread(self.read_commands, ())
        self.channel.send({"type": "ready", "pid": os.getpid()})
        while True:
            try:
                message = self.commands.get()
                op = message.get("op")
                if op == "exit":
                    return
                handler = getattr(self, "op_" + str(op), None)
                if handler is None:
                    self.channel.send({"id": message.get("id"), "type": "error", "message": f"unknown op {op!r}"})
                    continue
                self.channel.send(handler(message))
            except KeyboardInterrupt:
                continue  # an interrupt that raced the end of a cell

    def op_exec(self, message):
        cell_id, started = message["id"], time.monotonic()
        self.set_cpu_budget(int(message.get("cpu_s", 30)))
        before, skipped_before, _ = snapshot_files()
        skipped_before = {s["path"] for s in skipped_before}
        error, reason = None, "ok"
        try:
            with self.lock:
                self.busy_cell, self.interrupt_reason = cell_id, None
            try:
                run_cell(message["code"], self.namespace)
            finally:
                with self.lock:
                    self.busy_cell = None
        except KeyboardInterrupt as exc:
            reason = self.interrupt_reason or "interrupted"
            error = describe(exc)
            kill_other_processes()
        except MemoryError as exc:
            reason, error = "memory", describe(exc)
        except CpuLimitExceeded as exc:
            reason, error = "cpu", describe(exc)
            kill_other_processes()
        except BaseException as exc:  # SystemExit included: the session lives on
            reason, error = "error", describe(exc)
        end_output(message["marker"])
        after, skipped, omitted = snapshot_files()
        return {
            "id": cell_id,
            "type": "done",
            "reason": reason,
            "error": error,
            "duration_s": time.monotonic() - started,
            **changed_files(before, after, omitted),
            "skipped": [s for s in skipped if s["path"] not in skipped_before][:MAX_LISTED_FILES],
        }

    def op_write(self, message):
        path = resolve(message["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(binascii.a2b_base64(message["data"]))
        return {"id": message["id"], "type": "ok"}

    def op_read(self, message):
        try:
            data = read_regular_file(message["path"], message.get("max_bytes"))
        except OSError as exc:
            return {"id": message["id"], "type": "error", "message": f"{type(exc).__name__}: {exc}"}
        return {"id": message["id"], "type": "ok", "data": binascii.b2a_base64(data, newline=False).decode()}

    def op_list(self, message):
        files, skipped, omitted = snapshot_files()
        listed = [{"path": p, "size": s} for p, (s, _) in sorted(files.items())]
        omitted += max(0, len(listed) - MAX_LISTED_FILES)
        return {"id": message["id"], "type": "ok", "files": listed[:MAX_LISTED_FILES],
                "skipped": skipped[:MAX_LISTED_FILES], "omitted": omitted}

    def set_cpu_budget(self, seconds):
        """RLIMIT_CPU counts the whole life of the process: grant `seconds` more than used now."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = int(usage.ru_utime + usage.ru_stime) + 1
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = used + seconds
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


CELLS = iter(range(1, 1 << 62))


CELL_SOURCES = {}  # linecache's entry for every cell: "<cell N>" -> (size, None, lines, name)


def run_cell(code, namespace):
    """Exec the cell; like a REPL, echo the value of a final bare expression."""
    # Each cell gets its own name in linecache, so tracebacks show the source lines, also for
    # functions defined in an earlier cell.
    name = f"<cell {next(CELLS)}>"
    CELL_SOURCES[name] = entry = (len(code), None, code.splitlines(True), name)
    linecache = sys.modules.get("linecache")
    if linecache is not None:  # else LinecacheSeeder hands it over when anything imports it
        linecache.cache[name] = entry
    tree = compile(code, name, "exec", _ast.PyCF_ONLY_AST)  # ast.parse, without importing ast
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = _ast.Expression(tree.body.pop().value)
    exec(compile(tree, name, "exec"), namespace)
    if last is not None:
        value = eval(compile(last, name, "eval"), namespace)
        if value is not None:
            print(repr(value))


class LinecacheSeeder:
    """A meta path finder: gives linecache the cells' sources the moment anything imports it.

    The driver does not import linecache at start (~6 ms of every cold start), yet a traceback
    shows a cell's lines only from linecache's cache, and a cell may format one itself
    (traceback.print_exc, warnings, logging) before the driver ever needs linecache. It is
    always loaded from the standard library, never from a cell's file of that name."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "linecache":
            return None
        spec = PathFinder.find_spec(name, list(STANDARD_LIBRARY_PATH))
        if spec is not None:
            spec.loader = _SeedAfterLoading(spec.loader)
        return spec


class _SeedAfterLoading:
    """linecache's own loader, plus: its new cache starts with every cell's source."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        module.cache.update(CELL_SOURCES)


def standard_module(name):
    """`import name` for the driver's own late imports, from the standard library only: a cell's
    file in scratch named like the module, or like one it imports, must not stand in for it."""
    module = sys.modules.get(name)
    if module is None:
        saved = sys.path[:]
        sys.path[:] = STANDARD_LIBRARY_PATH
        try:
            module = __import__(name)
        finally:
            sys.path[:] = saved
    return module


def describe(exc):
    """The exception as name/value/traceback, without the driver's own frames."""
    try:
        tb = exc.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell"):
            tb = tb.tb_next
        text = "".join(standard_module("traceback").format_exception(type(exc), exc, tb))
    except MemoryError:
        text = f"{type(exc).__name__}: (traceback lost: out of memory)\n"
    except Exception as broken:  # a cell replaced or patched the session's `traceback`
        text = f"{type(exc).__name__}: (traceback lost: formatting it raised {type(broken).__name__})\n"
    return {"name": type(exc).__name__, "value": str(exc), "traceback": text}


def end_output(marker):
    """Flush the cell's streams, then mark their end on the raw fds."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    data = marker.encode()
    for fd in (1, 2):
        try:
            os.write(fd, data)
        except OSError:
            pass


def kill_other_processes():
    """After an interrupted cell, no stray child (fork bomb, busy loop) may keep running."""
    for _ in range(50):
        try:
            os.kill(-1, _signal.SIGKILL)  # every process we may signal, except us and pid 1
        except ProcessLookupError:
            break
        except OSError:
            break
        reap_children()
        time.sleep(0.01)
    reap_children()


def reap_children():
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def resolve(path):
    return path if os.path.isabs(path) else os.path.join(SCRATCH, path)


def read_regular_file(path, max_bytes=None):
    """A regular file under scratch, opened without following a final symlink and without
    blocking (a FIFO cannot hang us); anything else is an OSError with a clear message."""
    full = os.path.normpath(resolve(path))
    real_dir = os.path.realpath(os.path.dirname(full))
    if os.path.commonpath([real_dir, SCRATCH]) != SCRATCH:
        raise PermissionError(f"{path}: not inside {SCRATCH}")
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path}: not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise OSError(f"file too large ({info.st_size} bytes)")
        chunks, left = [], info.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def snapshot_files():
    """({path: (size, mtime)} of regular files, [skipped special files], how many not listed).

    lstat only: symlinks, FIFOs, sockets and devices are never followed or opened."""
    files, skipped, omitted = {}, [], 0
    for root, dirs, names in os.walk(SCRATCH):
        for name in names:
            full = os.path.join(root, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            path = os.path.relpath(full, SCRATCH)
            if not stat.S_ISREG(st.st_mode):
                if len(skipped) < MAX_SCANNED_FILES:
                    skipped.append({"path": path, "reason": special_kind(st.st_mode)})
                continue
            if len(files) >= MAX_SCANNED_FILES:
                omitted += 1
                continue
            files[path] = (st.st_size, st.st_mtime_ns)
        for name in dirs:
            full = os.path.join(root, name)
            if os.path.islink(full) and len(skipped) < MAX_SCANNED_FILES:
                skipped.append({"path": os.path.relpath(full, SCRATCH), "reason": "symlink"})
    return files, skipped, omitted


def special_kind(mode):
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def changed_files(before, after, omitted=0):
    """The created or changed regular files, in path order; past MAX_LISTED_FILES only counted."""
    changed = [{"path": p, "size": meta[0]} for p, meta in sorted(after.items()) if before.get(p) != meta]
    return {"files": changed[:MAX_LISTED_FILES], "omitted": omitted + max(0, len(changed) - MAX_LISTED_FILES)}


LIMITS = frozenset({"RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_CPU", "RLIMIT_CORE", "RLIMIT_NOFILE", "RLIMIT_NPROC"})


def apply_limits(text):
    """The host's rlimits for this jail, soft and hard alike, set before any code is taken.

    The host starts bwrap with no code of its own between fork and exec (a vfork), so rlimits,
    which are per process, are set here, by the process every cell and every process a cell
    starts descends from. Hard limits cannot be raised again in here (that needs
    CAP_SYS_RESOURCE in the host's user namespace)."""
    for name, value in loads(text).items():
        if name not in LIMITS or not isinstance(value, int) or value < 0:
            raise SystemExit(f"driver: bad limit {name!r}={value!r}")
        resource.setrlimit(getattr(resource, name), (value, value))


def enable_site_packages():
    """What `site` gives a cell, without running the host's start-up hooks.

    The jail's interpreter starts with -S. With `site`, every start would run the code lines of
    the install's .pth files and sitecustomize: host set-up (this machine's image injects a proxy
    CA through certifi, setuptools adds its distutils shim), meaningless in a jail with no network
    and ~12-20 ms of every cold start here. The install's site-packages stay importable, after the
    standard library as with `site`, and exit()/quit()/help() exist as in any interpreter; a .pth
    file's lines (paths or code) are not applied."""
    import site  # with -S, importing it runs nothing

    site.setquit()
    site.setcopyright()
    site.sethelper()
    sys.path.extend(p for p in site.getsitepackages() if p not in sys.path and os.path.isdir(p))


def main():
    apply_limits(sys.argv[3])  # first: nothing runs in this jail without its limits
    event_fd = int(sys.argv[1])
    channel = Channel(os.dup(0), os.dup(event_fd))  # dup'ed fds are close-on-exec
    os.close(event_fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # input() in a cell must not eat our commands
    os.close(null)
    _signal.signal(_signal.SIGXCPU, _on_sigxcpu)
    os.chdir(SCRATCH)
    sys.argv = [""]
    enable_site_packages()
    sys.path.insert(0, SCRATCH)
    sys.meta_path.insert(0, LinecacheSeeder)
    Driver(channel).serve()


if __name__ == "__main__":
    main()
