"""toolrail's speed claims, each measured side by side with its baseline in the same run."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import statistics
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from toolrail.graphs.agent import build_graph
from toolrail.ledger import SqliteSideEffectLedger
from toolrail.recorded import RecordedCall, RecordedChatModel, RecordedTurn, Transcript, load_transcript
from toolrail.testing.openai_server import OpenAICompatibleServer, answer, call, calls
from toolrail.tools.demo import demo_tools
from toolrail.tools.registry import ToolRegistry

PROMPT = "benchmark"


def scripted_model(turns: list[RecordedTurn], prompt: str = PROMPT) -> RecordedChatModel:
    """Zero-latency in-process model: the same replies for toolrail and for the baseline."""
    transcript = Transcript(name="bench", description="benchmark script", prompt=prompt, turns=turns)
    return RecordedChatModel(transcript=transcript, chunk_delay_s=0.0)


def bare_graph(model: Any, tools: list, checkpointer: Any = None):
    """What a LangGraph user writes without toolrail: model node + prebuilt ToolNode."""

    async def agent(state: MessagesState):
        return {"messages": [await model.bind_tools(tools).ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, ["tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


async def _timed(graph: Any, thread: str) -> tuple[float, dict]:
    start = time.perf_counter()
    state = await graph.ainvoke({"messages": [HumanMessage(PROMPT)]}, {"configurable": {"thread_id": thread}})
    return time.perf_counter() - start, state


# --- fan-out -------------------------------------------------------------------------------


def _sleepers(seconds: float, sync: bool = False) -> ToolRegistry:
    registry = ToolRegistry()
    if sync:
        def pause(n: int) -> int:
            time.sleep(seconds)
            return n
    else:
        async def pause(n: int) -> int:
            await asyncio.sleep(seconds)
            return n

    registry.register(pause, name="pause", description="Wait a little.")
    return registry


def create_agent_graph(model: Any, tools: list, checkpointer: Any = None):
    """langchain's `create_agent`: one `Send` per tool call (its documented fan-out)."""
    from langchain.agents import create_agent

    return create_agent(model=model, tools=tools, checkpointer=checkpointer)


async def _fan_out_point(n_calls: int, seconds: float, sync: bool, store: str, repeats: int, folder: Path,
                         peers: tuple[str, ...]) -> dict[str, float]:
    """One size: toolrail, ToolNode and create_agent's per-call Send, the same script and tools.

    Each repeat runs every contender once, each from a collected heap and a fresh checkpoint
    file, in the next of every possible order: each contender goes first, and right after each
    other one, equally often. (A run leaves work behind it, the disk's queued writes among it,
    that the next run pays for; rotating three contenders put toolrail right after
    `create_agent` twice as often as ToolNode.) Run times are medians over the repeats; a ratio is the median of
    the ratios paired within each repeat (runs seconds apart share the machine's load, so a
    burst of another process's work moves both sides of a pair, not one side of the figure)."""
    tools = _sleepers(seconds, sync)
    turns = [
        RecordedTurn(tool_calls=[RecordedCall(id=f"c{i}", name="pause", arguments=json.dumps({"n": i})) for i in range(n_calls)]),
        RecordedTurn(content="done"),
    ]
    contenders = ("toolrail", *peers)
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    phase: list[float] = []
    orders = list(itertools.permutations(contenders))
    if repeats < len(orders):  # too few repeats for every order: rotations, so each still goes first equally often
        orders = [contenders[i:] + contenders[:i] for i in range(len(contenders))]
    for r in range(repeats):
        for name in orders[r % len(orders)]:
            path = folder / f"{name}-{n_calls}-{sync}-{store}-{r}.sqlite"
            async with _saver(store, path) as saver:
                if name == "toolrail":
                    ledger = SqliteSideEffectLedger(path.with_suffix(".ledger.sqlite")) if store == "sqlite" else None
                    # the per-turn call limit (default 256) is lifted to the size being measured
                    graph = build_graph(model=scripted_model(turns), tools=tools, checkpointer=saver, speculative=False, ledger=ledger,
                                        max_calls_per_turn=max(n_calls, 256))
                else:
                    make = bare_graph if name == "toolnode" else create_agent_graph
                    graph = make(scripted_model(turns), [t.runnable for t in tools], saver)
                gc.collect()
                wall, state = await _timed(graph, f"{name}-{r}")
            runs[name].append(wall)
            if name != "toolrail":
                continue
            if state.get("failure"):
                raise RuntimeError(f"fan-out benchmark run failed at N={n_calls}: {state['failure']['reason']}: {state['failure']['message']}")
            results = state["results"]
            phase.append(max(x["started_at"] + x["duration_s"] for x in results) - min(x["started_at"] for x in results))
    ours = statistics.median(runs["toolrail"])
    figures = {"repeats": repeats, "toolrail_run_s": ours,
               "tool_phase_over_slowest_call": statistics.median(phase) / seconds if seconds else None}
    for peer in peers:
        figures[f"{peer}_run_s"] = statistics.median(runs[peer])
        figures[f"toolrail_over_{peer}"] = statistics.median(a / b for a, b in zip(runs["toolrail"], runs[peer]))
    fastest = max(peers, key=lambda p: figures[f"toolrail_over_{p}"])  # the peer toolrail compares worst with
    figures["fastest_peer"] = fastest
    figures["toolrail_over_fastest_peer"] = figures[f"toolrail_over_{fastest}"]
    return figures


