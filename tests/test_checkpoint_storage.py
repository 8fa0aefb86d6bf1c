"""What a thread's checkpoints store: each tool output once, not once per checkpoint, and the
whole conversation still read back at every checkpoint (state, history, replay)."""

from __future__ import annotations

import sqlite3

from conftest import client_for
from toolrail.graphs.agent import build_graph
from toolrail.ledger import SqliteSideEffectLedger
from toolrail.state import TURNS_PER_SNAPSHOT
from toolrail.testing.openai_server import answer, call, calls
from toolrail.tools.registry import ToolRegistry


def _lookup_tools() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.register
    async def lookup(key: str) -> str:
        """Answers with a text no other call returns."""
        return f"output-of-{key}-" + "x" * 40

    return registry


async def _conversation(server, tmp_path, turns: int):
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    for t in range(turns):
        server.script(calls(call("lookup", {"key": f"t{t}a"}, id=f"t{t}a"), call("lookup", {"key": f"t{t}b"}, id=f"t{t}b")),
                      answer(f"answer {t}"))
    config = {"configurable": {"thread_id": "long"}}
    saver_cm = AsyncSqliteSaver.from_conn_string(str(tmp_path / "runs.sqlite"))
    saver = await saver_cm.__aenter__()
    graph = build_graph(model=client_for(server), tools=_lookup_tools(), checkpointer=saver,
                        ledger=SqliteSideEffectLedger(tmp_path / "effects.sqlite"), speculative=False)
    for t in range(turns):
        await graph.ainvoke({"messages": [("user", f"question {t}")]}, config)
    return graph, config, saver_cm


def _stored_copies(db_path, text: str) -> int:
    """How many stored blobs (checkpoints and their writes) hold `text`."""
    needle = text.encode()
    with sqlite3.connect(db_path) as db:
        blobs = [row[0] for row in db.execute("SELECT checkpoint FROM checkpoints")]
        blobs += [row[0] for row in db.execute("SELECT value FROM writes")]
    return sum(1 for blob in blobs if blob and needle in bytes(blob))


async def test_each_tool_output_is_stored_once_not_in_every_checkpoint(openai_server, tmp_path):
    turns = 3  # fewer turns than a snapshot of the conversation is taken after
    graph, config, saver_cm = await _conversation(openai_server, tmp_path, turns)
    try:
        state = (await graph.aget_state(config)).values
        checkpoints = len([s async for s in graph.aget_state_history(config)])
    finally:
        await saver_cm.__aexit__(None, None, None)
    outputs = [m.content for m in state["messages"] if m.type == "tool"]
    assert len(outputs) == 2 * turns and len(set(outputs)) == 2 * turns
    assert checkpoints >= 4 * turns  # the conversation went through many checkpoints...
    for output in outputs:  # ...yet each output is stored once (its write), not once per checkpoint
        assert _stored_copies(tmp_path / "runs.sqlite", output) == 1, output
    assert all("content" not in r for r in state["results"])  # the timed records do not repeat it


async def test_a_long_thread_reads_back_the_whole_conversation_at_every_checkpoint(openai_server, tmp_path):
    turns = 3 * TURNS_PER_SNAPSHOT  # past several snapshots of every list
    graph, config, saver_cm = await _conversation(openai_server, tmp_path, turns)
    try:
        history = [s async for s in graph.aget_state_history(config)]
        latest = history[0].values
        # a checkpoint from the middle of the thread still has everything said up to it
        middle = next(s for s in history if len([m for m in s.values.get("messages", []) if m.type == "human"]) == turns // 2
                      and s.next == ("tools",))
    finally:
        await saver_cm.__aexit__(None, None, None)
    messages = latest["messages"]
    assert [m.content for m in messages if m.type == "human"] == [f"question {t}" for t in range(turns)]
    assert [m.content for m in messages if m.type == "ai" and not m.tool_calls] == [f"answer {t}" for t in range(turns)]
    assert len(latest["results"]) == 2 * turns and len(latest["verdicts"]) == 2 * turns
    assert len(latest["model_calls"]) == 2 * turns
    for earlier, later in zip(history[1:], history):  # every checkpoint's lists are a prefix of the next one's
        before, after = earlier.values.get("messages", []), later.values.get("messages", [])
        assert [m.id for m in after[:len(before)]] == [m.id for m in before]
    assert middle.values["messages"][-1].tool_calls  # paused before its tools ran
    assert [m.id for m in middle.values["messages"]] == [m.id for m in messages[:len(middle.values["messages"])]]
    # the first turn's output is in its own write and in the few snapshots taken since, not in ~5 checkpoints a turn
    first_output = next(m.content for m in messages if m.type == "tool")
    assert _stored_copies(tmp_path / "runs.sqlite", first_output) <= 1 + turns // TURNS_PER_SNAPSHOT


async def test_a_long_thread_decodes_its_conversation_snapshot_once_and_reads_back_the_same(openai_server, tmp_path):
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    turns = 2 * TURNS_PER_SNAPSHOT  # past a snapshot of the conversation
    graph, config, saver_cm = await _conversation(openai_server, tmp_path, turns)
    try:
        cache = graph.checkpointer.serde.loads_typed
        hits = cache.hits
        first = (await graph.aget_state(config)).values
        first["messages"].clear()  # a reader may change what it got: the next one is not affected
        second = (await graph.aget_state(config)).values
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "runs.sqlite")) as fresh_saver:  # decodes everything anew
            fresh = (await build_graph(model=client_for(openai_server), tools=_lookup_tools(), checkpointer=fresh_saver,
                                       ledger=SqliteSideEffectLedger(tmp_path / "effects.sqlite")).aget_state(config)).values
    finally:
        await saver_cm.__aexit__(None, None, None)
    assert cache.hits > hits  # the second read took the snapshot already decoded
    assert [(m.id, m.type, m.content) for m in second["messages"]] == [(m.id, m.type, m.content) for m in fresh["messages"]]
    assert [m.content for m in second["messages"] if m.type == "ai" and not m.tool_calls] == [f"answer {t}" for t in range(turns)]
    assert second["results"] == fresh["results"] and second["model_calls"] == fresh["model_calls"]
