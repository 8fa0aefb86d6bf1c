"""`python -m benchmarks [--json] [--only NAME ...]`: every speed claim as a ratio from one run."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks import core

BENCHMARKS = {
    "fan_out": ("50 calls × 100 ms", lambda: core.bench_fan_out()),
    "speculative": ("3 calls over a 3 s stream, 1 s each", lambda: core.bench_speculative()),
    "validation": ("one typical call", lambda: core.bench_validation()),
    "graph_overhead": ("trip example, zero-latency model, SQLite", lambda: core.bench_graph_overhead()),
}


def _json_schema_validation() -> dict[str, Any]:
    from benchmarks.json_schema_bench import bench_json_schema_validation

    return bench_json_schema_validation()


BENCHMARKS["json_schema_validation"] = ("an MCP-style JSON Schema tool ($ref, anyOf, defaults)", _json_schema_validation)
# Ratios worth a headline, per benchmark: (key, how to read it).
HEADLINES = {
    "fan_out": [("tool_phase_over_slowest_call", "tool phase wall / slowest call (1.0 = perfect overlap)"),
                ("toolrail_over_toolnode", "toolrail run / LangGraph ToolNode run")],
    "speculative": [("speculative_over_no_speculation", "with speculation / without"),
                    ("speculative_over_sequential", "with speculation / fully sequential")],
    "validation": [("toolrail_over_jsonschema", "toolrail validate / jsonschema validate")],
    "graph_overhead": [("toolrail_over_bare", "toolrail graph / bare LangGraph graph")],
    "json_schema_validation": [("toolrail_over_jsonschema", "toolrail validate / jsonschema validate"),
                               ("toolrail_over_jsonschema_rs", "toolrail validate / jsonschema-rs validate")],
    "sandbox": [("cold_p50_over_subprocess", "cold start to first output / python -c (p50)"),
                ("cold_p95_over_subprocess", "cold start to first output / python -c (p95)"),
                ("warm_p50_over_subprocess", "warm call / python -c (p50)"),
                ("warm_p95_over_subprocess", "warm call / python -c (p95)")],
}


async def _sandbox() -> dict[str, Any]:
    from benchmarks import sandbox_bench

    numbers = await sandbox_bench.measure(runs=20)
    flat = {f"{kind}_{q}": numbers[kind][q] for kind in ("subprocess", "cold", "warm") for q in ("p50_ms", "p95_ms")}
    ratios = {
        f"{kind}_{q}_over_subprocess": flat[f"{kind}_{q}_ms"] / flat[f"subprocess_{q}_ms"]
        for kind in ("cold", "warm") for q in ("p50", "p95")
    }
    return {**flat, **ratios}


BENCHMARKS["sandbox"] = ("local sandbox vs plain python -c subprocess", _sandbox)


async def _run(selected: list[str]) -> dict[str, Any]:
    registry = BENCHMARKS
    results = {}
    for name in selected or list(registry):
        if name not in registry:
            raise SystemExit(f"benchmarks: unknown benchmark {name!r}; choose from {', '.join(registry)}")
        outcome = registry[name][1]()
        results[name] = await outcome if asyncio.iscoroutine(outcome) else outcome
    return results


def _table(results: dict[str, Any]) -> Table:
    table = Table(title="toolrail benchmarks (ratios from one run, side by side)")
    for column in ("benchmark", "ratio", "value", "figures"):
        table.add_column(column)
    for name, figures in results.items():
        shown = HEADLINES.get(name) or [(k, k) for k in figures if "over" in k or "ratio" in k]
        rest = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items() if not any(k == s[0] for s in shown))
        for i, (key, label) in enumerate(shown):
            table.add_row(name if i == 0 else "", label, f"{figures[key]:.3f}", rest if i == 0 else "")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--only", nargs="*", default=[], help="run only these benchmarks")
    args = parser.parse_args(argv)
    results = asyncio.run(_run(args.only))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        Console(width=160).print(_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
