"""A thread's past, read from LangGraph's own checkpoints: history, replay, fork, trace.

Nothing here keeps a store of its own: checkpoints come from `aget_state_history`, forks are
`aupdate_state` on a past checkpoint, and the timeline is drawn from what the state recorded
(verdicts, results with start times and durations).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from langchain_core.messages import HumanMessage, ToolMessage
from rich.console import Console
from rich.table import Table
from rich.text import Text

from toolrail.checkpoints import checkpoint_location, open_checkpointer
from toolrail.errors import ToolrailError
from toolrail.render import json_for_terminal, visible


class ThreadError(ToolrailError):
    """Unknown thread or checkpoint: one line, exit 2."""


async def _snapshots(thread: str, db: str | None) -> list[Any]:
    """The thread's checkpoints, newest first, read through the agent graph (never run)."""
    from toolrail.graphs.agent import build_graph
    from toolrail.recorded import RecordedChatModel, load_transcript

    location = checkpoint_location(db)
    async with open_checkpointer(location) as saver:
        reader = build_graph(model=RecordedChatModel(transcript=load_transcript("trip")), checkpointer=saver)
        snapshots = [s async for s in reader.aget_state_history({"configurable": {"thread_id": thread}})]
    if not snapshots:
        raise ThreadError(f"no thread {thread!r} in {location} (see the thread id a run prints)")
    return snapshots


async def thread_prompt(thread: str, db: str | None) -> str:
    """The thread's first user message: it chooses the recorded transcript when offline.

    Only the latest checkpoint is read. A process killed right after its first checkpoint has
    the prompt only as that checkpoint's pending input (the `__start__` channel, or the input
    task's pending writes), not yet in state.
    """
    location = checkpoint_location(db)
    async with open_checkpointer(location) as saver:
        latest = await saver.aget_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
        if latest is None:
            raise ThreadError(f"no thread {thread!r} in {location} (see the thread id a run prints)")
        channels = latest.checkpoint.get("channel_values", {})
        earlier: list = []
        if "messages" not in channels:  # a DeltaChannel (toolrail/state.py): the messages are the ancestors' writes
            history = (await saver.aget_delta_channel_history(config=latest.config, channels=["messages"])).get("messages", {})
            earlier = _messages_of(history.get("seed"))
            for _, _, value in history.get("writes", []):
                earlier += _messages_of(value)
    start = channels.get("__start__") or {}
    candidates = [*earlier, *_messages_of(channels.get("messages")), *_messages_of(start.get("messages") if isinstance(start, dict) else None)]
    for _, channel, value in latest.pending_writes or []:
        if channel == "messages":
            candidates += _messages_of(value)
    human = next((m for m in candidates if m.type == "human"), None)
    if human is None:
        raise ThreadError(f"thread {thread!r} has no user message yet; start it again with 'toolrail run --thread {thread}'")
    return str(human.content)


def _messages_of(value: Any) -> list:
    from langchain_core.messages import convert_to_messages

    value = getattr(value, "value", value)  # a DeltaChannel's snapshot holds the list
    if not value:
        return []
    try:
        return convert_to_messages(value if isinstance(value, list) else [value])
    except (ValueError, NotImplementedError):
        return []


async def checkpoint_config(graph: Any, thread: str, checkpoint_id: str) -> dict:
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}}
    snapshot = await graph.aget_state(config)
    if not snapshot.values and snapshot.created_at is None:
        raise ThreadError(f"thread {thread!r} has no checkpoint {checkpoint_id!r} (see 'toolrail history {thread}')")
    return snapshot.config


async def edit_at(graph: Any, config: dict, *, message: str | None, tool_result: str | None) -> dict:
    """Branch at a checkpoint: replace a message (same id, so add_messages replaces it)."""
    state = (await graph.aget_state(config)).values
    messages = state.get("messages", [])
    if message is not None:
        human = next((m for m in reversed(messages) if m.type == "human"), None)
        if human is None:
            raise ThreadError("that checkpoint has no user message to replace")
        edit = HumanMessage(message, id=human.id)
    else:
        call_id, sep, text = tool_result.partition("=")
        target = next((m for m in messages if m.type == "tool" and m.tool_call_id == call_id), None)
        if not sep or target is None:
            known = ", ".join(m.tool_call_id for m in messages if m.type == "tool") or "none"
            raise ThreadError(f"--tool-result wants CALL_ID=TEXT for a call at that checkpoint (there: {known})")
        edit = ToolMessage(text, tool_call_id=call_id, name=target.name, id=target.id)
        # Several tools tasks wrote that step; say which node the edit stands for.
        return await graph.aupdate_state(config, {"messages": [edit]}, as_node="tools")
    return await graph.aupdate_state(config, {"messages": [edit]})


