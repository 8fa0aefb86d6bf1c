"""The planner's streamed reply over the real wire: the fast way toolrail reads a ChatOpenAI stream
gives the same reply as langchain's own, token streaming still reaches graph users, and calls
start when their JSON object closes, whatever the braces inside their strings."""

from __future__ import annotations

import asyncio
import json

import pytest

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessageChunk
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel

from conftest import client_for
from test_speculation import Probe
from toolrail.graphs.agent import build_graph
from toolrail.stream_reply import _ArgumentFrame
from toolrail.testing.openai_server import ScriptedReply, answer, call, calls
from toolrail.tools.registry import ToolRegistry

WEATHER = {"location": "New York"}
FLIGHTS = {"origin": "SF", "destination": "NYC", "date": None, "max_stops": 0}
CONFIG = {"configurable": {"thread_id": "t"}}


def trip_script(line_end: str = "\n", **wire) -> list[ScriptedReply]:
    final = answer("Light rain in New York; one nonstop flight.")
    final.line_end = line_end
    for option, value in wire.items():
        setattr(final, option, value)
    return [calls(call("get_weather", WEATHER, id="call_w"), call("search_flights", FLIGHTS, id="call_f"),
                  fragment_size=5, usage=(120, 30), line_end=line_end, **wire), final]


class Listener(AsyncCallbackHandler):
    """Any callback handler (as LangSmith or `stream_mode="messages"` attach one): it gets every token and the whole reply."""

    def __init__(self):
        self.tokens = 0
        self.replies = []

    async def on_llm_new_token(self, token, **kwargs):
        self.tokens += 1

    async def on_llm_end(self, response, **kwargs):
        self.replies.append(response.generations[0][0].message)


async def run(openai_server, config=CONFIG, streaming=True, **options):
    graph = build_graph(model=client_for(openai_server, streaming=streaming), checkpointer=InMemorySaver(), **options)
    return await graph.ainvoke({"messages": [("user", "trip")]}, config)


def kept(message) -> dict:
    metadata = {k: message.response_metadata.get(k) for k in ("finish_reason", "model_name", "model_provider")}
    return {"content": message.content, "tool_calls": message.tool_calls, "invalid": message.invalid_tool_calls,
            "usage": message.usage_metadata, "metadata": metadata}


def usage(state) -> list[tuple]:
    return [(c["status"], c["model"], c["input_tokens"], c["output_tokens"], c["total_tokens"], c["reported"]) for c in state["model_calls"]]


async def test_a_streamed_reply_is_kept_exactly_as_the_same_reply_not_streamed_with_or_without_listeners(openai_server):
    openai_server.script(*trip_script())
    not_streamed = await run(openai_server, streaming=False)
    openai_server.script(*trip_script())
    fast = await run(openai_server)
    openai_server.script(*trip_script())
    listener = Listener()
    listened = await run(openai_server, config={**CONFIG, "callbacks": [listener]})
    expected = [kept(m) for m in not_streamed["messages"] if m.type == "ai"]
    assert [kept(m) for m in fast["messages"] if m.type == "ai"] == expected
    assert [kept(m) for m in listened["messages"] if m.type == "ai"] == expected
    first_turn = next(m for m in fast["messages"] if m.type == "ai")
    assert [c["args"] for c in first_turn.tool_calls] == [WEATHER, FLIGHTS]
    assert first_turn.response_metadata["finish_reason"] == "tool_calls" and first_turn.usage_metadata["input_tokens"] == 120
    assert usage(fast) == usage(listened) == usage(not_streamed) == [("ok", "scripted-model", 120, 30, 150, True), ("ok", "scripted-model", 10, 10, 20, True)]
    # the listener saw the reply token by token, and the whole reply (its calls, its usage) at the end
    assert listener.tokens > 10
    assert [[c["args"] for c in m.tool_calls] for m in listener.replies] == [[WEATHER, FLIGHTS], []]
    assert listener.replies[0].usage_metadata["input_tokens"] == 120


