"""Exactly-once for side effects: a durable record of every side-effecting call.

LangGraph's pending writes already keep the result of every call that *finished* before a
crash, so resume does not run it again. What they cannot cover is a side-effecting call that
was *running* when the process died: it may or may not have taken effect. The ledger records
"started" before such a call runs and "finished" (with its result) after; on resume a call
found "started" is not run again — the model is told its outcome is unknown.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from toolrail.execution import Outcome

UNKNOWN = (
    "Outcome unknown: this call has side effects and was running when the process stopped; "
    "it was not run again. Check whether it took effect before retrying it."
)


class SideEffectLedger:
    """A small SQLite table beside the checkpoints, keyed by (thread, tool call id)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS side_effects (thread TEXT, call_id TEXT, tool TEXT, state TEXT,"
                " status TEXT, content TEXT, started_at REAL, duration_s REAL, PRIMARY KEY (thread, call_id))"
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    async def run_once(self, thread: str, call_id: str, tool: str, run: Callable[[], Awaitable[Outcome]]) -> Outcome:
        previous = await asyncio.to_thread(self._claim, thread, call_id, tool)
        if previous is not None:
            return previous
        outcome = await run()
        await asyncio.to_thread(self._finish, thread, call_id, outcome)
        return outcome

    def _claim(self, thread: str, call_id: str, tool: str) -> Outcome | None:
        """Record 'started' durably, or return what an earlier attempt left behind."""
        with self._connect() as db:
            try:
                db.execute(
                    "INSERT INTO side_effects VALUES (?, ?, ?, 'started', NULL, NULL, ?, NULL)",
                    (thread, call_id, tool, time.time()),
                )
                return None
            except sqlite3.IntegrityError:
                state, status, content, started, duration = db.execute(
                    "SELECT state, status, content, started_at, duration_s FROM side_effects WHERE thread=? AND call_id=?",
                    (thread, call_id),
                ).fetchone()
        if state == "finished":
            return Outcome(status, content, started, duration)
        return Outcome("error", UNKNOWN, started, 0.0)

    def _finish(self, thread: str, call_id: str, outcome: Outcome) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE side_effects SET state='finished', status=?, content=?, duration_s=? WHERE thread=? AND call_id=?",
                (outcome.status, outcome.content, outcome.duration_s, thread, call_id),
            )
