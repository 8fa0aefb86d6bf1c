"""`toolrail` command line: run the agent graph and watch it work, with Rich.

Every failure a user can cause (bad flag, no model, unreachable endpoint) ends with one clear
line and a non-zero exit; a run that stops without an answer exits 1 with its failure shown.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import signal
import sqlite3
import stat
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.errors import GraphRecursionError
from rich.console import Console

from toolrail.approval_cli import WAITING_EXIT, answer_from_flags, ask_person, interactive, pending_interrupts, waiting_line
from toolrail.arguments import DEFAULT_MAX_ARGUMENT_BYTES, DEFAULT_MAX_ARGUMENT_DEPTH
from toolrail.checkpoints import DEFAULT_DB
from toolrail.errors import ToolrailError
from toolrail.limits import (
    DEFAULT_CHUNK_GAP_TIMEOUT_S, DEFAULT_DEADLINE_S, DEFAULT_FIRST_CHUNK_TIMEOUT_S, DEFAULT_MAX_CALLS_PER_TURN,
    DEFAULT_MAX_TURNS, DEFAULT_REPLY_TIMEOUT_S,
)
from toolrail.render import RunRenderer, json_for_terminal, state_as_json, visible
from toolrail.tracing import guard_tracing

TRIP_PROMPT = "Plan a trip from SF to NYC. What's the weather there and find me flights."


class CliError(ToolrailError):
    """Bad input from the command line: one line, exit 2."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


