"""The benchmark code runs and reports every ratio (tiny sizes; no timing is asserted)."""

from __future__ import annotations

from benchmarks import core


async def test_fan_out_benchmark_reports_its_ratios():
    figures = await core.bench_fan_out(n_calls=5, seconds=0.01, repeats=1)
    assert {"tool_phase_over_slowest_call", "toolrail_over_toolnode"} <= set(figures)


async def test_graph_overhead_benchmark_runs_both_graphs_with_sqlite():
    figures = await core.bench_graph_overhead(runs=2)
    assert figures["toolrail_run_ms"] > 0 and figures["bare_langgraph_run_ms"] > 0


def test_validation_benchmark_compares_with_jsonschema():
    figures = core.bench_validation(n=50)
    assert figures["toolrail_us"] > 0 and figures["jsonschema_us"] > 0


def test_json_schema_validation_benchmark_compares_the_compiled_tool_with_schema_validators():
    from benchmarks.json_schema_bench import bench_json_schema_validation

    figures = bench_json_schema_validation(n=50)
    assert figures["toolrail_us"] > 0 and figures["jsonschema_us"] > 0 and figures["jsonschema_rs_us"] > 0
