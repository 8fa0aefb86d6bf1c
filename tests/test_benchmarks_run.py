"""The benchmark command runs end to end and reports every ratio (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import __main__ as command

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_run_reports_each_figure_against_its_peer_as_json():
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json", "--only", "fan_out", "validation", "streaming", "checkpoints"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    point = results["fan_out"]["points"]["async_memory_10"]
    assert point["fastest_peer"] in ("toolnode", "create_agent") and point["toolrail_run_s"] > 0
    assert {"sync_sqlite_1", "async_sqlite_10", "instant_memory_10"} <= set(results["fan_out"]["points"])
    instant = results["fan_out"]["points"]["instant_memory_1"]  # tools that return at once: no tool phase ratio
    assert instant["tool_phase_over_slowest_call"] is None and instant["toolrail_over_create_agent"] > 0
    assert any(row[0].startswith("fan-out, instant async") for row in command.rows(results))
    assert results["validation"]["fastest_peer"] in ("fastjsonschema", "jsonschema_rs", "jsonschema")
    assert results["validation"]["pydantic_us"] > 0 and results["streaming"]["chunks_50"] > 50
    # the planner-only streamed figure beside its peer, a loop that only reads the same chunks
    assert results["streaming"]["bare_read_streamed_ms_50"] > 0 and "planner_only_floor_over_whole_reply" in results["streaming"]
    # the same reply through the real ChatOpenAI client, in process and over the wire from the local server
    assert results["streaming"]["chatopenai_in_process_streamed_cpu_ms"] > 0 and results["streaming"]["chatopenai_wire_whole_reply_ms"] > 0
    assert [results["validation"][s]["bytes"] < results["validation"][t]["bytes"] for s, t in (("small", "medium"), ("medium", "large"))] == [True, True]
    assert results["checkpoints"]["bare_bytes_per_turn"] > 0
    assert "cores" in results["machine"]


def test_readme_table_is_rewritten_between_its_markers_and_names_the_machine(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- benchmarks:start -->\nold table\n<!-- benchmarks:end -->\nafter\n")
    small = {"bytes": 76, "toolrail_us": 1.0, "pydantic_us": 0.9, "fastjsonschema_us": 2.0, "jsonschema_rs_us": 1.5, "jsonschema_us": 20.0,
             "toolrail_over_pydantic": 1.11, "toolrail_over_fastjsonschema": 0.5, "toolrail_over_jsonschema_rs": 0.67,
             "toolrail_over_jsonschema": 0.05, "fastest_peer": "jsonschema_rs"}
    figures = {"validation": {"small": small, **{k: v for k, v in small.items() if k != "bytes"}}}
    command.write_readme(figures, readme)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert "plain Pydantic" in text and "jsonschema-rs" in text and "| 76 B: 1.11 |" in text and "cores" in text


def test_json_schema_validation_benchmark_compares_the_compiled_tool_with_schema_validators():
    from benchmarks.json_schema_bench import bench_json_schema_validation

    figures = bench_json_schema_validation(n=50)
    assert figures["toolrail_us"] > 0 and figures["jsonschema_us"] > 0 and figures["jsonschema_rs_us"] > 0
