"""Functional behaviour of the sandbox layer: state, files, streaming, results, factory, tool."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import TEST_LIMITS, assert_start_refused
from toolrail.sandbox import (
    DoneEvent,
    RunResult,
    SandboxError,
    SandboxLimits,
    StderrEvent,
    StdoutEvent,
    make_sandbox,
)
from toolrail.tools.sandbox_tools import run_python, sandbox_tools


async def test_variables_and_imports_persist_between_runs(sandbox):
    first = await sandbox.run_to_end("import math\ncounter = 1\ndef bump():\n    global counter\n    counter += 1")
    assert first.exit_reason == "ok" and first.stdout == ""
    await sandbox.run_to_end("bump(); bump()")
    result = await sandbox.run_to_end("print(counter, math.pi > 3)")
    assert result.stdout == "3 True\n"


async def test_final_expression_is_echoed_like_a_notebook(sandbox):
    assert (await sandbox.run_to_end("x = [1, 2]\nx + [3]")).stdout == "[1, 2, 3]\n"
    assert (await sandbox.run_to_end("None")).stdout == ""


async def test_exception_reports_traceback_and_keeps_session(sandbox):
    await sandbox.run_to_end("value = 7")
    result = await sandbox.run_to_end("def f():\n    return 1 / 0\nf()")
    assert result.exit_reason == "error" and not result.interpreter_lost
    assert result.error is not None and result.error.name == "ZeroDivisionError"
    assert 'File "<cell 2>", line 2, in f' in result.error.traceback
    assert "return 1 / 0" in result.error.traceback  # source lines, from linecache
    assert "_driver" not in result.error.traceback
    assert (await sandbox.run_to_end("print(value)")).stdout == "7\n"


async def test_a_cell_that_formats_its_own_traceback_first_still_sees_every_cells_lines():
    """The driver imports linecache only when something needs it: a cell that imports traceback
    before the driver ever did still gets its own and earlier cells' source lines."""
    async with make_sandbox("local", limits=TEST_LIMITS, pool_size=0) as sb:
        await sb.run_to_end("def f():\n    return 1 / 0\n")
        result = await sb.run_to_end(
            "import sys\nprint('linecache' in sys.modules)\nimport traceback\ntry:\n    f()\n"
            "except ZeroDivisionError:\n    traceback.print_exc()")
        later = await sb.run_to_end("import traceback\ntry:\n    f()\nexcept ZeroDivisionError:\n    traceback.print_exc()")
    assert result.stdout == "False\n", result  # the late import is what this test exercises
    for run, cell in ((result, 2), (later, 3)):
        assert f'File "<cell {cell}>", line' in run.stderr and "    f()" in run.stderr, run
        assert 'File "<cell 1>", line 2, in f' in run.stderr and "return 1 / 0" in run.stderr, run


async def test_files_in_scratch_named_like_the_drivers_late_imports_do_not_replace_them(sandbox):
    """The driver imports traceback when a cell first fails; scratch is first on sys.path, yet a
    cell's traceback.py (or a module traceback imports) must not stand in for the real one."""
    await sandbox.run_to_end(
        "for name in ('traceback', 'linecache', 'textwrap', 'tokenize', 'collections'):\n"
        "    open(name + '.py', 'w').write('raise RuntimeError(\"shadowed\")')")
    result = await sandbox.run_to_end("def g():\n    return {}['k']\ng()")
    assert result.error is not None and result.error.name == "KeyError"
    assert "return {}['k']" in result.error.traceback and "shadowed" not in result.error.traceback
    assert not result.interpreter_lost


