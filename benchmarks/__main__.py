"""`python -m benchmarks [--json] [--only NAME ...] [--write-readme]`: every speed claim as a ratio
from one run, each against its fastest peer measured side by side.

`--write-readme` rewrites the table between the README's `benchmarks:start/end` markers from
this run's figures, with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks import core

README = Path(__file__).resolve().parents[1] / "README.md"


def _json_schema_validation() -> dict[str, Any]:
    from benchmarks.json_schema_bench import bench_json_schema_validation

    return bench_json_schema_validation()


async def _sandbox(quick: bool = False) -> dict[str, Any]:
    """In a fresh interpreter: a cold start forks the host process, so its cost grows with the
    host's size, and this process has grown by whatever benchmarks ran before."""
    from benchmarks import sandbox_bench

    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "benchmarks.sandbox_bench", "--json", "--runs", "3" if quick else "20"],
        cwd=README.parent, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"the sandbox benchmark failed: {done.stderr.strip()[-1500:]}")
    numbers = json.loads(done.stdout.strip().splitlines()[-1])
    flat = {f"{kind}_{q}": numbers[kind][q] for kind in (*sandbox_bench.KINDS, "cold_heavy_host") for q in ("p50_ms", "p95_ms")}
    flat.update(host_rss_mb=numbers["host_rss_mb"], heavy_host_rss_mb=numbers["heavy_host_rss_mb"])
    ratios = {
        f"{kind}_{q}_over_subprocess": flat[f"{kind}_{q}_ms"] / flat[f"subprocess_{q}_ms"]
        for kind in sandbox_bench.KINDS[1:] for q in ("p50", "p95")
    }
    ratios["cold_p50_over_no_site"] = flat["cold_p50_ms"] / flat["subprocess_no_site_p50_ms"]
    ratios["cold_p50_over_bare_bwrap"] = flat["cold_p50_ms"] / flat["bare_bwrap_p50_ms"]
    ratios["cold_heavy_host_p50_over_subprocess"] = flat["cold_heavy_host_p50_ms"] / flat["subprocess_p50_ms"]
    return {**flat, **ratios}


BENCHMARKS = {
    "fan_out": lambda quick: core.bench_fan_out_sweep(sizes=(1, 10) if quick else core.SWEEP_SIZES,
                                                      seconds=0.01 if quick else 0.1, repeats=1 if quick else 3,
                                                      more_repeats_for_short_runs=not quick),
    "speculative": lambda quick: core.bench_speculative(),
    "validation": lambda quick: core.bench_validation(n=200 if quick else 20000),
    "streaming": lambda quick: core.bench_streaming(n_calls=50 if quick else 1000, repeats=1 if quick else 5,
                                                    planner_repeats=1 if quick else 15),
    "checkpoints": lambda quick: core.bench_checkpoints(turns=4 if quick else 50, repeats=1 if quick else 3, window=1 if quick else 10),
    "graph_overhead": lambda quick: core.bench_graph_overhead(runs=2 if quick else 20),
    "json_schema_validation": lambda quick: _json_schema_validation(),
    "sandbox": lambda quick: _sandbox(quick),
}


async def run(selected: list[str], quick: bool = False) -> dict[str, Any]:
    results = {}
    for name in selected or list(BENCHMARKS):
        if name not in BENCHMARKS:
            raise SystemExit(f"benchmarks: unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        outcome = BENCHMARKS[name](quick)
        results[name] = await outcome if asyncio.iscoroutine(outcome) else outcome
    return results


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){memory}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


