"""Sandbox latency next to its peers, measured side by side in the same run (issue 14, goal 4).

All figures are start-to-first-output of `print('ready')`, in rounds that take one sample of
each kind in turn, so machine noise falls on all of them alike:

bare python:  `python -I -c "print('ready')"` of the interpreter the sandbox runs, as a subprocess
              (issue 14's baseline). It runs `site`: on this project's machine that includes a
              .pth file of the machine image that imports certifi (~12 ms of every start).
bare python, no site: `python -I -S -c "print('ready')"`: the floor. The jail's interpreter starts
              with -S too (the driver puts site-packages on sys.path itself, without running the
              install's .pth code), so this is the row that shows what the sandbox itself costs.
bare bwrap:   the no-site command inside `bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc`
              (bubblewrap with minimal flags: namespaces, no policy, no limits, no driver).
pooled:       a NEW session while a warm spare jail is ready (the default: pool of 1); the
              session claims it, so this is claim + first run. The pool refills between samples.
cold:         a NEW session with the pool off (pool_size=0): cgroup, bwrap, interpreter, driver.
warm:         one more run in an already started session.
cold, heavy host: `cold` again after this process grew by ~370 MB of Python objects. A launch
              that forked the host (to run Python before exec) would copy the page tables of
              all it holds: 58 ms here against 40 ms at 37 MB, when it did. toolrail's launcher
              thread vforks bwrap, so this row shows the host's size costs nothing.

The host's resident size is reported with the figures (`host_rss_mb`, `heavy_host_rss_mb`):
`python -m benchmarks` runs this in a fresh interpreter, so what ran before does not move it.

Run: python -m benchmarks.sandbox_bench [--runs N] [--backend local]

Side by side with another checkout (e.g. the commit before a sandbox change):
    git worktree add /tmp/old-sandbox <commit>   # plus a venv for it
    python -m benchmarks.sandbox_bench --baseline /tmp/old-sandbox --baseline-python /tmp/old-venv/bin/python
measures both trees with the same probe, in alternating rounds of fresh processes, so machine
noise falls on both sides alike; it prints p50/p95 and the ratio this tree / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

from toolrail.sandbox import SandboxLimits, StdoutEvent, make_sandbox

CODE = "print('ready')"
KINDS = ("subprocess", "subprocess_no_site", "bare_bwrap", "pooled", "cold", "warm")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _first_output(sandbox) -> float:
    """Seconds from now to the first stdout chunk of CODE; drains the run to its end."""
    started, first = time.perf_counter(), None
    async for event in sandbox.run(CODE):
        if first is None and isinstance(event, StdoutEvent):
            first = time.perf_counter() - started
    assert first is not None, "the benchmark cell printed nothing"
    return first


async def _new_session(backend: str | None, pool_size: int) -> float:
    started, first = time.perf_counter(), None
    sandbox = make_sandbox(backend, limits=SandboxLimits(), pool_size=pool_size)
    try:
        async for event in sandbox.run(CODE):
            if first is None and isinstance(event, StdoutEvent):
                first = time.perf_counter() - started
        assert first is not None, "the benchmark cell printed nothing"
        return first
    finally:
        await sandbox.close()


async def _sandbox_cold(backend: str | None) -> float:
    return await _new_session(backend, 0)


async def _sandbox_pooled(backend: str | None) -> float:
    """A new session while the pool (size 1) has its spare ready: wait for the refill first."""
    from toolrail.sandbox.pool import pools

    async def refilled() -> None:
        make_sandbox(backend, limits=SandboxLimits(), pool_size=1).prewarm()
        for pool in pools():
            if pool.size == 1 and pool.template.limits == SandboxLimits():
                await pool.ready()

    await refilled()
    elapsed = await _new_session(backend, 1)
    await refilled()  # the refill must not run beside the next sample (of any kind)
    return elapsed


async def _timed_command(argv: list[str]) -> float:
    """Start-to-first-line of a plain subprocess. Run in a thread like the sandbox's own launch,
    so neither side pays asyncio's child watcher."""
    def run() -> float:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE)
        assert process.stdout is not None
        process.stdout.readline()
        elapsed = time.perf_counter() - started
        process.wait()
        return elapsed

    return await asyncio.to_thread(run)


