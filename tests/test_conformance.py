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


@pytest.fixture(scope="module")
def suite_folder() -> Path:
    assert SUITE.is_dir(), f"the BFCL suite must be at {SUITE} (shared/ beside the project root)"
    return SUITE


def test_every_bfcl_case_passes_and_every_mutant_is_rejected(suite_folder, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "toolrail.cli", "conformance", str(suite_folder), "--json"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    report = json.loads(done.stdout)
    assert set(report["categories"]) == {"simple_python", "multiple", "parallel", "parallel_multiple"}
    total = report["total"]
    assert total["cases"] == 1000
    assert total["failures"] == [], total["failures"][:5]
    assert total["accepted"] == total["cases"] and total["rejected"] == total["mutants"] > 5000
    assert done.returncode == 0


async def test_the_harness_catches_a_validator_that_lets_mutants_through(suite_folder, monkeypatch):
    cases = harness.load_suite(suite_folder, ["simple_python"])[:3]
    permissive = Tool.validate

    def lets_extra_arguments_through(self, arguments):
        try:
            data = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
        except ValueError:
            return permissive(self, arguments)
        data.pop(harness.UNKNOWN_PARAMETER, None)
        return permissive(self, data)

    monkeypatch.setattr(Tool, "validate", lets_extra_arguments_through)
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