async def test_token_streaming_to_graph_users_still_gets_every_chunk(openai_server):
    openai_server.script(*trip_script())
    graph = build_graph(model=client_for(openai_server), checkpointer=InMemorySaver())
    chunks = [message async for message, meta in graph.astream({"messages": [("user", "trip")]}, CONFIG, stream_mode="messages")
              if isinstance(message, AIMessageChunk) and meta["langgraph_node"] == "planner"]
    fragments: dict[int, str] = {}
    for chunk in chunks:
        for fragment in chunk.tool_call_chunks:
            fragments[fragment["index"]] = fragments.get(fragment["index"], "") + (fragment["args"] or "")
    assert [json.loads(text) for _, text in sorted(fragments.items())] == [WEATHER, FLIGHTS]
    assert sum(1 for c in chunks if c.tool_call_chunks) > 10  # fragment by fragment, not one merged message
    answer_tokens = [c.content for c in chunks if c.content]
    assert len(answer_tokens) > 3 and "".join(answer_tokens) == "Light rain in New York; one nonstop flight."


async def test_a_stream_with_crlf_line_ends_is_read_like_any_other(openai_server):
    openai_server.script(*trip_script(line_end="\r\n"))
    state = await run(openai_server)
    assert state.get("failure") is None
    assert [r["status"] for r in state["results"]] == ["ok", "ok"]
    assert state["messages"][-1].content == "Light rain in New York; one nonstop flight."


async def test_an_error_sent_mid_stream_ends_the_run_with_it_and_cancels_what_started(openai_server):
    probe = Probe(seconds=5)
    openai_server.script(calls(call("lookup", {"key": "a"}, id="a"), error_mid_stream="the server is overloaded", tail_delay_s=0.3))
    state = await run(openai_server, tools=probe.registry, max_retries=0)
    await asyncio.sleep(0.05)
    assert state["failure"]["reason"] == "model_error"
    assert "the server is overloaded" in state["failure"]["message"]
    assert probe.cancelled == ["a"]
    assert [(r["id"], r["status"]) for r in state["results"]] == [("a", "cancelled")]


class Place(BaseModel):
    name: str


class Where(BaseModel):
    place: Place
    note: str


async def test_a_call_with_nested_objects_and_braces_in_its_strings_starts_when_its_object_closes(openai_server):
    started: dict[str, float] = {}
    seen: list[dict] = []

    async def find(key: str, where: Where) -> str:
        started[key] = asyncio.get_running_loop().time()
        seen.append({"key": key, "where": where.model_dump()})
        return "found"

    registry = ToolRegistry()
    registry.register(find, name="find", description="Find a place.")
    tricky = {"key": "a}\"{\\", "where": {"place": {"name": "} {"}, "note": "{{\\\"}}"}}
    # one character per fragment; the stream goes on for a second after the object closes
    openai_server.script(calls(call("find", tricky, id="f"), fragment_size=1, tail_delay_s=1.0), answer("ok"))
    graph = build_graph(model=client_for(openai_server), tools=registry, checkpointer=InMemorySaver())
    loop = asyncio.get_running_loop()
    state = await graph.ainvoke({"messages": [("user", "find")]}, CONFIG)
    ended = loop.time()
    assert seen == [tricky]
    assert state["results"][0]["speculative"] is True
    assert started[tricky["key"]] < ended - 0.8, "it started when its JSON closed, not when the stream ended"


async def test_a_streamed_reply_read_to_its_end_leaves_the_connection_for_the_next_turn(openai_server):
    openai_server.script(*trip_script())
    state = await run(openai_server)
    assert state["messages"][-1].content == "Light rain in New York; one nonstop flight."
    assert len(openai_server.peers) == 2 and openai_server.peers[0] == openai_server.peers[1]


async def test_astream_events_users_get_each_token_and_the_whole_reply_at_the_end(openai_server):
    openai_server.script(*trip_script())
    graph = build_graph(model=client_for(openai_server), checkpointer=InMemorySaver())
    events = [e async for e in graph.astream_events({"messages": [("user", "trip")]}, CONFIG, version="v2")
              if e["event"] in ("on_chat_model_stream", "on_chat_model_end")]
    streamed = [e for e in events if e["event"] == "on_chat_model_stream"]
    ends = [e["data"]["output"] for e in events if e["event"] == "on_chat_model_end"]
    assert len(streamed) > 10
    assert [[c["args"] for c in m.tool_calls] for m in ends] == [[WEATHER, FLIGHTS], []]
    assert ends[1].content == "Light rain in New York; one nonstop flight."


