"""`toolrail trace THREAD --html FILE`, rendered by a real headless Chromium: the bars are drawn."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path


SCRUBBED_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LANGSMITH_", "TOOLRAIL_"))}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)


def _toolrail(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolrail.cli", *args], cwd=cwd, env=SCRUBBED_ENV,
                          capture_output=True, text=True, timeout=120)


def _rendered_dom(page: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (scripts/test.sh installs it)"
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_trip_trace_page_draws_every_call_with_retries_speculation_and_critical_path_in_chromium(tmp_path):
    assert _toolrail("run", "--thread", "trip", cwd=tmp_path).returncode == 0
    written = _toolrail("trace", "trip", "--html", str(tmp_path / "trip.html"), cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert "tool phase / slowest call" in written.stdout

    dom = Elements()
    dom.feed(_rendered_dom(tmp_path / "trip.html"))
    body = next(attrs for tag, attrs in dom.found if tag == "body")
    assert body.get("data-rendered") == "yes", "the page's script did not run"
    calls = [a for tag, a in dom.found if a.get("data-kind") == "call"]
    steps = [a for tag, a in dom.found if a.get("data-kind") == "step"]
    # The recording: turn 1 rejected (its speculative get_weather cancelled), turn 2's two calls run.
    assert sorted((c["data-name"], c["data-status"]) for c in calls) == [
        ("get_weather", "cancelled"), ("get_weather", "ok"), ("search_flights", "ok")]
    assert all(float(c["data-px-width"]) > 0 for c in calls + steps), "a bar was not drawn"
    by_start = sorted(calls, key=lambda c: float(c["data-start-ms"]))
    assert [float(c["data-px-left"]) for c in by_start] == sorted(float(c["data-px-left"]) for c in calls)
    assert sum(c["data-critical"] == "true" for c in calls) == 1
    assert [s["data-nodes"] for s in steps if "planner" in s["data-nodes"]] == ["planner"] * 3
    assert any("rejected, retried" in text for text in dom.text)
    assert [a for tag, a in dom.found if tag == "tr" and "data-ratio" in a], "no tool phase / slowest call row"


def test_trace_html_to_a_missing_folder_is_one_clear_line(tmp_path):
    assert _toolrail("run", "--thread", "trip", cwd=tmp_path).returncode == 0
    done = _toolrail("trace", "trip", "--html", str(tmp_path / "nowhere" / "t.html"), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--html" in done.stderr