def _repeats_for(n_calls: int, repeats: int) -> int:
    """More repeats where a run is short and the differences are small (a few ms of ~100)."""
    if n_calls <= 10:
        return repeats * 10
    if n_calls <= 50:
        return repeats * 4
    if n_calls <= 200:
        return repeats * 2
    return repeats


@asynccontextmanager
async def _saver(store: str, path: Path):
    if store == "memory":
        yield InMemorySaver()
        return
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        yield saver


async def bench_fan_out(n_calls: int = 50, seconds: float = 0.1, repeats: int = 3) -> dict[str, float]:
    """One size, async tools, in memory: toolrail against ToolNode (the headline figure)."""
    with tempfile.TemporaryDirectory() as folder:
        figures = await _fan_out_point(n_calls, seconds, False, "memory", repeats, Path(folder), ("toolnode",))
    return {"calls": n_calls, "call_s": seconds, **figures}


SWEEP_SIZES = (1, 10, 50, 200, 1000)


async def bench_fan_out_sweep(sizes: tuple[int, ...] = SWEEP_SIZES, seconds: float = 0.1, sync_seconds: float = 0.01,
                              repeats: int = 3, peers: tuple[str, ...] = ("toolnode", "create_agent"),
                              more_repeats_for_short_runs: bool = True) -> dict[str, Any]:
    """Every size × async/sync tools × in-memory/SQLite checkpoints, each against every peer.

    Sync tools sleep `sync_seconds` (10 ms): the peers run sync tools on asyncio's default
    executor (min(32, cores + 4) threads), so 1,000 calls of 100 ms would take them ~17 s.

    `instant_memory_N`: async tools that return at once, in memory: each framework's own cost
    per run, which a 100 ms tool hides at small N (there every ratio is close to 1.0 by
    arithmetic: 100 ms + a few ms on both sides).
    """
    points = {}
    with tempfile.TemporaryDirectory() as folder:
        for store in ("memory", "sqlite"):
            for sync in (False, True):
                for n in sizes:
                    reps = _repeats_for(n, repeats) if more_repeats_for_short_runs else repeats
                    key = f"{'sync' if sync else 'async'}_{store}_{n}"
                    points[key] = await _fan_out_point(n, sync_seconds if sync else seconds, sync, store, reps, Path(folder), peers)
        for n in sizes:
            reps = _repeats_for(n, repeats) if more_repeats_for_short_runs else repeats
            points[f"instant_memory_{n}"] = await _fan_out_point(n, 0.0, False, "memory", reps, Path(folder), peers)
    worst = max(points.values(), key=lambda f: f["toolrail_over_fastest_peer"])
    return {
        "points": points,
        "worst_toolrail_over_fastest_peer": worst["toolrail_over_fastest_peer"],
        "worst_async_tool_phase_over_slowest_call_to_200": max(
            f["tool_phase_over_slowest_call"] for k, f in points.items() if k.startswith("async") and int(k.rsplit("_", 1)[1]) <= 200),
        "async_tool_phase_over_slowest_call_at_1000": max(
            (f["tool_phase_over_slowest_call"] for k, f in points.items() if k.startswith("async") and k.endswith("_1000")), default=0.0),
    }


# --- speculative dispatch -------------------------------------------------------------------


def _one_second_tools() -> ToolRegistry:
    registry = ToolRegistry()

    async def fetch(item: str) -> str:
        await asyncio.sleep(1.0)
        return f"fetched {item}"

    registry.register(fetch, name="fetch", description="Fetch an item (takes 1 s).")
    return registry


