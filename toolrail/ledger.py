"""Exactly-once for side effects: a durable record of every side-effecting call.

LangGraph's pending writes already keep the result of every call that *finished* before a
crash, so resume does not run it again. What they cannot cover is a side-effecting call that
was *running* when the process died: it may or may not have taken effect. The ledger records
"started" before such a call runs and "finished" (with its result) after; on resume a call found
"started" is not run again — the model is told its outcome is unknown.

The claim is one atomic insert, so two workers resuming the same thread cannot both run a call.
The ledger lives where the checkpoints live: a SQLite file beside them, or a table in the same
Postgres database — so a thread resumed by any worker sees every claim.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path

from langgraph.errors import GraphBubbleUp

from toolrail.execution import Outcome

UNKNOWN = (
    "Outcome unknown: this call has side effects and was running when the process stopped; "
    "it was not run again. Check whether it took effect before retrying it."
)

COLUMNS = "state, status, content, started_at, duration_s"
TABLE = (
    "CREATE TABLE IF NOT EXISTS toolrail_side_effects (thread TEXT NOT NULL, call_id TEXT NOT NULL, tool TEXT NOT NULL,"
    " state TEXT NOT NULL, status TEXT, content TEXT, started_at DOUBLE PRECISION, duration_s DOUBLE PRECISION,"
    " PRIMARY KEY (thread, call_id))"
)
CLAIM = (
    "INSERT INTO toolrail_side_effects (thread, call_id, tool, state, started_at) VALUES (%s, %s, %s, 'started', %s)"
    " ON CONFLICT DO NOTHING"
)
LOOKUP = f"SELECT {COLUMNS} FROM toolrail_side_effects WHERE thread = %s AND call_id = %s"
FINISH = (
    "UPDATE toolrail_side_effects SET state = 'finished', status = %s, content = %s, duration_s = %s"
    " WHERE thread = %s AND call_id = %s"
)

RELEASE = "DELETE FROM toolrail_side_effects WHERE thread = %s AND call_id = %s AND state = 'started'"


class SideEffectLedger(ABC):
    """Keyed by (thread, tool call id): model call ids are unique within a conversation."""

    async def run_once(self, thread: str, call_id: str, tool: str, run: Callable[[], Awaitable[Outcome]]) -> Outcome:
        previous = await self.claim(thread, call_id, tool)
        if previous is not None:
            return previous
        try:
            outcome = await run()
        except GraphBubbleUp:
            # the tool asked a person (LangGraph interrupt): it did not finish and will be run
            # again with the answer, so its claim is withdrawn
            await self.release(thread, call_id)
            raise
        await self.finish(thread, call_id, outcome)
        return outcome

    async def release(self, thread: str, call_id: str) -> None:
        await self._run_sql(RELEASE, (thread, call_id))

    async def _run_sql(self, sql: str, params: tuple) -> None:
        raise NotImplementedError

    @abstractmethod
    async def claim(self, thread: str, call_id: str, tool: str) -> Outcome | None:
        """Record 'started' durably and return None, or return what an earlier attempt left behind."""

    @abstractmethod
    async def finish(self, thread: str, call_id: str, outcome: Outcome) -> None: ...


def _earlier_attempt(row: tuple) -> Outcome:
    state, status, content, started, duration = row
    if state == "finished":
        return Outcome(status, content, started, duration)
    return Outcome("error", UNKNOWN, started, 0.0)


class SqliteSideEffectLedger(SideEffectLedger):
    """A table in a SQLite file beside the checkpoints (WAL, synchronous=FULL)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept by the file itself
            db.execute(TABLE)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")  # per connection
        return db

    async def claim(self, thread: str, call_id: str, tool: str) -> Outcome | None:
        return await asyncio.to_thread(self._claim, thread, call_id, tool)

    async def finish(self, thread: str, call_id: str, outcome: Outcome) -> None:
        await asyncio.to_thread(self._execute, FINISH, (outcome.status, outcome.content, outcome.duration_s, thread, call_id))

    def _claim(self, thread: str, call_id: str, tool: str) -> Outcome | None:
        with self._connect() as db:
            if db.execute(_sqlite(CLAIM), (thread, call_id, tool, time.time())).rowcount == 1:
                return None
            return _earlier_attempt(db.execute(_sqlite(LOOKUP), (thread, call_id)).fetchone())

    def _execute(self, sql: str, params: tuple) -> None:
        with self._connect() as db:
            db.execute(_sqlite(sql), params)

    async def _run_sql(self, sql: str, params: tuple) -> None:
        await asyncio.to_thread(self._execute, sql, params)


def _sqlite(sql: str) -> str:
    return sql.replace("%s", "?")


LEDGER_LOCK = 0x7472_6C65  # serialises the table's creation between workers starting together


class PostgresSideEffectLedger(SideEffectLedger):
    """A table in the Postgres checkpoint database: every worker sees every claim."""

    def __init__(self, url: str):
        self.url = url
        self._created = False

    async def _connect(self):
        import psycopg

        db = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        if not self._created:
            # CREATE TABLE IF NOT EXISTS is not safe against itself in Postgres: take turns.
            async with db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock(%s)", (LEDGER_LOCK,))
                await db.execute(TABLE)
            self._created = True
        return db

    async def claim(self, thread: str, call_id: str, tool: str) -> Outcome | None:
        async with await self._connect() as db:
            if (await db.execute(CLAIM, (thread, call_id, tool, time.time()))).rowcount == 1:
                return None
            return _earlier_attempt(await (await db.execute(LOOKUP, (thread, call_id))).fetchone())

    async def _run_sql(self, sql: str, params: tuple) -> None:
        async with await self._connect() as db:
            await db.execute(sql, params)

    async def finish(self, thread: str, call_id: str, outcome: Outcome) -> None:
        async with await self._connect() as db:
            await db.execute(FINISH, (outcome.status, outcome.content, outcome.duration_s, thread, call_id))