async def expect_same_reply_as_not_streamed(openai_server, **wire):
    openai_server.script(*trip_script())
    not_streamed = await run(openai_server, streaming=False)
    openai_server.script(*trip_script(**wire))
    streamed = await run(openai_server)
    assert streamed.get("failure") is None
    assert [kept(m) for m in streamed["messages"] if m.type == "ai"] == [kept(m) for m in not_streamed["messages"] if m.type == "ai"]
    assert usage(streamed) == usage(not_streamed)
    assert [(r["id"], r["status"]) for r in streamed["results"]] == [("call_w", "ok"), ("call_f", "ok")]


@pytest.mark.parametrize("write_size, line_end", [(1, "\n"), (1, "\r\n"), (7, "\n"), (64, "\r\n"), (1 << 16, "\n"), (1 << 16, "\r\n")])
async def test_a_stream_cut_into_reads_anywhere_gives_the_same_reply(openai_server, write_size, line_end):
    # one byte per read puts a read boundary at every byte (inside "data: ", a JSON string, an escape,
    # a CRLF); 64 KiB brings the whole reply in one read, its frames read as one batch
    await expect_same_reply_as_not_streamed(openai_server, write_size=write_size, line_end=line_end)


async def test_chunks_whose_bytes_change_every_time_give_the_same_reply(openai_server):
    # OpenAI's API adds a random `obfuscation` string to every chunk: no two frames share their bytes
    await expect_same_reply_as_not_streamed(openai_server, obfuscation=True)


async def test_a_gzip_coded_stream_gives_the_same_reply(openai_server):
    await expect_same_reply_as_not_streamed(openai_server, gzip=True, write_size=3)


def test_an_argument_frame_is_read_by_its_bytes_only_where_parsing_it_whole_gives_the_same():
    def event(arguments: bytes, index: bytes = b"3", extra: bytes = b"") -> bytes:
        return (b'data: {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"' + extra
                + b', "choices": [{"index": 0, "delta": {"tool_calls": [{"index": ' + index
                + b', "function": {"arguments": "' + arguments + b'"}}]}, "finish_reason": null}]}')

    def whole(frame: bytes) -> dict:
        return json.loads(frame[6:])["choices"][0]["delta"]["tool_calls"][0]

    first = event(b'{\\"a')
    frame = _ArgumentFrame.of(first, json.loads(first[6:]))
    assert frame is not None and frame.index == 3 and frame.match(first) == '{"a'
    for text in ['{"a": "\u00e9\\"}', "\\", '"', "\u2028 é 😀 \\u0000 \x00\t", "", "x" * 5000, "}"]:
        variant = event(json.dumps(text).encode()[1:-1])
        assert {"index": 3, "function": {"arguments": frame.match(variant)}} == whole(variant) == {"index": 3, "function": {"arguments": text}}
    # not the same chunk with other text: parsed whole instead (or refused by the parser)
    for other in [event(b"a", index=b"4"), event(b"a", extra=b', "obfuscation": "x"'), event(b'a", "b'),
                  event(b"a\\"), event(b"line\nbreak"), event(b"\\x"), event(b"\\ud800"), event(b"a") + b" ", event(b"a") + b"}"]:
        assert frame.match(other) is None
    # the same chunk for another call: the next call's first text
    for index in (b"4", b"0", b"1234567"):
        variant = event(b"xy", index=index)
        again = frame.reindexed(variant)
        assert {"index": again.index, "function": {"arguments": again.match(variant)}} == whole(variant) == {"index": int(index), "function": {"arguments": "xy"}}
    for index in (b"04", b"-1", b"4.0", b"4e0", b"4 ", b'"4"', b"null"):
        again = frame.reindexed(event(b"xy", index=index))
        assert again is None or again.match(event(b"xy", index=index)) is None
    text_first = event(b"a").replace(b'{"index": 3, "function": {"arguments": "a"}}', b'{"function": {"arguments": "a"}, "index": 3}')
    assert _ArgumentFrame.of(text_first, json.loads(text_first[6:])).head is None  # the index after the text: not moved
    # frames a template is never made of: a new call (id, name), a key written with escapes, "arguments" twice
    head = event(b"").replace(b'"function": {', b'"id": "call_1", "function": {"name": "f", ')
    escaped = event(b"a").replace(b'"id": "chatcmpl-1"', b'"\\u0069d": "chatcmpl-1"')
    twice = event(b"a").replace(b'"model": "m"', b'"model": "arguments"')
    for refused in (head, escaped, twice):
        assert _ArgumentFrame.of(refused, json.loads(refused[6:])) is None
