"""Sandbox latency next to a plain subprocess, measured in the same run.

cold: start a new session and get the first output of `print('ready')` (bwrap + interpreter
      start + one run), against `python -c "print('ready')"` as a subprocess.
warm: one more `print('ready')` run in an already started session, against the same plain
      subprocess (the cost a model pays per call once its session exists).

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
import sys
import time
from typing import Any

from toolrail.sandbox import SandboxLimits, StdoutEvent, make_sandbox

CODE = "print('ready')"


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


async def _sandbox_cold(backend: str | None) -> float:
    started, first = time.perf_counter(), None
    sandbox = make_sandbox(backend, limits=SandboxLimits())
    try:
        async for event in sandbox.run(CODE):
            if first is None and isinstance(event, StdoutEvent):
                first = time.perf_counter() - started
        assert first is not None, "the benchmark cell printed nothing"
        return first
    finally:
        await sandbox.close()


async def _plain_subprocess() -> float:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CODE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    await process.stdout.readline()
    elapsed = time.perf_counter() - started
    await process.wait()
    return elapsed


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 2),
        "p95_ms": round(percentile(values, 95) * 1000, 2),
    }


async def measure(runs: int = 20, backend: str | None = "local") -> dict[str, Any]:
    """Latencies in ms: {'cold': {...}, 'warm': {...}, 'subprocess': {...}, 'ratios': {...}}."""
    plain = [await _plain_subprocess() for _ in range(runs)]
    cold = [await _sandbox_cold(backend) for _ in range(runs)]
    async with make_sandbox(backend) as sandbox:
        await sandbox.run_to_end("pass")
        warm = [await _first_output(sandbox) for _ in range(runs)]
    numbers: dict[str, Any] = {
        "backend": backend or "default",
        "runs": runs,
        "subprocess": _summary(plain),
        "cold": _summary(cold),
        "warm": _summary(warm),
    }
    numbers["ratios"] = {
        f"{kind}_{q}": round(numbers[kind][q] / numbers["subprocess"][q], 2)
        for kind in ("cold", "warm")
        for q in ("p50_ms", "p95_ms")
    }
    return numbers


def render(numbers: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Sandbox latency ({numbers['backend']}, {numbers['runs']} runs, time to first output)")
    for column in ("", "p50 ms", "p95 ms", "x subprocess p50", "x subprocess p95"):
        table.add_column(column, justify="right" if column else "left")
    base = numbers["subprocess"]
    table.add_row("plain `python -c` subprocess", f"{base['p50_ms']:.1f}", f"{base['p95_ms']:.1f}", "1.00", "1.00")
    for kind, label in (("cold", "sandbox cold start"), ("warm", "sandbox warm call")):
        row = numbers[kind]
        ratios = numbers["ratios"]
        table.add_row(
            label,
            f"{row['p50_ms']:.1f}",
            f"{row['p95_ms']:.1f}",
            f"{ratios[f'{kind}_p50_ms']:.2f}",
            f"{ratios[f'{kind}_p95_ms']:.2f}",
        )
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
                          env={**__import__("os").environ, "PYTHONPATH": tree}, timeout=600)
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
    args = parser.parse_args(argv)
    if args.baseline:
        import json

        print(json.dumps(compare(args.baseline, args.baseline_python or sys.executable, args.rounds, args.runs), indent=2))
        return
    render(asyncio.run(measure(args.runs, args.backend)))


if __name__ == "__main__":
    main()
