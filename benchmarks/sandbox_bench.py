"""Sandbox latency next to a plain subprocess, measured in the same run.

cold: start a new session and get the first output of `print('ready')` (bwrap + interpreter
      start + one run), against `python -c "print('ready')"` as a subprocess.
warm: one more `print('ready')` run in an already started session, against the same plain
      subprocess (the cost a model pays per call once its session exists).

Run: python -m benchmarks.sandbox_bench [--runs N] [--backend local]
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backend", default="local")
    args = parser.parse_args(argv)
    render(asyncio.run(measure(args.runs, args.backend)))


if __name__ == "__main__":
    main()
