"""Warm spare jails: a new local sandbox session takes one that is already started.

A cold start (cgroup, bwrap, namespaces, the interpreter, the driver's hello) costs tens of
milliseconds; a spare made in the background before it is needed costs the session nothing.
The pool holds what the brief of issue 14 asks and no more:

- one pool per event loop and per *configuration* (limits, host uid, bwrap, interpreter,
  cgroup use: `config_key`); a session only ever gets a spare made with exactly its own
  configuration, so it never runs with another's limits. Files given to a session (--file)
  are not part of a jail: they go in after the claim through the session's keyed channel;
- a spare goes to exactly one session, which owns it from then on and tears it down like a
  cold jail; it never returns to the pool. Spares are made with fresh keys and tags;
- nothing of a session's time runs while a spare waits: the wall-clock limit is per run, the
  idle timer starts at the claim, CPU limits count CPU time (a waiting driver uses none);
- refills run in a background task (the fork and cgroup join in a worker thread); a refill
  that fails is raised at the next claim as one clear SandboxError, never swallowed into a
  loop of silent cold starts; the next claim tries again;
- the spares die with the pool: when its loop ends (asyncio.run cancels the keeper task,
  also on Ctrl-C and the CLI's SIGTERM), on `close_pools()`, and at interpreter exit.

Size: `pool_size` of LocalSandbox / make_sandbox / build_graph(sandbox_pool=...), the CLI's
--sandbox-pool, else $TOOLRAIL_SANDBOX_POOL, else 1; 0 turns the pool off.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import weakref
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from toolrail.sandbox.base import SandboxError

if TYPE_CHECKING:
    from toolrail.sandbox.local import Interpreter, LocalSandbox

POOL_ENV = "TOOLRAIL_SANDBOX_POOL"
DEFAULT_POOL_SIZE = 1
MAX_POOL_SIZE = 16
REFILL_DELAY_S = 0.02  # after a claim, before the refill starts
MAX_CONFIGS_PER_LOOP = 4  # configurations with spares at once; the least recently used goes


def resolve_pool_size(value: int | None = None) -> int:
    """`value`, else $TOOLRAIL_SANDBOX_POOL, else 1; anything else is one clear SandboxError."""
    source = "sandbox pool size"
    if value is None:
        raw = os.environ.get(POOL_ENV, "").strip()
        if not raw:
            return DEFAULT_POOL_SIZE
        source = POOL_ENV
        try:
            value = int(raw)
        except ValueError:
            raise SandboxError(f"{POOL_ENV}: {raw!r} is not a whole number of spare jails (0 turns the pool off)") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POOL_SIZE:
        raise SandboxError(f"{source}: {value!r} is not a number of spare jails from 0 (off) to {MAX_POOL_SIZE}")
    return value


def config_key(sandbox: LocalSandbox) -> tuple:
    """Everything a jail is built from. Two sessions share spares only if all of it is equal."""
    identity = (sandbox.identity.uid, sandbox.identity.gid) if sandbox.identity else None
    return (sandbox.limits.model_dump_json(), identity, sandbox.bwrap, str(sandbox.python),
            str(sandbox.python_prefix), bool(os.environ.get("TOOLRAIL_SANDBOX_NO_CGROUP")))


class SparePool:
    """Up to `size` started jails of one configuration, refilled by one background task."""

    def __init__(self, template: LocalSandbox, size: int):
        self.template, self.size = template, size
        self.spares: deque[Interpreter] = deque()
        self.spawning = False
        self.waiting = False  # a claim is waiting for the spare being made
        self.error: SandboxError | None = None
        self.claimed = 0  # spares handed to sessions (tests, reports)
        self.made = 0
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._closed = False
        self._keeper = asyncio.get_running_loop().create_task(self._keep(), name="toolrail-sandbox-pool")

    async def claim(self) -> Interpreter | None:
        """A started jail for one session, which owns it from now on; None when the pool has
        none ready and is not making one nobody else waits for (the caller starts cold).
        Raises SandboxError when making a spare failed."""
        if self._closed:
            return None
        if not self.spares and self.error is None and not self.waiting:
            # The keeper is making (or about to make) a spare: as fast as a cold start, and a
            # failure is its error, raised here. One claim waits for it; others start cold.
            self.waiting = True
            try:
                self._settled.clear()
                await self._settled.wait()
            finally:
                self.waiting = False
        while self.spares:
            spare = self.spares.popleft()
            _LIVE.discard(spare)
            self._wake.set()
            if spare.alive and spare.process.returncode is None:
                self.claimed += 1
                return spare
            await _discard(spare)  # died while waiting (killed from outside?): never handed out
        self._raise_error()
        return None

    def _raise_error(self) -> None:
        """Raise the refill's error once; the keeper then tries again for the next claim."""
        if self.error is not None:
            error, self.error = self.error, None
            self._wake.set()
            raise error

    async def ready(self) -> None:
        """Wait until the pool is full (benchmarks, tests); raises what made a refill fail."""
        while len(self.spares) < self.size:
            self._raise_error()
            self._settled.clear()
            await self._settled.wait()

    def stop(self) -> None:
        """No more claims; the keeper is cancelled and its `finally` kills the spares."""
        self._closed = True
        self._keeper.cancel()

    async def close(self) -> None:
        self.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await self._keeper

    async def _keep(self) -> None:
        try:
            while True:
                while len(self.spares) < self.size and self.error is None:
                    self.spawning = True
                    try:
                        spare = await self.template._spawn(tag=f"toolrail-session-{secrets.token_hex(8)}")
                    except (SandboxError, OSError) as exc:
                        self.error = SandboxError(f"the sandbox pool could not start a spare jail: {exc}")
                    else:
                        self.made += 1
                        self.spares.append(spare)
                        _LIVE.add(spare)
                    finally:
                        self.spawning = False
                        self._settled.set()
                self._wake.clear()
                await self._wake.wait()
                # Let the session that just claimed have the CPU for its first run: a refill
                # started at once forks this process and boots a jail right beside it.
                await asyncio.sleep(REFILL_DELAY_S)
        finally:
            self._closed = True
            self._settled.set()
            while self.spares:
                spare = self.spares.popleft()
                _LIVE.discard(spare)
                await _discard(spare)


