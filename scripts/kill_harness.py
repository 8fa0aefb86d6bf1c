"""Crash-resume harness: SIGKILL real `toolrail run` processes at random moments, resume them,
and prove from a side-effect ledger that no result was lost and no side effect happened twice.

    python scripts/kill_harness.py --runs 12 [--seed 7] [--db postgresql://...] [--omit-ids] [--signal TERM] [--json]

`--omit-ids`: the endpoint sends tool calls without ids (as several OpenAI-compatible servers
do) and the model charges in two turns, so calls that a provider would number `call_0`, `call_1`
in both turns meet in one thread; every charge's result must then be its own ("wrong results").

Every process (the run, each resume) starts in a working directory of its own, as if on another
worker: nothing that lives only in one process's folder can make exactly-once look true.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolrail.testing.openai_server import OpenAICompatibleServer, ScriptedReply, answer, call

ORDERS, KEYS = ("a", "b", "c"), ("x", "y", "z")


SECOND_TURN_ORDERS = ("d", "e", "f")


def reply_for(body: dict) -> ScriptedReply:
    """Stateless script: every process (first run or resume) gets the reply its history calls for."""
    users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
    if not users:  # a request cut short by a kill: nothing to answer it with
        return ScriptedReply(http_status=400)
    thread = users[0].split()[-1]
    omit_ids = thread.startswith("noid")
    turns = sum(m["role"] == "assistant" for m in body["messages"])
    if turns == 1 and omit_ids:  # a second turn of charges: positional ids would repeat turn 1's
        return ScriptedReply(tool_calls=[call("charge", {"order": o, "thread": thread}) for o in SECOND_TURN_ORDERS], omit_ids=True)
    if turns:
        return answer("all done")
    charges = [call("charge", {"order": o, "thread": thread}, id=f"charge_{o}") for o in ORDERS]
    lookups = [call("lookup", {"key": k}, id=f"lookup_{k}") for k in KEYS]
    return ScriptedReply(tool_calls=charges + lookups, omit_ids=omit_ids)


def expected_calls(thread: str) -> list[tuple[str, str]]:
    """(tool, order or key) of every call the run must have answered."""
    orders = ORDERS + (SECOND_TURN_ORDERS if thread.startswith("noid") else ())
    return [("charge", o) for o in orders] + [("lookup", k) for k in KEYS]


def answered_calls(state: dict) -> dict[tuple[str, str], str]:
    """Each answered call, named by what it was asked (not by its id), with its result."""
    asked = {}
    for message in state.get("messages", []):
        for tool_call in message.get("tool_calls") or []:
            args = tool_call["args"]
            asked[tool_call["id"]] = (tool_call["name"], args.get("order") or args.get("key"))
    return {asked[m["tool_call_id"]]: m["content"] for m in state.get("messages", []) if m["type"] == "tool"}


def is_wrong(call: tuple[str, str], result: str) -> bool:
    """A result that belongs to another call (the ledger must never hand one back)."""
    if result.startswith("Outcome unknown"):
        return False
    return result != (f"charged {call[1]}" if call[0] == "charge" else f"value of {call[1]}")


def new_worker_dir(workdir: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="worker-", dir=workdir))


def toolrail(command: list[str], env: dict, workdir: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolrail.cli", *command],
        env=env, cwd=new_worker_dir(workdir), capture_output=True, text=True, timeout=timeout,
    )


def flags_for(db: str) -> list[str]:
    return ["--tools", "toolrail.testing.harness_tools:harness_tools", "--db", db, "--json"]


def whole_run_seconds(workdir: Path, db: str, env: dict, omit_ids: bool = False) -> float:
    """One run left alone, so kill moments spread over a run's real length on this machine."""
    started = time.monotonic()
    thread = "noid-calibrate" if omit_ids else "calibrate"
    done = toolrail(["run", "--thread", thread, *flags_for(db), f"harness run {thread}"], {**env, "TOOLRAIL_HARNESS_LEDGER": os.devnull}, workdir)
    if done.returncode != 0:
        raise RuntimeError(f"an undisturbed run failed: {done.stderr[-600:]}")
    return time.monotonic() - started