async def bench_speculative() -> dict[str, float]:
    """3 calls spread over a 3 s stream (complete at ~0, 1 and 2 s), each tool takes 1 s."""
    from langchain_openai import ChatOpenAI

    def script():
        spread = calls(
            call("fetch", {"item": "a"}, id="a"),
            call("fetch", {"item": "b"}, id="b", gap_before_s=1.0),
            call("fetch", {"item": "c"}, id="c", gap_before_s=1.0),
            tail_delay_s=1.0,
        )
        return [spread, answer("done")]

    async def one(**options: Any) -> float:
        with OpenAICompatibleServer(script()) as server:
            model = ChatOpenAI(model="scripted", base_url=server.base_url, api_key="bench", max_retries=0)
            graph = build_graph(model=model, tools=_one_second_tools(), checkpointer=InMemorySaver(), **options)
            return (await _timed(graph, "spec"))[0]

    speculative = await one(speculative=True)
    waiting = await one(speculative=False)
    sequential = await one(speculative=False, max_concurrency=1)
    return {
        "speculative_s": speculative,
        "no_speculation_s": waiting,
        "sequential_s": sequential,
        "speculative_over_no_speculation": speculative / waiting,
        "speculative_over_sequential": speculative / sequential,
    }


# --- validation -----------------------------------------------------------------------------


def _validation_payloads() -> dict[str, tuple[Any, str]]:
    """(tool, raw arguments) by size: the trip call (~80 bytes), then ~1 KB and ~100 KB of legs,
    and ~1.5 KB of legs whose strings hold colons."""
    from pydantic import BaseModel

    from toolrail.tools.registry import ToolRegistry

    class Leg(BaseModel):
        origin: str
        destination: str
        day: int
        max_stops: int | None = None

    class Itinerary(BaseModel):
        traveller: str
        legs: list[Leg]

    registry = ToolRegistry()
    registry.register(lambda traveller, legs: len(legs), name="book_itinerary", description="Book legs.", args_model=Itinerary)
    itinerary = registry.get("book_itinerary")

    def legs(n: int, destination: str = "city {i}") -> str:
        return json.dumps({"traveller": "dana", "legs": [
            {"origin": "SF", "destination": destination.format(i=i), "day": i, "max_stops": i % 3 or None} for i in range(n)]})

    return {
        "small": (demo_tools.get("search_flights"), json.dumps({"origin": "SF", "destination": "NYC", "date": "2026-12-01", "max_stops": 1})),
        "medium": (itinerary, legs(16)),
        "large": (itinerary, legs(1600)),
        # strings with colons (times, URLs) spoil the plain colon count: the proof's second bound
        "medium_colons": (itinerary, legs(16, "https://example.com/city/{i}?at=10:30")),
    }


