"""Rich rendering of a run as it streams: turns, verdicts, parallel calls, the answer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage
from rich import box
from rich.console import Console, Group
from rich.markdown import Markdown
from rich.padding import Padding
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text


# C0 controls except tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), and the
# bidirectional overrides that can make text read differently from what it is.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _show(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)  # ␛ ␍ ␈ ␇ ...: Unicode's visible pictures of C0 controls
    if code == 0x7F:
        return "␡"
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def visible(text: object) -> str:
    """`text` with every control character made visible (ESC → ␛, CR → ␍, BS → ␈, C1 → \\x9b ...).

    Everything the CLI prints that came from a model, a tool or a sandbox goes through this:
    such text must never move the cursor, clear the screen, set the title or the clipboard
    (OSC 52), or overwrite a line to forge a verdict. Tabs and newlines stay as they are."""
    return _CONTROL.sub(_show, str(text).replace("\r\n", "\n"))


def json_for_terminal(data: Any, **kwargs: Any) -> str:
    """json.dumps for printing: C0 controls are escaped by JSON itself, and C1/DEL/bidi
    characters (which ensure_ascii=False would print raw) are escaped as \\uXXXX too."""
    text = json.dumps(data, ensure_ascii=False, **kwargs)
    return re.sub("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]", lambda m: f"\\u{ord(m.group()):04x}", text)


class RunRenderer:
    """Turns LangGraph `updates` / `custom` stream events into lines on the console."""

    def __init__(self, console: Console, *, model_label: str, thread_id: str, quiet: bool = False):
        self.console, self.model_label, self.thread_id, self.quiet = console, model_label, thread_id, quiet
        self.turn = 0
        self.batch: list[dict[str, Any]] = []
        self.shown: set[tuple[str, float]] = set()  # a resumed run re-emits the writes of tasks that had finished

    def print(self, *things: Any) -> None:
        if not self.quiet:
            self.console.print(*things, highlight=False)

    def start(self, prompt: str) -> None:
        self.print(Panel(Text(visible(prompt)), title="toolrail", subtitle=visible(f"model: {self.model_label} · thread: {self.thread_id}"), border_style="cyan"))

    def event(self, mode: str, chunk: Any) -> None:
        if mode == "custom":
            return self._custom(chunk)
        for node, update in (chunk or {}).items():
            handler = getattr(self, f"_on_{node}", None)
            if handler and isinstance(update, dict):
                handler(update)

    def _on_planner(self, update: dict) -> None:
        self._close_batch()
        if update.get("failure"):
            return self._failure(update["failure"])
        self.turn += 1
        calls = update.get("turn_calls") or []
        if not calls:
            return
        tokens = "".join(f" · {c['total_tokens']} tokens" for c in update.get("model_calls", []) if c.get("reported"))
        self.print(Text(f"\nplanner · turn {self.turn} · {len(calls)} tool call(s){tokens}", style="bold"))
        for call in calls:
            code = _code_of(call)
            if code is None:
                shown = call["arguments"] if len(call["arguments"]) <= SHOWN_ARGUMENTS else f"{call['arguments'][:SHOWN_ARGUMENTS]}… ({len(call['arguments']):,} characters)"
                self.print(Text(visible(f"  → {call['name'][:100]}({shown})"), style="white"))
            else:
                self.print(Text(visible(f"  → {call['name']}:"), style="white"))
                self.print(Padding(Syntax(visible(code), "python", theme="ansi_dark", line_numbers=False), (0, 0, 0, 6)))
        self._verdicts(update)  # a turn valid as it stands is validated by the planner
        self._waiting(update)

    def _waiting(self, update: dict) -> None:
        for call in update.get("validated_calls") or []:
            if call.get("approval"):
                self.print(Text(visible(f"  ⏸ {call['name']} waits for a person's approval: {call['approval']}"), style="yellow"))

    def _on_validate(self, update: dict) -> None:
        self._verdicts(update)
        for result in update.get("results", []):
            self.print(Text(visible(f"  ⊘ {result['name']} cancelled: {result['content']}"), style="magenta"))
        self._waiting(update)
        if update.get("messages") and not update.get("failure"):
            self.print(Text(f"  ↺ turn rejected: errors sent back to the model (retry {update['attempts']})", style="yellow"))
        if update.get("failure"):
            self._failure(update["failure"])

    def _verdicts(self, update: dict) -> None:
        for verdict in update.get("verdicts", []):
            if verdict["valid"]:
                self.print(Text(visible(f"  ✓ {verdict['name']} valid"), style="green"))
            else:
                self.print(Text(visible(f"  ✗ {verdict['name']} rejected"), style="bold red"))
                for line in (verdict["error"] or "").splitlines()[1:]:
                    self.print(Text(visible(f"      {line}"), style="red"))

    def _on_tools(self, update: dict) -> None:
        outputs = {getattr(m, "tool_call_id", None): str(m.content) for m in update.get("messages", [])}
        for result in update.get("results", []):
            if (result["id"], result["started_at"]) in self.shown:
                continue
            self.shown.add((result["id"], result["started_at"]))
            self.batch.append(result)
            style = "green" if result["status"] == "ok" else "red"
            output = outputs.get(result["id"], result.get("content", ""))
            preview = output if len(output) < 100 else output[:97] + "..."
            flag = " (speculative)" if result.get("speculative") else ""
            flag += f" after {result['attempts']} attempts" if result.get("attempts") else ""
            self.print(Text(visible(f"  ⚙ {result['name']} {result['status']} in {result['duration_s'] * 1000:.1f} ms{flag}: {preview}"), style=style))
            for path in result.get("sandbox", {}).get("saved", []):
                self.print(Text(visible(f"    ⇩ produced file saved to {path}"), style="bold cyan"))
            for why in result.get("sandbox", {}).get("unsaved", []):
                self.print(Text(visible(f"    ⚠ not saved: {why}"), style="yellow"))

    _on_sandbox = _on_tools
    _on_ordered = _on_tools

    def _on_approve(self, update: dict) -> None:
        self._close_batch()  # calls on either side of a person's decision did not run together
        for d in update.get("decisions", []):
            said = {"approve": "approved", "edit": f"edited to {json.dumps(d['edited_args'], ensure_ascii=False)}",
                    "reject": f"rejected: {d['message']}"}[d["decision"]]
            self.print(Text(visible(f"  ✋ {d['name']} {said} (by {d['by']})"), style="yellow" if d["decision"] != "reject" else "red"))

    def _close_batch(self) -> None:
        if len(self.batch) > 1:
            start = min(r["started_at"] for r in self.batch)
            wall = max(r["started_at"] + r["duration_s"] for r in self.batch) - start
            total = sum(r["duration_s"] for r in self.batch)
            self.print(Text(f"  ∥ {len(self.batch)} calls ran concurrently: wall {wall * 1000:.1f} ms, sum of calls {total * 1000:.1f} ms", style="cyan"))
        self.batch = []

    def _custom(self, chunk: Any) -> None:
        if isinstance(chunk, dict) and chunk.get("type") == "model_retry":
            self.print(Text(visible(model_retry_line(chunk)), style="yellow"))
        if isinstance(chunk, dict) and chunk.get("type") == "speculative_start":
            self.print(Text(visible(f"  ⚡ {chunk['name']} started while the model is still streaming"), style="magenta"))
        if isinstance(chunk, dict) and chunk.get("type") == "sandbox_output":
            style = "dim" if chunk.get("stream") == "stdout" else "dim red"
            for line in str(chunk.get("text", "")).splitlines() or [""]:
                self.print(Text(visible(f"    │ {line}"), style=style))

    def _failure(self, failure: dict) -> None:
        body = failure["message"]
        for error in failure.get("errors", []):
            body += f"\n\n{error['error']}"
        self.print(Panel(Text(visible(body)), title=visible(f"run stopped: {failure['reason']}"), border_style="red"))

    def finish(self, state: dict, db_path: Path) -> None:
        self._close_batch()
        answer = final_answer(state)
        if state.get("structured_response") is not None and not state.get("failure"):
            body = Syntax(json_for_terminal(state["structured_response"], indent=2), "json", theme="ansi_dark")
            self.print(Panel(body, title="answer (validated against the response schema)", border_style="green"))
        elif answer and not state.get("failure"):
            self.print(Panel(Markdown(visible(answer)), title="answer", border_style="green"))
        if state.get("usage_total"):
            self.print(Text(visible(usage_line(state["usage_total"])), style="dim"))
        self.print(Text(visible(f"thread {self.thread_id} · checkpoints in {db_path} · continue with: toolrail run --thread {self.thread_id} \"...\""), style="dim"))


SHOWN_ARGUMENTS = 500  # characters of a call's arguments the live view prints


def _code_of(call: dict) -> str | None:
    """Code sent to the sandbox reads better as code than as an escaped JSON string."""
    if call["name"] != "run_python":
        return None
    try:
        code = json.loads(call["arguments"]).get("code")
    except (ValueError, AttributeError, RecursionError):
        return None
    return code if isinstance(code, str) else None


def model_retry_line(event: dict) -> str:
    """One backoff wait, as the CLI and the trace show it."""
    why = "as Retry-After asks" if event.get("retry_after") else "backoff with jitter"
    what = f"answered HTTP {event['status']}" if event.get("status") else f"could not be reached ({event.get('error')})"
    return f"  ⏳ model {what}: retry {event['retry']}/{event['of']} in {event['wait_s']:.2f} s ({why})"


def usage_line(total: dict) -> str:
    cost = f" · ${total['cost_usd']:.6f}" if total.get("cost_usd") is not None else ""
    retries = f" · {total['retries']} model retries" if total.get("retries") else ""
    return (f"usage: {total['model_calls']} model call(s) · {total['total_tokens']} tokens "
            f"({total['input_tokens']} in, {total['output_tokens']} out){cost}{retries}")


def final_answer(state: dict) -> str | None:
    messages = state.get("messages") or []
    last = messages[-1] if messages else None
    if last is not None and last.type == "ai" and not getattr(last, "tool_calls", None):
        # Providers like Anthropic answer in content blocks: the text is what the user reads.
        return last.text if isinstance(last.content, list) else str(last.content)
    return None


def message_as_json(message: BaseMessage) -> dict[str, Any]:
    data: dict[str, Any] = {"type": message.type, "content": message.content}
    for key in ("tool_calls", "invalid_tool_calls", "tool_call_id", "name", "status"):
        value = getattr(message, key, None)
        if value:
            data[key] = value
    return data


def state_as_json(state: dict, thread_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {"thread_id": thread_id, "answer": final_answer(state)}
    for key, value in state.items():
        out[key] = [message_as_json(m) for m in value] if key == "messages" else value
    return json.loads(json.dumps(out, default=str))


def conformance_table(report: dict[str, Any]) -> Group:
    """Counts in a table narrow enough for a piped 80-column console; the named cases below it."""
    verdict = "[green]PASSED[/]" if report["passed"] else "[red]FAILED[/]"
    table = Table(title=f"conformance through the graph: {verdict} in {report['seconds']} s", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("category", "cases", "accepted", "mutants", "rejected", "non-strict", "conflicts", "failures"):
        table.add_column(column, justify="right" if column != "category" else "left", no_wrap=True)
    rows = [*report["categories"].items(), ("total", report["total"])]
    for name, r in rows:
        table.add_row(visible(name), str(r["cases"]), str(r["accepted"]), str(r["mutants"]), str(r["rejected"]),
                      str(r["non_strict_tools"]), str(len(r["schema_conflicts"])), str(len({f["id"] for f in r["failures"]})))
    total = report["total"]
    notes: list[Any] = [table]
    if total["schema_conflicts"]:
        notes.append(Text("conflicts (ground truth breaks its own schema; refused, naming the field): "
                          + visible(", ".join(sorted(total["schema_conflicts"])))))
    for failure in total["failures"][:20]:
        notes.append(Text(visible(f"failed {failure['id']} ({failure['what']}): {failure['why'][:300]}"), style="red"))
    if len(total["failures"]) > 20:
        notes.append(Text(f"... and {len(total['failures']) - 20} more failures (--json lists them all)", style="red"))
    return Group(*notes)
