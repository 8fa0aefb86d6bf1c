"""The SQLite result journal: what one process records, another reads back; a replaced file is
reopened; reading a thread that never journaled anything finds nothing; a fresh turn does not read."""

from __future__ import annotations

import asyncio

from toolrail.execution import Outcome
from toolrail.journal import SqliteResultJournal


async def _record(journal: SqliteResultJournal, scope: str, *call_ids: str) -> None:
    batch = journal.batch(scope)
    for call_id in call_ids:
        batch.record(call_id, "lookup", Outcome("ok", f"result of {call_id}", 1.0, 0.5), speculative=call_id.endswith("s"))
    await batch.close()


async def test_reading_a_journal_that_does_not_exist_finds_nothing_and_the_next_write_creates_it(tmp_path):
    # (the read itself creates nothing; the file is then made in the background, while the
    # turn's calls run, so whether it exists right after the read is a race, not checked here)
    path = tmp_path / "folder" / "effects.sqlite"
    journal = SqliteResultJournal(path)
    assert await journal.finished("thread/tools:1") == {}
    await _record(journal, "thread/tools:1", "a")
    assert path.exists() and set(await SqliteResultJournal(path).finished("thread/tools:1")) == {"a"}


async def test_recorded_outcomes_are_read_back_by_another_journal_on_the_same_file(tmp_path):
    path = tmp_path / "effects.sqlite"
    await _record(SqliteResultJournal(path), "t/tools:1", "a", "bs")
    await _record(SqliteResultJournal(path), "t/tools:2", "c")
    again = await SqliteResultJournal(path).finished("t/tools:1")
    assert sorted(again) == ["a", "bs"]
    outcome, speculative = again["bs"]
    assert (outcome.status, outcome.content, speculative) == ("ok", "result of bs", True)
    assert not again["a"][1]


async def test_a_replaced_file_is_opened_again_not_written_into_the_old_one(tmp_path):
    path = tmp_path / "effects.sqlite"
    journal = SqliteResultJournal(path)
    await _record(journal, "t/tools:1", "a")
    for leftover in tmp_path.glob("effects.sqlite*"):
        leftover.unlink()  # the file is removed (and a new one made) while the journal is open
    await _record(journal, "t/tools:1", "b")
    assert sorted(await SqliteResultJournal(path).finished("t/tools:1")) == ["b"]


async def test_outcomes_recorded_at_once_from_many_calls_are_all_kept(tmp_path):
    journal = SqliteResultJournal(tmp_path / "effects.sqlite")
    batch = journal.batch("t/tools:1")

    async def finish(i: int) -> None:
        await asyncio.sleep(0)
        batch.record(f"c{i}", "lookup", Outcome("ok", str(i), 0.0, 0.0))

    await asyncio.gather(*(finish(i) for i in range(300)))
    await batch.close()
    assert len(await SqliteResultJournal(tmp_path / "effects.sqlite").finished("t/tools:1")) == 300


async def test_a_fresh_turns_tools_task_records_its_calls_without_reading_the_journal_first(openai_server, tmp_path):
    """Only a task that runs again (the first step of a resumed run) can find outcomes of its own
    (tests/test_crash_resume.py proves it reads them); a fresh one skips that round trip."""
    import sqlite3

    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from conftest import client_for
    from toolrail.graphs.agent import build_graph
    from toolrail.ledger import SqliteSideEffectLedger
    from toolrail.testing.openai_server import answer, call, calls
    from toolrail.tools.registry import ToolRegistry

    class CountingJournal(SqliteResultJournal):
        reads = 0

        async def finished(self, scope: str):
            CountingJournal.reads += 1
            return await super().finished(scope)

    registry = ToolRegistry()

    @registry.register
    async def lookup(key: str) -> str:
        """Answers at once."""
        return f"value of {key}"

    openai_server.script(calls(*[call("lookup", {"key": k}, id=f"l{k}") for k in "abc"]), answer("done"))
    ledger_path = tmp_path / "effects.sqlite"
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "runs.sqlite")) as saver:
        graph = build_graph(model=client_for(openai_server), tools=registry, checkpointer=saver, speculative=False,
                            ledger=SqliteSideEffectLedger(ledger_path), journal=CountingJournal(ledger_path))
        state = await graph.ainvoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    assert state["messages"][-1].content == "done"
    assert CountingJournal.reads == 0
    with sqlite3.connect(ledger_path) as db:  # every call but the last to finish is journaled as before
        assert db.execute("SELECT count(*) FROM toolrail_call_results").fetchone()[0] == 2
