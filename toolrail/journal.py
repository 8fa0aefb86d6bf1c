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
import contextlib
import os
import sqlite3
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from toolrail.execution import Outcome
from toolrail.ledger import PostgresSideEffectLedger, PostgresTable, SqliteSideEffectLedger

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

    def prepare(self) -> None:
        """Get ready for writes in the background (a task that did not read first)."""


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
    """A table in a SQLite file (WAL): the ledger's file, beside the checkpoints.

    Commits are `synchronous=NORMAL`: in WAL mode a committed row survives the process being
    killed at any moment (what crash-resume is about); only a power loss can drop the latest
    rows, and then the calls they record simply run again — a side-effecting call is still
    guarded by the ledger, whose commits are `synchronous=FULL`.

    A tools task reads the journal before its calls start and waits for its last write before
    it ends, so each operation is on the turn's critical path: all of them run on one thread of
    the journal's own, on one connection kept open (reopened when the file was replaced or an
    operation failed), and a new file is created while the turn's calls run (`finished`). Nothing
    touches the file on the event loop (the LangGraph server refuses blocking calls there).
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._db: sqlite3.Connection | None = None  # opened on first use: building a graph creates no file
        self._inode: int | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="toolrail-journal")

    def _kept(self) -> sqlite3.Connection:
        """The open connection (on the journal's thread only)."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if self._db is None or inode != self._inode:
            self._close()
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA synchronous=NORMAL")
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode=WAL")  # kept by the file itself
                db.execute(TABLE)  # idempotent: the file may be new, replaced or opened from elsewhere
            except BaseException:
                db.close()
                raise
            self._db, self._inode = db, os.stat(self.path).st_ino
        return self._db

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = self._inode = None

    def _on_thread(self, operation: Any, *args: Any) -> Any:
        try:
            return operation(self._kept(), *args)
        except sqlite3.Error:
            self._close()  # rolls back whatever was begun; the next operation opens the file again
            raise

    def _open_quietly(self) -> None:
        with contextlib.suppress(sqlite3.Error, OSError):
            self._kept()

    async def finished(self, scope: str) -> dict[str, tuple[Outcome, bool]]:
        """The task's earlier outcomes. Without a file there are none, and it is created next, on
        the journal's thread, while the turn's calls run (creating the file and its table takes
        milliseconds of fsyncs; the task's writes queue behind it)."""
        loop = asyncio.get_running_loop()
        reading = loop.run_in_executor(self._thread, self._finished, scope)
        if self._db is None:
            loop.run_in_executor(self._thread, self._open_quietly)  # an error shows again on first write
        return _outcomes(await reading)

    def prepare(self) -> None:
        if self._db is None:
            asyncio.get_running_loop().run_in_executor(self._thread, self._open_quietly)

    def _finished(self, scope: str) -> list[tuple]:
        if self._db is None and not os.path.exists(self.path):
            return []  # no file, no journaled call: nothing to create before a call finishes
        return self._on_thread(_select, scope)

    async def write(self, rows: list[Row]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._on_thread, _write, rows)


SQLITE_SELECT, SQLITE_INSERT = (sql.replace("%s", "?") for sql in (SELECT, INSERT))  # SQLite's placeholders


def _select(db: sqlite3.Connection, scope: str) -> list[tuple]:
    return db.execute(SQLITE_SELECT, (scope,)).fetchall()


def _write(db: sqlite3.Connection, rows: list[Row]) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.executemany(SQLITE_INSERT, rows)
    db.execute("COMMIT")


JOURNAL_LOCK = 0x7472_6A6E  # serialises the table's creation between workers starting together


class PostgresResultJournal(PostgresTable, ResultJournal):
    """A table in the Postgres checkpoint database: any worker resuming the thread sees it."""

    CREATE, LOCK = TABLE, JOURNAL_LOCK

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
    if isinstance(ledger, SqliteSideEffectLedger):
        return SqliteResultJournal(ledger.path)
    if isinstance(ledger, PostgresSideEffectLedger):
        return PostgresResultJournal(ledger.url)
    return None
