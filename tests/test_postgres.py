"""Postgres checkpoints for many workers, against a real server started on loopback."""

from __future__ import annotations

import glob
import json
import os
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
        assert len(steps) == 8 and steps[0]["next"] == []  # every checkpoint of a whole run, and it ended
    resumed = toolrail("resume", threads[0], "--json", "--db", postgres_url, tmp_path=tmp_path)
    assert json.loads(resumed.stdout)["answer"].startswith("Here's your SF")


def test_an_unreachable_postgres_is_one_clear_line(tmp_path):
    done = toolrail("run", TRIP_PROMPT, "--db", f"postgresql://postgres@127.0.0.1:{_free_port()}/x", tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("toolrail: error: cannot use the Postgres checkpoint database") and done.stderr.count("\n") == 1
