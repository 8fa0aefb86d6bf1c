"""Kill real toolrail processes at random moments; resume; nothing lost, nothing done twice."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _harness():
    spec = importlib.util.spec_from_file_location("kill_harness", ROOT / "scripts" / "kill_harness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sigkill_at_random_moments_loses_no_result_and_repeats_no_side_effect():
    report = _harness().harness(runs=8, seed=random.randrange(1 << 30))
    assert report["finished"] == report["runs"], report["details"]
    assert report["lost_results"] == 0, report["details"]
    assert report["duplicate_side_effects"] == 0, report["duplicates"]
    assert report["wrong_results"] == 0, report["details"]
    assert report["killed_mid_run"] >= 1, "the harness must actually kill runs in flight"


def test_a_sigtermed_run_stays_resumable_and_repeats_no_side_effect():
    import signal

    report = _harness().harness(runs=2, seed=random.randrange(1 << 30), kill_signal=signal.SIGTERM)
    assert report["finished"] == report["runs"], report["details"]
    assert report["lost_results"] == 0 and report["wrong_results"] == 0, report["details"]
    assert report["duplicate_side_effects"] == 0, report["duplicates"]


def test_with_provider_ids_omitted_no_call_is_ever_answered_with_another_calls_result():
    report = _harness().harness(runs=3, seed=random.randrange(1 << 30), omit_ids=True)
    assert report["finished"] == report["runs"], report["details"]
    assert report["lost_results"] == 0 and report["wrong_results"] == 0, report["details"]
    assert report["duplicate_side_effects"] == 0, report["duplicates"]
    assert report["side_effects_recorded"] >= 6 * report["runs"], "both turns of charges ran"


async def test_a_side_effect_that_was_running_at_the_crash_is_reported_not_repeated(tmp_path):
    from toolrail.execution import Outcome
    from toolrail.ledger import UNKNOWN, SqliteSideEffectLedger

    ledger = SqliteSideEffectLedger(tmp_path / "effects.sqlite")
    ran = []

    async def charge() -> Outcome:
        ran.append(1)
        return Outcome("ok", "charged", 0.0, 0.1)

    from toolrail.ledger import fingerprint

    await ledger.claim("t", "c1", fingerprint("charge", {}), "charge")  # a previous process started it and died
    outcome = await ledger.run_once("t", "c1", "charge", {}, charge)
    assert ran == [] and outcome.content == UNKNOWN
    first = await ledger.run_once("t", "c2", "charge", {}, charge)
    again = await SqliteSideEffectLedger(tmp_path / "effects.sqlite").run_once("t", "c2", "charge", {}, charge)
    assert ran == [1] and first.content == again.content == "charged"


async def test_calls_that_finished_before_a_crash_inside_the_turns_tools_task_are_not_run_again(openai_server, tmp_path):
    """All calls of a turn share one tools task; the result journal keeps the finished ones."""
    import asyncio
    import sqlite3

    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from conftest import client_for
    from toolrail.graphs.agent import build_graph
    from toolrail.ledger import SqliteSideEffectLedger
    from toolrail.testing.openai_server import answer, call, calls
    from toolrail.tools.registry import ToolRegistry

    ran: list[str] = []
    release = asyncio.Event()
    registry = ToolRegistry()

    @registry.register
    async def quick(key: str) -> str:
        """Answers at once."""
        ran.append(key)
        return f"quick {key}"

    @registry.register
    async def stuck(key: str) -> str:
        """Hangs until released (the first process 'dies' while it hangs)."""
        await release.wait()
        return f"stuck {key}"

    turn = calls(*[call("quick", {"key": k}, id=f"q{k}") for k in "abc"], call("stuck", {"key": "z"}, id="sz"))
    openai_server.script(turn, answer("done"))
    ledger_path, config = tmp_path / "effects.sqlite", {"configurable": {"thread_id": "t"}}

    def journaled() -> int:
        try:
            with sqlite3.connect(ledger_path) as db:
                return db.execute("SELECT count(*) FROM toolrail_call_results").fetchone()[0]
        except sqlite3.OperationalError:  # no journal table (yet)
            return 0

    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "runs.sqlite")) as saver:
        first = build_graph(model=client_for(openai_server), tools=registry, checkpointer=saver,
                            ledger=SqliteSideEffectLedger(ledger_path), speculative=False)
        run = asyncio.create_task(first.ainvoke({"messages": [("user", "go")]}, config))
        while len(ran) < 3:
            await asyncio.sleep(0.01)
        for _ in range(250):  # their results are written in a batch right after they finish
            if journaled() >= 3:
                break
            await asyncio.sleep(0.02)
        run.cancel()  # the process dies with `stuck` still running: its task never finished
        with __import__("contextlib").suppress(asyncio.CancelledError):
            await run
        assert sorted(ran) == ["a", "b", "c"]

        release.set()
        resumed = build_graph(model=client_for(openai_server), tools=registry, checkpointer=saver,
                              ledger=SqliteSideEffectLedger(ledger_path), speculative=False)
        state = await resumed.ainvoke(None, config)
    assert sorted(ran) == ["a", "b", "c"], "a finished call ran again after the crash"
    answers = {m.tool_call_id: m.content for m in state["messages"] if m.type == "tool"}
    assert answers == {"qa": "quick a", "qb": "quick b", "qc": "quick c", "sz": "stuck z"}
    assert state["messages"][-1].content == "done"