def bench_validation(n: int = 20000) -> dict[str, Any]:
    """One valid call, from raw JSON text to a verdict, against every validator a peer would use.

    toolrail's side is `validate_arguments`, the one function every call goes through on its way
    to its tool: the strict-JSON rules (size, depth, NaN/Infinity, duplicate keys) and then
    Pydantic. Swept over argument sizes; rounds interleaved, best of seven (the machine is shared).
    """
    import fastjsonschema
    import jsonschema
    import jsonschema_rs

    from toolrail.nodes.validate import validate_arguments

    figures: dict[str, Any] = {}
    for size, (tool, raw) in _validation_payloads().items():
        model = tool.args_model
        compiled = fastjsonschema.compile(tool.parameters)
        rust = jsonschema_rs.validator_for(tool.parameters)
        python = jsonschema.Draft202012Validator(tool.parameters)
        contenders = {
            "toolrail": lambda: validate_arguments(tool, raw),
            "pydantic": lambda: model.model_validate_json(raw),
            "fastjsonschema": lambda: compiled(json.loads(raw)),
            "jsonschema_rs": lambda: rust.validate(json.loads(raw)),
            "jsonschema": lambda: python.validate(json.loads(raw)),
        }
        rounds = max(1, n * 80 // len(raw))  # about the same bytes per size
        timings: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(7):
            for name, fn in contenders.items():
                count = rounds if name != "jsonschema" else max(1, rounds // 10)
                start = time.perf_counter()
                for _ in range(count):
                    fn()
                timings[name].append((time.perf_counter() - start) / count)
        best = {name: min(values) for name, values in timings.items()}
        point: dict[str, Any] = {"bytes": len(raw), **{f"{name}_us": value * 1e6 for name, value in best.items()}}
        for peer in ("pydantic", "fastjsonschema", "jsonschema_rs", "jsonschema"):
            point[f"toolrail_over_{peer}"] = best["toolrail"] / best[peer]
        point["fastest_peer"] = min(("fastjsonschema", "jsonschema_rs", "jsonschema"), key=best.get)
        figures[size] = point
    figures.update({k: v for k, v in figures["small"].items() if k != "bytes"})  # the headline: the trip call
    sizes = ("small", "medium", "large", "medium_colons")
    figures["worst_toolrail_over_pydantic"] = max(figures[s]["toolrail_over_pydantic"] for s in sizes)
    figures["worst_toolrail_over_fastest_schema_validator"] = max(
        figures[s][f"toolrail_over_{figures[s]['fastest_peer']}"] for s in sizes)
    return figures


# --- streaming ------------------------------------------------------------------------------


def _reply_chunks(n_calls: int) -> list[Any]:
    """A reply of `n_calls` calls as an OpenAI-compatible server streams it (12-character pieces)."""
    from langchain_core.messages import AIMessageChunk

    chunks = []
    for i in range(n_calls):
        text = json.dumps({"origin": "SF", "destination": f"city {i}", "date": None, "max_stops": 1})
        for start in range(0, len(text), 12):
            head = {"id": f"call_{i}", "name": "search_flights"} if start == 0 else {"id": None, "name": None}
            chunks.append(AIMessageChunk(content="", tool_call_chunks=[{"index": i, "args": text[start:start + 12], "type": "tool_call_chunk", **head}]))
    chunks.append(AIMessageChunk(content="", response_metadata={"finish_reason": "tool_calls"}))
    return chunks


async def bench_streaming(n_calls: int = 1000, repeats: int = 5, chatopenai: bool = True,
                          planner_repeats: int = 15) -> dict[str, Any]:
    """Planner time for one reply of N calls: streamed chunk by chunk vs the same reply in one piece,
    from a chat model's own `_astream` (any LangChain model: chunks made in process); then, with
    `chatopenai`, the same reply through the real `ChatOpenAI` client (`bench_streaming_openai`).

    Two figures, both reported. `streamed_planner_ms_N` / `whole_reply_planner_ms_N` time the
    model's `_astream` as a LangChain model runs it: the streamed side's model builds one
    `ChatGenerationChunk` per chunk (6,901 for 1,000 calls) inside the timing, the whole side one
    — model cost, not planner cost. `planner_only_*` times the same planner on the same reply with
    the model's output made once before the timing (the generation chunks pre-built on both sides),
    so the ratio is what toolrail's planner adds for reading the reply streamed; and
    `model_chunk_construction_ms_N` is what building those chunks costs on its own. Each figure
    is the best of `planner_repeats` rounds (cheap, in process); `repeats` is for `ChatOpenAI`.

    The fastest peer of `planner_only_*` is a loop that only reads the same pre-built chunks
    (`_bare_read`: each chunk's fragments and the fields a reply is merged from, nothing done
    with them), timed side by side: `planner_only_floor_over_whole_reply` is the ratio a planner
    whose own work per chunk cost nothing would have. Pre-built chunks are 6,901 langchain
    objects read once each, mostly from memory rather than cache (a live stream's chunk is read
    just after it is made), so that read is most of the streamed side's extra time."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.outputs import ChatGenerationChunk, ChatResult, ChatGeneration

    from toolrail.calls import merge_chunks
    from toolrail.execution import CallExecutor
    from toolrail.nodes.planner import make_planner
    from toolrail.limits import RunLimits
    from toolrail.speculation import Speculation

    class Replay(BaseChatModel):
        """Replays fixed chunks; they are not a model field (langchain would repr them per call).
        With `prebuilt`, the generation chunks are made once here, not in `_astream`."""

        def __init__(self, chunks: list, prebuilt: bool = False) -> None:
            super().__init__()
            object.__setattr__(self, "chunks", chunks)
            object.__setattr__(self, "generations", [ChatGenerationChunk(message=c) for c in chunks] if prebuilt else None)

        @property
        def _llm_type(self) -> str:
            return "bench-replay"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            return ChatResult(generations=[ChatGeneration(message=merge_chunks(self.chunks))])

        async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
            if self.generations is not None:
                for generation in self.generations:
                    yield generation
                return
            for chunk in self.chunks:
                yield ChatGenerationChunk(message=chunk)

    figures: dict[str, Any] = {}
    for size in (n_calls // 10, n_calls):
        streamed_chunks = _reply_chunks(size)
        whole = [merge_chunks(streamed_chunks)]
        state = {"messages": [HumanMessage(PROMPT)]}
        sides = {"streamed": (streamed_chunks, False), "whole": (whole, False),
                 "planner_only_streamed": (streamed_chunks, True), "planner_only_whole": (whole, True)}
        timings: dict[str, list[float]] = {name: [] for name in (*sides, "chunk_construction", "bare_read_streamed", "bare_read_whole")}
        for _ in range(planner_repeats):  # in process, ~0.15 s a round: the best of many, not of 5
            for name, (chunks, prebuilt) in sides.items():
                planner = _planner_only(make_planner(Replay(chunks, prebuilt), demo_tools, Speculation(CallExecutor(), enabled=False),
                                                     limits=RunLimits(max_calls_per_turn=max(size, 256))))
                gc.collect()  # each side starts from the same heap, not the other's garbage
                start = time.perf_counter()
                update = await planner.ainvoke(state, {"configurable": {"thread_id": "bench"}})
                timings[name].append(time.perf_counter() - start)
                assert len(update.get("turn_calls") or []) == size, update.get("failure")
            for name, chunks in (("bare_read_streamed", streamed_chunks), ("bare_read_whole", whole)):
                model = Replay(chunks, prebuilt=True)
                gc.collect()
                start = time.perf_counter()
                await _bare_read(model)
                timings[name].append(time.perf_counter() - start)
            gc.collect()
            start = time.perf_counter()
            built = [ChatGenerationChunk(message=c) for c in streamed_chunks]
            timings["chunk_construction"].append(time.perf_counter() - start)
            del built
        best = {name: min(values) * 1000 for name, values in timings.items()}
        figures[f"chunks_{size}"] = len(streamed_chunks)
        figures[f"streamed_planner_ms_{size}"] = best["streamed"]
        figures[f"whole_reply_planner_ms_{size}"] = best["whole"]
        figures[f"planner_only_streamed_ms_{size}"] = best["planner_only_streamed"]
        figures[f"planner_only_whole_reply_ms_{size}"] = best["planner_only_whole"]
        figures[f"model_chunk_construction_ms_{size}"] = best["chunk_construction"]
        figures[f"bare_read_streamed_ms_{size}"] = best["bare_read_streamed"]
        figures[f"bare_read_whole_reply_ms_{size}"] = best["bare_read_whole"]
    small, large = n_calls // 10, n_calls
    # with the model's chunk construction in the streamed side's timing (see the docstring)
    figures["streamed_over_whole_reply"] = figures[f"streamed_planner_ms_{large}"] / figures[f"whole_reply_planner_ms_{large}"]
    # the planner alone: the model's output made before the timing on both sides
    figures["planner_only_streamed_over_whole_reply"] = (figures[f"planner_only_streamed_ms_{large}"]
                                                         / figures[f"planner_only_whole_reply_ms_{large}"])
    # its floor: the whole reply's planner time plus what only reading the streamed chunks adds
    figures["planner_only_floor_over_whole_reply"] = (
        (figures[f"planner_only_whole_reply_ms_{large}"] + figures[f"bare_read_streamed_ms_{large}"] - figures[f"bare_read_whole_reply_ms_{large}"])
        / figures[f"planner_only_whole_reply_ms_{large}"])
    # what the planner's own work costs per chunk, beyond that read (the streamed side's extra time less the read's)
    figures["planner_only_own_us_per_chunk"] = 1000 * (
        (figures[f"planner_only_streamed_ms_{large}"] - figures[f"planner_only_whole_reply_ms_{large}"])
        - (figures[f"bare_read_streamed_ms_{large}"] - figures[f"bare_read_whole_reply_ms_{large}"])) / (figures[f"chunks_{large}"] - 1)
    # O(N): the cost per call stays flat from N/10 to N calls (1.0 = perfectly linear).
    figures["per_call_growth_10x_calls"] = (figures[f"streamed_planner_ms_{large}"] / large) / (figures[f"streamed_planner_ms_{small}"] / small)
    if chatopenai:
        figures.update({f"chatopenai_{k}": v for k, v in (await bench_streaming_openai(n_calls, repeats)).items() if k != "calls"})
    return {"calls": n_calls, **figures}


async def _bare_read(model: Any) -> None:
    """Reads a model's streamed reply and does nothing with it: per chunk, what any reader of
    langchain's chunks touches (the message, its fragments' index, id, name and text, and the
    fields a reply is merged from). The floor under the planner's streamed time."""
    async for generation in model._astream([]):
        generation.generation_info
        message = generation.message
        for fragment in message.tool_call_chunks:
            fragment.get("index"), fragment.get("id"), fragment.get("name"), fragment.get("args")
        message.content, message.usage_metadata, message.id, message.additional_kwargs, message.response_metadata


def _openai_reply(n_calls: int) -> Any:
    """The benchmark's reply as the local OpenAI-compatible server scripts it (12-character fragments)."""
    return calls(*[call("search_flights", {"origin": "SF", "destination": f"city {i}", "date": None, "max_stops": 1}, id=f"call_{i}")
                   for i in range(n_calls)], fragment_size=12)


def _in_process_transport(n_calls: int) -> Any:
    """An httpx transport that answers in this process with exactly the bytes the local server
    sends (its own `sse_frames` / `completion`), an SSE frame at a time: the real client's whole
    path (SDK, SSE decoding, langchain-openai) without a socket or a server thread."""
    import httpx2

    server = OpenAICompatibleServer()
    server._httpd.server_close()  # never started: only its wire format is used

    rendered: dict[bool, Any] = {}  # rendered once (the warm-up round), so the timed rounds measure the client only

    async def handle(request: Any) -> Any:
        body = json.loads(request.content)
        streamed = bool(body.get("stream"))
        if streamed not in rendered:
            reply = _openai_reply(n_calls)
            rendered[streamed] = ([frame.encode() for frame, _pause in server.sse_frames(body, reply)] if streamed
                                  else json.dumps(server.completion(body, reply)).encode())
        if not streamed:
            return httpx2.Response(200, headers={"content-type": "application/json"}, content=rendered[False])

        async def frames():
            for frame in rendered[True]:
                yield frame

        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=frames())

    return httpx2.MockTransport(handle)