async def test_a_cell_imports_site_packages_while_the_installs_start_up_hooks_stay_out():
    """The jail's interpreter starts with -S: site-packages on sys.path (after the standard
    library, as `site` puts them), exit()/quit()/help() as usual, but none of the modules the
    install's .pth code or sitecustomize imports at start-up (a machine's CA hook, say)."""
    import json
    import subprocess

    from toolrail.sandbox.local import sandbox_python

    python = str(sandbox_python()[1])
    # what a bare start of the interpreter imports from its site-packages (.pth code) or as sitecustomize
    probe = ("import json, os, site, sys; dirs = [p for p in site.getsitepackages() if os.path.isdir(p)];"
             " print(json.dumps({'dirs': dirs, 'hooks': [n for n, m in list(sys.modules.items()) if n in"
             " ('sitecustomize', 'usercustomize') or (getattr(m, '__file__', None) or '').startswith(tuple(dirs))]}))")
    bare = json.loads(subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, check=True).stdout)
    site_dirs = bare["dirs"]
    where, package = next((d, name) for d in site_dirs for name in ("pip", "setuptools", *sorted(os.listdir(d)))
                          if name.isidentifier() and os.path.isfile(os.path.join(d, name, "__init__.py")))
    async with make_sandbox("local", limits=TEST_LIMITS, pool_size=0) as sb:
        result = await sb.run_to_end(
            "import json, sys\nmodules = sorted(sys.modules)\n"
            f"import {package}\n"
            "print(json.dumps({'no_site': sys.flags.no_site, 'path': sys.path, 'modules': modules,"
            f" 'package': {package}.__file__, 'exits': [callable(exit), callable(quit), callable(help)]}}))")
    jail = json.loads(result.stdout)
    assert jail["no_site"] == 1 and jail["exits"] == [True, True, True]
    stdlib = jail["path"].index(os.path.dirname(os.__file__).replace(sys.prefix, sys.base_prefix))
    assert all(jail["path"].index(d) > stdlib for d in site_dirs), jail["path"]
    assert jail["package"].startswith(where + "/")
    assert not set(bare["hooks"]) & set(jail["modules"]), (bare["hooks"], jail["modules"])


async def test_syntax_error_and_sys_exit_are_errors_not_crashes(sandbox):
    syntax = await sandbox.run_to_end("def broken(:\n    pass")
    assert syntax.exit_reason == "error" and syntax.error.name == "SyntaxError"
    exit_ = await sandbox.run_to_end("import sys\nsys.exit(3)")
    assert exit_.exit_reason == "error" and exit_.error.name == "SystemExit"
    assert not exit_.interpreter_lost
    assert (await sandbox.run_to_end("print('ok')")).stdout == "ok\n"


async def test_upload_csv_compute_and_download_produced_file(sandbox):
    rows = [("city", "temp"), ("NYC", "9"), ("SF", "16"), ("CHI", "2")]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    await sandbox.upload("data/temps.csv", buffer.getvalue().encode())
    code = """
import csv, os, struct, zlib
temps = [int(r["temp"]) for r in csv.DictReader(open("data/temps.csv"))]
print(sum(temps) / len(temps))
# a tiny valid PNG: 1x1 grey pixel
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(b"\\x00\\x80")) + chunk(b"IEND", b"")
os.makedirs("out", exist_ok=True)
with open("out/plot.png", "wb") as f:
    f.write(png)
"""
    result = await sandbox.run_to_end(code)
    assert result.exit_reason == "ok", result
    assert result.stdout == "9.0\n"
    assert [f.path for f in result.files] == ["out/plot.png"]
    data = await sandbox.download("out/plot.png")
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) == result.files[0].size
    listed = {f.path for f in await sandbox.list_files()}
    assert listed == {"data/temps.csv", "out/plot.png"}


async def test_download_of_missing_file_is_a_clear_error(sandbox):
    with pytest.raises(SandboxError, match="FileNotFoundError"):
        await sandbox.download("nope.txt")
    assert (await sandbox.run_to_end("print(1)")).stdout == "1\n"


async def test_output_streams_live_before_the_run_ends(sandbox):
    code = "import sys, time\nprint('first')\nprint('oops', file=sys.stderr)\ntime.sleep(1)\nprint('second')"
    arrivals: list[tuple[float, object]] = []
    started = time.monotonic()
    async for event in sandbox.run(code):
        arrivals.append((time.monotonic() - started, event))
    first_at = next(t for t, e in arrivals if isinstance(e, StdoutEvent) and "first" in e.text)
    done_at, done = arrivals[-1]
    assert isinstance(done, DoneEvent)
    assert done_at - first_at > 0.5, arrivals  # 'first' came a good while before the end
    # print() may reach the pipe as two writes ("oops", "\n"): what matters is that stderr came live
    stderr = [(t, e.text) for t, e in arrivals if isinstance(e, StderrEvent)]
    assert "".join(text for _, text in stderr) == "oops\n" and done_at - stderr[0][0] > 0.5, arrivals
    assert done.result.stdout == "first\nsecond\n" and done.result.stderr == "oops\n"
    assert sum(isinstance(e, DoneEvent) for _, e in arrivals) == 1


async def test_subprocess_and_raw_fd_output_are_captured(sandbox):
    code = "import os, subprocess\nos.write(1, b'raw\\n')\nsubprocess.run(['echo', 'child'])\nprint('py')"
    result = await sandbox.run_to_end(code)
    assert result.stdout == "raw\nchild\npy\n"