PEER_NAMES = {"toolnode": "LangGraph `ToolNode`", "create_agent": "`create_agent` (one `Send` per call)",
              "fastjsonschema": "fastjsonschema", "jsonschema_rs": "jsonschema-rs", "jsonschema": "jsonschema"}


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, ratio and its peer, value, figures) for the README and the console."""
    out: list[tuple[str, str, str, str]] = []
    if "fan_out" in results:
        points = results["fan_out"]["points"]
        groups: dict[str, list[tuple[int, dict]]] = {}
        for key, figures in points.items():
            kind, store, n = key.split("_")
            kind = "instant async (0 ms: each framework's own cost)" if kind == "instant" else kind
            groups.setdefault(f"{kind} tools, {'in memory' if store == 'memory' else 'SQLite'}", []).append((int(n), figures))
        for label, items in groups.items():
            ratios = " · ".join(f"{n}: {f['toolrail_over_fastest_peer']:.2f} ({'TN' if f['fastest_peer'] == 'toolnode' else 'CA'})" for n, f in items)
            phases = " · ".join(f"{n}: {f['tool_phase_over_slowest_call']:.2f}" for n, f in items
                                if f["tool_phase_over_slowest_call"] is not None)
            shown = items if not phases else items[-1:]  # instant tools: every size's times
            detail = "; ".join(
                f"N={n}: toolrail {f['toolrail_run_s'] * 1000:.{1 if not phases else 0}f} ms, ToolNode {f['toolnode_run_s'] * 1000:.{1 if not phases else 0}f} ms"
                + (f", create_agent {f['create_agent_run_s'] * 1000:.{1 if not phases else 0}f} ms" if "create_agent_run_s" in f else "")
                for n, f in shown) + (f"; tool phase / slowest call by N: {phases}" if phases else "")
            out.append((f"fan-out, {label}, calls per turn N", "toolrail run / fastest peer's run, by N (TN = ToolNode, CA = create_agent)", ratios, detail))
    if "speculative" in results:
        s = results["speculative"]
        out.append(("speculative: 3 calls over a 3 s stream, 1 s each", "with speculation / without", f"{s['speculative_over_no_speculation']:.2f}",
                    f"{s['speculative_s']:.2f} s vs {s['no_speculation_s']:.2f} s; fully sequential {s['sequential_s']:.2f} s"))
    if "validation" in results:
        v = results["validation"]
        sizes = [s for s in ("small", "medium", "large", "medium_colons") if s in v]
        label = {s: f"{v[s]['bytes']:,} B" + (" (strings with colons)" if s == "medium_colons" else "") for s in sizes}
        out.append(("validation: one valid call, raw JSON in, strict rules included (`validate_arguments`)",
                    "toolrail / plain Pydantic `model_validate_json`, by argument size",
                    " · ".join(f"{label[s]}: {v[s]['toolrail_over_pydantic']:.2f}" for s in sizes),
                    "; ".join(f"{v[s]['toolrail_us']:.1f} µs vs {v[s]['pydantic_us']:.1f} µs" for s in sizes)))
        out.append(("", "toolrail / fastest JSON Schema validator, by argument size",
                    " · ".join(f"{label[s]}: {v[s]['toolrail_over_' + v[s]['fastest_peer']]:.2f} ({PEER_NAMES[v[s]['fastest_peer']]})"
                               for s in sizes),
                    "; ".join(f"fastjsonschema {v[s]['fastjsonschema_us']:.1f} µs, jsonschema-rs {v[s]['jsonschema_rs_us']:.1f} µs" for s in sizes)))
    if "streaming" in results:
        s = results["streaming"]
        n = s["calls"]
        out.append((f"streaming: planner, one reply of {n} calls", "per-call cost at N / at N/10 (1.0 = linear)", f"{s['per_call_growth_10x_calls']:.2f}",
                    f"{s[f'streamed_planner_ms_{n}']:.0f} ms for {s[f'chunks_{n}']} chunks"))
        out.append(("", "streamed / the same reply in one chunk, the model's chunk objects built in the timing", f"{s['streamed_over_whole_reply']:.2f}",
                    f"{s[f'streamed_planner_ms_{n}']:.0f} ms vs {s[f'whole_reply_planner_ms_{n}']:.0f} ms "
                    f"(building the {s[f'chunks_{n}']} `ChatGenerationChunk`s alone: {s[f'model_chunk_construction_ms_{n}']:.0f} ms)"))
        if "planner_only_streamed_over_whole_reply" in s:
            out.append(("", "planner only: streamed / in one chunk, the model's chunks made before the timing",
                        f"{s['planner_only_streamed_over_whole_reply']:.2f}",
                        f"{s[f'planner_only_streamed_ms_{n}']:.0f} ms vs {s[f'planner_only_whole_reply_ms_{n}']:.0f} ms"))
        if "planner_only_floor_over_whole_reply" in s:
            out.append(("", "planner only, its floor: a loop that only reads the same chunks / in one chunk",
                        f"{s['planner_only_floor_over_whole_reply']:.2f}",
                        f"{s[f'bare_read_streamed_ms_{n}']:.0f} ms to read the {s[f'chunks_{n}']} chunks; the planner's own work "
                        f"{s['planner_only_own_us_per_chunk']:.2f} µs a chunk"))
        if "chatopenai_in_process_streamed_ms" in s:
            out.append((f"streaming: real `ChatOpenAI`, one reply of {n} calls, in process (SDK, SSE, langchain-openai; no socket)",
                        "streamed / the same reply not streamed (planner CPU time)", f"{s['chatopenai_in_process_streamed_over_whole_reply_cpu']:.2f}",
                        f"CPU {s['chatopenai_in_process_streamed_cpu_ms']:.0f} ms vs {s['chatopenai_in_process_whole_reply_cpu_ms']:.0f} ms; "
                        f"wall {s['chatopenai_in_process_streamed_ms']:.0f} ms vs {s['chatopenai_in_process_whole_reply_ms']:.0f} ms"))
            out.append(("", "streamed with a callback listening (LangSmith, `stream_mode=\"messages\"`) / not streamed (CPU)",
                        f"{s['chatopenai_in_process_streamed_listened_over_whole_reply_cpu']:.2f}",
                        f"CPU {s['chatopenai_in_process_streamed_listened_cpu_ms']:.0f} ms: every chunk becomes langchain's message and a callback"))
            out.append((f"streaming: real `ChatOpenAI`, one reply of {n} calls, over the wire (local server in its own process)",
                        "streamed / not streamed (planner wall time; client CPU time)",
                        f"{s['chatopenai_wire_streamed_over_whole_reply']:.2f}; {s['chatopenai_wire_streamed_over_whole_reply_cpu']:.2f}",
                        f"wall {s['chatopenai_wire_streamed_ms']:.0f} ms vs {s['chatopenai_wire_whole_reply_ms']:.0f} ms (the server renders and sends "
                        f"{s[f'chunks_{n}']} frames one by one); client CPU {s['chatopenai_wire_streamed_cpu_ms']:.0f} ms vs {s['chatopenai_wire_whole_reply_cpu_ms']:.0f} ms"))
            if "chatopenai_wire_streamed_over_bare_http_read_cpu" in s:
                out.append(("", "streamed planner / the SDK's HTTP client alone reading the same stream (client CPU)",
                            f"{s['chatopenai_wire_streamed_over_bare_http_read_cpu']:.2f}",
                            f"CPU {s['chatopenai_wire_streamed_cpu_ms']:.0f} ms vs {s['chatopenai_wire_bare_http_read_cpu_ms']:.0f} ms: "
                            "the client's cost is the HTTP stack's per read (see Streaming below)"))
    if "checkpoints" in results:
        c = results["checkpoints"]
        out.append((f"checkpoints: {c['turns']}-turn thread, SQLite", "toolrail bytes per turn / bare LangGraph's", f"{c['toolrail_over_bare_bytes_per_turn']:.2f}",
                    f"{c['toolrail_bytes_per_turn'] / 1024:.0f} KiB vs {c['bare_bytes_per_turn'] / 1024:.0f} KiB"))
        out.append(("", f"per-turn time, turns {c['turns'] - c['window'] + 1}..{c['turns']} / turns 1..{c['window']}: toolrail (bare LangGraph's after it)",
                    f"{c['toolrail_last_turns_over_first_turns_s']:.2f}",
                    f"toolrail {c['toolrail_first_turns_ms']:.1f} → {c['toolrail_last_turns_ms']:.1f} ms; "
                    f"bare {c['bare_first_turns_ms']:.1f} → {c['bare_last_turns_ms']:.1f} ms ({c['bare_last_turns_over_first_turns_s']:.2f})"))
        if "toolrail_last_turns_over_first_turns_cpu" in c:
            out.append(("", "per-turn CPU time, the same windows: toolrail (bare LangGraph's after it)",
                        f"{c['toolrail_last_turns_over_first_turns_cpu']:.2f}",
                        f"toolrail {c['toolrail_first_turns_cpu_ms']:.1f} → {c['toolrail_last_turns_cpu_ms']:.1f} ms; "
                        f"bare {c['bare_first_turns_cpu_ms']:.1f} → {c['bare_last_turns_cpu_ms']:.1f} ms ({c['bare_last_turns_over_first_turns_cpu']:.2f})"))
    if "json_schema_validation" in results:
        j = results["json_schema_validation"]
        peer = "jsonschema_rs" if "toolrail_over_jsonschema_rs" in j else "jsonschema"
        out.append(("validation: an MCP-style JSON Schema tool ($ref, anyOf, defaults)", f"toolrail / {PEER_NAMES[peer]}",
                    f"{j[f'toolrail_over_{peer}']:.2f}", f"{j['toolrail_us']:.1f} µs vs {j[f'{peer}_us']:.1f} µs"))
    if "graph_overhead" in results:
        g = results["graph_overhead"]
        out.append(("graph overhead: trip example, zero-latency model, SQLite", "toolrail / bare LangGraph", f"{g['toolrail_over_bare']:.2f}",
                    f"{g['toolrail_run_ms']:.0f} ms vs {g['bare_langgraph_run_ms']:.0f} ms"))
    if "sandbox" in results:
        s = results["sandbox"]
        out.append(("sandbox: new session, warm spare ready (default pool), to first output (p50 / p95)",
                    "sandbox / bare `python -I -c`",
                    f"{s['pooled_p50_over_subprocess']:.2f} / {s['pooled_p95_over_subprocess']:.2f}",
                    f"{s['pooled_p50_ms']:.1f} / {s['pooled_p95_ms']:.1f} ms vs {s['subprocess_p50_ms']:.0f} / {s['subprocess_p95_ms']:.0f} ms"))
        out.append(("sandbox: new session, pool off (cold), to first output (p50 / p95)", "sandbox / bare `python -I -c`",
                    f"{s['cold_p50_over_subprocess']:.2f} / {s['cold_p95_over_subprocess']:.2f}",
                    f"{s['cold_p50_ms']:.0f} / {s['cold_p95_ms']:.0f} ms vs {s['subprocess_p50_ms']:.0f} / {s['subprocess_p95_ms']:.0f} ms;"
                    f" host process {s['host_rss_mb']:.0f} MB resident"))
        out.append(("", f"the same from a host process of {s['heavy_host_rss_mb']:.0f} MB (bwrap is vforked: no copy of it; p50)",
                    f"{s['cold_heavy_host_p50_over_subprocess']:.2f}",
                    f"{s['cold_heavy_host_p50_ms']:.0f} ms vs {s['subprocess_p50_ms']:.0f} ms"))
        out.append(("sandbox: cold start vs the interpreter without site (the jail's interpreter runs -S; p50)",
                    "sandbox / bare `python -I -S -c`", f"{s['cold_p50_over_no_site']:.2f}",
                    f"{s['cold_p50_ms']:.0f} ms vs {s['subprocess_no_site_p50_ms']:.0f} ms (bare `python -I -c` spends"
                    f" {s['subprocess_p50_ms'] - s['subprocess_no_site_p50_ms']:.0f} ms in site here)"))
        out.append(("sandbox: cold start vs bare bwrap (minimal flags) + python -S (p50)", "sandbox / bare bwrap",
                    f"{s['cold_p50_over_bare_bwrap']:.2f}", f"{s['cold_p50_ms']:.0f} ms vs {s['bare_bwrap_p50_ms']:.0f} ms"))
        out.append(("sandbox: warm call in a live session (p50 / p95)", "sandbox / bare `python -I -c`",
                    f"{s['warm_p50_over_subprocess']:.3f} / {s['warm_p95_over_subprocess']:.3f}",
                    f"{s['warm_p50_ms']:.2f} / {s['warm_p95_ms']:.2f} ms"))
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {machine()}, by `python -m benchmarks --write-readme`.", "",
             "| benchmark | ratio (against) | value | figures |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(results)]
    return "\n".join(lines)


def write_readme(results: dict[str, Any], readme: Path = README) -> None:
    text = readme.read_text()
    block = f"<!-- benchmarks:start -->\n{markdown(results)}\n<!-- benchmarks:end -->"
    new, count = re.subn(r"<!-- benchmarks:start -->.*?<!-- benchmarks:end -->", lambda _: block, text, flags=re.S)
    if count != 1:
        raise SystemExit(f"benchmarks: {readme} has no benchmarks:start/end markers")
    readme.write_text(new)


def _table(results: dict[str, Any]) -> Table:
    table = Table(title=f"toolrail benchmarks (ratios from one run, side by side) · {machine()}")
    for column in ("benchmark", "ratio (against)", "value", "figures"):
        table.add_column(column)
    for row in rows(results):
        table.add_row(*row)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--only", nargs="*", default=[], help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmarks run (figures mean nothing)")
    parser.add_argument("--write-readme", action="store_true", help="rewrite README.md's benchmark table from this run")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.only, args.quick))
    results["machine"] = machine()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        Console(width=200).print(_table(results))
    if args.write_readme:
        if args.quick:
            raise SystemExit("benchmarks: --quick figures mean nothing; not writing them to the README")
        write_readme(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
