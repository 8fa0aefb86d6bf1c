"""run_python through the whole graph: routed to the sandbox node, live output, state, files."""

from __future__ import annotations

import json
import time

from langgraph.checkpoint.memory import InMemorySaver

from conftest import TEST_LIMITS, client_for
from test_cli import toolrail
from toolrail.graphs.agent import build_graph
from toolrail.sandbox import make_sandbox
from toolrail.sandbox.sessions import SandboxSessions, thread_folder
from toolrail.testing.openai_server import answer, call, calls


def python(code: str, call_id: str, **extra) -> object:
    return call("run_python", {"code": code, "timeout_s": None, **extra}, id=call_id)


async def stream_run(server, sessions, prompt="go"):
    graph = build_graph(model=client_for(server), checkpointer=InMemorySaver(), sandboxes=sessions)
    events = []
    config = {"configurable": {"thread_id": "t"}}
    async for mode, chunk in graph.astream({"messages": [("user", prompt)]}, config, stream_mode=["custom", "updates"]):
        events.append((time.perf_counter(), mode, chunk))
    return events, (await graph.aget_state(config)).values


async def test_run_python_streams_output_live_from_the_sandbox_node(openai_server, tmp_path):
    code = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')"
    openai_server.script(calls(python(code, "py")), answer("done"))
    async with SandboxSessions(factory=lambda: make_sandbox("local", TEST_LIMITS), output_dir=tmp_path) as sessions:
        events, state = await stream_run(openai_server, sessions)
    live = [(t, c["text"]) for t, mode, c in events if mode == "custom" and c.get("type") == "sandbox_output"]
    finished = next(t for t, mode, c in events if mode == "updates" and "sandbox" in c)
    first_at = next(t for t, text in live if "first" in text)
    assert finished - first_at > 1.0, "'first' reached the stream while the code was still running"
    result = state["results"][0]
    assert result["status"] == "ok" and result["sandbox"]["exit_reason"] == "ok"
    assert result["sandbox"]["stdout"] == "first\nsecond\n"
    sent = [m for m in openai_server.requests[1]["messages"] if m["role"] == "tool"][0]
    assert sent["content"].startswith("first\nsecond")


async def test_variables_and_files_persist_across_calls_of_a_thread(openai_server, tmp_path):
    openai_server.script(
        calls(python("x = 41\nopen('note.txt', 'w').write('kept')", "a")),
        calls(python("print(x + 1, open('note.txt').read())", "b")),
        answer("done"),
    )
    async with SandboxSessions(factory=lambda: make_sandbox("local", TEST_LIMITS), output_dir=tmp_path) as sessions:
        _, state = await stream_run(openai_server, sessions)
    assert state["results"][1]["sandbox"]["stdout"] == "42 kept\n"
    assert (tmp_path / thread_folder("t") / "note.txt").read_text() == "kept"


async def test_a_failing_cell_returns_its_traceback_and_the_run_goes_on(openai_server, tmp_path):
    openai_server.script(calls(python("def f():\n    return 1 / 0\nf()", "bad")), answer("It divided by zero."))
    async with SandboxSessions(factory=lambda: make_sandbox("local", TEST_LIMITS)) as sessions:
        _, state = await stream_run(openai_server, sessions)
    result = state["results"][0]
    assert result["status"] == "error" and result["sandbox"]["error"]["name"] == "ZeroDivisionError"
    sent = [m for m in openai_server.requests[1]["messages"] if m["role"] == "tool"][0]["content"]
    assert "ZeroDivisionError" in sent and "return 1 / 0" in sent
    assert state["messages"][-1].content.strip() == "It divided by zero."


async def test_run_python_arguments_are_validated_like_any_call(openai_server):
    openai_server.script(calls(python("print(1)", "bad", timeout_s=999)), answer("ok"))
    async with SandboxSessions(factory=lambda: make_sandbox("local", TEST_LIMITS)) as sessions:
        _, state = await stream_run(openai_server, sessions)
    assert state["verdicts"][0]["valid"] is False and "timeout_s" in state["verdicts"][0]["error"]
    assert state.get("results", []) == []


def test_cli_analysis_example_runs_code_in_the_sandbox_and_saves_the_plot(tmp_path):
    done = toolrail("run", "--json", "What is the mean temperature in temperatures.csv? Plot it.", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    sandbox = state["results"][0]["sandbox"]
    assert "mean temperature: 10.08 °C" in sandbox["stdout"]
    assert "**10.08 °C**" in state["answer"]  # the recording's answer agrees with the live run
    plot = [p for p in sandbox["saved"] if p.endswith("temperature_plot.png")]
    assert plot and (tmp_path / plot[0]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


ANALYSIS_PROMPT = "What is the mean temperature in temperatures.csv? Plot it."


def test_a_produced_file_that_cannot_be_saved_is_reported_and_the_run_goes_on(tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    done = toolrail("run", "--json", "--out", "blocker/plots", ANALYSIS_PROMPT, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    sandbox = state["results"][0]["sandbox"]
    assert sandbox["saved"] == [] and sandbox["unsaved"][0].startswith("temperature_plot.png: cannot write blocker/plots/")
    tool_message = next(m for m in state["messages"] if m["type"] == "tool")
    assert "[not saved] temperature_plot.png" in tool_message["content"] and "still in the sandbox session" in tool_message["content"]


def test_the_recorded_model_stops_when_a_tool_result_is_not_the_recorded_one(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("date,rain_mm\n2026-11-01,3\n")
    done = toolrail("run", "--file", str(other), ANALYSIS_PROMPT, tmp_path=tmp_path)
    assert done.returncode == 1
    assert "the recording expected run_python to succeed, but it returned: FileNotFoundError" in done.stderr
    assert "10.08" not in done.stdout  # no made-up answer from a script that no longer fits


async def test_a_thread_continued_in_a_new_process_gets_its_interpreter_back(openai_server, tmp_path):
    """A new SandboxSessions is what a resuming process has: the completed cells are re-run first."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async def turn(prompt: str, rebuild: bool = True) -> dict:
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "runs.sqlite")) as saver:
            async with SandboxSessions(factory=lambda: make_sandbox("local", TEST_LIMITS)) as sessions:
                graph = build_graph(model=client_for(openai_server), checkpointer=saver, sandboxes=sessions, rebuild_sandbox=rebuild)
                return await graph.ainvoke({"messages": [("user", prompt)]}, {"configurable": {"thread_id": "t"}})

    openai_server.script(
        calls(python("x = 41\nprint('set')", "a")), answer("set"),
        calls(python("x += 1\nprint(x)", "b")), answer("42"),
        calls(python("print(x)", "c")), answer("?"),
    )
    await turn("set x")
    second = await turn("add one")  # a fresh process: rebuilt from cell a, then b runs
    assert second["results"][-1]["sandbox"]["stdout"] == "42\n"
    assert second["results"][-1]["sandbox"]["rebuilt_cells"] == 1
    third = await turn("show x", rebuild=False)
    last_output = [m for m in third["messages"] if m.type == "tool"][-1].content  # results carry no content
    assert "NameError" in last_output  # turned off: the interpreter starts empty