async def _openai_planner_times(base_url: str, n_calls: int, repeats: int, http_client: Any = None) -> dict[str, float]:
    """Planner time (wall and this process's CPU) for the reply through `ChatOpenAI`, streamed and not, paired per repeat;
    and, as the floor under the streamed figure, the SDK's own HTTP client reading the same stream and doing
    nothing with its bytes (`bare_http_read`)."""
    import openai
    from langchain_openai import ChatOpenAI

    from toolrail.execution import CallExecutor
    from toolrail.limits import RunLimits
    from toolrail.nodes.planner import make_planner
    from toolrail.speculation import Speculation

    from langchain_core.callbacks import AsyncCallbackHandler

    class TokenListener(AsyncCallbackHandler):
        """What LangSmith or `stream_mode="messages"` attach: with it, every chunk goes through the callbacks."""

        async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            pass

    kinds = ("streamed", "whole_reply", "streamed_listened", "bare_http_read")
    timings: dict[str, list[float]] = {key: [] for kind in kinds for key in (kind, f"{kind}_cpu")}
    state = {"messages": [HumanMessage(PROMPT)]}
    bare_client = http_client or openai.DefaultAsyncHttpxClient()
    request = json.dumps({"model": "bench", "messages": [{"role": "user", "content": PROMPT}], "stream": True}).encode()
    for _ in range(repeats + 1):  # the first round warms the client up and is not counted
        for name in kinds:
            if name == "bare_http_read":
                gc.collect()
                wall, cpu = time.perf_counter(), time.process_time()
                async with bare_client.stream("POST", f"{base_url}/chat/completions", content=request,
                                              headers={"content-type": "application/json"}) as response:
                    async for _block in response.aiter_raw():
                        pass
                timings[name].append(time.perf_counter() - wall)
                timings[f"{name}_cpu"].append(time.process_time() - cpu)
                continue
            model = ChatOpenAI(model="bench", base_url=base_url, api_key="bench", max_retries=0, timeout=120,
                               disable_streaming=name == "whole_reply", http_async_client=http_client)
            planner = _planner_only(make_planner(model, demo_tools, Speculation(CallExecutor(), enabled=False),
                                                 limits=RunLimits(max_calls_per_turn=max(n_calls, 256))))
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            config = {"configurable": {"thread_id": "bench"}, **({"callbacks": [TokenListener()]} if name == "streamed_listened" else {})}
            update = await planner.ainvoke(state, config)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            assert len(update.get("turn_calls") or []) == n_calls, update.get("failure")
            timings[name].append(wall)
            timings[f"{name}_cpu"].append(cpu)
    if http_client is None:
        await bare_client.aclose()
    return {key: statistics.median(values[1:]) for key, values in timings.items()}


