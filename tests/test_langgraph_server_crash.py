"""The served graph keeps exactly-once: `langgraph dev` is SIGKILLed while a side-effecting tool
runs; after a restart the client runs the thread again and the side effect happened once.

`langgraph dev` keeps its checkpoints in memory and writes them to disk every 10 s, so the
restarted server has lost the run's latest steps and the model asks for the same call again:
only the ledger (TOOLRAIL_LEDGER_URL, a SQLite file here) stands between it and a second charge.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from langgraph_sdk import get_client

from test_postgres import _free_port
from toolrail.testing.openai_server import OpenAICompatibleServer, ScriptedReply, answer, call

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def charge_until_answered(body: dict) -> ScriptedReply:
    """Stateless: until the model has seen the charge's result, it asks for the same charge."""
    if any(m["role"] == "tool" for m in body["messages"]):
        return answer("charged, done")
    return ScriptedReply(tool_calls=[call("charge", {"order": "a", "thread": "served"}, id="charge_a")])


def start_server(workdir: Path, port: int, env: dict) -> subprocess.Popen:
    config = {"dependencies": [str(ROOT)], "graphs": {"agent": str(HERE / "served_harness_graph.py:graph")}}
    (workdir / "langgraph.json").write_text(json.dumps(config))
    log = (workdir / "server.log").open("a")
    server = subprocess.Popen(
        [sys.executable, "-m", "langgraph_cli", "dev", "--config", str(workdir / "langgraph.json"),
         "--port", str(port), "--host", "127.0.0.1", "--no-browser", "--no-reload"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=2)
            return server
        except OSError:
            assert server.poll() is None, (workdir / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "langgraph dev did not become healthy in 90 s"
            time.sleep(0.5)


async def test_a_server_killed_mid_call_runs_the_side_effect_once(tmp_path):
    effects = tmp_path / "effects.log"
    effects.touch()
    with OpenAICompatibleServer(charge_until_answered) as model:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LANGSMITH_", "LANGCHAIN_", "TOOLRAIL_"))}
        env.update(LANGGRAPH_CLI_NO_ANALYTICS="1", LANGSMITH_TRACING="false", OPENAI_BASE_URL=model.base_url,
                   OPENAI_API_KEY="test", TOOLRAIL_LEDGER_URL=str(tmp_path / "ledger.sqlite"),
                   TOOLRAIL_HARNESS_LEDGER=str(effects), PYTHONPATH=str(HERE))
        port = _free_port()
        server = start_server(tmp_path, port, env)
        try:
            client = get_client(url=f"http://127.0.0.1:{port}")
            thread = (await client.threads.create())["thread_id"]
            time.sleep(11)  # one flush of the dev server's state: the thread survives the kill
            request = {"messages": [{"role": "user", "content": "charge order a"}]}
            await client.runs.create(thread, "agent", input=request)
            deadline = time.monotonic() + 60
            while not effects.read_text():  # the charge has begun (it takes 0.3 s more)
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.01)
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

        server = start_server(tmp_path, port, env)
        try:
            client = get_client(url=f"http://127.0.0.1:{port}")
            state = await client.threads.get_state(thread)
            again = request if not (state.get("next") or []) else None  # lost steps: ask again, as a client would
            final = await client.runs.wait(thread, "agent", input=again)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    assert effects.read_text().splitlines() == ["charge served a"], "the side effect happened exactly once"
    tool_results = [m["content"] for m in final["messages"] if m["type"] == "tool"]
    assert tool_results and all(r == "charged a" or r.startswith("Outcome unknown") for r in tool_results)
    assert final["messages"][-1]["content"] == "charged, done"
