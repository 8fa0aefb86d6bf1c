"""`langgraph dev` serves the graph; the langgraph_sdk client drives the trip example over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from langgraph_sdk import get_client

from conftest import TRIP_PROMPT
from test_postgres import _free_port

ROOT = Path(__file__).resolve().parents[1]


def _shipped_config_in(workdir: Path) -> Path:
    """langgraph.json as shipped, its relative paths made absolute so the server can run elsewhere."""
    config = json.loads((ROOT / "langgraph.json").read_text())
    config["dependencies"] = [str(ROOT / d) for d in config["dependencies"]]
    config["graphs"] = {name: str(ROOT / spec) for name, spec in config["graphs"].items()}
    (workdir / "langgraph.json").write_text(json.dumps(config))
    return workdir / "langgraph.json"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LANGSMITH_", "LANGCHAIN_"))}
    env.update(LANGGRAPH_CLI_NO_ANALYTICS="1", LANGSMITH_TRACING="false")
    workdir = tmp_path_factory.mktemp("server")  # langgraph dev keeps its state (.langgraph_api) in its cwd
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "langgraph_cli", "dev", "--config", str(_shipped_config_in(workdir)),
         "--port", str(port), "--host", "127.0.0.1", "--no-browser", "--no-reload"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/ok", timeout=2)
            break
        except OSError:
            assert server.poll() is None, f"langgraph dev exited: {Path(log.name).read_text()[-2000:]}"
            assert time.monotonic() < deadline, "langgraph dev did not become healthy in 90 s"
            time.sleep(0.5)
    try:
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


async def test_the_server_runs_the_trip_example_with_streaming_and_history(server_url):
    client = get_client(url=server_url)
    assistants = await client.assistants.search(graph_id="agent")
    assert assistants, "langgraph.json's graph 'agent' is registered"
    thread = await client.threads.create()
    nodes = []
    async for part in client.runs.stream(thread["thread_id"], "agent", input={"messages": [{"role": "user", "content": TRIP_PROMPT}]}, stream_mode="updates"):
        if part.event == "updates":
            nodes += list(part.data)
    # Turn 1 is invalid (validate words the errors); turn 2 is valid as it stands, so the planner
    # validates it and one tools task runs both calls.
    assert nodes.count("planner") == 3 and nodes.count("validate") == 1 and nodes.count("tools") == 1
    state = await client.threads.get_state(thread["thread_id"])
    assert state["values"]["messages"][-1]["content"].startswith("Here's your SF")
    assert [v["valid"] for v in state["values"]["verdicts"]] == [True, False, True, True]
    history = await client.threads.get_history(thread["thread_id"], limit=50)
    assert len(history) == 7 and history[0]["next"] == []


async def test_the_served_graph_pauses_for_approval_and_resumes_with_a_decision(server_url):
    """A run asks for approval through its config; the SDK sees the question, answers it with
    `Command(resume=...)`, and the approved call runs exactly once."""
    client = get_client(url=server_url)
    thread = await client.threads.create()
    config = {"configurable": {"approve_tools": ["search_flights"]}}
    asked = []
    async for part in client.runs.stream(thread["thread_id"], "agent", input={"messages": [{"role": "user", "content": TRIP_PROMPT}]},
                                         config=config, stream_mode="updates"):
        if part.event == "updates" and "__interrupt__" in part.data:
            asked += [i["value"] for i in part.data["__interrupt__"]]
    state = await client.threads.get_state(thread["thread_id"])
    assert state["next"] == ["approve"]
    (question,) = [i["value"] for task in state["tasks"] for i in task["interrupts"]]
    assert asked == [question], "the streamed run showed the question as it paused"
    assert question["type"] == "tool_approval"
    assert [(c["id"], c["name"], c["args"]["max_stops"]) for c in question["calls"]] == [("call_flights_2", "search_flights", 0)]
    assert not [r for r in state["values"]["results"] if r["name"] == "search_flights"], "not run before the decision"

    await client.runs.wait(thread["thread_id"], "agent", command={"resume": {"decisions": {"call_flights_2": {"type": "approve"}}, "by": "sdk"}},
                           config=config)
    state = await client.threads.get_state(thread["thread_id"])
    assert state["next"] == [] and state["values"]["messages"][-1]["content"].startswith("Here's your SF")
    assert [r["status"] for r in state["values"]["results"] if r["name"] == "search_flights"] == ["ok"]
    assert [(d["name"], d["decision"], d["by"]) for d in state["values"]["decisions"]] == [("search_flights", "approve", "sdk")]
