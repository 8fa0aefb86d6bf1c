"""The CLI end of issue 11: one line and a non-zero exit for every bad input or broken
environment, limits as flags, standard JSON, and one writer per thread."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cli import SCRUBBED, toolrail
from toolrail.testing.openai_server import OpenAICompatibleServer, ScriptedReply, answer, call, calls


def assert_one_line_error(done: subprocess.CompletedProcess) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("toolrail: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def _broken_suite(tmp_path: Path) -> str:
    (tmp_path / "suite" / "possible_answer").mkdir(parents=True)
    (tmp_path / "suite" / "BFCL_v4_simple.json").write_text('{"id": "simple_0", "question": [')
    (tmp_path / "suite" / "possible_answer" / "BFCL_v4_simple.json").write_text("{")
    return str(tmp_path / "suite")


BAD_INPUT = {
    "non-UTF-8 prompt": lambda p: ["run", os.fsdecode(b"weather in \xff\xfe")],
    "--tools :": lambda p: ["run", "--tools", ":"],
    "--db with a broken Postgres URL": lambda p: ["run", "--db", "postgresql://%zz@/"],
    "--db ''": lambda p: ["run", "--db", ""],
    "--tool-timeout nan": lambda p: ["run", "--tool-timeout", "nan"],
    "--tool-timeout inf": lambda p: ["run", "--tool-timeout", "inf"],
    "--deadline -1": lambda p: ["run", "--deadline", "-1"],
    "--db in a folder nobody can create files in": lambda p: ["run", "--db", "/proc/toolrail-test.sqlite"],
    "conformance on a broken JSON file": lambda p: ["conformance", _broken_suite(p)],
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path, case):
    assert_one_line_error(toolrail(*BAD_INPUT[case](tmp_path), tmp_path=tmp_path))


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]  # root ignores file modes


def test_a_new_database_in_a_read_only_folder_and_history_of_a_read_only_file_are_one_line(tmp_path):
    tmp_path.chmod(0o755)
    (tmp_path / "ro").mkdir(mode=0o555)
    base = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    new_db = subprocess.run([*AS_NOBODY, sys.executable, "-m", "toolrail.cli", "run", "--db", str(tmp_path / "ro" / "new.sqlite")],
                            cwd="/", env=base, capture_output=True, text=True, timeout=120)
    assert_one_line_error(new_db)

    made = toolrail("run", "--thread", "t1", "--db", str(tmp_path / "runs.sqlite"), tmp_path=tmp_path)
    assert made.returncode == 0, made.stderr
    (tmp_path / "runs.sqlite").chmod(0o444)
    history = subprocess.run([*AS_NOBODY, sys.executable, "-m", "toolrail.cli", "history", "t1", "--db", str(tmp_path / "runs.sqlite")],
                             cwd="/", env=base, capture_output=True, text=True, timeout=120)
    assert history.returncode == 0 or (len(history.stderr.strip().splitlines()) == 1 and "Traceback" not in history.stderr), history.stderr


def _disk_full() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (40 << 10, 40 << 10))


def test_a_full_disk_mid_run_is_one_line(tmp_path):
    base = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    done = subprocess.run([sys.executable, "-m", "toolrail.cli", "run", "--db", str(tmp_path / "full.sqlite")],
                          cwd=tmp_path, env=base, capture_output=True, text=True, preexec_fn=_disk_full, timeout=120)
    assert_one_line_error(done)


def _live_env(server: OpenAICompatibleServer) -> dict:
    return {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}


def test_limit_flags_end_the_run_with_the_limit_named(tmp_path):
    with OpenAICompatibleServer(lambda body: calls(call("get_weather", {"location": "New York"}))) as server:
        done = toolrail("run", "--max-turns", "2", "--json", "forecast forever", tmp_path=tmp_path, env=_live_env(server))
    assert done.returncode == 1
    assert "run stopped (turn_limit)" in done.stderr
    state = json.loads(done.stdout, parse_constant=lambda name: pytest.fail(f"--json printed {name}"))
    assert state["failure"]["reason"] == "turn_limit"


def test_a_keep_alive_trickle_is_a_model_timeout_not_cannot_reach(tmp_path):
    with OpenAICompatibleServer([ScriptedReply(content="late", keepalive_s=5)]) as server:
        done = toolrail("run", "--model-first-chunk-timeout", "1", "hello", tmp_path=tmp_path, env=_live_env(server))
    assert done.returncode == 1 and "run stopped (model_timeout)" in done.stderr
    assert "cannot reach" not in done.stderr and "Traceback" not in done.stderr


def test_a_broken_stream_is_not_reported_as_an_unreachable_model(tmp_path):
    with OpenAICompatibleServer([calls(call("get_weather", {"location": "New York"}), fail_mid_stream=True)]) as server:
        done = toolrail("run", "hello", tmp_path=tmp_path, env=_live_env(server))
    assert done.returncode == 1 and "run stopped (model_error)" in done.stderr
    assert "cannot reach" not in done.stderr and "Traceback" not in done.stderr


def test_a_second_run_on_a_running_thread_is_refused_or_waits_and_never_interleaves(tmp_path):
    def slow_first(body: dict) -> ScriptedReply:  # the first run stays busy while the others start
        return ScriptedReply(content=f"answer {len(body['messages'])}", delay_s=8 if len(server.requests) == 1 else 0)

    with OpenAICompatibleServer(slow_first) as server:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env.update(_live_env(server), TOOLRAIL_DB=str(tmp_path / "runs.sqlite"))
        first = subprocess.Popen([sys.executable, "-m", "toolrail.cli", "run", "--thread", "T", "first question"],
                                 cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not server.requests:  # the first run holds the lock once it asks the model
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        refused = toolrail("run", "--thread", "T", "second question", tmp_path=tmp_path, env=_live_env(server))
        waited = toolrail("run", "--thread", "T", "--wait", "--json", "third question", tmp_path=tmp_path, env=_live_env(server))
        first.communicate(timeout=60)
    assert_one_line_error(refused)
    assert "is being run by another toolrail process" in refused.stderr and "--wait" in refused.stderr
    assert first.returncode == 0 and waited.returncode == 0, waited.stderr
    history = [(m["type"], m["content"]) for m in json.loads(waited.stdout)["messages"]]
    assert [t for t, _ in history] == ["human", "ai", "human", "ai"]  # first Q&A, then the third: whole turns
    assert history[0][1] == "first question" and history[2][1] == "third question"


def test_a_killed_owner_does_not_block_its_thread(tmp_path):
    with OpenAICompatibleServer(lambda body: ScriptedReply(content="done", delay_s=30 if len(server.requests) == 1 else 0)) as server:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env.update(_live_env(server), TOOLRAIL_DB=str(tmp_path / "runs.sqlite"))
        owner = subprocess.Popen([sys.executable, "-m", "toolrail.cli", "run", "--thread", "T", "question"],
                                 cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not server.requests:
            time.sleep(0.05)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        again = toolrail("run", "--thread", "T", "question again", tmp_path=tmp_path, env=_live_env(server))
    assert again.returncode == 0, again.stderr


async def test_a_lock_held_on_another_host_blocks_until_its_heartbeat_is_older_than_the_lease(tmp_path):
    import sqlite3

    from toolrail.thread_lock import LEASE_S, ThreadBusy, _connect, thread_lock

    path = tmp_path / "runs.sqlite"

    def held_elsewhere(heartbeat_age_s: float) -> None:
        with _connect(path) as db:
            db.execute("INSERT OR REPLACE INTO toolrail_thread_locks VALUES ('T', 'other', 'another-host', 1, 'pid 1 on another-host', ?)",
                       (time.time() - heartbeat_age_s,))

    held_elsewhere(1)
    with pytest.raises(ThreadBusy, match="pid 1 on another-host"):
        async with thread_lock(str(path), "T"):
            pass
    held_elsewhere(LEASE_S + 1)  # that owner stopped beating: taken over
    async with thread_lock(str(path), "T"):
        pass
    assert sqlite3.connect(path).execute("SELECT count(*) FROM toolrail_thread_locks").fetchone() == (0,)  # released
