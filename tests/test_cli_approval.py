"""A person approves at the terminal (a real pseudo-terminal), or later with `toolrail approve`."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import TRIP_PROMPT
from test_cli import SCRUBBED, toolrail
from toolrail.testing.openai_server import OpenAICompatibleServer, answer, call, calls

PAY_TOOLS = '''
from pathlib import Path
from toolrail.tools.registry import ToolRegistry

shop = ToolRegistry()


@shop.register(side_effects=True, requires_approval=True)
def pay(to: str, amount: int) -> str:
    """Pay someone.

    Args:
        to: Who.
        amount: Dollars.
    """
    with open(Path("payments.log"), "a") as log:
        log.write(f"{to} {amount}\\n")
    return f"paid {to} ${amount}"
'''


class Terminal:
    """`toolrail` on a pseudo-terminal, as a person at a shell runs it."""

    def __init__(self, *args: str, cwd: Path, env: dict):
        base = {k: v for k, v in os.environ.items() if k not in (*SCRUBBED, "EDITOR", "VISUAL")}
        base.update({"TOOLRAIL_DB": str(cwd / "runs.sqlite"), "COLUMNS": "200", "TERM": "dumb"}, **env)
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen([sys.executable, "-m", "toolrail.cli", *args], cwd=cwd, env=base,
                                        stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 60, times: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while self.seen.count(text) < times:
            assert time.monotonic() < deadline, f"never saw {text!r}; saw:\n{self.seen}"
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the process ended
                    assert self.seen.count(text) >= times, f"ended without {text!r}; saw:\n{self.seen}"
        return self.seen

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def finish(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self.expect("", 0)
        try:
            while select.select([self.master], [], [], 0.2)[0]:
                self.seen += os.read(self.master, 65536).decode(errors="replace")
        except OSError:
            pass
        os.close(self.master)
        return code


def test_the_trip_example_stops_for_approval_on_a_terminal_and_continues_after_yes(tmp_path):
    term = Terminal("run", "--approve-tools", "search_flights", TRIP_PROMPT, cwd=tmp_path, env={"TOOLRAIL_APPROVER": "dana"})
    term.expect("approve? [y]es / [n]o, reject / [e]dit:")
    assert "search_flights (call_flights_2): search_flights is on the approval list" in term.seen
    assert "⏸ search_flights waits for a person's approval" in term.seen
    assert "⚙ search_flights" not in term.seen, "the flight search has not run before the answer"
    term.send("y")
    assert term.finish() == 0, term.seen
    assert "✋ search_flights approved (by dana)" in term.seen
    assert "⚙ search_flights ok" in term.seen and "B6 916" in term.seen


def _pay_server() -> OpenAICompatibleServer:
    return OpenAICompatibleServer([calls(call("pay", {"to": "bob", "amount": 500}, id="p1")), answer("Done.")])


def _env(tmp_path: Path, server: OpenAICompatibleServer) -> dict:
    (tmp_path / "shop_tools.py").write_text(PAY_TOOLS)
    return {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k", "PYTHONPATH": str(tmp_path)}


def test_without_a_terminal_the_run_stops_with_exit_3_and_approve_answers_it(tmp_path):
    with _pay_server() as server:
        env = _env(tmp_path, server)
        stopped = toolrail("run", "--thread", "t1", "--tools", "shop_tools:shop", "pay bob", tmp_path=tmp_path, env=env)
        assert stopped.returncode == 3, stopped.stderr
        assert stopped.stderr.count("\n") == 1 and "waiting for approval in thread t1: pay (p1): pay requires approval" in stopped.stderr
        assert "toolrail approve t1" in stopped.stderr
        assert not (tmp_path / "payments.log").exists()
        busy = toolrail("run", "--thread", "t1", "--tools", "shop_tools:shop", "something else", tmp_path=tmp_path, env=env)
        assert busy.returncode == 2 and busy.stderr == "toolrail: error: thread 't1' is waiting for approval; answer it first: toolrail approve t1 (see --help)\n"

        refused = toolrail("approve", "t1", "--tools", "shop_tools:shop", "--edit", 'p1={"to": "bob", "amount": "lots"}', tmp_path=tmp_path, env=env)
        assert refused.returncode == 3 and "answer refused: p1 (pay): the edited arguments are invalid" in refused.stderr, refused.stderr
        assert not (tmp_path / "payments.log").exists()

        done = toolrail("approve", "t1", "--tools", "shop_tools:shop", "--edit", 'p1={"to": "bob", "amount": 50}', "--json", tmp_path=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "payments.log").read_text() == "bob 50\n"
    state = json.loads(done.stdout)
    assert state["answer"] == "Done." and state["decisions"][0]["decision"] == "edit"
    history = toolrail("history", "t1", "--json", tmp_path=tmp_path)
    assert any("pay edit by" in d for row in json.loads(history.stdout) for d in row["decisions"])
    trace = toolrail("trace", "t1", tmp_path=tmp_path)
    assert '✋ pay edited by' in trace.stdout and '{"to": "bob", "amount": 50}' in trace.stdout


ASKING_TOOLS = '''
from langgraph.types import interrupt
from toolrail.tools.registry import ToolRegistry

asking = ToolRegistry()


@asking.register
def wipe(disk: str) -> str:
    """Wipe a disk, after asking.

    Args:
        disk: Which.
    """
    return f"wiped {disk}" if interrupt(f"wipe {disk}?") == "yes" else "kept"
'''


def test_a_question_a_tool_asks_stops_the_run_and_approve_answer_continues_it(tmp_path):
    (tmp_path / "asking_tools.py").write_text(ASKING_TOOLS)
    with OpenAICompatibleServer([calls(call("wipe", {"disk": "sdb"}, id="w1")), answer("Wiped.")]) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k", "PYTHONPATH": str(tmp_path)}
        stopped = toolrail("run", "--thread", "t6", "--tools", "asking_tools:asking", "wipe sdb", tmp_path=tmp_path, env=env)
        assert stopped.returncode == 3 and 'a tool asks: wipe sdb?' in stopped.stderr, stopped.stderr
        missing = toolrail("approve", "t6", "--tools", "asking_tools:asking", tmp_path=tmp_path, env=env)
        assert missing.returncode == 2 and "answer it with --answer TEXT" in missing.stderr
        done = toolrail("approve", "t6", "--tools", "asking_tools:asking", "--answer", "yes", "--json", tmp_path=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout)
    outputs = {m.get("tool_call_id"): m["content"] for m in final["messages"]}
    assert [(r["status"], outputs[r["id"]]) for r in final["results"]] == [("ok", "wiped sdb")]


def test_no_input_stops_even_on_a_terminal_and_a_rejection_reaches_the_model(tmp_path):
    with _pay_server() as server:
        env = _env(tmp_path, server)
        term = Terminal("run", "--no-input", "--thread", "t2", "--tools", "shop_tools:shop", "pay bob", cwd=tmp_path, env=env)
        assert term.finish() == 3 and "waiting for approval in thread t2" in term.seen
        done = toolrail("approve", "t2", "--tools", "shop_tools:shop", "--reject", "p1=bob was paid yesterday", tmp_path=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        tool_message = [m for m in server.requests[1]["messages"] if m["role"] == "tool"][0]
    assert "bob was paid yesterday" in tool_message["content"] and not (tmp_path / "payments.log").exists()


def test_killed_while_the_question_is_open_then_approved_later_the_call_runs_once(tmp_path):
    with _pay_server() as server:
        env = _env(tmp_path, server)
        term = Terminal("run", "--thread", "t3", "--tools", "shop_tools:shop", "pay bob", cwd=tmp_path, env=env)
        term.expect("approve? [y]es")
        os.killpg(term.process.pid, signal.SIGKILL)
        term.finish()
        resumed = toolrail("resume", "t3", "--tools", "shop_tools:shop", tmp_path=tmp_path, env=env)
        assert resumed.returncode == 3 and "pay (p1)" in resumed.stderr, "resume comes back to the same question"
        bad = toolrail("approve", "t3", "--tools", "shop_tools:shop", "--call", "p9", tmp_path=tmp_path, env=env)
        assert bad.returncode == 2 and bad.stderr == "toolrail: error: no call p9 is waiting for approval (waiting: p1)\n"
        done = toolrail("approve", "t3", "--tools", "shop_tools:shop", tmp_path=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "payments.log").read_text() == "bob 500\n"
    again = toolrail("approve", "t3", "--tools", "shop_tools:shop", tmp_path=tmp_path, env=env)
    assert again.returncode == 2 and "is not waiting for approval" in again.stderr


def test_an_unknown_tool_name_for_approval_is_one_clear_line(tmp_path):
    done = toolrail("run", "--approve-tools", "search_flight", TRIP_PROMPT, tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("toolrail: error: --approve-tools: no tool named search_flight (tools: ")
    assert re.fullmatch(r"[^\n]*\n", done.stderr)


def test_at_the_prompt_an_invalid_edit_is_asked_again_then_edit_and_reject_apply(tmp_path):
    two = [calls(call("pay", {"to": "bob", "amount": 500}, id="p1"), call("pay", {"to": "eve", "amount": 9}, id="p2")), answer("Done.")]
    with OpenAICompatibleServer(two) as server:
        term = Terminal("run", "--thread", "t4", "--tools", "shop_tools:shop", "pay", cwd=tmp_path, env=_env(tmp_path, server))
        prompt = "approve? [y]es / [n]o, reject / [e]dit:"
        term.expect(prompt)  # p1
        term.send("e")
        term.expect("new arguments as JSON:")
        term.send('{"to": "bob", "amount": "fifty"}')
        term.expect(prompt, times=2)  # p2
        term.send("n")
        term.expect("reason (the model reads it):")
        term.send("unknown payee")
        term.expect(prompt, times=3)  # asked again, with the error
        assert "✗ p1 (pay): the edited arguments are invalid" in term.seen and "amount: Input should be a valid integer" in term.seen
        assert not (tmp_path / "payments.log").exists()
        term.send("e")
        term.expect("new arguments as JSON:", times=2)
        term.send('{"to": "bob", "amount": 50}')
        term.expect(prompt, times=4)
        term.send("n")
        term.expect("reason (the model reads it):", times=2)
        term.send("unknown payee")
        assert term.finish() == 0, term.seen
        tool_messages = {m["tool_call_id"]: m["content"] for m in server.requests[1]["messages"] if m["role"] == "tool"}
    assert (tmp_path / "payments.log").read_text() == "bob 50\n"
    assert tool_messages["p1"] == "paid bob $50" and "unknown payee" in tool_messages["p2"]


def test_edit_opens_the_editor_when_one_is_set(tmp_path):
    editor = tmp_path / "editor.py"
    editor.write_text("import json, sys\npath = sys.argv[1]\nargs = json.load(open(path))\nargs['amount'] = 7\njson.dump(args, open(path, 'w'))\n")
    with _pay_server() as server:
        env = {**_env(tmp_path, server), "EDITOR": f"{sys.executable} {editor}"}
        term = Terminal("run", "--thread", "t5", "--tools", "shop_tools:shop", "pay bob", cwd=tmp_path, env=env)
        term.expect("approve? [y]es")
        term.send("e")
        assert term.finish() == 0, term.seen
    assert (tmp_path / "payments.log").read_text() == "bob 7\n"