def _db_location(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a SQLite file path or a postgresql:// URL")
    return text


def _pool_size(text: str) -> int:
    from toolrail.sandbox.pool import MAX_POOL_SIZE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_POOL_SIZE:
        raise argparse.ArgumentTypeError(f"{value} is not from 0 (off) to {MAX_POOL_SIZE}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not a usage dump
        sys.stderr.write(f"toolrail: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _graph_options() -> argparse.ArgumentParser:
    """Flags shared by every command that runs the graph."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--model", help="provider:name (e.g. anthropic:claude-sonnet-4-5, any LangChain provider) or a bare name for the OpenAI-compatible endpoint (or TOOLRAIL_MODEL)")
    options.add_argument("--base-url", help="the model endpoint's base URL (local servers, proxies; or OPENAI_BASE_URL / ANTHROPIC_BASE_URL)")
    options.add_argument("--model-retries", type=_non_negative_int, default=4, help="retries of a 429/5xx model reply, with backoff (default 4)")
    options.add_argument("--max-tokens-total", type=_positive_int, default=None, help="stop the run (failure 'budget') once it has used this many tokens")
    options.add_argument("--prices", metavar="FILE.json", help="price table {model: {input, output}} in USD per 1M tokens: adds cost")
    options.add_argument("--response-schema", metavar="FILE.json", help="JSON Schema the final answer must match (validated, in state as structured_response)")
    options.add_argument("--recorded", action="store_true", help="use the recorded model even if a key is set")
    options.add_argument("--json", action="store_true", help="print the final state as JSON instead of the live view")
    options.add_argument("--db", type=_db_location, default=None, help=f"SQLite file or postgresql:// URL (default: TOOLRAIL_CHECKPOINT_URL, TOOLRAIL_DB or {DEFAULT_DB})")
    options.add_argument("--max-retries", type=_non_negative_int, default=2, help="invalid turns the model may retry (default 2)")
    options.add_argument("--tool-timeout", type=_positive_float, default=30.0, help="default per-call timeout, seconds")
    options.add_argument("--max-concurrency", type=_positive_int, default=None, help="calls running at once, at most (default: no cap on async calls)")
    options.add_argument("--max-threads", type=_positive_int, default=None, help="threads for sync tools (default: --max-concurrency, else 64)")
    options.add_argument("--no-speculation", action="store_true", help="start calls only once the whole reply has arrived")
    options.add_argument("--file", action="append", default=[], metavar="PATH", help="hand this file to the sandbox (repeatable)")
    options.add_argument("--out", default=".toolrail/files", metavar="DIR", help="where files the sandbox produces are saved")
    options.add_argument("--out-max-bytes", type=_positive_int, default=None, metavar="N",
                         help="bytes of produced files saved per call, at most (default: the scratch size, 128 MiB)")
    options.add_argument("--out-max-files", type=_positive_int, default=None, metavar="N",
                         help="produced files saved per call, at most (default 1000)")
    options.add_argument("--sandbox-uid", metavar="UID[:GID]", default=None,
                         help="host uid the local sandbox runs as when toolrail is root (default: TOOLRAIL_SANDBOX_HOST_UID or 65534)")
    options.add_argument("--sandbox", choices=["local", "e2b"], help="sandbox backend (default: TOOLRAIL_SANDBOX or local)")
    options.add_argument("--sandbox-pool", type=_pool_size, default=None, metavar="N",
                         help="spare local sandbox jails kept started for new sessions (default: TOOLRAIL_SANDBOX_POOL or 1; 0 = off)")
    options.add_argument("--tools", action="append", default=[], metavar="MODULE:NAME", help="also offer the tools of this ToolRegistry (repeatable)")
    options.add_argument("--approve-tools", action="append", default=[], metavar="NAMES",
                         help="a person approves calls of these tools (comma-separated, repeatable; 'all' or 'side_effects') before they run")
    options.add_argument("--no-input", action="store_true", help="never ask at the terminal: stop with exit code 3 when a person must decide")
    # Limits (toolrail/limits.py, README "Limits"): each ends the run with a structured failure.
    options.add_argument("--max-turns", type=_positive_int, default=DEFAULT_MAX_TURNS, help=f"model turns per run (default {DEFAULT_MAX_TURNS})")
    options.add_argument("--deadline", type=_positive_float, default=DEFAULT_DEADLINE_S, metavar="S", help=f"wall-clock seconds per run (default {DEFAULT_DEADLINE_S:g})")
    options.add_argument("--model-first-chunk-timeout", type=_positive_float, default=DEFAULT_FIRST_CHUNK_TIMEOUT_S, metavar="S", help=f"seconds to the reply's first chunk (default {DEFAULT_FIRST_CHUNK_TIMEOUT_S:g})")
    options.add_argument("--model-chunk-timeout", type=_positive_float, default=DEFAULT_CHUNK_GAP_TIMEOUT_S, metavar="S", help=f"seconds between two chunks of a reply (default {DEFAULT_CHUNK_GAP_TIMEOUT_S:g})")
    options.add_argument("--model-reply-timeout", type=_positive_float, default=DEFAULT_REPLY_TIMEOUT_S, metavar="S", help=f"seconds for a whole reply (default {DEFAULT_REPLY_TIMEOUT_S:g})")
    options.add_argument("--max-calls-per-turn", type=_positive_int, default=DEFAULT_MAX_CALLS_PER_TURN, help=f"tool calls in one reply (default {DEFAULT_MAX_CALLS_PER_TURN})")
    options.add_argument("--max-argument-bytes", type=_positive_int, default=DEFAULT_MAX_ARGUMENT_BYTES, help=f"size of one call's arguments (default {DEFAULT_MAX_ARGUMENT_BYTES})")
    options.add_argument("--max-argument-depth", type=_positive_int, default=DEFAULT_MAX_ARGUMENT_DEPTH, help=f"nesting of one call's arguments (default {DEFAULT_MAX_ARGUMENT_DEPTH})")
    options.add_argument("--no-sandbox-rebuild", action="store_true", help="a resumed thread's sandbox starts empty instead of re-running its completed cells")
    options.add_argument("--wait", action="store_true", help="if another process is running this thread, wait for it instead of refusing")
    _mcp_options(options)
    return options


def _mcp_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mcp", action="append", default=[], metavar="'COMMAND ARGS' | URL",
                        help="also offer an MCP server's tools: a command (stdio) or an http(s) URL (streamable HTTP); repeatable")
    parser.add_argument("--mcp-startup-timeout", type=_positive_float, default=20.0, metavar="S",
                        help="seconds an MCP server has to start and list its tools (default 20)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="toolrail", description="Production tool use for LLMs, on LangGraph.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    options = _graph_options()
    run = commands.add_parser("run", parents=[options], help="run the agent on a prompt")
    run.add_argument("prompt", nargs="?", default=TRIP_PROMPT, help="what to ask (default: the trip example)")
    run.add_argument("--thread", help="thread id: reuse one to continue a conversation")
    resume = commands.add_parser("resume", parents=[options], help="finish an interrupted run")
    resume.add_argument("thread")
    replay = commands.add_parser("replay", parents=[options], help="re-run a thread from one of its checkpoints")
    replay.add_argument("thread")
    replay.add_argument("--checkpoint", required=True, help="checkpoint id (see 'toolrail history')")
    fork = commands.add_parser("fork", parents=[options], help="branch a thread at a checkpoint with an edit, and run it")
    fork.add_argument("thread")
    fork.add_argument("--checkpoint", required=True, help="checkpoint id (see 'toolrail history')")
    fork.add_argument("--message", help="replace the latest user message with this text")
    fork.add_argument("--tool-result", metavar="CALL_ID=TEXT", help="replace one tool call's result")
    for name, text in (("history", "list a thread's checkpoints"), ("trace", "draw a thread's run as a timeline")):
        inspect = commands.add_parser(name, help=text)
        inspect.add_argument("thread")
        inspect.add_argument("--db", type=_db_location, default=None, help="SQLite file or postgresql:// URL")
        inspect.add_argument("--json", action="store_true", help="print as JSON")
        if name == "trace":
            inspect.add_argument("--html", metavar="FILE", help="write the timeline as one self-contained HTML page")
    approve = commands.add_parser("approve", parents=[options], help="answer a thread's approval question, and continue it")
    approve.add_argument("thread")
    approve.add_argument("--call", action="append", default=[], metavar="ID", help="approve this call (repeatable; no flag approves every pending call)")
    approve.add_argument("--reject", action="append", default=[], metavar="ID=REASON", help="reject this call; the model reads the reason")
    approve.add_argument("--edit", action="append", default=[], metavar="ID=JSON", help="run this call with these arguments (validated first)")
    approve.add_argument("--answer", metavar="TEXT", help="the answer to a question a tool asked with interrupt() (JSON or text)")
    listing = commands.add_parser("tools", help="list the tools a run would offer, with their strict schemas")
    listing.add_argument("--tools", action="append", default=[], metavar="MODULE:NAME", help="also list this ToolRegistry's tools")
    _mcp_options(listing)
    listing.add_argument("--json", action="store_true", help="print the tools' wire schemas as JSON")
    sandbox = commands.add_parser("sandbox", help="inspect the local sandbox")
    sandbox.add_argument("what", choices=["policy"], help="policy: print everything the jail allows or denies")
    suite = commands.add_parser("conformance", help="run a BFCL-format suite through the graph")
    suite.add_argument("path", help="folder with BFCL_v4_<category>.json and possible_answer/")
    suite.add_argument("--category", action="append", default=[], help="only these categories (repeatable)")
    suite.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=getattr(args, "json", False))
    guard_tracing()
    if getattr(args, "sandbox_uid", None):
        os.environ["TOOLRAIL_SANDBOX_HOST_UID"] = args.sandbox_uid
    terminated: list[int] = []
    previous = signal.getsignal(signal.SIGTERM)
    try:
        return asyncio.run(_dispatch(args, console, terminated))
    except ToolrailError as exc:
        sys.stderr.write(f"toolrail: error: {visible(exc)}\n")
        return 2
    except (sqlite3.Error, OSError) as exc:  # disk full, read-only file or folder, ...: mid-run too
        what = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        sys.stderr.write(f"toolrail: error: the checkpoint database or a file failed: {what}{where}; "
                         "the last checkpoint is kept: continue with 'toolrail resume THREAD' once fixed\n")
        return 1
    except GraphRecursionError as exc:  # the turn limit comes first; this is the last guard
        sys.stderr.write(f"toolrail: run stopped (turn_limit): LangGraph's step limit was reached: {str(exc).splitlines()[0]}\n")
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError) and not terminated:
            raise
        what = "terminated" if terminated else "interrupted"
        Console(stderr=True).print(f"toolrail: {what}; the run is checkpointed: continue it with --thread")
        return 143 if terminated else 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _take_sigterm_like_ctrl_c(terminated: list[int]) -> None:
    """SIGTERM takes Ctrl-C's path: asyncio cancels the run, every `async with` closes (sandbox
    jails, cgroups, checkpoints), and the thread stays resumable. Installed inside the loop,
    where asyncio.run has put its own SIGINT handler, which is reused. A process started with
    SIGINT ignored (a background job of a script, nohup) has no such handler: SIGTERM then
    cancels the run's task itself, and `main` reports it the same way."""
    on_sigint = signal.getsignal(signal.SIGINT)
    reuse_sigint = callable(on_sigint) and on_sigint is not signal.default_int_handler
    loop, run = asyncio.get_running_loop(), asyncio.current_task()

    def on_sigterm(signum: int, frame: Any) -> None:
        terminated.append(signum)
        if reuse_sigint:
            on_sigint(signal.SIGINT, frame)
        elif run is not None:
            loop.call_soon_threadsafe(run.cancel)

    signal.signal(signal.SIGTERM, on_sigterm)


async def _dispatch(args: argparse.Namespace, console: Console, terminated: list[int] | None = None) -> int:
    from toolrail import history

    _take_sigterm_like_ctrl_c(terminated if terminated is not None else [])
    commands = {
        "run": run_command, "resume": resume_command, "replay": replay_command, "fork": fork_command,
        "approve": approve_command,
        "conformance": conformance_command, "tools": tools_command, "sandbox": sandbox_command,
        "history": history.history_command, "trace": history.trace_command,
    }
    return await commands[args.command](args, console)


@asynccontextmanager
async def open_graph(args: argparse.Namespace, prompt: str) -> AsyncIterator[tuple[Any, str, str]]:
    """The graph as the flags describe it: (graph, model label, checkpoint location)."""
    from toolrail.checkpoints import checkpoint_location, open_checkpointer, open_ledger
    from toolrail.graphs.agent import build_graph
    from toolrail.models import model_for_prompt
    from toolrail.sandbox import make_sandbox
    from toolrail.sandbox.sessions import SandboxSessions

    _check_sandbox_settings(args)
    model, model_label = model_for_prompt(prompt, args.model, recorded=args.recorded, base_url=args.base_url)
    extras = _model_options(args)
    location = checkpoint_location(args.db)
    budget = {k: v for k, v in (("out_max_bytes", args.out_max_bytes), ("out_max_files", args.out_max_files)) if v}
    sessions = SandboxSessions(
        factory=lambda: make_sandbox(args.sandbox, pool_size=args.sandbox_pool), inputs=_input_files(args.file, model),
        output_dir=Path(args.out), prewarm=True, **budget,
    )
    async with open_checkpointer(location) as checkpointer, sessions, _offered_tools(args) as tools:
        approval = _approval(args.approve_tools, tools)
        graph = build_graph(
            model=model, tools=tools, checkpointer=checkpointer, max_retries=args.max_retries,
            tool_timeout=args.tool_timeout, max_concurrency=args.max_concurrency, max_threads=args.max_threads,
            speculative=not args.no_speculation, sandboxes=sessions, ledger=open_ledger(location), **extras,
            approval=approval,
            max_turns=args.max_turns, deadline=args.deadline, model_first_chunk_timeout=args.model_first_chunk_timeout,
            model_chunk_timeout=args.model_chunk_timeout, model_reply_timeout=args.model_reply_timeout,
            max_calls_per_turn=args.max_calls_per_turn, max_argument_bytes=args.max_argument_bytes,
            max_argument_depth=args.max_argument_depth, rebuild_sandbox=not args.no_sandbox_rebuild,
        )
        yield graph, model_label, location


async def stream_and_report(graph: Any, graph_input: Any, config: dict, args: argparse.Namespace, console: Console,
                            model_label: str, location: str, headline: str) -> int:
    """Run (or continue) a thread with the live view; print the outcome; the exit code.

    The thread's lock is held throughout (one writer per thread), and this process's run gets
    its own deadline (a resume too)."""
    from toolrail.thread_lock import thread_lock

    thread_id = config["configurable"]["thread_id"]
    config = {**config, "configurable": {**config["configurable"], "deadline_at": time.time() + args.deadline}}
    renderer = RunRenderer(console, model_label=model_label, thread_id=thread_id, quiet=args.json)
    async with thread_lock(location, thread_id, wait=args.wait):
        renderer.start(headline)
        while True:
            async for mode, chunk in graph.astream(graph_input, config, stream_mode=["updates", "custom"]):
                renderer.event(mode, chunk)
            snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
            waiting = pending_interrupts(snapshot)
            if not waiting:
                break
            if not interactive(args):  # the question stays in the checkpoint: `toolrail approve` answers it
                if args.json:
                    print(json_for_terminal(_finite({**state_as_json(snapshot.values, thread_id), "waiting": [i.value for i in waiting]}), indent=2, allow_nan=False, default=str))
                sys.stderr.write(visible(waiting_line(thread_id, waiting)) + "\n")
                return WAITING_EXIT
            graph_input = ask_person(waiting, console, thread_id)
    state = snapshot.values
    if args.json:
        print(json_for_terminal(_finite(state_as_json(state, thread_id)), indent=2, allow_nan=False))
    else:
        renderer.finish(state, location)
    if state.get("failure"):
        sys.stderr.write(visible(f"toolrail: run stopped ({state['failure']['reason']}): {state['failure']['message']}") + "\n")
        return 1
    return 0


def _finite(value: Any) -> Any:
    """--json prints standard JSON: a non-finite number (never valid JSON) becomes its name."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


async def run_command(args: argparse.Namespace, console: Console) -> int:
    if not args.prompt.strip():
        raise CliError("the prompt is empty")
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise CliError("the prompt is not valid UTF-8 text") from None
    thread_id = args.thread or f"run-{uuid.uuid4().hex[:12]}"
    async with open_graph(args, args.prompt) as (graph, label, location):
        config = {"configurable": {"thread_id": thread_id}}
        if args.thread and pending_interrupts(await graph.aget_state(config)):
            # a new message now would leave the waiting calls without results
            raise CliError(f"thread {thread_id!r} is waiting for approval; answer it first: toolrail approve {thread_id} (see --help)")
        return await stream_and_report(graph, {"messages": [HumanMessage(args.prompt)]}, config, args, console, label, location, args.prompt)


async def resume_command(args: argparse.Namespace, console: Console) -> int:
    """Continue from the latest checkpoint: finished calls are not run again (pending writes)."""
    from toolrail.history import thread_prompt

    prompt = await thread_prompt(args.thread, args.db)
    async with open_graph(args, prompt) as (graph, label, location):
        config = {"configurable": {"thread_id": args.thread}}
        snapshot = await graph.aget_state(config)
        graph_input = None if snapshot.next else _nothing_to_do(console, args)
        return await stream_and_report(graph, graph_input, config, args, console, label, location, f"resume {args.thread}")


async def replay_command(args: argparse.Namespace, console: Console) -> int:
    from toolrail.history import checkpoint_config, thread_prompt

    prompt = await thread_prompt(args.thread, args.db)
    async with open_graph(args, prompt) as (graph, label, location):
        config = await checkpoint_config(graph, args.thread, args.checkpoint)
        return await stream_and_report(graph, None, config, args, console, label, location, f"replay {args.thread} from {args.checkpoint}")


async def fork_command(args: argparse.Namespace, console: Console) -> int:
    from toolrail.history import checkpoint_config, edit_at, thread_prompt

    if not args.message and not args.tool_result:
        raise CliError("fork needs an edit: --message TEXT or --tool-result CALL_ID=TEXT")
    prompt = await thread_prompt(args.thread, args.db)
    async with open_graph(args, args.message or prompt) as (graph, label, location):
        config = await checkpoint_config(graph, args.thread, args.checkpoint)
        forked = await edit_at(graph, config, message=args.message, tool_result=args.tool_result)
        return await stream_and_report(graph, None, forked, args, console, label, location, f"fork {args.thread} at {args.checkpoint}")


async def approve_command(args: argparse.Namespace, console: Console) -> int:
    """Answer the question a thread is waiting on (from the checkpoint), then continue the run."""
    from toolrail.history import thread_prompt

    prompt = await thread_prompt(args.thread, args.db)
    async with open_graph(args, prompt) as (graph, label, location):
        config = {"configurable": {"thread_id": args.thread}}
        waiting = pending_interrupts(await graph.aget_state(config))
        if not waiting:
            raise CliError(f"thread {args.thread!r} is not waiting for approval")
        answer = answer_from_flags(args, waiting)
        return await stream_and_report(graph, answer, config, args, console, label, location, f"approve {args.thread}")


def _approval(specs: list[str], tools: Any) -> Any:
    """--approve-tools as build_graph's approval rule; unknown tool names are refused."""
    names = [n.strip() for spec in specs for n in spec.split(",") if n.strip()]
    if not names:
        return None
    if names in (["all"], ["side_effects"]):
        return names[0]
    unknown = [n for n in names if tools.get(n) is None]
    if unknown:
        raise CliError(f"--approve-tools: no tool named {', '.join(unknown)} (tools: {', '.join(tools.names())})")
    return {tools.get(n).name for n in names}


def _nothing_to_do(console: Console, args: argparse.Namespace) -> None:
    if not args.json:
        console.print("nothing to resume: the run had already finished")
    return None


async def conformance_command(args: argparse.Namespace, console: Console) -> int:
    from toolrail.conformance import conformance
    from toolrail.render import conformance_table

    try:
        report = await conformance(Path(args.path), args.category or None)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:  # a broken JSON file in the suite
        raise CliError(f"{args.path}: a suite file is not valid JSON: {str(exc).splitlines()[0][:300]}") from None
    if args.json:
        print(json_for_terminal(report, indent=2))
    else:
        # Piped output has no terminal width (Rich assumes 80): give the table the room it needs.
        if not console.is_terminal:
            console.width = max(console.width, 100)
        console.print(conformance_table(report))
    return 0 if report["passed"] else 1


@asynccontextmanager
async def _offered_tools(args: argparse.Namespace) -> AsyncIterator[Any]:
    """The default tools, --tools registries and --mcp servers' tools (connected while in use)."""
    from toolrail.tools.mcp_tools import mcp_tools
    from toolrail.tools.registry import all_tools

    local = _tools(args.tools)
    if not args.mcp:
        yield local
        return
    async with mcp_tools(*args.mcp, startup_timeout=args.mcp_startup_timeout, call_timeout=getattr(args, "tool_timeout", 30.0),
                         taken_names=[n for t in local for n in (t.name, t.wire_name) if n]) as remote:
        yield all_tools(local, remote)


async def tools_command(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    async with _offered_tools(args) as tools:
        if args.json:
            print(json.dumps([t.openai_schema() for t in tools], indent=2))
            return 0
        table = Table(title=f"{len(tools)} tools")
        for column in ("tool", "strict", "runs", "arguments"):
            table.add_column(column)
        for tool in tools:
            runs = "side effects (ledger, never speculative)" if tool.side_effects else ("speculative" if tool.speculative else "after the reply")
            arguments = ", ".join(tool.parameters.get("properties", {}))
            table.add_row(visible(tool.wire_name or tool.name), "yes" if tool.strict else "no", runs, visible(arguments))
        if not console.is_terminal:
            console.width = max(console.width, 120)
        console.print(table)
    return 0


async def sandbox_command(args: argparse.Namespace, console: Console) -> int:
    """`toolrail sandbox policy`: the one policy table of the local jail."""
    from rich.table import Table

    from toolrail.sandbox.policy import policy_rows

    table = Table(title="local sandbox policy (toolrail/sandbox/policy.py)", show_lines=False)
    for column in ("area", "what", "rule", "enforced by"):
        table.add_column(column, overflow="fold")
    for row in policy_rows():
        table.add_row(*row)
    console.print(table)
    return 0


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    """Backoff, budget, prices and response schema from the flags; bad files are one line."""
    from toolrail.backoff import RetryPolicy
    from toolrail.final_answer import ResponseFormat
    from toolrail.usage import Budget, load_prices

    options: dict[str, Any] = {"model_retry": RetryPolicy(max_retries=args.model_retries)}
    prices = load_prices(args.prices) if args.prices else {}
    options["budget"] = Budget(max_tokens_total=args.max_tokens_total, prices=prices)
    if args.response_schema:
        path = Path(args.response_schema)
        try:
            schema = json.loads(path.read_text())
        except OSError as exc:
            raise CliError(f"--response-schema {path}: cannot read it ({exc.strerror})") from None
        except ValueError as exc:
            raise CliError(f"--response-schema {path}: not JSON ({exc})") from None
        try:
            options["response_format"] = ResponseFormat(schema if isinstance(schema, dict) else {}, name=None)
        except (ValueError, TypeError) as exc:
            raise CliError(f"--response-schema {path}: {exc}") from None
    return options


def _tools(specs: list[str]) -> Any:
    """The default tools plus any `module:name` ToolRegistry given with --tools."""
    from toolrail.graphs.agent import DEFAULT_TOOLS
    from toolrail.tools.registry import ToolRegistry, all_tools

    merged = DEFAULT_TOOLS
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        if not module_name:
            raise CliError(f"--tools {spec!r}: expected MODULE:NAME, e.g. mypackage.tools:registry")
        try:
            registry = getattr(importlib.import_module(module_name), attribute or "tools")
        except (ImportError, AttributeError, ValueError, TypeError) as exc:
            raise CliError(f"--tools {spec}: cannot load it ({exc})") from None
        if not isinstance(registry, ToolRegistry):
            raise CliError(f"--tools {spec}: expected a ToolRegistry, got {type(registry).__name__}")
        try:
            merged = all_tools(merged, registry)
        except ValueError as exc:
            raise CliError(f"--tools {spec}: {exc}") from None
    return merged


def _check_sandbox_settings(args: argparse.Namespace) -> None:
    """Sandbox settings fail before the run, not as a tool error in the middle of it."""
    from toolrail.sandbox import SandboxError, backend_name, make_sandbox

    try:
        if backend_name(args.sandbox) == "e2b":
            make_sandbox("e2b")  # checks the SDK and the key; connects only on first use
        else:
            from toolrail.sandbox.policy import host_identity
            from toolrail.sandbox.pool import resolve_pool_size

            host_identity()  # a bad --sandbox-uid fails here, not mid-run
            resolve_pool_size(args.sandbox_pool)  # and a bad TOOLRAIL_SANDBOX_POOL
    except ValueError as exc:
        raise CliError(f"--sandbox-uid: {exc}") from None
    except SandboxError as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: not a folder")


def _input_files(paths: list[str], model: object) -> dict[str, bytes]:
    """--file paths, or the files a recorded transcript ships with when none are given."""
    if not paths:
        transcript = getattr(model, "transcript", None)
        return transcript.input_files() if transcript is not None else {}
    from toolrail.sandbox import SandboxLimits

    limits = SandboxLimits()
    per_file = min(limits.max_file_bytes, limits.scratch_bytes)
    files: dict[str, bytes] = {}
    origins: dict[str, Path] = {}
    for path in map(Path, paths):
        try:
            info = path.stat()  # stat, never open: a FIFO must not hang us
        except OSError:
            raise CliError(f"--file {path}: no such file") from None
        if stat.S_ISDIR(info.st_mode):
            raise CliError(f"--file {path}: is a folder; hand over its files one by one")
        if not stat.S_ISREG(info.st_mode):
            raise CliError(f"--file {path}: not a regular file (a FIFO, socket or device cannot be handed over)")
        if info.st_size > per_file:
            raise CliError(f"--file {path}: {info.st_size:,} bytes is over the per-file limit of {per_file:,} bytes")
        if path.name in origins:
            raise CliError(f"--file {path}: same name as --file {origins[path.name]}; both would be {path.name} in the sandbox")
        origins[path.name] = path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise CliError(f"--file {path}: not a regular file")
                files[path.name] = f.read(per_file + 1)
        except OSError as exc:
            raise CliError(f"--file {path}: cannot read it ({exc.strerror or exc})") from None
        if len(files[path.name]) > per_file:
            raise CliError(f"--file {path}: over the per-file limit of {per_file:,} bytes")
    total = sum(map(len, files.values()))
    if total > limits.scratch_bytes:
        raise CliError(f"--file: {total:,} bytes in all is over the sandbox's {limits.scratch_bytes:,}-byte scratch dir")
    return files


if __name__ == "__main__":
    raise SystemExit(main())
