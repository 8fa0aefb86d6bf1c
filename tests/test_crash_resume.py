"""Kill real toolrail processes at random moments; resume; nothing lost, nothing done twice."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _harness():
    spec = importlib.util.spec_from_file_location("kill_harness", ROOT / "scripts" / "kill_harness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sigkill_at_random_moments_loses_no_result_and_repeats_no_side_effect():
    report = _harness().harness(runs=8, seed=random.randrange(1 << 30))
    assert report["finished"] == report["runs"], report["details"]
    assert report["lost_results"] == 0, report["details"]
    assert report["duplicate_side_effects"] == 0, report["duplicates"]
    assert report["wrong_results"] == 0, report["details"]
    assert report["killed_mid_run"] >= 1, "the harness must actually kill runs in flight"


def test_a_sigtermed_run_stays_resumable_and_repeats_no_side_effect():
    import signal

    report = _harness().harness(runs=2, seed=random.randrange(1 << 30), kill_signal=signal.SIGTERM)
    assert report["finished"] == report["runs"], report["details"]
    assert report["lost_results"] == 0 and report["wrong_results"] == 0, report["details"]
    assert report["duplicate_side_effects"] == 0, report["duplicates"]


def test_with_provider_ids_omitted_no_call_is_ever_answered_with_another_calls_result():
    report = _harness().harness(runs=3, seed=random.randrange(1 << 30), omit_ids=True)
    assert report["finished"] == report["runs"], report["details"]
    assert report["lost_results"] == 0 and report["wrong_results"] == 0, report["details"]
    assert report["duplicate_side_effects"] == 0, report["duplicates"]
    assert report["side_effects_recorded"] >= 6 * report["runs"], "both turns of charges ran"


async def test_a_side_effect_that_was_running_at_the_crash_is_reported_not_repeated(tmp_path):
    from toolrail.execution import Outcome
    from toolrail.ledger import UNKNOWN, SqliteSideEffectLedger

    ledger = SqliteSideEffectLedger(tmp_path / "effects.sqlite")
    ran = []

    async def charge() -> Outcome:
        ran.append(1)
        return Outcome("ok", "charged", 0.0, 0.1)

    from toolrail.ledger import fingerprint

    await ledger.claim("t", "c1", fingerprint("charge", {}), "charge")  # a previous process started it and died
    outcome = await ledger.run_once("t", "c1", "charge", {}, charge)
    assert ran == [] and outcome.content == UNKNOWN
    first = await ledger.run_once("t", "c2", "charge", {}, charge)
    again = await SqliteSideEffectLedger(tmp_path / "effects.sqlite").run_once("t", "c2", "charge", {}, charge)
    assert ran == [1] and first.content == again.content == "charged"