async def _discard(spare: Interpreter) -> None:
    await spare.kill()
    spare.stop_pumps()


# loop -> {config_key: pool}, least recently used first
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrderedDict[tuple, SparePool]] = weakref.WeakKeyDictionary()
_LIVE: set[Interpreter] = set()  # unclaimed spares of every pool, for the exit hook


def pool_for(sandbox: LocalSandbox) -> SparePool:
    """The running loop's pool for `sandbox`'s configuration, created (and filling) on demand."""
    pools = _POOLS.setdefault(asyncio.get_running_loop(), OrderedDict())
    key = config_key(sandbox)
    pool = pools.get(key)
    if pool is None or pool._closed:
        pool = pools[key] = SparePool(sandbox._template(), sandbox.pool_size)
        while len(pools) > MAX_CONFIGS_PER_LOOP:
            _, oldest = pools.popitem(last=False)
            oldest.stop()
    pools.move_to_end(key)
    return pool


def pools() -> list[SparePool]:
    """The running loop's pools (tests, benchmarks)."""
    return list(_POOLS.get(asyncio.get_running_loop(), {}).values())


async def close_pools() -> None:
    """Kill every spare of the running loop's pools now (sessions already claimed are theirs)."""
    for pool in _POOLS.pop(asyncio.get_running_loop(), {}).values():
        await pool.close()


@atexit.register
def _kill_leftover_spares() -> None:
    """A loop closed without cancelling its tasks (or never closed) leaves spares: kill them."""
    while _LIVE:
        _LIVE.pop().kill_now()
