"""Crash-resume harness: SIGKILL real `toolrail run` processes at random moments, resume them,
and prove from a side-effect ledger that no result was lost and no side effect happened twice.

    python scripts/kill_harness.py --runs 12 [--seed 7] [--db postgresql://...] [--json]

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


def reply_for(body: dict) -> ScriptedReply:
    """Stateless script: every process (first run or resume) gets the reply its history calls for."""
    thread = next(m["content"] for m in body["messages"] if m["role"] == "user").split()[-1]
    if any(m["role"] == "assistant" for m in body["messages"]):
        return answer("all done")
    charges = [call("charge", {"order": o, "thread": thread}, id=f"charge_{o}") for o in ORDERS]
    lookups = [call("lookup", {"key": k}, id=f"lookup_{k}") for k in KEYS]
    return ScriptedReply(tool_calls=charges + lookups)


def new_worker_dir(workdir: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="worker-", dir=workdir))


def toolrail(command: list[str], env: dict, workdir: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolrail.cli", *command],
        env=env, cwd=new_worker_dir(workdir), capture_output=True, text=True, timeout=timeout,
    )


def flags_for(db: str) -> list[str]:
    return ["--tools", "toolrail.testing.harness_tools:harness_tools", "--db", db, "--json"]


def whole_run_seconds(workdir: Path, db: str, env: dict) -> float:
    """One run left alone, so kill moments spread over a run's real length on this machine."""
    started = time.monotonic()
    done = toolrail(["run", "--thread", "calibrate", *flags_for(db), "harness run calibrate"], {**env, "TOOLRAIL_HARNESS_LEDGER": os.devnull}, workdir)
    if done.returncode != 0:
        raise RuntimeError(f"an undisturbed run failed: {done.stderr[-600:]}")
    return time.monotonic() - started


def one_run(index: int, workdir: Path, db: str, env: dict, rng: random.Random, run_seconds: float) -> dict:
    thread = f"kill-{index}"
    flags = flags_for(db)
    process = subprocess.Popen(
        [sys.executable, "-m", "toolrail.cli", "run", "--thread", thread, *flags, f"harness run {thread}"],
        env=env, cwd=new_worker_dir(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    delay = rng.uniform(0.3, 1.1) * run_seconds  # most of it is start-up; the tools run near the end
    time.sleep(delay)
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
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
    answered = {m["tool_call_id"]: m["content"] for m in state.get("messages", []) if m["type"] == "tool"}
    expected = [f"charge_{o}" for o in ORDERS] + [f"lookup_{k}" for k in KEYS]
    return {
        "thread": thread, "kill_at_s": round(delay, 2), "killed_mid_run": killed, "resumes": resumes,
        "side_effects_before_kill": effects_before_kill,
        "finished": done.returncode == 0 and state.get("answer", "").strip() == "all done",
        "lost": [c for c in expected if c not in answered],
        "last_error": "" if done.returncode == 0 else done.stderr[-600:],
        "unknown_outcome": [c for c, text in answered.items() if text.startswith("Outcome unknown")],
    }


def harness(runs: int, seed: int, db: str | None = None) -> dict:
    """Kill and resume `runs` runs checkpointed in `db` (default: a fresh SQLite file)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder, OpenAICompatibleServer(reply_for) as server:
        workdir = Path(folder)
        ledger = workdir / "side-effects.log"
        ledger.touch()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LANGSMITH_", "TOOLRAIL_"))}
        env.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="harness", TOOLRAIL_HARNESS_LEDGER=str(ledger))
        db = db or str(workdir / "runs.sqlite")
        run_seconds = whole_run_seconds(workdir, db, env)
        results = [one_run(i, workdir, db, env, rng, run_seconds) for i in range(runs)]
        effects = collections.Counter(ledger.read_text().splitlines())
    duplicates = {line: n for line, n in effects.items() if n > 1}
    return {
        "runs": runs,
        "undisturbed_run_s": round(run_seconds, 2),
        "killed_mid_run": sum(r["killed_mid_run"] for r in results),
        "killed_after_side_effects_began": sum(r["killed_mid_run"] and r["side_effects_before_kill"] > 0 for r in results),
        "finished": sum(r["finished"] for r in results),
        "lost_results": sum(len(r["lost"]) for r in results),
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
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = harness(args.runs, args.seed, args.db)
    summary = {k: v for k, v in report.items() if k not in ("details", "duplicates")}
    print(json.dumps(report if args.json else {**summary, "seed": args.seed}, indent=2))
    ok = report["lost_results"] == 0 and report["duplicate_side_effects"] == 0 and report["finished"] == report["runs"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