async def test_timeout_is_reported(sandbox):
    result = await sandbox.run_to_end("import time\ntime.sleep(30)", timeout=0.5)
    assert result.exit_reason == "timeout" and result.error is None
    assert 0.4 < result.duration_s < 5
    assert "[run stopped: timeout]" in result.render()


async def test_abandoned_run_is_stopped_and_the_next_starts_fresh(sandbox):
    await sandbox.run_to_end("x = 1")
    events = sandbox.run("import time\nprint('tick')\ntime.sleep(30)")
    first = await anext(events)
    assert isinstance(first, StdoutEvent)
    await events.aclose()  # e.g. the graph task was cancelled mid-run
    result = await sandbox.run_to_end("print('x' in globals())")
    assert result.stdout == "False\n" and result.state_reset


async def test_input_does_not_eat_the_protocol(sandbox):
    result = await sandbox.run_to_end("try:\n    input()\nexcept EOFError:\n    print('eof')")
    assert result.stdout == "eof\n"
    assert (await sandbox.run_to_end("print(2)")).stdout == "2\n"


async def test_idle_session_is_closed_and_restarts_fresh():
    limits = TEST_LIMITS.model_copy(update={"idle_timeout_s": 0.3})
    async with make_sandbox("local", limits=limits) as sb:
        await sb.run_to_end("x = 1")
        await asyncio.sleep(1.0)
        result = await sb.run_to_end("print('x' in globals())")
        assert result.stdout == "False\n" and result.state_reset
        assert any("idle" in note for note in result.notes)


async def test_closed_session_refuses_to_run():
    sb = make_sandbox("local", limits=TEST_LIMITS)
    await sb.close()
    with pytest.raises(SandboxError, match="closed"):
        await sb.run_to_end("print(1)")


def test_render_is_compact_and_complete():
    result = RunResult(stdout="a\n", stderr="w\n", exit_reason="timeout", notes=["n"])
    assert result.render() == "a\n[stderr]\nw\n[run stopped: timeout]\n[note] n"
    assert RunResult().render() == "(no output)"


def test_limits_are_validated():
    with pytest.raises(ValueError):
        SandboxLimits(wall_timeout_s=0)


# --- factory and backends ----------------------------------------------------------------------


def test_factory_defaults_to_local(monkeypatch):
    monkeypatch.delenv("TOOLRAIL_SANDBOX", raising=False)
    assert make_sandbox().backend == "local"


def test_factory_rejects_unknown_backend():
    with pytest.raises(SandboxError, match="unknown sandbox backend 'docker'"):
        make_sandbox("docker")


def test_missing_bwrap_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("TOOLRAIL_BWRAP", "/nonexistent/bwrap")
    with pytest.raises(SandboxError, match="apt-get install bubblewrap"):
        make_sandbox("local")


@pytest.mark.parametrize("says, hint, not_hint", [
    ("bwrap: No permissions to create new namespace", "Unprivileged user namespaces must be allowed", "process limit"),
    ("bwrap: Creating new namespace failed: Resource temporarily unavailable", "The process limit was reached", "user namespaces"),
], ids=["no-user-namespaces", "process-limit"])
async def test_bwrap_that_cannot_start_gives_its_reason(monkeypatch, tmp_path, says, hint, not_hint):
    """bwrap's own words, then what to do: EAGAIN is the process limit (RLIMIT_NPROC counts every
    process and thread of the uid without root), not missing user namespaces."""
    # As root the jail starts under an unprivileged uid, which must be able to run bwrap:
    # pytest's tmp_path (mode 700) is not reachable for it, so use a world-readable folder.
    folder = Path(tempfile.mkdtemp(prefix="toolrail-test-bwrap-"))
    folder.chmod(0o755)
    request_cleanup = lambda: shutil.rmtree(folder, ignore_errors=True)  # noqa: E731
    fake = folder / "bwrap"
    fake.write_text(f"#!/bin/sh\necho '{says}' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TOOLRAIL_BWRAP", str(fake))
    sb = make_sandbox("local", limits=TEST_LIMITS)  # the default: the warm pool's first spare fails
    try:
        with pytest.raises(SandboxError) as failure:
            await sb.start()
        assert says in str(failure.value) and hint in str(failure.value) and not_hint not in str(failure.value)
        await sb.close()
    finally:
        request_cleanup()


