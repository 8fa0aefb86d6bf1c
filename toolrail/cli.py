"""`toolrail` command line: run the agent graph and watch it work, with Rich.

Every failure a user can cause (bad flag, no model, unreachable endpoint) ends with one clear
line and a non-zero exit; a run that stops without an answer exits 1 with its failure shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from rich.console import Console

from toolrail.errors import ToolrailError
from toolrail.render import RunRenderer, state_as_json

DEFAULT_DB = ".toolrail/checkpoints.sqlite"
TRIP_PROMPT = "Plan a trip from SF to NYC. What's the weather there and find me flights."


class CliError(ToolrailError):
    """Bad input from the command line: one line, exit 2."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
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
        sys.stderr.write(f"toolrail: error: {message} (see 'toolrail {self.prog.split()[-1]} --help')\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="toolrail", description="Production tool use for LLMs, on LangGraph.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="run the agent on a prompt")
    run.add_argument("prompt", nargs="?", default=TRIP_PROMPT, help="what to ask (default: the trip example)")
    run.add_argument("--thread", help="thread id: reuse one to continue a conversation")
    run.add_argument("--model", help="model name for the OpenAI-compatible endpoint (or TOOLRAIL_MODEL)")
    run.add_argument("--recorded", action="store_true", help="use the recorded model even if a key is set")
    run.add_argument("--json", action="store_true", help="print the final state as JSON instead of the live view")
    run.add_argument("--db", default=None, help=f"SQLite checkpoint file (default: TOOLRAIL_DB or {DEFAULT_DB})")
    run.add_argument("--max-retries", type=_non_negative_int, default=2, help="invalid turns the model may retry (default 2)")
    run.add_argument("--tool-timeout", type=_positive_float, default=30.0, help="default per-call timeout, seconds")
    run.add_argument("--max-concurrency", type=_positive_int, default=64, help="calls running at once, at most (default 64)")
    run.add_argument("--no-speculation", action="store_true", help="start calls only once the whole reply has arrived")
    run.add_argument("--file", action="append", default=[], metavar="PATH", help="hand this file to the sandbox (repeatable)")
    run.add_argument("--out", default=".toolrail/files", metavar="DIR", help="where files the sandbox produces are saved")
    run.add_argument("--sandbox", choices=["local", "e2b"], help="sandbox backend (default: TOOLRAIL_SANDBOX or local)")
    suite = commands.add_parser("conformance", help="run a BFCL-format suite through the graph")
    suite.add_argument("path", help="folder with BFCL_v4_<category>.json and possible_answer/")
    suite.add_argument("--category", action="append", default=[], help="only these categories (repeatable)")
    suite.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=args.json)
    try:
        return asyncio.run(_dispatch(args, console))
    except ToolrailError as exc:
        sys.stderr.write(f"toolrail: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("toolrail: interrupted; the run is checkpointed: continue it with --thread")
        return 130


async def _dispatch(args: argparse.Namespace, console: Console) -> int:
    if args.command == "run":
        return await run_command(args, console)
    if args.command == "conformance":
        return await conformance_command(args, console)
    raise CliError(f"unknown command {args.command!r}")


async def run_command(args: argparse.Namespace, console: Console) -> int:
    from toolrail.checkpoints import open_checkpointer
    from toolrail.graphs.agent import build_graph
    from toolrail.models import model_for_prompt
    from toolrail.sandbox import make_sandbox
    from toolrail.sandbox.sessions import SandboxSessions

    if not args.prompt.strip():
        raise CliError("the prompt is empty")
    model, model_label = model_for_prompt(args.prompt, args.model, recorded=args.recorded)
    thread_id = args.thread or f"run-{uuid.uuid4().hex[:12]}"
    db_path = args.db or os.environ.get("TOOLRAIL_DB") or DEFAULT_DB
    sessions = SandboxSessions(
        factory=lambda: make_sandbox(args.sandbox), inputs=_input_files(args.file, model), output_dir=Path(args.out)
    )
    async with open_checkpointer(db_path) as checkpointer, sessions:
        graph = build_graph(
            model=model, checkpointer=checkpointer, max_retries=args.max_retries, tool_timeout=args.tool_timeout,
            max_concurrency=args.max_concurrency, speculative=not args.no_speculation, sandboxes=sessions,
        )
        config = {"configurable": {"thread_id": thread_id}}
        renderer = RunRenderer(console, model_label=model_label, thread_id=thread_id, quiet=args.json)
        renderer.start(args.prompt)
        stream = graph.astream({"messages": [HumanMessage(args.prompt)]}, config, stream_mode=["updates", "custom"])
        async for mode, chunk in stream:
            renderer.event(mode, chunk)
        state = (await graph.aget_state(config)).values
    if args.json:
        print(json.dumps(state_as_json(state, thread_id), indent=2, ensure_ascii=False))
    else:
        renderer.finish(state, Path(db_path))
    if state.get("failure"):
        sys.stderr.write(f"toolrail: run stopped ({state['failure']['reason']}): {state['failure']['message']}\n")
        return 1
    return 0


async def conformance_command(args: argparse.Namespace, console: Console) -> int:
    from toolrail.conformance import conformance
    from toolrail.render import conformance_table

    try:
        report = await conformance(Path(args.path), args.category or None)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        console.print(conformance_table(report))
    return 0 if report["passed"] else 1


def _input_files(paths: list[str], model: object) -> dict[str, bytes]:
    """--file paths, or the files a recorded transcript ships with when none are given."""
    if not paths:
        transcript = getattr(model, "transcript", None)
        return transcript.input_files() if transcript is not None else {}
    files = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise CliError(f"--file {path}: no such file")
        files[path.name] = path.read_bytes()
    return files


if __name__ == "__main__":
    raise SystemExit(main())