async def bench_streaming_openai(n_calls: int = 1000, repeats: int = 5) -> dict[str, Any]:
    """The same N-call reply through the real `ChatOpenAI` client, streamed (SSE, 12-character
    fragments) vs not (one JSON body): in process (`_in_process_transport`) and over the real
    wire from the local OpenAI-compatible server, run in its own process so that its work
    (rendering ~7 frames per call) is not on this process's CPU. The wire's wall time includes
    the server's pace; the client's CPU time is what toolrail and the client libraries spend."""
    import subprocess
    import sys

    figures: dict[str, Any] = {"calls": n_calls}
    in_process = await _openai_planner_times("http://bench.invalid/v1", n_calls, repeats,
                                             http_client=_openai_async_client(_in_process_transport(n_calls)))
    figures.update({f"in_process_{k}_ms": v * 1000 for k, v in in_process.items()})
    script = ("import sys, time\n"
              "from benchmarks.core import _openai_reply\n"
              "from toolrail.testing.openai_server import OpenAICompatibleServer\n"
              f"with OpenAICompatibleServer(lambda body: _openai_reply({n_calls})) as server:\n"
              "    print(server.base_url, flush=True)\n"
              "    sys.stdin.read()\n")
    root = str(Path(__file__).resolve().parents[1])
    server = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        base_url = server.stdout.readline().strip()
        wire = await _openai_planner_times(base_url, n_calls, repeats)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    figures.update({f"wire_{k}_ms": v * 1000 for k, v in wire.items()})
    for where in ("in_process", "wire"):
        figures[f"{where}_streamed_over_whole_reply"] = figures[f"{where}_streamed_ms"] / figures[f"{where}_whole_reply_ms"]
    for where in ("in_process", "wire"):
        figures[f"{where}_streamed_over_whole_reply_cpu"] = figures[f"{where}_streamed_cpu_ms"] / figures[f"{where}_whole_reply_cpu_ms"]
        # the planner's CPU over what the HTTP client alone spends reading the same stream
        figures[f"{where}_streamed_over_bare_http_read_cpu"] = figures[f"{where}_streamed_cpu_ms"] / figures[f"{where}_bare_http_read_cpu_ms"]
        figures[f"{where}_streamed_listened_over_whole_reply_cpu"] = figures[f"{where}_streamed_listened_cpu_ms"] / figures[f"{where}_whole_reply_cpu_ms"]
    return figures


