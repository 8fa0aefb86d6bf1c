"""`toolrail trace THREAD --html FILE`: the run as one self-contained HTML page.

Everything comes from the thread's checkpoints: each step's span is the time between the
checkpoint it started from and the one it wrote (a planner step is the model's stream), and
each call's bar is its recorded start and duration. The page shows the model's turns, every
call (speculative starts, cancellations, retries, the sandbox's output), the run's critical path
(the sequential steps, and in each tools step the call that finished last) and, per turn, the
tool phase over its slowest call (1.0 = every call of the turn fully overlapped).

No network, no external assets: the data sits in the page as JSON and a small script draws it.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path
from typing import Any

EXECUTORS = ("tools", "sandbox")


def _epoch(created_at: str | None) -> float | None:
    if not created_at:
        return None
    return datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()


def trace_data(thread: str, snapshots: list[Any]) -> dict[str, Any]:
    """Steps, calls, turns and the critical path, in ms from the run's first moment."""
    chronological = list(reversed(snapshots))
    values = snapshots[0].values if snapshots else {}
    steps = []
    for before, after in zip(chronological, chronological[1:]):
        start, end = _epoch(before.created_at), _epoch(after.created_at)
        if before.next and start is not None and end is not None:
            steps.append({"nodes": list(before.next), "start": start, "end": end})
    results = values.get("results", [])
    origin = min([s["start"] for s in steps] + [r["started_at"] for r in results], default=0.0)

    planner_steps = [s for s in steps if "planner" in s["nodes"]]
    verdicts = values.get("verdicts", [])
    turns = []
    for number, step in enumerate(planner_steps, start=1):
        turn_verdicts = [v for v in verdicts if v["turn"] == number]
        turns.append({"turn": number, "start_ms": (step["start"] - origin) * 1000, "end_ms": (step["end"] - origin) * 1000,
                      "calls": [v["name"] for v in turn_verdicts],
                      "rejected": [{"name": v["name"], "error": v["error"]} for v in turn_verdicts if not v["valid"]]})

    executor_steps = [s for s in steps if any(n in EXECUTORS for n in s["nodes"])]
    calls = []
    for index, result in enumerate(results):
        start = result["started_at"]
        # The tools step that took its result: the first to end after the call started (a
        # speculative call starts, and may finish, while the model is still streaming).
        group = next((i for i, s in enumerate(executor_steps) if s["end"] + 0.001 >= start), None)
        sandbox = result.get("sandbox") or {}
        calls.append({
            "index": index, "id": result["id"], "name": result["name"], "status": result["status"],
            "speculative": bool(result.get("speculative")), "sandbox": bool(sandbox),
            "output": (sandbox.get("stdout", "") + sandbox.get("stderr", ""))[:4000] if sandbox else "",
            "start_ms": (start - origin) * 1000, "duration_ms": result["duration_s"] * 1000,
            "step": group if result["status"] != "cancelled" else None, "critical": False,
        })

    phases = []
    for i, step in enumerate(executor_steps):
        members = [c for c in calls if c["step"] == i]
        if not members:
            continue
        last = max(members, key=lambda c: c["start_ms"] + c["duration_ms"])
        last["critical"] = True
        wall = max(c["start_ms"] + c["duration_ms"] for c in members) - min(c["start_ms"] for c in members)
        slowest = max(c["duration_ms"] for c in members)
        phases.append({"step": i, "calls": len(members), "tool_phase_ms": wall, "slowest_call_ms": slowest,
                       "ratio": wall / slowest if slowest > 0 else 1.0})

    spans = [{"nodes": s["nodes"], "start_ms": (s["start"] - origin) * 1000, "end_ms": (s["end"] - origin) * 1000,
              "critical": not any(n in EXECUTORS for n in s["nodes"])} for s in steps]
    critical = [(s["start_ms"], f"{'+'.join(s['nodes'])} {s['end_ms'] - s['start_ms']:.0f} ms") for s in spans if s["critical"]]
    critical += [(c["start_ms"], f"{c['name']} {c['duration_ms']:.0f} ms") for c in calls if c["critical"]]
    critical = [text for _, text in sorted(critical)]
    total = max([s["end_ms"] for s in spans] + [c["start_ms"] + c["duration_ms"] for c in calls], default=0.0)
    return {"thread": thread, "total_ms": total, "steps": spans, "turns": turns, "calls": calls, "phases": phases,
            "critical_path": critical, "failure": values.get("failure")}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>toolrail trace · __TITLE__</title>
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 20px; color: #1d1d1f; background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; } .sub { color: #666; margin-bottom: 14px; }
.row { display: flex; align-items: center; height: 22px; }
.label { width: 220px; flex: none; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; padding-right: 8px; text-align: right; }
.lane { position: relative; flex: 1; height: 16px; background: #f4f4f6; border-radius: 3px; }
.bar { position: absolute; top: 0; height: 16px; border-radius: 3px; min-width: 2px; box-sizing: border-box; }
.bar.step { background: #8e8e93; } .bar.step.planner { background: #5856d6; } .bar.step.validate { background: #ff9f0a; }
.bar.call { background: #34c759; } .bar.call.error, .bar.call.timeout { background: #ff3b30; }
.bar.call.cancelled { background: repeating-linear-gradient(45deg, #ccc, #ccc 4px, #eee 4px, #eee 8px); border: 1px solid #999; }
.bar.call.speculative { border: 2px dashed #5856d6; } .bar.call.sandbox { background: #0a84ff; }
.bar.critical { outline: 2px solid #000; outline-offset: 1px; }
.rejected { color: #ff3b30; } pre { background: #f4f4f6; padding: 6px; margin: 2px 0 6px 228px; white-space: pre-wrap; }
table { border-collapse: collapse; margin-top: 10px; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
.legend span { display: inline-block; margin-right: 12px; }
</style></head>
<body>
<h1>toolrail trace · <span id="thread"></span></h1>
<div class="sub" id="summary"></div>
<div class="legend"><span style="color:#5856d6">■ planner (the model's stream)</span><span style="color:#ff9f0a">■ validate</span>
<span style="color:#34c759">■ call ok</span><span style="color:#0a84ff">■ sandbox</span><span style="color:#ff3b30">■ error / timeout</span>
<span style="color:#5856d6">┅ speculative start</span><span>▨ cancelled</span><span>▭ critical path</span></div>
<div id="timeline"></div>
<h2>Tool phase / slowest call</h2><table id="phases"><tr><th>tools step</th><th>calls</th><th>tool phase</th><th>slowest call</th><th>ratio</th></tr></table>
<h2>Critical path</h2><div id="critical"></div>
<script id="trace-data" type="application/json">__DATA__</script>
<script>
(function () {
  const data = JSON.parse(document.getElementById("trace-data").textContent);
  const total = Math.max(data.total_ms, 1);
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
  const pct = ms => (100 * ms / total) + "%";
  document.getElementById("thread").textContent = data.thread;
  document.getElementById("summary").textContent = `${data.calls.length} calls in ${data.turns.length} model turns · ${total.toFixed(1)} ms from first step to last` +
    (data.failure ? ` · stopped: ${data.failure.reason}` : "");
  const timeline = document.getElementById("timeline");
  function row(label, bar, title) {
    const r = el("div", "row"), l = el("div", "label", label), lane = el("div", "lane");
    lane.appendChild(bar); bar.title = title; r.append(l, lane); timeline.appendChild(r); return r;
  }
  data.steps.forEach((s, i) => {
    const b = el("div", "bar step " + s.nodes.join(" ") + (s.critical ? " critical" : ""));
    b.style.left = pct(s.start_ms); b.style.width = pct(Math.max(s.end_ms - s.start_ms, 0));
    b.dataset.kind = "step"; b.dataset.nodes = s.nodes.join(","); b.dataset.startMs = s.start_ms; b.dataset.durationMs = s.end_ms - s.start_ms;
    const turn = s.nodes.includes("planner") ? data.turns.find(t => Math.abs(t.start_ms - s.start_ms) < 1e-6) : null;
    const label = turn ? `turn ${turn.turn} · model` + (turn.rejected.length ? " · rejected, retried" : "") : s.nodes.join(" + ");
    const r = row(label, b, `${s.nodes.join(" + ")}: ${(s.end_ms - s.start_ms).toFixed(1)} ms`);
    if (turn && turn.rejected.length) { r.querySelector(".label").classList.add("rejected"); r.title = turn.rejected.map(x => x.error).join("\\n"); }
  });
  data.calls.forEach(c => {
    const cls = ["bar", "call", c.status, c.speculative ? "speculative" : "", c.sandbox ? "sandbox" : "", c.critical ? "critical" : ""].join(" ");
    const b = el("div", cls);
    b.style.left = pct(c.start_ms); b.style.width = pct(c.duration_ms);
    Object.assign(b.dataset, {kind: "call", callId: c.id, name: c.name, status: c.status, speculative: c.speculative, critical: c.critical,
                              startMs: c.start_ms, durationMs: c.duration_ms});
    row(`${c.name} · ${c.id}`, b, `${c.name} ${c.status} · start ${c.start_ms.toFixed(1)} ms · ${c.duration_ms.toFixed(1)} ms` + (c.speculative ? " · speculative" : ""));
    if (c.output) timeline.appendChild(el("pre", "output", c.output));
  });
  const phases = document.getElementById("phases");
  data.phases.forEach(p => {
    const tr = el("tr", "phase");
    [p.step + 1, p.calls, p.tool_phase_ms.toFixed(1) + " ms", p.slowest_call_ms.toFixed(1) + " ms", p.ratio.toFixed(2)].forEach(v => tr.appendChild(el("td", "", String(v))));
    tr.dataset.ratio = p.ratio; phases.appendChild(tr);
  });
  document.getElementById("critical").textContent = data.critical_path.join(" → ");
  // Each bar's drawn position (asking for it lays the page out), for whoever checks the page.
  document.querySelectorAll(".bar").forEach(b => { const r = b.getBoundingClientRect(); b.dataset.pxLeft = r.left.toFixed(1); b.dataset.pxWidth = r.width.toFixed(1); });
  document.body.dataset.rendered = "yes";
})();
</script>
</body></html>
"""


def render_html(data: dict[str, Any]) -> str:
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")  # cannot close the script element
    return PAGE.replace("__TITLE__", html.escape(data["thread"])).replace("__DATA__", payload)


def write_html(thread: str, snapshots: list[Any], path: Path) -> dict[str, Any]:
    data = trace_data(thread, snapshots)
    path.write_text(render_html(data), encoding="utf-8")
    return data
