"""The load test, small: 20 trip runs at once on the served graph, and on 2 workers sharing Postgres.

The full-size figures (100 threads) are in README; here only correctness counts: no lost run,
no duplicated side effect, every thread's history complete. Latencies are reported, not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_postgres import postgres_url  # noqa: F401  (the fixture: a real PostgreSQL on loopback)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "load_test.py"


def load_test(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads(done.stdout)
    print(report)  # shown with -s: the table's row for this size
    return report


def assert_nothing_lost(report: dict, threads: int) -> None:
    assert report["lost"] == {} and report["lost_runs"] == 0 and report["completed"] == threads
    assert report["side_effects"] == threads and report["duplicate_side_effects"] == 0
    assert report["history_checkpoints"] == 8  # one complete trip run: 3 model turns, 2 tool phases
    assert report["p50_s"] > 0 and report["p95_s"] >= report["p50_s"] and report["runs_per_s"] > 0


def test_twenty_concurrent_trip_runs_on_the_served_graph_lose_nothing():
    assert_nothing_lost(load_test("served", "--threads", "20"), 20)


def test_twenty_trip_runs_on_two_workers_sharing_postgres_lose_nothing(postgres_url):  # noqa: F811
    report = load_test("postgres", "--threads", "20", "--workers", "2", "--db", postgres_url)
    assert_nothing_lost(report, 20)
    assert report["ledger_rows"] == 20
