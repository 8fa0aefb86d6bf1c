"""Load test: many trip runs at once, on the served graph and on several workers sharing Postgres.

    python scripts/load_test.py served   --threads 100 [--json]
    python scripts/load_test.py postgres --threads 100 --workers 4 --db postgresql://... [--json]

`served`: `langgraph dev` serves toolrail/testing/load_graph.py; `langgraph_sdk` starts every
thread's run at once and waits for all of them. `postgres`: several worker processes, each
running its share of the threads concurrently through the toolrail graph on one Postgres
database (AsyncPostgresSaver on a connection pool, the side-effect ledger in the same database).

Every run is a full trip against a scripted OpenAI-compatible model (a real HTTP server here):
one rejected turn, a corrected turn with a side-effecting `hold_seat`, an answer. Afterwards,
read back from the checkpoints: lost runs (no answer, a failure, or a thread whose history is
not the complete one), duplicated side effects (from the file the tool appends to), and p50/p95
run latency and throughput. The exit code is 1 unless nothing was lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolrail.testing.load_graph import ANSWER, prompt_for, trip_reply  # noqa: E402
from toolrail.testing.openai_server import OpenAICompatibleServer  # noqa: E402

EXPECTED_OK_CALLS = ["get_weather", "hold_seat", "search_flights"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def run_is_complete(values: dict[str, Any], history_len: int, expected_len: int) -> str | None:
    """None if the thread holds one whole trip run; else what is missing."""
    if values.get("failure"):
        return f"failure {values['failure']['reason']}: {values['failure']['message'][:200]}"
    messages = values.get("messages") or []
    last = messages[-1] if messages else None
    content = last.get("content") if isinstance(last, dict) else getattr(last, "content", None)
    if content is None or content.strip() != ANSWER:
        return "no final answer"
    ok = sorted(r["name"] for r in values.get("results", []) if r["status"] == "ok")
    if ok != EXPECTED_OK_CALLS:
        return f"calls that ran: {ok}"
    if history_len != expected_len:
        return f"history has {history_len} checkpoints, expected {expected_len}"
    return None


def duplicated_side_effects(path: Path) -> tuple[int, int]:
    lines = path.read_text().splitlines() if path.exists() else []
    counts = collections.Counter(lines)
    return len(lines), sum(n - 1 for n in counts.values() if n > 1)


def summary(kind: str, latencies: list[float], wall: float, threads: int, lost: dict[str, str], side_effects: tuple[int, int], **extra: Any) -> dict:
    return {
        "setup": kind, "threads": threads, "completed": threads - len(lost), "lost_runs": len(lost),
        "lost": dict(list(lost.items())[:10]), "side_effects": side_effects[0], "duplicate_side_effects": side_effects[1],
        "p50_s": round(percentile(latencies, 50), 3), "p95_s": round(percentile(latencies, 95), 3),
        "wall_s": round(wall, 2), "runs_per_s": round(threads / wall, 2) if wall else None, **extra,
    }


# --- served: langgraph dev + langgraph_sdk ------------------------------------------------------


def start_langgraph_dev(workdir: Path, model_url: str, jobs: int) -> tuple[subprocess.Popen, str]:
    config = {"dependencies": [str(ROOT)], "graphs": {"agent": str(ROOT / "toolrail/testing/load_graph.py") + ":graph"}}
    (workdir / "langgraph.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "LANGSMITH_", "LANGCHAIN_"))}
    env.update(LANGGRAPH_CLI_NO_ANALYTICS="1", LANGSMITH_TRACING="false", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               TOOLRAIL_LOAD_MODEL_URL=model_url, TOOLRAIL_LOAD_LEDGER=str(workdir / "ledger.sqlite"),
               TOOLRAIL_LOAD_SIDE_EFFECTS=str(workdir / "side-effects.log"))
    port = _free_port()
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "langgraph_cli", "dev", "--config", str(workdir / "langgraph.json"), "--port", str(port),
         "--host", "127.0.0.1", "--no-browser", "--no-reload", "--n-jobs-per-worker", str(jobs)],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/ok", timeout=2)
            return server, url
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                stop(server)
                raise RuntimeError(f"langgraph dev did not start: {(workdir / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)


def stop(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def served_runs(url: str, threads: int) -> tuple[list[float], float, dict[str, str], int]:
    from langgraph_sdk import get_client

    client = get_client(url=url, timeout=600)

    async def one(trip: str) -> tuple[str, str, float]:
        thread = await client.threads.create(metadata={"trip": trip})
        started = time.perf_counter()
        await client.runs.wait(thread["thread_id"], "agent", input={"messages": [{"role": "user", "content": prompt_for(trip)}]})
        return trip, thread["thread_id"], time.perf_counter() - started

    async def check(thread_id: str, expected_len: int) -> str | None:
        state = await client.threads.get_state(thread_id)
        history = await client.threads.get_history(thread_id, limit=1000)
        return run_is_complete(state["values"], len(history), expected_len)

    _, reference, _ = await one("warmup")  # the length of one complete run's history
    expected_len = len(await client.threads.get_history(reference, limit=1000))
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one(f"t{i}") for i in range(threads)), return_exceptions=True)
    wall = time.perf_counter() - started
    lost, latencies = {}, []
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            lost[f"t{i}"] = f"{type(outcome).__name__}: {outcome}"
            continue
        trip, thread_id, latency = outcome
        latencies.append(latency)
        if (why := await check(thread_id, expected_len)) is not None:
            lost[trip] = why
    return latencies, wall, lost, expected_len


def served(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="toolrail-load-"))
    with OpenAICompatibleServer(trip_reply) as model:
        server, url = start_langgraph_dev(workdir, model.base_url, jobs=max(10, args.threads))
        try:
            latencies, wall, lost, history_len = asyncio.run(served_runs(url, args.threads))
        finally:
            stop(server)
        requests = len(model.requests)
    effects = duplicated_side_effects(workdir / "side-effects.log")
    # the warm-up run held one seat too
    return summary("langgraph dev (in-memory runtime), 1 server", latencies, wall, args.threads, lost,
                   (effects[0] - 1, effects[1]), history_checkpoints=history_len, model_requests=requests)


# --- postgres: several worker processes on one database -----------------------------------------


async def worker_runs(db: str, model_url: str, trips: list[str]) -> list[dict]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    from toolrail.checkpoints import _setup_once
    from toolrail.ledger import PostgresSideEffectLedger
    from toolrail.testing.load_graph import build_load_graph

    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    async with AsyncConnectionPool(db, min_size=2, max_size=8, kwargs=kwargs, open=False) as pool:
        saver = AsyncPostgresSaver(pool)
        await _setup_once(saver, db)
        graph = build_load_graph(model_url, checkpointer=saver, ledger=PostgresSideEffectLedger(db))

        async def one(trip: str) -> dict:
            started, clock = time.time(), time.perf_counter()
            try:
                await graph.ainvoke({"messages": [("user", prompt_for(trip))]}, {"configurable": {"thread_id": trip}})
                return {"trip": trip, "latency_s": time.perf_counter() - clock, "started_at": started, "ended_at": time.time()}
            except Exception as exc:  # reported as a lost run by the parent
                return {"trip": trip, "error": f"{type(exc).__name__}: {exc}"}

        return await asyncio.gather(*(one(t) for t in trips))


async def verify_postgres(db: str, trips: list[str], reference: str) -> tuple[dict[str, str], int, int]:
    from toolrail.checkpoints import open_checkpointer
    from toolrail.testing.load_graph import build_load_graph

    import psycopg

    lost = {}
    async with open_checkpointer(db) as saver:
        reader = build_load_graph("http://127.0.0.1:9/v1", checkpointer=saver)  # reads only, never runs

        async def history_len(thread: str) -> int:
            return len([s async for s in reader.aget_state_history({"configurable": {"thread_id": thread}})])

        expected = await history_len(reference)
        for trip in trips:
            values = (await reader.aget_state({"configurable": {"thread_id": trip}})).values
            if (why := run_is_complete(values, await history_len(trip), expected)) is not None:
                lost[trip] = why
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        rows = await (await conn.execute(
            "SELECT count(*) FROM toolrail_call_ledger WHERE tool = 'hold_seat' AND state = 'finished' AND thread = ANY(%s)", (trips,))).fetchone()
    return lost, expected, rows[0]


def postgres(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="toolrail-load-pg-"))
    effects_file = workdir / "side-effects.log"
    run_tag = f"pg{int(time.time() * 1000) % 10**8}"
    trips = [f"{run_tag}-t{i}" for i in range(args.threads)]
    env = {**os.environ, "TOOLRAIL_LOAD_SIDE_EFFECTS": str(effects_file), "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    with OpenAICompatibleServer(trip_reply) as model:
        reference = f"{run_tag}-warmup"
        warm = subprocess.run([sys.executable, __file__, "worker", "--db", args.db, "--model-url", model.base_url, reference],
                              env=env, capture_output=True, text=True, timeout=300)
        if warm.returncode != 0:
            raise RuntimeError(f"warm-up worker failed: {warm.stderr[-2000:]}")
        shares = [trips[w::args.workers] for w in range(args.workers)]
        workers = [subprocess.Popen([sys.executable, __file__, "worker", "--db", args.db, "--model-url", model.base_url, *share],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for share in shares if share]
        outputs = [w.communicate(timeout=900) for w in workers]
        requests = len(model.requests)
    latencies, lost, spans = [], {}, []
    for worker, (out, err) in zip(workers, outputs):
        if worker.returncode != 0:
            raise RuntimeError(f"a worker failed: {err[-2000:]}")
        for row in json.loads(out):
            if "error" in row:
                lost[row["trip"]] = row["error"]
            else:
                latencies.append(row["latency_s"])
                spans.append((row["started_at"], row["ended_at"]))
    # Throughput over the runs themselves, first start to last end (worker start-up excluded).
    wall = max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0.0
    incomplete, history_len, ledger_rows = asyncio.run(verify_postgres(args.db, trips, reference))
    lost.update({t: why for t, why in incomplete.items() if t not in lost})
    count, duplicates = duplicated_side_effects(effects_file)
    return summary(f"{len(workers)} toolrail worker processes, one Postgres", latencies, wall, args.threads, lost,
                   (count - 1, duplicates), history_checkpoints=history_len, ledger_rows=ledger_rows, model_requests=requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("served", "postgres"):
        command = commands.add_parser(name)
        command.add_argument("--threads", type=int, default=100)
        command.add_argument("--json", action="store_true")
    commands.choices["postgres"].add_argument("--workers", type=int, default=4)
    commands.choices["postgres"].add_argument("--db", required=True, help="postgresql:// URL")
    worker = commands.add_parser("worker", help="(internal) run these trips and print their latencies as JSON")
    worker.add_argument("--db", required=True)
    worker.add_argument("--model-url", required=True)
    worker.add_argument("trips", nargs="+")
    args = parser.parse_args(argv)

    if args.command == "worker":
        print(json.dumps(asyncio.run(worker_runs(args.db, args.model_url, args.trips))))
        return 0
    report = served(args) if args.command == "served" else postgres(args)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>24}: {value}")
    return 0 if report["lost_runs"] == 0 and report["duplicate_side_effects"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
