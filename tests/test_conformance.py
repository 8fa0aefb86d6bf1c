"""The BFCL suite (shared/bfcl beside the project) through the real graph: every case, every mutant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolrail import conformance as harness
from toolrail.tools.registry import Tool

SUITE = Path(__file__).resolve().parents[1].parent / "shared" / "bfcl"
LIVE_SUITE = SUITE.parent / "bfcl-live"


@pytest.fixture(scope="module")
def suite_folder() -> Path:
    assert SUITE.is_dir(), f"the BFCL suite must be at {SUITE} (shared/ beside the project root)"
    return SUITE


@pytest.fixture(scope="module")
def suite_runs(suite_folder, tmp_path_factory) -> dict[str, subprocess.Popen]:
    """Both suites' `toolrail conformance` runs, started together: each is one CPU-bound process,
    so on CI's two cores they take the time of the longer one, not of both."""
    assert LIVE_SUITE.is_dir(), f"the BFCL live suite must be at {LIVE_SUITE}"
    runs = {
        name: subprocess.Popen([sys.executable, "-m", "toolrail.cli", "conformance", str(folder), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path_factory.mktemp(name))
        for name, folder in (("bfcl", suite_folder), ("live", LIVE_SUITE))
    }
    yield runs
    for run in runs.values():
        if run.poll() is None:
            run.kill()
            run.communicate()


def _finished(run: subprocess.Popen) -> tuple[dict, int]:
    out, err = run.communicate(timeout=900)
    assert out, err[-2000:]
    return json.loads(out), run.returncode


def test_every_bfcl_case_passes_and_every_mutant_is_rejected(suite_runs):
    report, returncode = _finished(suite_runs["bfcl"])
    assert set(report["categories"]) == {"simple_python", "multiple", "parallel", "parallel_multiple"}
    total = report["total"]
    assert total["cases"] == 1000
    assert total["failures"] == [], total["failures"][:5]
    assert total["accepted"] == total["cases"] and total["rejected"] == total["mutants"] > 5000
    assert returncode == 0


def test_every_bfcl_live_java_and_javascript_case_passes_and_conflicts_are_named(suite_runs):
    report, returncode = _finished(suite_runs["live"])
    categories = report["categories"]
    assert {k: v["cases"] for k, v in categories.items()} == {
        "live_simple": 258, "live_multiple": 1053, "live_parallel": 16, "live_parallel_multiple": 24,
        "simple_java": 100, "simple_javascript": 50,
    }
    total = report["total"]
    assert total["failures"] == [], total["failures"][:5]
    assert total["accepted"] == total["cases"] and total["rejected"] == total["mutants"] > 8000
    # Ground truth that contradicts its own schema is refused, named, and counted: never a crash.
    assert {"live_simple_106-63-0", "live_multiple_507-149-4", "live_multiple_964-207-0"} <= set(total["schema_conflicts"])
    assert returncode == 0


def test_array_enums_compile_to_arrays_of_enum_values_and_java_types_map_as_bfcl_does():
    cases = {c.id: c for c in harness.load_suite(LIVE_SUITE, ["live_simple", "simple_java"])}
    array_enum = next(
        (c, f, p) for c in cases.values() for f in c.functions
        for p, s in f["parameters"]["properties"].items() if s.get("type") == "array" and "enum" in s
    )
    case, function, param = array_enum
    tools = harness.registry_from_json_schemas([function])
    wire = tools.get(function["name"]).parameters["properties"][param]
    items = (wire.get("anyOf", [wire])[0])["items"]
    assert items["enum"] == function["parameters"]["properties"][param]["enum"]
    java = harness.language_definitions(cases["simple_java_1"].functions, "java")[0]["parameters"]["properties"]
    assert {p["type"] for p in java.values()} == {"string"}
    assert "This is Java boolean type parameter in string representation." in java["useShortName"]["description"]


async def test_the_harness_catches_a_validator_that_lets_mutants_through(suite_folder, monkeypatch):
    cases = harness.load_suite(suite_folder, ["simple_python"])[:3]
    permissive = Tool.validate_slow

    def lets_extra_arguments_through(self, arguments):
        try:
            data = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
        except ValueError:
            return permissive(self, arguments)
        data.pop(harness.UNKNOWN_PARAMETER, None)
        return permissive(self, data)

    # every validation ends in the slow path's verdict once the one-pass fast path refuses
    monkeypatch.setattr(Tool, "validate_json_fast", lambda self, text: None)
    monkeypatch.setattr(Tool, "validate_slow", lets_extra_arguments_through)
    reports = await harness.run_suite(cases)
    failures = reports["simple_python"].failures
    assert {f["what"] for f in failures} == {"unknown_parameter"} and len(failures) == 3
    assert not harness.passed(reports)


async def test_the_harness_catches_a_stub_receiving_other_arguments(suite_folder, monkeypatch):
    cases = harness.load_suite(suite_folder, ["simple_python"])[:2]
    real = harness._Stub.ainvoke

    async def tampered(self, fields):
        return await real(self, {**fields, "tampered": True})

    monkeypatch.setattr(harness._Stub, "ainvoke", tampered)
    reports = await harness.run_suite(cases)
    assert [f["what"] for f in reports["simple_python"].failures] == ["ground truth", "ground truth"]


def test_a_missing_suite_folder_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "toolrail.cli", "conformance", str(tmp_path / "nope")], capture_output=True, text=True)
    assert done.returncode == 2 and "no conformance suite" in done.stderr
