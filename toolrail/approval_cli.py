"""The person at the terminal: answering approval questions inline, or later with `toolrail approve`.

A run that reaches an approval question (or an `interrupt()` raised by a tool) asks inline when
stdin is a terminal; otherwise (or with `--no-input`) it stops with exit code 3 and one line
naming the thread, the pending calls and the command that answers them. The question lives in
the thread's checkpoint, so it can be answered by another process, any time later.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from typing import Any

from langgraph.types import Command
from rich.console import Console
from rich.text import Text

from toolrail.approval import QUESTION_TYPE
from toolrail.errors import ToolrailError
from toolrail.render import json_for_terminal, visible

WAITING_EXIT = 3


class ApprovalError(ToolrailError):
    """A bad answer from the command line: one line, exit 2."""


def pending_interrupts(snapshot: Any) -> list[Any]:
    """The questions a paused thread is waiting on (LangGraph `Interrupt`s, with ids)."""
    return list(getattr(snapshot, "interrupts", ()) or ())


def interactive(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_input", False) and sys.stdin.isatty()


def waiting_line(thread: str, interrupts: list[Any]) -> str:
    """One line: who is waiting for what, and how to answer."""
    parts = []
    for item in interrupts:
        value = item.value
        if isinstance(value, dict) and value.get("type") == QUESTION_TYPE:
            parts += [f"{c['name']} ({c['id']}): {c['reason']}" for c in value["calls"]]
            parts += [f"answer refused: {' '.join(e.split())}" for e in value.get("errors") or []]
        else:
            parts.append(f"a tool asks: {_short(value)}")
    return (f"toolrail: waiting for approval in thread {thread}: {'; '.join(parts)}. Answer with: toolrail approve {thread} "
            "[--call ID] [--reject ID=REASON] [--edit ID=JSON] [--answer TEXT]")


def ask_person(interrupts: list[Any], console: Console, thread: str) -> Command:
    """Put every pending question to the person at the terminal; their answers, as one resume."""
    answers = {}
    for item in interrupts:
        value = item.value
        if isinstance(value, dict) and value.get("type") == QUESTION_TYPE:
            answers[item.id] = _ask_about_calls(value, console, thread)
        else:
            console.print(Text(visible(f"\n⏸ a tool asks (thread {thread}): {_short(value, 500)}"), style="bold yellow"))
            text = _read("  your answer: ", console)
            answers[item.id] = _json_or_text(text)
    return Command(resume=answers)


def _ask_about_calls(question: dict[str, Any], console: Console, thread: str) -> dict[str, Any]:
    calls = question["calls"]
    console.print(Text(visible(f"\n⏸ approval needed · thread {thread} · {len(calls)} call(s)"), style="bold yellow"))
    for error in question.get("errors") or []:
        console.print(Text(visible(f"  ✗ {error}"), style="red"))
    decisions = {}
    for call in calls:
        console.print(Text(visible(f"  {call['name']} ({call['id']}): {call['reason']}"), style="bold"))
        console.print(Text(f"    {json_for_terminal(call['args'])}"))
        while True:
            choice = _read("  approve? [y]es / [n]o, reject / [e]dit: ", console).strip().lower()
            if choice in ("y", "yes", "a", "approve"):
                decisions[call["id"]] = {"type": "approve"}
            elif choice in ("n", "no", "r", "reject"):
                decisions[call["id"]] = {"type": "reject", "message": _read("  reason (the model reads it): ", console).strip() or "no reason given"}
            elif choice in ("e", "edit"):
                edited = _edit(call["args"], console)
                if edited is None:
                    console.print(Text("    not a JSON object; try again", style="red"))
                    continue
                decisions[call["id"]] = {"type": "edit", "args": edited}
            else:
                console.print(Text("    answer y, n or e", style="red"))
                continue
            break
    return {"decisions": decisions, "by": _who()}


def _edit(args: dict[str, Any], console: Console) -> dict[str, Any] | None:
    """New arguments: in $EDITOR when one is set, else typed as JSON on one line."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if editor:
        with tempfile.NamedTemporaryFile("w+", suffix=".json", delete=False) as handle:
            json.dump(args, handle, indent=2, ensure_ascii=False)
        try:
            subprocess.run([*shlex.split(editor), handle.name], check=False)
            with open(handle.name) as edited:
                text = edited.read()
        finally:
            os.unlink(handle.name)
    else:
        text = _read("  new arguments as JSON: ", console)
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def answer_from_flags(args: argparse.Namespace, interrupts: list[Any]) -> Command:
    """`toolrail approve`'s flags as one resume: with no flag every pending call is approved."""
    approvals = [i for i in interrupts if isinstance(i.value, dict) and i.value.get("type") == QUESTION_TYPE]
    others = [i for i in interrupts if i not in approvals]
    if others and args.answer is None:
        raise ApprovalError(f"a tool asks: {_short(others[0].value)}; answer it with --answer TEXT")
    rejects = dict(_pair(spec, "--reject", "ID=REASON") for spec in args.reject)
    edits = {}
    for spec in args.edit:
        call_id, text = _pair(spec, "--edit", "ID=JSON")
        edits[call_id] = _json_object(text, spec)
    chosen = set(args.call) | set(rejects) | set(edits)
    waiting = {c["id"]: c for i in approvals for c in i.value["calls"]}
    unknown = sorted(chosen - set(waiting))
    if unknown:
        raise ApprovalError(f"no call {', '.join(unknown)} is waiting for approval (waiting: {', '.join(waiting) or 'none'})")
    undecided = [c for c in waiting if chosen and c not in chosen]
    if undecided:
        raise ApprovalError(f"say what to do with {', '.join(undecided)} too (--call, --reject or --edit), or give no flag to approve all")
    answers: dict[str, Any] = {}
    for item in approvals:
        decisions = {}
        for call in item.value["calls"]:
            cid = call["id"]
            if cid in rejects:
                decisions[cid] = {"type": "reject", "message": rejects[cid]}
            elif cid in edits:
                decisions[cid] = {"type": "edit", "args": edits[cid]}
            else:
                decisions[cid] = {"type": "approve"}
        answers[item.id] = {"decisions": decisions, "by": _who()}
    for item in others:
        answers[item.id] = _json_or_text(args.answer)
    return Command(resume=answers)


def _pair(spec: str, flag: str, shape: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not sep or not key:
        raise ApprovalError(f"{flag} wants {shape}, got {spec!r}")
    return key, value


def _json_object(text: str, spec: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ApprovalError(f"--edit {spec}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ApprovalError(f"--edit {spec}: the arguments must be a JSON object")
    return value


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _read(prompt: str, console: Console) -> str:
    console.file.write(prompt)  # where the live view goes: stdout, or stderr with --json
    console.file.flush()
    line = sys.stdin.readline()
    if not line:
        raise ApprovalError("stdin closed before an answer was given; the question is kept in the thread's checkpoint")
    return line.rstrip("\n")


def _who() -> str:
    return os.environ.get("TOOLRAIL_APPROVER") or os.environ.get("USER") or "person"


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
