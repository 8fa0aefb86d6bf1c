"""Every finished call's result, kept durably by toolrail, written in batches.

The tools node runs all calls of a turn in one LangGraph task (one `asyncio.gather`, like
`ToolNode`), instead of one `Send` task per call: LangGraph's per-task cost grows with the
number of tasks in a step, and on SQLite each task's writes are their own transaction. What the
per-call tasks gave for free — a call that finished before a crash is not run again — is kept
here: each finished call's outcome is recorded under the task's checkpoint namespace (the same
on resume, new on a replay or fork), and a resumed task reads them back before running the rest.

Writes are group commits: an outcome is queued, and one writer flushes everything queued so
far in a single transaction; outcomes that finish while it writes go in the next flush. A turn
of 1,000 calls finishing together costs a handful of transactions, not 1,000.

The journal lives beside the side-effect ledger: a table in the same SQLite file, or in the
same Postgres database.
"""

from __future__ import annotations

import asyncio
import sqlite3
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from toolrail.execution import Outcome

TABLE = (
    "CREATE TABLE IF NOT EXISTS toolrail_call_results (scope TEXT NOT NULL, call_id TEXT NOT NULL, tool TEXT NOT NULL,"
    " status TEXT NOT NULL, content TEXT NOT NULL, started_at DOUBLE PRECISION, duration_s DOUBLE PRECISION,"
    " speculative BOOLEAN NOT NULL DEFAULT FALSE, PRIMARY KEY (scope, call_id))"
)
INSERT = (
    "INSERT INTO toolrail_call_results (scope, call_id, tool, status, content, started_at, duration_s, speculative)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
SELECT = "SELECT call_id, status, content, started_at, duration_s, speculative FROM toolrail_call_results WHERE scope = %s"

Row = tuple[str, str, str, str, str, float, float, bool]


class ResultJournal(ABC):
    """Finished calls' outcomes by (scope, call id); `scope` names one tools task."""

    @abstractmethod
    async def finished(self, scope: str) -> dict[str, tuple[Outcome, bool]]:
        """Outcomes recorded under `scope` by an earlier attempt of the same task, with `speculative`."""

    @abstractmethod
    async def write(self, rows: list[Row]) -> None:
        """Record the rows in one transaction."""

    def batch(self, scope: str) -> JournalBatch:
        return JournalBatch(self, scope)


class JournalBatch:
    """Group commit for one task: `record` queues, one writer flushes all that is queued."""

    def __init__(self, journal: ResultJournal, scope: str):
        self.journal, self.scope = journal, scope
        self._queued: list[Row] = []
        self._writer: asyncio.Task | None = None

    def record(self, call_id: str, tool: str, outcome: Outcome, speculative: bool = False) -> None:
        self._queued.append((self.scope, call_id, tool, outcome.status, outcome.content, outcome.started_at, outcome.duration_s, speculative))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._flush_all())

    async def _flush_all(self) -> None:
        while self._queued:
            rows, self._queued = self._queued, []
            await self.journal.write(rows)

    async def close(self) -> None:
        """Wait until everything recorded is durable (a failed write raises here)."""
        while True:
            if self._writer is not None:
                await self._writer
            if not self._queued:
                return
            self._writer = asyncio.get_running_loop().create_task(self._flush_all())


def _outcomes(rows: list[tuple[Any, ...]]) -> dict[str, tuple[Outcome, bool]]:
    return {call_id: (Outcome(status, content, started, duration), bool(speculative))
            for call_id, status, content, started, duration, speculative in rows}


class SqliteResultJournal(ResultJournal):
    """A table in a SQLite file (WAL, synchronous=FULL): the ledger's file, beside the checkpoints."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._ready = False  # opened on first use, like the ledger: building a graph creates no file

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")  # kept by the file itself
            finally:
                db.close()
            self._ready = True
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        db.execute(TABLE)  # idempotent and cheap: the file may have been replaced or opened from elsewhere
        return db

    async def finished(self, scope: str) -> dict[str, tuple[Outcome, bool]]:
        return _outcomes(await asyncio.to_thread(self._select, scope))

    async def write(self, rows: list[Row]) -> None:
        await asyncio.to_thread(self._write, rows)

    def _select(self, scope: str) -> list[tuple]:
        with self._connect() as db:
            return db.execute(SELECT.replace("%s", "?"), (scope,)).fetchall()

    def _write(self, rows: list[Row]) -> None:
        db = self._connect()
        try:
            db.execute("BEGIN")
            db.executemany(INSERT.replace("%s", "?"), rows)
            db.execute("COMMIT")
        finally:
            db.close()


JOURNAL_LOCK = 0x7472_6A6E  # serialises the table's creation between workers starting together


class PostgresResultJournal(ResultJournal):
    """A table in the Postgres checkpoint database: any worker resuming the thread sees it."""

    def __init__(self, url: str):
        self.url = url
        self._created = False

    async def _connect(self):
        from toolrail.ledger import connect_postgres

        db = await connect_postgres(self.url, create=None if self._created else TABLE, lock=JOURNAL_LOCK)
        self._created = True
        return db

    async def finished(self, scope: str) -> dict[str, tuple[Outcome, bool]]:
        async with await self._connect() as db:
            return _outcomes(await (await db.execute(SELECT, (scope,))).fetchall())

    async def write(self, rows: list[Row]) -> None:
        async with await self._connect() as db:
            async with db.transaction():
                async with db.cursor() as cursor:
                    await cursor.executemany(INSERT, rows)


def journal_beside(ledger: Any) -> ResultJournal | None:
    """The journal in the same store as the side-effect ledger (none for an in-memory run)."""
    from toolrail.ledger import PostgresSideEffectLedger, SqliteSideEffectLedger

    if isinstance(ledger, SqliteSideEffectLedger):
        return SqliteResultJournal(ledger.path)
    if isinstance(ledger, PostgresSideEffectLedger):
        return PostgresResultJournal(ledger.url)
    return None