def one_run(index: int, workdir: Path, db: str, env: dict, rng: random.Random, run_seconds: float, omit_ids: bool = False,
            kill_signal: int = signal.SIGKILL) -> dict:
    thread = f"{'noid' if omit_ids else 'kill'}-{index}"
    flags = flags_for(db)
    process = subprocess.Popen(
        [sys.executable, "-m", "toolrail.cli", "run", "--thread", thread, *flags, f"harness run {thread}"],
        env=env, cwd=new_worker_dir(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    delay = rng.uniform(0.3, 1.1) * run_seconds  # most of it is start-up; the tools run near the end
    time.sleep(delay)
    killed = process.poll() is None
    process.send_signal(kill_signal)
    process.wait()
    effects_before_kill = sum(f" {thread} " in line for line in Path(env["TOOLRAIL_HARNESS_LEDGER"]).read_text().splitlines())
    resumes = 0
    while True:
        resumes += 1
        done = toolrail(["resume", thread, *flags], env, workdir)
        if done.returncode == 2 and "no thread" in done.stderr:  # killed before its first checkpoint
            done = toolrail(["run", "--thread", thread, *flags, f"harness run {thread}"], env, workdir)
        if done.returncode == 0 or resumes >= 3:
            break
    state = json.loads(done.stdout) if done.returncode == 0 else {}
    answered = answered_calls(state)
    expected = expected_calls(thread)
    return {
        "thread": thread, "kill_at_s": round(delay, 2), "killed_mid_run": killed, "resumes": resumes,
        "side_effects_before_kill": effects_before_kill,
        "finished": done.returncode == 0 and state.get("answer", "").strip() == "all done",
        "lost": [c for c in expected if c not in answered],
        "last_error": "" if done.returncode == 0 else done.stderr[-600:],
        "unknown_outcome": [c for c, text in answered.items() if text.startswith("Outcome unknown")],
        "wrong": [c for c, text in answered.items() if is_wrong(c, text)],
    }


def harness(runs: int, seed: int, db: str | None = None, omit_ids: bool = False, kill_signal: int = signal.SIGKILL) -> dict:
    """Kill and resume `runs` runs checkpointed in `db` (default: a fresh SQLite file)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder, OpenAICompatibleServer(reply_for) as server:
        workdir = Path(folder)
        ledger = workdir / "side-effects.log"
        ledger.touch()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LANGSMITH_", "TOOLRAIL_"))}
        env.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="harness", TOOLRAIL_HARNESS_LEDGER=str(ledger))
        db = db or str(workdir / "runs.sqlite")
        run_seconds = whole_run_seconds(workdir, db, env, omit_ids)
        results = [one_run(i, workdir, db, env, rng, run_seconds, omit_ids, kill_signal) for i in range(runs)]
        effects = collections.Counter(ledger.read_text().splitlines())
    duplicates = {line: n for line, n in effects.items() if n > 1}
    return {
        "runs": runs,
        "provider_ids": "omitted" if omit_ids else "sent",
        "undisturbed_run_s": round(run_seconds, 2),
        "killed_mid_run": sum(r["killed_mid_run"] for r in results),
        "killed_after_side_effects_began": sum(r["killed_mid_run"] and r["side_effects_before_kill"] > 0 for r in results),
        "finished": sum(r["finished"] for r in results),
        "lost_results": sum(len(r["lost"]) for r in results),
        "wrong_results": sum(len(r["wrong"]) for r in results),
        "duplicate_side_effects": sum(n - 1 for n in duplicates.values()),
        "unknown_outcomes": sum(len(r["unknown_outcome"]) for r in results),
        "side_effects_recorded": sum(effects.values()),
        "details": results,
        "duplicates": duplicates,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--db", help="checkpoint database (default: a fresh SQLite file); postgresql://... for Postgres")
    parser.add_argument("--omit-ids", action="store_true", help="the endpoint sends no tool-call ids; two turns of charges")
    parser.add_argument("--signal", default="KILL", choices=["KILL", "TERM", "INT"], help="how runs are stopped (default SIGKILL)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = harness(args.runs, args.seed, args.db, args.omit_ids, getattr(signal, f"SIG{args.signal}"))
    summary = {k: v for k, v in report.items() if k not in ("details", "duplicates")}
    print(json.dumps(report if args.json else {**summary, "seed": args.seed}, indent=2))
    ok = (report["lost_results"] == 0 and report["wrong_results"] == 0 and report["duplicate_side_effects"] == 0
          and report["finished"] == report["runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
