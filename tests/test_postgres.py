"""Postgres checkpoints for many workers, against a real server started on loopback."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import TRIP_PROMPT
from test_cli import toolrail


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*command: str) -> list[str]:
    """Postgres refuses to run as root: use the system's postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture(scope="module")
def postgres_url():
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert binaries, "PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql)"
    bin_dir = Path(binaries[-1])
    folder = Path(tempfile.mkdtemp(prefix="toolrail-pg-"))
    folder.chmod(0o755)
    data = folder / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run(_as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"), check=True, capture_output=True)
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    subprocess.run(_as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"), check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_several_workers_share_one_postgres_and_nothing_is_lost(postgres_url, tmp_path):
    threads = [f"worker-{i}" for i in range(4)]

    def worker(thread: str):
        return toolrail("run", "--json", "--thread", thread, TRIP_PROMPT, tmp_path=tmp_path, env={"TOOLRAIL_CHECKPOINT_URL": postgres_url})

    with ThreadPoolExecutor(len(threads)) as pool:
        runs = list(pool.map(worker, threads))
    for done in runs:
        assert done.returncode == 0, done.stderr
    for thread in threads:
        history = toolrail("history", thread, "--json", "--db", postgres_url, tmp_path=tmp_path)
        assert history.returncode == 0, history.stderr
        steps = json.loads(history.stdout)
        assert len(steps) == 7 and steps[0]["next"] == []  # every checkpoint of a whole run, and it ended
    resumed = toolrail("resume", threads[0], "--json", "--db", postgres_url, tmp_path=tmp_path)
    assert json.loads(resumed.stdout)["answer"].startswith("Here's your SF")


def test_an_unreachable_postgres_is_one_clear_line(tmp_path):
    done = toolrail("run", TRIP_PROMPT, "--db", f"postgresql://postgres@127.0.0.1:{_free_port()}/x", tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("toolrail: error: cannot use the Postgres checkpoint database") and done.stderr.count("\n") == 1


async def test_a_side_effect_claim_in_postgres_is_seen_by_every_worker(postgres_url):
    from toolrail.checkpoints import open_ledger
    from toolrail.execution import Outcome
    from toolrail.ledger import UNKNOWN

    charges = []

    async def charge() -> Outcome:
        charges.append(1)
        await asyncio.sleep(0.2)
        return Outcome("ok", "charged", 0.0, 0.2)

    one_worker, other_worker = open_ledger(postgres_url), open_ledger(postgres_url)
    from toolrail.ledger import fingerprint

    await one_worker.claim("pg-thread", "call_1", fingerprint("charge", {}), "charge")  # this worker started it, then died
    assert (await other_worker.run_once("pg-thread", "call_1", "charge", {}, charge)).content == UNKNOWN
    assert charges == []

    both = await asyncio.gather(*(w.run_once("pg-thread", "call_2", "charge", {}, charge) for w in (one_worker, other_worker)))
    assert charges == [1] and sorted(o.content for o in both) == sorted(["charged", UNKNOWN])
    again = await open_ledger(postgres_url).run_once("pg-thread", "call_2", "charge", {}, charge)
    assert charges == [1] and again.content == "charged"
    other_arguments = await open_ledger(postgres_url).run_once("pg-thread", "call_2", "charge", {"order": "2"}, charge)
    assert charges == [1, 1] and other_arguments.content == "charged"  # same id, another call: it runs

    import psycopg  # the claims are rows in the checkpoint database itself, not in a worker's folder

    async with await psycopg.AsyncConnection.connect(postgres_url) as db:
        rows = await (await db.execute("SELECT call_id, state FROM toolrail_call_ledger WHERE thread = 'pg-thread' ORDER BY call_id, state DESC")).fetchall()
    assert rows == [("call_1", "started"), ("call_2", "finished"), ("call_2", "finished")]


async def test_one_writer_per_thread_on_postgres_and_a_dropped_owner_releases_it(postgres_url):
    import psycopg

    from toolrail.thread_lock import ThreadBusy, thread_lock

    async with thread_lock(postgres_url, "pg-locked"):
        with pytest.raises(ThreadBusy, match="--wait"):
            async with thread_lock(postgres_url, "pg-locked"):
                pass
        async with thread_lock(postgres_url, "another-thread"):
            pass  # other threads are free
    async with thread_lock(postgres_url, "pg-locked"):
        pass  # released on exit
    # An owner whose connection dies (a killed worker) holds nothing: the server drops its locks.
    from toolrail.thread_lock import _advisory_key

    owner = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    await owner.execute("SELECT pg_advisory_lock(%s)", (_advisory_key("pg-crashed"),))
    with pytest.raises(ThreadBusy):
        async with thread_lock(postgres_url, "pg-crashed"):
            pass
    await owner.close()
    async with thread_lock(postgres_url, "pg-crashed"):
        pass


def test_sigkill_then_resume_on_another_worker_repeats_no_side_effect_on_postgres(postgres_url):
    from test_crash_resume import _harness

    report = _harness().harness(runs=4, seed=random.randrange(1 << 30), db=postgres_url)
    assert report["finished"] == report["runs"], report["details"]
    assert report["lost_results"] == 0, report["details"]
    assert report["duplicate_side_effects"] == 0, report["duplicates"]


async def test_results_journaled_in_postgres_in_one_batch_are_read_back_by_another_worker(postgres_url):
    from toolrail.execution import Outcome
    from toolrail.journal import PostgresResultJournal

    batch = PostgresResultJournal(postgres_url).batch("thread-j/tools:task-1")
    for i in range(3):
        batch.record(f"c{i}", "lookup", Outcome("ok", f"value {i}", 1.0 + i, 0.1), speculative=i == 0)
    await batch.close()
    other_worker = PostgresResultJournal(postgres_url)
    found = await other_worker.finished("thread-j/tools:task-1")
    assert {k: (o.content, spec) for k, (o, spec) in found.items()} == {
        "c0": ("value 0", True), "c1": ("value 1", False), "c2": ("value 2", False)}
    assert await other_worker.finished("thread-j/tools:task-2") == {}  # a replay's new task runs afresh