def _row(snapshot: Any, older: Any | None) -> dict[str, Any]:
    values, before = snapshot.values, (older.values if older else {})
    new_verdicts = values.get("verdicts", [])[len(before.get("verdicts", [])):]
    new_results = values.get("results", [])[len(before.get("results", [])):]
    new_decisions = values.get("decisions", [])[len(before.get("decisions", [])):]
    new_model_calls = values.get("model_calls", [])[len(before.get("model_calls", [])):]
    last = values.get("messages", [])[-1] if values.get("messages") else None
    calls = [c["name"] for c in getattr(last, "tool_calls", []) or []] if last is not None and last.type == "ai" else []
    return {
        "checkpoint_id": snapshot.config["configurable"]["checkpoint_id"],
        "step": snapshot.metadata.get("step"),
        "source": snapshot.metadata.get("source"),
        "created_at": snapshot.created_at,
        "next": list(snapshot.next),
        "messages": len(values.get("messages", [])),
        "tool_calls": calls,
        "verdicts": [f"{v['name']} {'valid' if v['valid'] else 'invalid'}" for v in new_verdicts],
        "results": [f"{r['name']} {r['status']} {r['duration_s'] * 1000:.1f} ms" for r in new_results],
        "failure": (values.get("failure") or {}).get("reason"),
        "model_calls": [{k: c[k] for k in ("status", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "waits")} for c in new_model_calls],
        "usage_total": values.get("usage_total"),
        "decisions": [f"{d['name']} {d['decision']} by {d['by']}" for d in new_decisions],
        "waiting": [c["name"] for i in snapshot.interrupts for c in (i.value.get("calls", []) if isinstance(i.value, dict) else [])],
    }


async def history_command(args: argparse.Namespace, console: Console) -> int:
    snapshots = await _snapshots(args.thread, args.db)
    rows = [_row(s, snapshots[i + 1] if i + 1 < len(snapshots) else None) for i, s in enumerate(snapshots)]
    if args.json:
        print(json_for_terminal(rows, indent=2))
        return 0
    table = Table(title=visible(f"thread {args.thread}: {len(rows)} checkpoints, newest first"))
    for column in ("step", "checkpoint", "next", "tool calls", "verdicts", "decisions", "results", "tokens", "created"):
        table.add_column(column)
    for r in rows:
        decided = ", ".join(r["decisions"] + [f"{name} waiting for approval" for name in r["waiting"]])
        tokens = ", ".join(f"{c['total_tokens']}" + (f" after {len(c['waits'])} retries" if c["waits"] else "") for c in r["model_calls"])
        cells = [str(r["step"]), r["checkpoint_id"], ", ".join(r["next"]) or "(end)", ", ".join(r["tool_calls"]),
                 ", ".join(r["verdicts"]), decided, ", ".join(r["results"]), tokens, (r["created_at"] or "")[11:23]]
        table.add_row(*(Text(visible(c)) for c in cells))
    Console(width=max(console.width, 160)).print(table)
    return 0


PAST = {"approve": "approved", "edit": "edited", "reject": "rejected"}