def _openai_async_client(transport: Any) -> Any:
    import openai

    return openai.DefaultAsyncHttpxClient(transport=transport)


def _planner_only(planner: Any) -> Any:
    """The planner node alone in a graph (it needs LangGraph's run context), no checkpointer."""
    from toolrail.state import AgentState

    builder = StateGraph(AgentState)
    builder.add_node("planner", planner)
    builder.add_edge(START, "planner")
    builder.add_edge("planner", END)
    return builder.compile()


# --- checkpoint size --------------------------------------------------------------------------


CITIES = ("Chicago", "New York", "San Francisco")


async def bench_checkpoints(turns: int = 50, calls_per_turn: int = 2, repeats: int = 3, window: int = 10) -> dict[str, Any]:
    """Bytes each turn adds to the SQLite checkpoint file, toolrail vs bare LangGraph, for the same
    conversation (a user message, the calls, their results, an answer, per turn), and how a
    turn's time grows: the median of turns 1..`window` against the median of the last `window`,
    pooled over the repeats (10 turns x 3 repeats a side: one slow fsync of the shared disk is
    one sample of 30, not a third of the figure). Wall time, and this process's CPU time (what
    the turn computes, without the waits for the disk), each as its own ratio.

    Both graphs run side by side, a turn of one then the same turn of the other, after a short
    warm-up thread each (so turn 1 is not also the process's first run). The long thread's last
    `window` turns are measured interleaved with turns 1..`window` of a new thread, so that
    early and late turns see the same load of the shared machine (measured minutes apart, a
    change in another process's disk use reads as growth). Only the long thread's rows count
    for bytes; toolrail's own records (result journal, side-effect ledger) count too."""
    import sqlite3

    script = []
    for t in range(turns):
        script.append(RecordedTurn(tool_calls=[
            RecordedCall(id=f"t{t}c{i}", name="get_weather", arguments=json.dumps({"location": CITIES[(t + i) % 3]}))
            for i in range(calls_per_turn)]))
        script.append(RecordedTurn(content=f"Answer {t}: " + "the weather is fine. " * 5))
    warm_up = script[:2]
    names = ("toolrail", "bare")
    figures: dict[str, Any] = {"turns": turns, "calls_per_turn": calls_per_turn, "repeats": repeats, "window": window}
    per_repeat: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(repeats):
            paths = {name: Path(folder) / f"{name}-{r}.sqlite" for name in names}
            ledger_path = Path(folder) / f"toolrail-{r}-ledger.sqlite"
            per_turn_s: dict[str, list[float]] = {name: [] for name in names}
            per_turn_cpu_s: dict[str, list[float]] = {name: [] for name in names}
            async with AsyncSqliteSaver.from_conn_string(str(paths["toolrail"])) as ours, \
                    AsyncSqliteSaver.from_conn_string(str(paths["bare"])) as theirs:
                def graphs(turn_script: list) -> dict[str, Any]:
                    return {
                        "toolrail": build_graph(model=scripted_model(turn_script), tools=demo_tools, checkpointer=ours, speculative=False,
                                                ledger=SqliteSideEffectLedger(ledger_path)),
                        "bare": bare_graph(scripted_model(turn_script), [demo_tools.get("get_weather").runnable], theirs),
                    }
                for name, graph in graphs(warm_up).items():
                    await graph.ainvoke({"messages": [HumanMessage(PROMPT)]}, {"configurable": {"thread_id": "warm-up"}})
                measured = graphs(script)

                async def turn(name: str, thread: str, t: int, into: str) -> None:
                    gc.collect()
                    start, cpu = time.perf_counter(), time.process_time()
                    await measured[name].ainvoke({"messages": [HumanMessage(PROMPT if t == 0 else f"and then {t}")]},
                                                 {"configurable": {"thread_id": thread}})
                    per_turn_s[name].append(time.perf_counter() - start)
                    per_turn_cpu_s[name].append(time.process_time() - cpu)
                    timed[name][into].append((per_turn_s[name][-1], per_turn_cpu_s[name][-1]))

                timed: dict[str, dict[str, list[tuple[float, float]]]] = {name: {"first": [], "last": [], "middle": []} for name in names}
                for t in range(turns - window):  # the long thread, up to its last `window` turns
                    for name in (names if t % 2 == 0 else names[::-1]):  # alternate who goes first
                        await turn(name, "conversation", t, "middle")
                # Its last `window` turns, each right beside the same-numbered early turn of a new thread
                # ("fresh"): early and late turns are measured under the same load of the shared machine.
                for k in range(window):
                    for name in (names if k % 2 == 0 else names[::-1]):
                        for thread, t, into in (("fresh", k, "first"), ("conversation", turns - window + k, "last"))[::1 if k % 2 == 0 else -1]:
                            await turn(name, thread, t, into)
            for name in names:
                with sqlite3.connect(paths[name]) as db:
                    size = sum(db.execute("SELECT coalesce(sum(length(checkpoint)), 0) + coalesce(sum(length(metadata)), 0) FROM checkpoints"
                                          " WHERE thread_id = 'conversation'").fetchone())
                    size += db.execute("SELECT coalesce(sum(length(value)), 0) FROM writes WHERE thread_id = 'conversation'").fetchone()[0]
                if name == "toolrail":  # toolrail's own records count too
                    with sqlite3.connect(ledger_path) as db:
                        for table, key in (("toolrail_call_results", "scope"), ("toolrail_call_ledger", "thread")):
                            if db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                                size += sum(len(str(value)) for row in db.execute(f"SELECT * FROM {table} WHERE {key} LIKE 'conversation%'")
                                            for value in row)
                per_repeat.setdefault(f"{name}_bytes_per_turn", []).append(size / turns)
                for into in ("first", "last"):
                    per_repeat.setdefault(f"{name}_{into}_turns_ms", []).extend(wall * 1000 for wall, _ in timed[name][into])
                    per_repeat.setdefault(f"{name}_{into}_turns_cpu_ms", []).extend(cpu * 1000 for _, cpu in timed[name][into])
    for key, values in per_repeat.items():  # medians over every repeat's turns (pooled), so the ratio is of the figures shown
        figures[key] = statistics.median(values)
    for name in names:
        figures[f"{name}_last_turns_over_first_turns_s"] = figures[f"{name}_last_turns_ms"] / figures[f"{name}_first_turns_ms"]
        figures[f"{name}_last_turns_over_first_turns_cpu"] = figures[f"{name}_last_turns_cpu_ms"] / figures[f"{name}_first_turns_cpu_ms"]
    figures["toolrail_over_bare_bytes_per_turn"] = figures["toolrail_bytes_per_turn"] / figures["bare_bytes_per_turn"]
    return figures


# --- graph overhead -------------------------------------------------------------------------


async def bench_graph_overhead(runs: int = 20) -> dict[str, float]:
    """The trip example's turns, zero model latency, SQLite checkpoints for both."""
    trip = load_transcript("trip")
    turns = trip.turns
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as folder:
        async with AsyncSqliteSaver.from_conn_string(str(Path(folder) / "ours.sqlite")) as saver_a, \
                AsyncSqliteSaver.from_conn_string(str(Path(folder) / "theirs.sqlite")) as saver_b:
            graph = build_graph(model=scripted_model(turns), checkpointer=saver_a)
            baseline = bare_graph(scripted_model(turns), [t.runnable for t in demo_tools], saver_b)
            for r in range(runs):
                ours.append((await _timed(graph, f"ours-{r}"))[0])
                theirs.append((await _timed(baseline, f"theirs-{r}"))[0])
    return {
        "runs": runs,
        "toolrail_run_ms": statistics.median(ours) * 1000,
        "bare_langgraph_run_ms": statistics.median(theirs) * 1000,
        "toolrail_over_bare": statistics.median(ours) / statistics.median(theirs),
    }
