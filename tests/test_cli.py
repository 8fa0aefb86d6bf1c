"""The `toolrail` command, run as a real subprocess the way a newcomer runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import TRIP_PROMPT
from toolrail.testing.openai_server import OpenAICompatibleServer, answer, call, calls

SCRUBBED = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TOOLRAIL_MODEL", "LANGSMITH_TRACING", "LANGSMITH_API_KEY")


def toolrail(*args: str, tmp_path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    base.update({"TOOLRAIL_DB": str(tmp_path / "runs.sqlite"), "COLUMNS": "200", "PYTHONFAULTHANDLER": "1"}, **(env or {}))
    process = subprocess.Popen([sys.executable, "-m", "toolrail.cli", *args], cwd=tmp_path, env=base,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack: where it hangs
        stdout, stderr = process.communicate()
        pytest.fail(f"toolrail {' '.join(args)} did not end in {timeout} s\n--- stdout ---\n{stdout[-3000:]}\n"
                    f"--- stderr (the stacks) ---\n{stderr[-20000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_trip_example_runs_offline_on_the_recorded_model(tmp_path):
    done = toolrail("run", TRIP_PROMPT, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "recorded model" in out
    assert "✗ search_flights rejected" in out and "max_stops: Input should be a valid integer" in out
    assert "2 calls ran concurrently" in out
    assert "B6 916" in out and "light rain" in out
    assert (tmp_path / "runs.sqlite").exists()


def test_recorded_answer_quotes_what_the_tools_returned(tmp_path):
    """The recording's fixed answer must agree with the live demo tools it is replayed against."""
    done = toolrail("run", "--json", TRIP_PROMPT, tmp_path=tmp_path)
    state = json.loads(done.stdout)
    results = {m["name"]: json.loads(m["content"]) for m in state["messages"] if m["type"] == "tool" and m.get("status") != "error"}
    weather, flights = results["get_weather"], results["search_flights"]["flights"]
    assert f"high {weather['high_c']} °C" in state["answer"] and weather["conditions"] in state["answer"]
    for flight in flights:
        assert f"{flight['flight']}, {flight['depart']} → {flight['arrive']}, ${flight['price_usd']}" in state["answer"]


def test_json_output_is_the_final_state(tmp_path):
    done = toolrail("run", "--json", "--thread", "trip-1", TRIP_PROMPT, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["thread_id"] == "trip-1"
    assert [v["valid"] for v in state["verdicts"]] == [True, False, True, True]
    ran = [r for r in state["results"] if r["status"] == "ok"]
    assert sorted(r["name"] for r in ran) == ["get_weather", "search_flights"]
    assert all(r["duration_s"] >= 0 for r in ran)
    # turn 1's valid get_weather had started speculatively; the rejected turn cancelled it
    assert [(r["name"], r["speculative"]) for r in state["results"] if r["status"] == "cancelled"] == [("get_weather", True)]
    assert state["failure"] is None and state["answer"].startswith("Here's your SF")


def test_an_unknown_prompt_without_a_key_says_what_to_do(tmp_path):
    done = toolrail("run", "What is the capital of France?", tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "OPENAI_API_KEY" in done.stderr


@pytest.mark.parametrize("flags", [["--max-retries", "-1"], ["--tool-timeout", "zero"], ["--bogus"], []], ids=["retries", "timeout", "unknown", "no-command"])
def test_bad_flags_get_one_clear_line(tmp_path, flags):
    done = toolrail(*(["run", TRIP_PROMPT] if flags else []), *flags, tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("toolrail: error:")


def test_an_unreachable_endpoint_ends_with_one_line(tmp_path):
    done = toolrail("run", "hello", tmp_path=tmp_path, env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "k"})
    assert done.returncode == 1
    assert "cannot reach the model at http://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_cli_drives_a_live_openai_compatible_endpoint(tmp_path):
    with OpenAICompatibleServer([calls(call("get_weather", {"location": "Chicago"})), answer("Windy in Chicago.")]) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k", "TOOLRAIL_MODEL": "local-llama"}
        done = toolrail("run", "--json", "Weather in Chicago?", tmp_path=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert server.requests[0]["model"] == "local-llama"
    assert json.loads(done.stdout)["answer"].strip() == "Windy in Chicago."


def test_thread_continues_with_its_checkpointed_history(tmp_path):
    with OpenAICompatibleServer([answer("first"), answer("second")]) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k"}
        toolrail("run", "--thread", "conv", "one", tmp_path=tmp_path, env=env)
        done = toolrail("run", "--thread", "conv", "--json", "two", tmp_path=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    history = [m["content"] for m in server.requests[1]["messages"] if m["role"] in ("user", "assistant")]
    assert history == ["one", "first ", "two"] or history == ["one", "first", "two"]


CLASHING_TOOLS = '''
from toolrail.tools.registry import ToolRegistry

clashing = ToolRegistry()


@clashing.register
def get_weather(city: str) -> str:
    """Another get_weather."""
    return city

not_a_registry = 42
'''


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("clashing_tools:clashing", "a tool named 'get_weather' is already registered"),
        ("clashing_tools:not_a_registry", "expected a ToolRegistry, got int"),
        ("no_such_module:tools", "cannot load it (No module named 'no_such_module')"),
    ],
    ids=["clash", "not-a-registry", "missing"],
)
def test_bad_tools_flags_get_one_clear_line(tmp_path, spec, says):
    (tmp_path / "clashing_tools.py").write_text(CLASHING_TOOLS)
    done = toolrail("run", TRIP_PROMPT, "--tools", spec, tmp_path=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"toolrail: error: --tools {spec}: {says}\n"


def test_offering_the_default_tools_again_with_tools_is_harmless(tmp_path):
    done = toolrail("run", "--json", TRIP_PROMPT, "--tools", "toolrail.tools.demo:demo_tools", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"].startswith("Here's your SF")


def test_a_checkpoint_file_that_is_not_a_database_is_one_clear_line_and_left_alone(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n")
    done = toolrail("run", TRIP_PROMPT, "--db", str(notes), tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr == f"toolrail: error: cannot use {notes} for checkpoints: file is not a database\n"
    assert notes.read_text() == "my notes, not a database\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing created beside it


@pytest.mark.parametrize(
    ("env", "flags", "says"),
    [
        ({"TOOLRAIL_SANDBOX": "docker"}, [], "TOOLRAIL_SANDBOX: unknown sandbox backend 'docker'; choose one of local, e2b"),
        ({"E2B_API_KEY": ""}, ["--sandbox", "e2b"], "the E2B sandbox backend needs an API key"),
        ({}, ["--out", "runs.sqlite"], "--out runs.sqlite: not a folder"),
        ({"TOOLRAIL_CHECKPOINT_URL": "mysql://db/x"}, [], "checkpoints go to a SQLite file path or a postgresql:// URL, not mysql://"),
        ({"TOOLRAIL_LEDGER": "."}, [], "TOOLRAIL_LEDGER . is a folder; give a file path"),
        ({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "localhost:8000"}, [], "OPENAI_BASE_URL must be an http(s):// URL"),
    ],
    ids=["sandbox-env", "e2b-without-key", "out-is-a-file", "checkpoint-url-scheme", "ledger-folder", "base-url"],
)
def test_bad_settings_fail_before_the_run_with_one_clear_line(tmp_path, env, flags, says):
    (tmp_path / "runs.sqlite").touch()
    done = toolrail("run", *flags, TRIP_PROMPT, tmp_path=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"toolrail: error: {says}") and done.stderr.count("\n") == 1, done.stderr
    assert "planner" not in done.stdout
