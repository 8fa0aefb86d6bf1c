"""One writer per thread: a lock in the checkpoint database.

Two `toolrail run --thread T` at once would both append to T's history; the turns interleave and
one question's answer drops out of what the model sees next. Every command that runs a thread
holds its lock for the whole run; a second one is refused with one line, or waits (`--wait`).

SQLite: a row in `toolrail_thread_locks` (in the checkpoint file) with the owner's host, pid
and a heartbeat renewed every few seconds. A lock whose owner is gone is taken over: at once
when the owner was on this host and its pid is dead (a SIGKILLed run), else once its heartbeat
is older than the lease. Postgres: a session advisory lock, released by the server the moment
the owner's connection drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from toolrail.errors import ToolrailError

LEASE_S = 30.0  # a heartbeat older than this means the owner is gone
HEARTBEAT_S = 5.0
POLL_S = 0.2


class ThreadBusy(ToolrailError):
    """Another process is running this thread."""


@contextlib.asynccontextmanager
async def thread_lock(location: str, thread: str, *, wait: bool = False) -> AsyncIterator[None]:
    from toolrail.checkpoints import is_postgres

    if is_postgres(location):
        async with _postgres_lock(location, thread, wait):
            yield
    else:
        async with _sqlite_lock(Path(location), thread, wait):
            yield


def _busy(thread: str, owner: str) -> ThreadBusy:
    return ThreadBusy(
        f"thread {thread!r} is being run by another toolrail process ({owner}); "
        "wait for it to finish, or pass --wait to queue behind it"
    )


@contextlib.asynccontextmanager
async def _sqlite_lock(path: Path, thread: str, wait: bool) -> AsyncIterator[None]:
    me = f"pid {os.getpid()} on {socket.gethostname()}"
    token = uuid.uuid4().hex
    while True:
        holder = await asyncio.to_thread(_sqlite_try, path, thread, token, me)
        if holder is None:
            break
        if not wait:
            raise _busy(thread, holder)
        await asyncio.sleep(POLL_S)
    beat = asyncio.create_task(_heartbeat(path, thread, token))
    try:
        yield
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        with contextlib.suppress(sqlite3.Error):
            await asyncio.to_thread(_sqlite_run, path, "DELETE FROM toolrail_thread_locks WHERE thread = ? AND token = ?", (thread, token))


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    db.execute(
        "CREATE TABLE IF NOT EXISTS toolrail_thread_locks (thread TEXT PRIMARY KEY, token TEXT NOT NULL,"
        " host TEXT NOT NULL, pid INTEGER NOT NULL, owner TEXT NOT NULL, heartbeat REAL NOT NULL)"
    )
    return db


def _sqlite_try(path: Path, thread: str, token: str, me: str) -> str | None:
    """Take the lock (None) or say who holds it. BEGIN IMMEDIATE: one taker at a time."""
    with contextlib.closing(_connect(path)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT host, pid, owner, heartbeat FROM toolrail_thread_locks WHERE thread = ?", (thread,)).fetchone()
            if row is not None and _alive(*row):
                return row[2]
            db.execute(
                "INSERT OR REPLACE INTO toolrail_thread_locks (thread, token, host, pid, owner, heartbeat) VALUES (?, ?, ?, ?, ?, ?)",
                (thread, token, socket.gethostname(), os.getpid(), me, time.time()),
            )
            return None
        finally:
            db.execute("COMMIT")


def _alive(host: str, pid: int, owner: str, heartbeat: float) -> bool:
    if time.time() - heartbeat > LEASE_S:
        return False
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def _sqlite_run(path: Path, sql: str, params: tuple) -> None:
    with contextlib.closing(_connect(path)) as db:
        db.execute(sql, params)


async def _heartbeat(path: Path, thread: str, token: str) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        with contextlib.suppress(sqlite3.Error):
            await asyncio.to_thread(
                _sqlite_run, path, "UPDATE toolrail_thread_locks SET heartbeat = ? WHERE thread = ? AND token = ?", (time.time(), thread, token)
            )


def _advisory_key(thread: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"toolrail-thread:{thread}".encode(), digest_size=8).digest(), "big", signed=True)


@contextlib.asynccontextmanager
async def _postgres_lock(url: str, thread: str, wait: bool) -> AsyncIterator[None]:
    import psycopg

    key = _advisory_key(thread)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        while not (await (await db.execute("SELECT pg_try_advisory_lock(%s)", (key,))).fetchone())[0]:
            if not wait:
                raise _busy(thread, "on the Postgres database")
            await asyncio.sleep(POLL_S)
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                await db.execute("SELECT pg_advisory_unlock(%s)", (key,))