async def test_only_the_launcher_thread_takes_on_the_jail_identity():
    """bwrap starts from a thread that dropped to the jail's host uid by itself (raw syscalls):
    the rest of the process stays what it was, and the jail runs as the launcher thread does."""
    import threading

    from toolrail.sandbox import local

    before = (os.getresuid(), os.getresgid(), os.getgroups())
    async with make_sandbox("local", limits=TEST_LIMITS, pool_size=0) as sb:
        assert (await sb.run_to_end("print('up')")).stdout == "up\n"
        bwrap_status = Path(f"/proc/{sb._interpreter.process.pid}/status").read_text()
        launchers = [t for t in threading.enumerate() if t.name.startswith("toolrail-jail-launcher")]
        statuses = [Path(f"/proc/self/task/{t.native_id}/status").read_text() for t in launchers]
    assert (os.getresuid(), os.getresgid(), os.getgroups()) == before  # this thread, and the process, unchanged
    if os.geteuid() != 0:
        return  # not root: nothing to drop, the jail runs as this user
    uid = sb.identity.uid
    ids = lambda status, key: next(line.split()[1:] for line in status.splitlines() if line.startswith(key + ":"))  # noqa: E731
    assert ids(bwrap_status, "Uid") == [str(uid)] * 4 and ids(bwrap_status, "Groups") == []
    no_capabilities = lambda status: all(int(ids(status, key)[0], 16) == 0 for key in ("CapPrm", "CapEff", "CapAmb"))  # noqa: E731
    assert no_capabilities(bwrap_status)
    assert any(ids(status, "Uid") == [str(uid)] * 4 and ids(status, "Groups") == [] and no_capabilities(status)
               for status in statuses)
    main_status = Path(f"/proc/self/task/{threading.main_thread().native_id}/status").read_text()
    assert ids(main_status, "Uid") == ["0"] * 4
    assert local.JailLauncher.for_identity(sb.identity, sb.python_prefix).ready


async def test_a_launcher_thread_that_is_not_the_jail_identity_starts_nothing(monkeypatch):
    """Were something to change every thread's credentials (glibc's setuid wrappers do), the
    launcher would find it before starting a jail, and say so."""
    from toolrail.sandbox import local

    if os.geteuid() != 0:
        pytest.fail("this test runs in the root pass: only root drops to a jail identity")
    monkeypatch.setattr(local.os, "getresuid", lambda: (0, 0, 0))
    monkeypatch.setattr(local.JailLauncher, "_by_identity", {})  # a fresh launcher thread
    await assert_start_refused(make_sandbox("local", limits=TEST_LIMITS, pool_size=0),
                               "launcher thread is not host uid .* no jail is started")


async def test_the_driver_sets_every_limit_before_it_takes_code():
    """Rlimits are per process: the driver sets the host's, soft and hard alike, first thing,
    and a cell can neither raise them nor escape them in a child."""
    code = """
import resource, subprocess, sys
names = ["RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NOFILE"]
print([resource.getrlimit(getattr(resource, n)) for n in names])
try:
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 30, 2 << 30))
    print("raised")
except ValueError as e:
    print("refused")
print(subprocess.run([sys.executable, "-c", "import resource; print(resource.getrlimit(resource.RLIMIT_AS))"],
                     capture_output=True, text=True).stdout.strip())
"""
    async with make_sandbox("local", limits=TEST_LIMITS, pool_size=0) as sb:
        result = await sb.run_to_end(code)
    limits, raised, child = result.stdout.splitlines()
    expected = [(v, v) for v in (TEST_LIMITS.memory_bytes, TEST_LIMITS.max_file_bytes, 0, 1024)]
    assert eval(limits) == expected and raised == "refused" and eval(child) == expected[0], result


async def test_a_cancellation_that_arrives_with_a_sandbox_event_is_not_lost():
    """On Python 3.11 `asyncio.wait_for` swallows a cancellation that arrives just as what it
    waits for completes (CPython gh-86296): a pool keeper cancelled by the loop's end mid-refill
    then ran on and waited forever, hanging the CLI's exit and a test's teardown. The sandbox's
    waits keep the cancellation: here it arrives in the same loop step as an event."""
    from toolrail.sandbox.local import Interpreter

    queue: asyncio.Queue = asyncio.Queue()
    interpreter = Interpreter(process=None, events=None, queue=queue, cgroup=None)  # type: ignore[arg-type]
    seen = []

    async def consume() -> None:
        async for item in interpreter.items_until(time.monotonic() + 60):
            seen.append(item)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)  # the consumer now waits for its first event
    queue.put_nowait(("stdout", b"x"))
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert done and task.cancelled(), "the cancellation was swallowed: the task ran on"


