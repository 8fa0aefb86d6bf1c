"""Tracing never hurts a run; history, replay, fork and trace read LangGraph's checkpoints."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import TRIP_PROMPT
from test_cli import toolrail
from test_postgres import _free_port

TRACING = {"LANGSMITH_TRACING": "true", "LANGSMITH_API_KEY": "lsv2_test_key"}


def test_an_unreachable_tracing_endpoint_neither_breaks_nor_slows_a_run(tmp_path):
    started = time.perf_counter()
    plain = toolrail("run", "--json", TRIP_PROMPT, tmp_path=tmp_path)
    plain_s = time.perf_counter() - started
    started = time.perf_counter()
    traced = toolrail("run", "--json", TRIP_PROMPT, tmp_path=tmp_path,
                      env={**TRACING, "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{_free_port()}"})
    traced_s = time.perf_counter() - started
    assert plain.returncode == traced.returncode == 0, traced.stderr
    assert json.loads(traced.stdout)["answer"] == json.loads(plain.stdout)["answer"]
    assert traced.stderr.strip().endswith("tracing is off for this run") and traced.stderr.count("\n") == 1
    assert traced_s < plain_s + 10


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def log_message(self, *args):
        pass

    def _ok(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self):
        self._ok()

    def do_POST(self):
        _Recorder.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self._ok()

    do_PATCH = do_POST


def test_runs_are_traced_with_tool_names_and_metadata(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = toolrail("run", "--json", TRIP_PROMPT, tmp_path=tmp_path,
                        env={**TRACING, "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}"})
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    sent = b"".join(_Recorder.bodies)
    for needle in (b"tool:get_weather", b"tool:search_flights", b'"speculative"', b'"attempt"', b"planner", b"validate"):
        assert needle in sent, needle


@pytest.fixture
def finished_thread(tmp_path):
    done = toolrail("run", "--json", "--thread", "h", TRIP_PROMPT, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path


def _history(tmp_path):
    return json.loads(toolrail("history", "h", "--json", tmp_path=tmp_path).stdout)


def test_history_lists_every_checkpoint_with_verdicts_and_results(finished_thread):
    rows = _history(finished_thread)
    # input, planner (turn 1, invalid), validate, planner (turn 2, valid as it stands), tools, planner
    assert [r["step"] for r in rows] == list(range(5, -2, -1))
    assert any("search_flights invalid" in r["verdicts"] for r in rows)
    assert any(r["next"] == ["tools"] for r in rows)  # one tools task runs both calls of the turn
    assert rows[0]["next"] == []


def test_replay_from_a_checkpoint_runs_the_rest_again(finished_thread):
    before = next(r for r in _history(finished_thread) if r["next"] == ["tools"])
    done = toolrail("replay", "h", "--checkpoint", before["checkpoint_id"], "--json", tmp_path=finished_thread)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"].startswith("Here's your SF")
    assert len(_history(finished_thread)) > 7  # the replay added checkpoints on a new branch


def test_fork_with_an_edited_tool_result_starts_a_branch(finished_thread):
    after_tools = next(r for r in _history(finished_thread) if r["next"] == ["planner"] and r["results"])
    done = toolrail("fork", "h", "--checkpoint", after_tools["checkpoint_id"], "--tool-result", "call_weather_2=sunny, 25 C", "--json", tmp_path=finished_thread)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    edited = [m for m in state["messages"] if m["type"] == "tool" and m["tool_call_id"] == "call_weather_2"]
    assert [m["content"] for m in edited] == ["sunny, 25 C"]


def test_bad_thread_and_checkpoint_ids_are_one_clear_line(finished_thread):
    for args in (["history", "nope"], ["resume", "nope"], ["replay", "h", "--checkpoint", "nope"]):
        done = toolrail(*args, tmp_path=finished_thread)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, (args, done.stderr)


def test_resume_of_a_finished_run_does_nothing_and_keeps_the_answer(finished_thread):
    done = toolrail("resume", "h", "--json", tmp_path=finished_thread)
    assert done.returncode == 0 and json.loads(done.stdout)["answer"].startswith("Here's your SF")
    assert len(_history(finished_thread)) == 7


def test_trace_draws_turns_retries_and_parallel_bars(finished_thread):
    done = toolrail("trace", "h", tmp_path=finished_thread)
    assert done.returncode == 0, done.stderr
    assert "turn 1: ✓ get_weather  ✗ search_flights   ↺ retried" in done.stdout
    assert "cancelled speculative" in done.stdout and done.stdout.count("█") >= 2


def test_fork_with_an_edited_user_message_asks_the_model_again_on_a_new_branch(tmp_path):
    from toolrail.testing.openai_server import OpenAICompatibleServer, answer

    def echo(body: dict):
        return answer("you said: " + next(m["content"] for m in body["messages"] if m["role"] == "user"))

    with OpenAICompatibleServer(echo) as server:
        live = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}
        first = toolrail("run", "--json", "--thread", "m", "hello", tmp_path=tmp_path, env=live)
        assert json.loads(first.stdout)["answer"] == "you said: hello", first.stderr
        rows = json.loads(toolrail("history", "m", "--json", tmp_path=tmp_path).stdout)
        before_planner = next(r for r in rows if r["next"] == ["planner"])
        done = toolrail("fork", "m", "--checkpoint", before_planner["checkpoint_id"], "--message", "bonjour", "--json", tmp_path=tmp_path, env=live)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["answer"] == "you said: bonjour"
    assert [m["content"] for m in state["messages"] if m["type"] == "human"] == ["bonjour"]
    assert [m["content"] for m in server.requests[-1]["messages"] if m["role"] == "user"] == ["bonjour"]
    after = json.loads(toolrail("history", "m", "--json", tmp_path=tmp_path).stdout)
    assert rows[0]["checkpoint_id"] in [r["checkpoint_id"] for r in after]  # the first branch is kept
