"""The graph the load test serves: the trip example plus one side-effecting call per run.

Each run is the whole trip: the scripted model first sends `get_weather` with a wrong-typed
`search_flights` (rejected, sent back), then the corrected pair plus `hold_seat`, a side effect
that appends one line to `$TOOLRAIL_LOAD_SIDE_EFFECTS` (a duplicated line = a side effect that
happened twice), then answers. The script is stateless (the reply depends only on the
conversation it is sent), so any worker can serve any thread.

`graph` (for `langgraph dev`) reads its model endpoint from `$TOOLRAIL_LOAD_MODEL_URL` and its
ledger file from `$TOOLRAIL_LOAD_LEDGER`; `build_load_graph` is for workers with their own
checkpointer.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from toolrail.testing.openai_server import ScriptedReply, answer, call, calls
from toolrail.tools.demo import demo_tools
from toolrail.tools.registry import ToolRegistry, all_tools

ANSWER = "Light rain in NYC (high 9 °C); B6 916 is the cheapest nonstop, and a seat is on hold."
MODEL_LATENCY_S = 0.05  # each scripted reply: a pause before the first byte, as a real model has

load_tools = ToolRegistry()


@load_tools.register(side_effects=True, timeout=10)
async def hold_seat(flight: str, trip: str) -> str:
    """Put a seat on hold (a side effect: must never happen twice for one call).

    Args:
        flight: Flight number.
        trip: The trip (thread tag) it is for.
    """
    with open(os.environ["TOOLRAIL_LOAD_SIDE_EFFECTS"], "a") as ledger:
        ledger.write(f"hold {trip} {flight}\n")
    await asyncio.sleep(0.05)
    return f"seat held on {flight} for {trip}"


LOAD_TOOLS = all_tools(demo_tools, load_tools)


def trip_reply(body: dict[str, Any]) -> ScriptedReply:
    """Stateless: the reply the conversation so far calls for."""
    trip = next(m["content"] for m in body["messages"] if m["role"] == "user").split()[-1]
    turns = sum(1 for m in body["messages"] if m["role"] == "assistant")
    weather = call("get_weather", {"location": "New York"}, id=f"w{turns}")
    if turns == 0:
        bad = call("search_flights", {"origin": "SF", "destination": "NYC", "date": None, "max_stops": "nonstop"}, id="f0")
        return calls(weather, bad, delay_s=MODEL_LATENCY_S, fragment_delay_s=0.002)
    if turns == 1:
        flights = call("search_flights", {"origin": "SF", "destination": "NYC", "date": None, "max_stops": 0}, id="f1")
        hold = call("hold_seat", {"flight": "B6 916", "trip": trip}, id="h1")
        return calls(weather, flights, hold, delay_s=MODEL_LATENCY_S, fragment_delay_s=0.002)
    reply = answer(ANSWER)
    reply.delay_s = MODEL_LATENCY_S
    return reply


def prompt_for(trip: str) -> str:
    return f"Plan a trip from SF to NYC. What's the weather there and find me flights. Trip {trip}"


def build_load_graph(model_url: str, checkpointer: Any = None, ledger: Any = None):
    from toolrail.graphs.agent import build_graph
    from toolrail.models import openai_model

    return build_graph(model=openai_model("scripted", base_url=model_url, api_key="load-test"), tools=LOAD_TOOLS,
                       checkpointer=checkpointer, ledger=ledger)


def _served_graph():
    from toolrail.ledger import SqliteSideEffectLedger

    url = os.environ.get("TOOLRAIL_LOAD_MODEL_URL")
    if not url:
        return None
    return build_load_graph(url, ledger=SqliteSideEffectLedger(os.environ["TOOLRAIL_LOAD_LEDGER"]))


graph = _served_graph()