def timeline(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Turns, verdicts and call bars, in time order, from the final state."""
    results = values.get("results", [])
    origin = min((r["started_at"] for r in results), default=0.0)
    events = []
    for verdict in values.get("verdicts", []):
        events.append({"kind": "verdict", "turn": verdict["turn"], "name": verdict["name"], "valid": verdict["valid"]})
    for d in values.get("decisions", []):
        events.append({"kind": "decision", "turn": d["turn"], "name": d["name"], "decision": d["decision"], "by": d["by"],
                       "message": d["message"], "edited_args": d["edited_args"]})
    for result in results:
        events.append({
            "kind": "sandbox" if "sandbox" in result else "call", "name": result["name"], "status": result["status"],
            "start_ms": (result["started_at"] - origin) * 1000, "duration_ms": result["duration_s"] * 1000,
            "speculative": result.get("speculative", False),
        })
    return events


async def trace_command(args: argparse.Namespace, console: Console) -> int:
    if getattr(args, "html", None):
        return await _trace_html(args, console)
    snapshots = await _snapshots(args.thread, args.db)
    values = snapshots[0].values
    events = timeline(values)
    nodes = [(s.metadata.get("step"), list(s.next)) for s in reversed(snapshots)]
    if args.json:
        print(json_for_terminal({"thread": args.thread, "steps": nodes, "events": events,
                                 "model_calls": values.get("model_calls", []), "usage_total": values.get("usage_total")}, indent=2))
        return 0
    console = Console(width=max(console.width, 120))
    console.print(Text(visible(f"thread {args.thread} · {len(snapshots)} checkpoints · times relative to the first call"), style="bold"))
    turns = sorted({e["turn"] for e in events if e["kind"] == "verdict"})
    for turn in turns:
        marks = [("✓ " if e["valid"] else "✗ ") + e["name"] for e in events if e["kind"] == "verdict" and e["turn"] == turn]
        retried = any(m.startswith("✗") for m in marks)
        console.print(Text(visible(f"turn {turn}: " + "  ".join(marks) + ("   ↺ retried" if retried else "")), style="yellow" if retried else "green"))
        for d in [e for e in events if e["kind"] == "decision" and e["turn"] == turn]:
            detail = {"approve": "", "edit": f" to {json.dumps(d['edited_args'])}", "reject": f": {d['message']}"}[d["decision"]]
            console.print(Text(visible(f"  ✋ {d['name']} {PAST[d['decision']]} by {d['by']}{detail}"), style="yellow"))
    bars = [e for e in events if e["kind"] not in ("verdict", "decision")]
    span = max((e["start_ms"] + e["duration_ms"] for e in bars), default=1.0) or 1.0
    width = 50
    for e in bars:
        start = int(e["start_ms"] / span * width)
        length = max(1, int(e["duration_ms"] / span * width))
        bar = " " * start + ("█" if e["status"] == "ok" else "░") * length
        flags = (" speculative" if e["speculative"] else "") + (" sandbox" if e["kind"] == "sandbox" else "")
        console.print(Text(visible(f"{e['name'][:18]:>18} |{bar:<{width}}| {e['start_ms']:7.1f} +{e['duration_ms']:.1f} ms {e['status']}{flags}")))
    from toolrail.render import model_retry_line, usage_line

    for number, model_call in enumerate(values.get("model_calls", []), 1):
        for wait in model_call["waits"]:
            console.print(Text(visible(model_retry_line(wait)), style="yellow"))
        console.print(Text(visible(f"model call {number} (run {model_call['run']}, turn {model_call['turn']}): {model_call['status']}, "
                                   f"{model_call['input_tokens']} in + {model_call['output_tokens']} out tokens, {model_call['duration_s'] * 1000:.0f} ms")))
    if values.get("usage_total"):
        console.print(Text(visible(usage_line(values["usage_total"]))))
    if values.get("failure"):
        console.print(Text(visible(f"stopped: {values['failure']['reason']}: {values['failure']['message']}"), style="red"))
    return 0


async def _trace_html(args: argparse.Namespace, console: Console) -> int:
    from pathlib import Path

    from toolrail.trace_html import write_html

    path = Path(args.html)
    if path.is_dir() or not path.parent.is_dir():
        raise ThreadError(f"--html {path}: give a file path in an existing folder")
    snapshots = await _snapshots(args.thread, args.db)
    try:
        data = write_html(args.thread, snapshots, path)
    except OSError as exc:
        raise ThreadError(f"--html {path}: cannot write it ({exc.strerror})") from None
    ratios = ", ".join(f"{p['ratio']:.2f}" for p in data["phases"]) or "no tool calls"
    console.print(Text(f"wrote {path}: {len(data['calls'])} calls, {len(data['turns'])} model turns; tool phase / slowest call: {ratios}"))
    return 0