def test_no_project_code_uses_asyncio_wait_for():
    """The guard for the test above: no wait of ours may lose a cancellation."""
    root = Path(__file__).resolve().parents[1]
    sources = [p for folder in ("toolrail", "graphs", "nodes", "tools") for p in (root / folder).rglob("*.py")]
    offenders = [str(p.relative_to(root)) for p in sources if "asyncio.wait_for(" in p.read_text()]
    assert len(sources) > 20 and offenders == [], f"asyncio.wait_for loses cancellations on Python 3.11 (use asyncio.timeout): {offenders}"


def test_e2b_without_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    monkeypatch.setenv("TOOLRAIL_SANDBOX", "e2b")
    with pytest.raises(SandboxError, match="E2B_API_KEY"):
        make_sandbox()


def test_e2b_with_key_builds_without_network(monkeypatch):
    monkeypatch.setenv("E2B_API_KEY", "e2b_fake")
    sb = make_sandbox("e2b")
    assert sb.backend == "e2b" and sb.api_key == "e2b_fake"  # nothing contacted until start()


@pytest.mark.skipif(not os.environ.get("E2B_API_KEY"), reason="needs E2B_API_KEY (a real E2B account)")
async def test_e2b_live_session():
    async with make_sandbox("e2b", limits=SandboxLimits(wall_timeout_s=60)) as sb:
        events = [e async for e in sb.run("import time\nprint('a')\ntime.sleep(0.5)\nx = 5\nprint('b')")]
        assert isinstance(events[-1], DoneEvent) and events[-1].result.stdout == "a\nb\n"
        assert (await sb.run_to_end("print(x)")).stdout == "5\n"
        await sb.upload("in.csv", b"a,b\n1,2\n")
        assert (await sb.run_to_end("print(open('in.csv').read().split()[1])")).stdout == "1,2\n"
        await sb.run_to_end("open('out.bin','wb').write(bytes(range(5)))")
        assert await sb.download("out.bin") == bytes(range(5))
        assert (await sb.run_to_end("1/0")).exit_reason == "error"
        assert (await sb.run_to_end("import time\ntime.sleep(10)", timeout=2)).exit_reason == "timeout"


# --- the tool ---------------------------------------------------------------------------------


def test_run_python_is_registered_for_the_sandbox_node():
    tool = sandbox_tools.get("run_python")
    assert tool is not None and tool.target == "sandbox" and not tool.speculative
    schema = tool.openai_schema()["function"]
    assert schema["strict"] and schema["parameters"]["required"] == ["code", "timeout_s"]
    assert tool.validate('{"code": "print(1)", "timeout_s": null}').timeout_s == 30
    with pytest.raises(Exception, match="timeout_s"):
        tool.validate({"code": "1", "timeout_s": 1000})


async def test_run_python_called_directly_uses_a_one_off_sandbox():
    text = await run_python("import os\nprint(os.getuid())\n6 * 7", timeout_s=10)
    assert text == "1000\n42"


async def test_the_driver_ships_compiled_for_this_interpreter_and_as_source_for_another(monkeypatch):
    """Compiled on the host once, so no cold start compiles it again; a jail running another
    interpreter (another version's magic number) gets the source and still works."""
    import importlib.util
    import marshal

    from toolrail.sandbox import local

    path, data = local._driver_file(local.sandbox_python()[1])
    assert path == local.DRIVER_COMPILED_IN_SANDBOX and data[:4] == importlib.util.MAGIC_NUMBER
    assert marshal.loads(data[16:]).co_filename == local.DRIVER_IN_SANDBOX  # tracebacks name the driver as before
    source = (local.DRIVER_IN_SANDBOX, local.DRIVER_ON_HOST.read_bytes())
    assert local._driver_file(Path("/opt/another/bin/python3")) == source
    monkeypatch.setattr(local, "_driver_file", lambda python: source)
    async with make_sandbox("local", limits=TEST_LIMITS, pool_size=0) as sb:
        assert (await sb.run_to_end("print('from source')")).stdout == "from source\n"
        assert local.DRIVER_COMPILED_IN_SANDBOX not in " ".join(map(str, sb._bwrap_argv({"seccomp": 3}, 4)))