def _bare_argvs() -> tuple[list[str], list[str], list[str]]:
    """(bare python, bare python without site, bare bwrap running the latter)."""
    from toolrail.sandbox.local import find_bwrap, sandbox_python

    _, python = sandbox_python()
    bare, no_site = [str(python), "-I", "-c", CODE], [str(python), "-I", "-S", "-c", CODE]
    bwrap = [find_bwrap(), "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev",
             "--proc", "/proc", "--", *no_site]
    return bare, no_site, bwrap


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 2),
        "p95_ms": round(percentile(values, 95) * 1000, 2),
    }


async def measure(runs: int = 20, backend: str | None = "local") -> dict[str, Any]:
    """Latencies in ms per kind (KINDS: p50/p95)
    and 'ratios': each kind over bare python (`X_p50_ms`), and cold over bare python without
    site and over bare bwrap."""
    bare, no_site, bwrap = _bare_argvs()
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    await _sandbox_cold(backend)  # one-time costs of this process (imports, filter build)
    await _sandbox_pooled(backend)
    for _ in range(runs):
        samples["subprocess"].append(await _timed_command(bare))
        samples["subprocess_no_site"].append(await _timed_command(no_site))
        samples["bare_bwrap"].append(await _timed_command(bwrap))
        samples["pooled"].append(await _sandbox_pooled(backend))
        samples["cold"].append(await _sandbox_cold(backend))
    async with make_sandbox(backend, pool_size=0) as sandbox:
        await sandbox.run_to_end("pass")
        samples["warm"] = [await _first_output(sandbox) for _ in range(runs)]
    from toolrail.sandbox.pool import close_pools

    await close_pools()
    rss = _rss_mb()
    ballast = [[object() for _ in range(16_000)] for _ in range(1_000)]  # ~370 MB of small objects
    heavy_rss = _rss_mb()
    heavy = [await _sandbox_cold(backend) for _ in range(max(3, runs // 2))]
    del ballast
    numbers: dict[str, Any] = {"backend": backend or "default", "runs": runs, "host_rss_mb": rss,
                               "heavy_host_rss_mb": heavy_rss, "cold_heavy_host": _summary(heavy)}
    numbers.update({kind: _summary(values) for kind, values in samples.items()})
    numbers["ratios"] = {
        f"{kind}_{q}": round(numbers[kind][q] / numbers["subprocess"][q], 3)
        for kind in KINDS[1:]
        for q in ("p50_ms", "p95_ms")
    }
    numbers["ratios"]["cold_over_no_site_p50_ms"] = round(numbers["cold"]["p50_ms"] / numbers["subprocess_no_site"]["p50_ms"], 3)
    numbers["ratios"]["cold_over_bare_bwrap_p50_ms"] = round(numbers["cold"]["p50_ms"] / numbers["bare_bwrap"]["p50_ms"], 3)
    numbers["ratios"]["cold_heavy_host_p50_ms"] = round(numbers["cold_heavy_host"]["p50_ms"] / numbers["subprocess"]["p50_ms"], 3)
    return numbers


def render(numbers: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Sandbox latency ({numbers['backend']}, {numbers['runs']} runs, time to first output)")
    for column in ("", "p50 ms", "p95 ms", "x bare python p50", "x bare python p95"):
        table.add_column(column, justify="right" if column else "left")
    labels = {"subprocess": "bare `python -I -c`", "subprocess_no_site": "bare `python -I -S -c` (no site)",
              "bare_bwrap": "bare bwrap (minimal flags) + python -S",
              "pooled": "sandbox new session, spare ready (pool on)", "cold": "sandbox new session, pool off",
              "warm": "sandbox call in a live session"}
    for kind in KINDS:
        row = numbers[kind]
        ratios = numbers["ratios"] if kind != "subprocess" else {f"{kind}_p50_ms": 1.0, f"{kind}_p95_ms": 1.0}
        table.add_row(labels[kind], f"{row['p50_ms']:.2f}", f"{row['p95_ms']:.2f}",
                      f"{ratios[f'{kind}_p50_ms']:.2f}", f"{ratios[f'{kind}_p95_ms']:.2f}")
    Console().print(table)


# Runs in a fresh interpreter in either tree: that tree's own sandbox, the same measurement.
PROBE = """
import asyncio, json, sys
from toolrail.sandbox import SandboxLimits, StdoutEvent, make_sandbox

async def first_output(sandbox):
    import time
    started, first = time.perf_counter(), None
    async for event in sandbox.run("print('ready')"):
        if first is None and isinstance(event, StdoutEvent):
            first = time.perf_counter() - started
    return first

async def cold():
    import time
    started, first = time.perf_counter(), None
    sandbox = make_sandbox("local", limits=SandboxLimits())
    try:
        async for event in sandbox.run("print('ready')"):
            if first is None and isinstance(event, StdoutEvent):
                first = time.perf_counter() - started
        return first
    finally:
        await sandbox.close()

async def main(runs):
    await cold()  # one-time costs of this interpreter (imports, filter build) are not per start
    colds = [await cold() for _ in range(runs)]
    async with make_sandbox("local") as sandbox:
        await sandbox.run_to_end("pass")
        warms = [await first_output(sandbox) for _ in range(runs)]
    print(json.dumps({"cold": colds, "warm": warms}))

asyncio.run(main(int(sys.argv[1])))
"""


def _probe(python: str, tree: str, runs: int) -> dict[str, list[float]]:
    import json
    import subprocess

    done = subprocess.run([python, "-c", PROBE, str(runs)], cwd=tree, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": tree, "TOOLRAIL_SANDBOX_POOL": "0"}, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"sandbox_bench: the probe failed in {tree}: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(baseline_tree: str, baseline_python: str, rounds: int = 6, runs: int = 10) -> dict[str, Any]:
    """This tree against `baseline_tree`, alternating rounds; p50/p95 in ms and the ratios."""
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[1])
    samples: dict[str, dict[str, list[float]]] = {side: {"cold": [], "warm": []} for side in ("this", "baseline")}
    for round_ in range(rounds):
        order = [("this", sys.executable, here), ("baseline", baseline_python, baseline_tree)]
        for side, python, tree in order if round_ % 2 == 0 else order[::-1]:
            for kind, values in _probe(python, tree, runs).items():
                samples[side][kind] += values
    numbers: dict[str, Any] = {side: {kind: _summary(v) for kind, v in kinds.items()} for side, kinds in samples.items()}
    numbers["ratios"] = {
        f"{kind}_{q}": round(numbers["this"][kind][q] / numbers["baseline"][kind][q], 3)
        for kind in ("cold", "warm") for q in ("p50_ms", "p95_ms")
    }
    numbers["samples_per_side"] = rounds * runs
    return numbers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backend", default="local")
    parser.add_argument("--baseline", metavar="TREE", help="another checkout to measure side by side")
    parser.add_argument("--baseline-python", metavar="PYTHON", help="the interpreter (venv) for --baseline")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    if args.baseline:
        import json

        print(json.dumps(compare(args.baseline, args.baseline_python or sys.executable, args.rounds, args.runs), indent=2))
        return
    numbers = asyncio.run(measure(args.runs, args.backend))
    if args.json:
        import json

        print(json.dumps(numbers))
        return
    render(numbers)


if __name__ == "__main__":
    main()
