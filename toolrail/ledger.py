"""Exactly-once for side effects: a durable record of every side-effecting call.

LangGraph's pending writes already keep the result of every call that *finished* before a
crash, so resume does not run it again. What they cannot cover is a side-effecting call that
was *running* when the process died: it may or may not have taken effect. The ledger records
"started" before such a call runs and "finished" (with its result) after; on resume a call found
"started" is not run again — the model is told its outcome is unknown.

A call is keyed by (thread, call id, fingerprint): the fingerprint hashes the tool name and its
validated arguments, so a row is only ever reused for the very same call — a different call
that happens to carry the same id (providers that number calls `call_0`, `call_1` every turn)
gets a row of its own and runs. toolrail also gives every call a run-unique id
(toolrail/calls.py), so the fingerprint is the second of two guards.

The claim is one atomic insert, so two workers resuming the same thread cannot both run a call.
The ledger lives where the checkpoints live: a SQLite file beside them, or a table in the same
Postgres database — so a thread resumed by any worker sees every claim.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from langgraph.errors import GraphBubbleUp

from toolrail.execution import Outcome

UNKNOWN = (
    "Outcome unknown: this call has side effects and was running when the process stopped; "
    "it was not run again. Check whether it took effect before retrying it."
)

COLUMNS = "state, status, content, started_at, duration_s"
# v2: the fingerprint joined the key (the v1 table, keyed by call id alone, is left untouched).
TABLE = (
    "CREATE TABLE IF NOT EXISTS toolrail_call_ledger (thread TEXT NOT NULL, call_id TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL, tool TEXT NOT NULL, state TEXT NOT NULL, status TEXT, content TEXT,"
    " started_at DOUBLE PRECISION, duration_s DOUBLE PRECISION, PRIMARY KEY (thread, call_id, fingerprint))"
)
CLAIM = (
    "INSERT INTO toolrail_call_ledger (thread, call_id, fingerprint, tool, state, started_at)"
    " VALUES (%s, %s, %s, %s, 'started', %s) ON CONFLICT DO NOTHING"
)
LOOKUP = f"SELECT {COLUMNS} FROM toolrail_call_ledger WHERE thread = %s AND call_id = %s AND fingerprint = %s"
FINISH = (
    "UPDATE toolrail_call_ledger SET state = 'finished', status = %s, content = %s, duration_s = %s"
    " WHERE thread = %s AND call_id = %s AND fingerprint = %s"
)

RELEASE = "DELETE FROM toolrail_call_ledger WHERE thread = %s AND call_id = %s AND fingerprint = %s AND state = 'started'"


def fingerprint(tool: str, args: dict[str, Any]) -> str:
    """The call's identity beyond its id: tool name and validated arguments, canonically hashed."""
    canonical = json.dumps([tool, args], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class SideEffectLedger(ABC):
    """Keyed by (thread, call id, fingerprint of tool and arguments)."""

    async def run_once(self, thread: str, call_id: str, tool: str, args: dict[str, Any],
                       run: Callable[[], Awaitable[Outcome]]) -> Outcome:
        key = (thread, call_id, fingerprint(tool, args))
        previous = await self.claim(*key, tool)
        if previous is not None:
            return previous
        try:
            outcome = await run()
        except GraphBubbleUp:
            # the tool asked a person (LangGraph interrupt): it did not finish and will be run
            # again with the answer, so its claim is withdrawn
            await self.release(*key)
            raise
        await self.finish(*key, outcome)
        return outcome

    async def release(self, thread: str, call_id: str, fingerprint: str) -> None:
        """Withdraw a 'started' claim (the tool paused for a person and will run again)."""
        await self._run_sql(RELEASE, (thread, call_id, fingerprint))

    async def _run_sql(self, sql: str, params: tuple) -> None:
        raise NotImplementedError

    @abstractmethod
    async def claim(self, thread: str, call_id: str, fingerprint: str, tool: str) -> Outcome | None:
        """Record 'started' durably and return None, or return what an earlier attempt left behind."""

    @abstractmethod
    async def finish(self, thread: str, call_id: str, fingerprint: str, outcome: Outcome) -> None: ...


class InMemorySideEffectLedger(SideEffectLedger):
    """For in-memory checkpoints: both die with the process, so the process's memory suffices."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], tuple] = {}

    async def claim(self, thread: str, call_id: str, fingerprint: str, tool: str) -> Outcome | None:
        key = (thread, call_id, fingerprint)
        if key in self._rows:
            return _earlier_attempt(self._rows[key])
        self._rows[key] = ("started", None, None, time.time(), None)
        return None

    async def release(self, thread: str, call_id: str, fingerprint: str) -> None:
        if self._rows.get((thread, call_id, fingerprint), ("",))[0] == "started":
            del self._rows[(thread, call_id, fingerprint)]

    async def finish(self, thread: str, call_id: str, fingerprint: str, outcome: Outcome) -> None:
        self._rows[(thread, call_id, fingerprint)] = ("finished", outcome.status, outcome.content, outcome.started_at, outcome.duration_s)


def _earlier_attempt(row: tuple) -> Outcome:
    state, status, content, started, duration = row
    if state == "finished":
        return Outcome(status, content, started, duration)
    return Outcome("error", UNKNOWN, started, 0.0)


class SqliteSideEffectLedger(SideEffectLedger):
    """A table in a SQLite file beside the checkpoints (WAL, synchronous=FULL).

    The file is opened on first use (`check()` opens it at once), so a graph that is only built
    — to read history, or at import — never creates a file.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._ready = False

    def check(self) -> None:
        if not self._ready:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")  # kept by the file itself
                db.execute(TABLE)
            self._ready = True

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")  # per connection
        return db

    async def claim(self, thread: str, call_id: str, fingerprint: str, tool: str) -> Outcome | None:
        return await asyncio.to_thread(self._claim, thread, call_id, fingerprint, tool)

    async def finish(self, thread: str, call_id: str, fingerprint: str, outcome: Outcome) -> None:
        await asyncio.to_thread(self._execute, FINISH, (outcome.status, outcome.content, outcome.duration_s, thread, call_id, fingerprint))

    def _claim(self, thread: str, call_id: str, fingerprint: str, tool: str) -> Outcome | None:
        self.check()
        with self._connect() as db:
            if db.execute(_sqlite(CLAIM), (thread, call_id, fingerprint, tool, time.time())).rowcount == 1:
                return None
            return _earlier_attempt(db.execute(_sqlite(LOOKUP), (thread, call_id, fingerprint)).fetchone())

    def _execute(self, sql: str, params: tuple) -> None:
        with self._connect() as db:
            db.execute(_sqlite(sql), params)

    async def _run_sql(self, sql: str, params: tuple) -> None:
        await asyncio.to_thread(self._execute, sql, params)


def _sqlite(sql: str) -> str:
    return sql.replace("%s", "?")


LEDGER_LOCK = 0x7472_6C65  # serialises the table's creation between workers starting together


async def connect_postgres(url: str, *, create: str | None, lock: int):
    """An autocommit connection; `create` (a CREATE TABLE IF NOT EXISTS), when given, runs under
    the advisory lock `lock`: that statement is not safe against itself in Postgres, so workers
    starting together take turns."""
    import psycopg

    db = await psycopg.AsyncConnection.connect(url, autocommit=True)
    if create is not None:
        async with db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            await db.execute(create)
    return db


class PostgresTable:
    """A table of toolrail's in the Postgres checkpoint database: `CREATE` runs (under the
    advisory lock `LOCK`) on this object's first connection only."""

    CREATE: str
    LOCK: int

    def __init__(self, url: str):
        self.url = url
        self._created = False

    async def _connect(self):
        db = await connect_postgres(self.url, create=None if self._created else self.CREATE, lock=self.LOCK)
        self._created = True
        return db


class PostgresSideEffectLedger(PostgresTable, SideEffectLedger):
    """A table in the Postgres checkpoint database: every worker sees every claim."""

    CREATE, LOCK = TABLE, LEDGER_LOCK

    async def claim(self, thread: str, call_id: str, fingerprint: str, tool: str) -> Outcome | None:
        async with await self._connect() as db:
            if (await db.execute(CLAIM, (thread, call_id, fingerprint, tool, time.time()))).rowcount == 1:
                return None
            return _earlier_attempt(await (await db.execute(LOOKUP, (thread, call_id, fingerprint))).fetchone())

    async def _run_sql(self, sql: str, params: tuple) -> None:
        async with await self._connect() as db:
            await db.execute(sql, params)

    async def finish(self, thread: str, call_id: str, fingerprint: str, outcome: Outcome) -> None:
        async with await self._connect() as db:
            await db.execute(FINISH, (outcome.status, outcome.content, outcome.duration_s, thread, call_id, fingerprint))
