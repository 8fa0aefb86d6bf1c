"""Shared fixtures: a real OpenAI-compatible server on 127.0.0.1 and clients pointed at it; sandboxes.

The sandbox tests need bubblewrap: if it is missing they fail, never skip.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI

from toolrail.sandbox import SandboxError, SandboxLimits, make_sandbox
from toolrail.sandbox.local import DRIVER_IN_SANDBOX
from toolrail.testing.openai_server import OpenAICompatibleServer

# The real client must never wander off to a proxy or the real API during tests.
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ["no_proxy"] = os.environ["NO_PROXY"]

TRIP_PROMPT = "Plan a trip from SF to NYC. What's the weather there and find me flights."


@pytest.fixture
def openai_server():
    """Start a scripted server; tests add replies with `server.script(...)`."""
    with OpenAICompatibleServer() as server:
        yield server


def client_for(server: OpenAICompatibleServer, *, streaming: bool = True) -> ChatOpenAI:
    """The real ChatOpenAI client over HTTP; non-streaming mode sends `stream: false`."""
    return ChatOpenAI(
        model="scripted-model",
        base_url=server.base_url,
        api_key="test-key",
        max_retries=0,
        timeout=20,
        disable_streaming=not streaming,
    )


@pytest.fixture(params=["streaming", "non-streaming"])
def streaming(request) -> bool:
    return request.param == "streaming"

# Tight limits keep the slow cases (timeouts, bombs) quick on a 2-core CI machine.
TEST_LIMITS = SandboxLimits(
    wall_timeout_s=2.0,
    cpu_time_s=1,
    memory_bytes=384 << 20,
    max_processes=32,
    max_file_bytes=16 << 20,
    scratch_bytes=8 << 20,
    max_output_bytes=64 << 10,
    kill_grace_s=0.5,
)


@pytest.fixture
async def sandbox():
    sb = make_sandbox("local", limits=TEST_LIMITS)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.close()


def host_processes_containing(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (a /proc scan, no psutil)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def sandbox_driver_processes(sandbox=None) -> list[int]:
    """Driver processes of `sandbox` (by its session tag), or of any local sandbox on the host
    (other test runs may share this machine: prefer passing the sandbox)."""
    return host_processes_containing(sandbox.session_tag if sandbox is not None else DRIVER_IN_SANDBOX)


async def eventually(predicate, seconds: float = 5.0) -> bool:
    """Whether `predicate()` comes true within `seconds`, polled without blocking the event loop
    (a jail's kill is reaped, a host process shows up, in the background)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def assert_start_refused(sb, match: str) -> None:
    """`sb.start()` fails with a SandboxError matching `match`, and no process of the jail
    outlives it (its kill is reaped in the background: allow it a few seconds)."""
    try:
        with pytest.raises(SandboxError, match=match):
            await sb.start()
    finally:
        await sb.close()
    assert await eventually(lambda: not sandbox_driver_processes(sb)), sandbox_driver_processes(sb)


async def assert_still_works(sb) -> None:
    """The session must serve a normal run after whatever the previous run did."""
    result = await sb.run_to_end("print('still', 'alive')")
    assert result.exit_reason == "ok", result
    assert result.stdout == "still alive\n"
