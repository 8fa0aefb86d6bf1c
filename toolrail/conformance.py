"""Conformance on a suite nobody here wrote: BFCL-format cases, run through the real graph.

For every case: its function definitions become toolrail tools (via `tool_from_json_schema`)
backed by recording stubs; a scripted model replies with the case's ground-truth calls (the
first accepted value per parameter; parallel cases as parallel calls of one turn); the graph
validates and dispatches them; the stubs must receive exactly those arguments. Then each call
is mutated (wrong type, missing required parameter, unknown parameter, unknown tool, value
outside an enum, broken JSON) and each mutant must be rejected before any stub runs, with an
error naming the offending field, sent back to the model.

Ground truth and strict mode disagree on optional parameters: BFCL lets a call omit them
(accepted value ""), strict mode sends every key. The scripted model sends what strict mode
would: every parameter of the function, null for those it omits; toolrail turns null into the
declared default (or None), which is what the stub must then receive.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from pydantic_core import to_jsonable_python

from toolrail.recorded import RecordedCall, RecordedChatModel, RecordedTurn, Transcript
from toolrail.tools.json_schema import registry_from_json_schemas
from toolrail.tools.registry import InvalidToolCall, Tool, ToolRegistry

MUTATIONS = ("wrong_type", "missing_required", "unknown_parameter", "unknown_tool", "outside_enum", "broken_json")
UNKNOWN_TOOL = "no_such_tool_xyz"
UNKNOWN_PARAMETER = "unexpected_parameter_xyz"


@dataclass
class Case:
    id: str
    category: str
    functions: list[dict[str, Any]]
    ground_truth: list[dict[str, dict[str, list[Any]]]]


@dataclass
class CategoryReport:
    cases: int = 0
    accepted: int = 0
    mutants: int = 0
    rejected: int = 0
    non_strict_tools: int = 0
    schema_conflicts: list[str] = field(default_factory=list)  # ground truth breaks its schema; refused as it must be
    failures: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__}


def load_suite(folder: Path, categories: list[str] | None = None) -> list[Case]:
    """Every `BFCL_v4_<category>.json` with a matching `possible_answer/` file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no conformance suite at {folder}")
    cases = []
    for questions in sorted(folder.glob("BFCL_v4_*.json")):
        category = questions.stem.removeprefix("BFCL_v4_")
        answers_file = folder / "possible_answer" / questions.name
        if categories and category not in categories or not answers_file.exists():
            continue
        answers = {a["id"]: a["ground_truth"] for a in map(json.loads, answers_file.read_text().splitlines()) if a}
        for line in questions.read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                cases.append(Case(item["id"], category, item["function"], answers[item["id"]]))
    if not cases:
        raise FileNotFoundError(f"no BFCL_v4_*.json cases with possible_answer/ files in {folder}")
    return cases


class _ScriptedByPrompt(RecordedChatModel):
    """Replies by prompt: one compiled graph serves a case's ground truth and all its mutants."""

    scripts: dict[str, list[RecordedTurn]] = {}

    def _turn(self, messages: list[BaseMessage]) -> RecordedTurn:
        prompt = next(str(m.content) for m in messages if m.type == "human")
        return self.scripts[prompt][sum(1 for m in messages if m.type == "ai")]


class _Stub:
    def __init__(self, name: str, received: list[tuple[str, dict]]):
        self.name, self.received = name, received

    async def ainvoke(self, fields: dict[str, Any]) -> Any:
        self.received.append((self.name, to_jsonable_python(fields, by_alias=True)))
        return {"ok": True}


async def run_case(case: Case) -> tuple[bool, list[tuple[str, bool, str]], int, list[str], bool]:
    """(passed, [(mutant, rejected, why)], non-strict tools, problems, ground truth contradicts its schema)."""
    from toolrail.graphs.agent import build_graph

    received: list[tuple[str, dict]] = []
    language = _language(case.category)
    functions = language_definitions(case.functions, language) if language else case.functions
    ground_truth = [_language_call(call, language) for call in case.ground_truth] if language else case.ground_truth
    tools = registry_from_json_schemas(functions, lambda name: _Stub(name, received))
    truth = [_truth_call(tools, call, f"call_{i}") for i, call in enumerate(ground_truth)]
    model = _ScriptedByPrompt(transcript=Transcript(name=case.id, description="conformance", prompt="", turns=[]), chunk_delay_s=0.0)
    scripts: dict[str, list[RecordedTurn]] = {"truth": [RecordedTurn(tool_calls=[c for c, _ in truth]), RecordedTurn(content="done")]}
    conflicted = [(c.id, e["conflicts"]) for c, e in truth if e["conflicts"]]
    # A case whose ground truth contradicts its own schema is checked for rejection instead.
    mutants = [] if conflicted else [(m, k) for i in range(len(truth)) for m, k in _mutants(tools, truth, i)]
    for key, (turn, _) in zip(_keys(mutants), mutants):
        scripts[key] = [turn, RecordedTurn(content="done")]  # a mutant let through still ends cleanly
    model.scripts = scripts
    graph = build_graph(model=model, tools=tools, checkpointer=None, max_retries=0, speculative=False)

    state = await graph.ainvoke({"messages": [HumanMessage("truth")]})
    problems = _check_conflict(state, conflicted, received) if conflicted else _check_truth(state, truth, received)
    outcomes = []
    for key, (_, expectation) in zip(_keys(mutants), mutants):
        received.clear()
        state = await graph.ainvoke({"messages": [HumanMessage(key)]})
        why = _check_mutant(state, expectation, received)
        outcomes.append((expectation["mutation"], why is None, why or ""))
    return not problems, outcomes, sum(not t.strict for t in tools), problems, bool(conflicted)


def _language(category: str) -> str | None:
    return next((lang for lang in ("javascript", "java") if category.endswith(lang)), None)


def language_definitions(functions: list[dict[str, Any]], language: str) -> list[dict[str, Any]]:
    """BFCL's own pre-processing of Java and JavaScript definitions (`bfcl_eval/utils.py`,
    `_func_doc_language_specific_pre_processing`): every parameter is sent as a string holding a
    value in that language's syntax, its declared type moves into the description."""
    label = {"java": "Java", "javascript": "JavaScript"}[language]
    out = []
    for function in functions:
        function = json.loads(json.dumps(function))
        function["description"] = f"{function.get('description', '')} Note that the provided function is in {label}."
        for prop in (function.get("parameters") or {}).get("properties", {}).values():
            kind = prop.get("type")
            description = prop.get("description", "")
            if kind == "any":
                description += f" This parameter can be of any type of {label} object in string representation."
            else:
                description += f" This is {label} {kind} type parameter in string representation."
            items = prop.pop("items", None)
            if kind in ("ArrayList", "Array", "array") and isinstance(items, dict):
                description += f" The list elements are of type {items.get('type')}; they are not in string representation."
            entries = prop.pop("properties", None) if language == "javascript" and kind == "dict" else None
            if entries is not None:
                description += f" The dictionary entries have the following schema; they are not in string representation. {json.dumps(entries)}"
            prop.pop("required", None) if kind in ("dict", "HashMap") else None
            prop["type"], prop["description"] = "string", description
        out.append(function)
    return out


def _language_call(call: dict[str, dict[str, list[Any]]], language: str) -> dict[str, dict[str, list[Any]]]:
    """Ground truth as a model answering those definitions sends it: each value in its string form."""
    def as_string(value: Any) -> Any:
        if value == "" or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value)
    return {name: {param: [as_string(v) for v in values] for param, values in accepted.items()} for name, accepted in call.items()}


def _keys(mutants: list) -> list[str]:
    return [f"mutant-{i}" for i in range(len(mutants))]


def _truth_call(tools: ToolRegistry, call: dict[str, dict[str, list[Any]]], call_id: str) -> tuple[RecordedCall, dict[str, Any]]:
    """The ground-truth call as strict mode sends it, and what the stub must then receive.

    Per parameter: the first accepted value its schema admits (BFCL lists alternatives; it
    sometimes lets a call omit a parameter its schema requires). When no accepted value fits
    the schema, the case contradicts itself: `conflicts` names those parameters, and toolrail
    must then reject the call naming them.
    """
    (name, accepted), = call.items()
    tool = tools.get(name)
    options = {}
    for field_name, info in tool.args_model.model_fields.items():
        param = info.alias or field_name
        values = accepted.get(param, [""]) or [""]
        if info.is_required():
            values = [v for v in values if v != ""] or values
        options[param] = [_as_sent(v, tool, param) for v in values]
    sent = {param: choices[0] for param, choices in options.items()}
    for param, choices in options.items():
        sent[param] = next((c for c in choices if param not in _rejected_fields(tool, {**sent, param: c})), choices[0])
    conflicts = sorted(_rejected_fields(tool, sent))
    expected = _with_defaults(sent, tool.source_schema, tool.source_schema)
    wire = tool.wire_name or tool.name
    return RecordedCall(id=call_id, name=wire, arguments=json.dumps(sent)), {"tool": tool.name, "args": expected, "conflicts": conflicts}


def _with_defaults(value: Any, root: dict, schema: dict) -> Any:
    """What a tool must receive for `value`: declared defaults in place of omitted optional
    parameters (null or absent), at every depth, as the definition's schema states them."""
    node = _resolve(root, schema)
    if isinstance(value, dict) and "properties" in node:
        required = set(node.get("required", []))
        out = {}
        for key, sub in node["properties"].items():
            given = value.get(key)
            if key not in required and (key not in value or given is None and not _accepts_null(root, sub)):
                out[key] = to_jsonable_python(sub.get("default"))
            elif key in value:
                out[key] = _with_defaults(given, root, sub)
        return {**value, **out}
    if isinstance(value, list):
        items = _array_items(_resolve(root, schema))
        return [_with_defaults(v, root, items) for v in value] if items else value
    return value


def _accepts_null(root: dict, schema: dict) -> bool:
    schema = root.get("$defs", {}).get(schema["$ref"].rsplit("/", 1)[-1], {}) if "$ref" in schema else schema
    return schema.get("type") == "null" or any(_accepts_null(root, b) for b in schema.get("anyOf", []))


def _as_sent(value: Any, tool: Tool, param: str) -> Any:
    """How strict mode sends an accepted value: "" (omitted) as null, nested choices resolved."""
    if value == "":
        return None
    return _first_accepted(value, tool.source_schema, params_schema(tool, param))


def _rejected_fields(tool: Tool, args: dict[str, Any]) -> set[str]:
    try:
        tool.validate(json.dumps(args))
    except InvalidToolCall as exc:
        return {re.split(r"[.\[]", e.path)[0] for e in exc.errors}
    return set()


def params_schema(tool: Tool, param: str) -> dict:
    return tool.source_schema.get("properties", {}).get(param, {})


def _first_accepted(value: Any, root: dict, schema: dict) -> Any:
    """BFCL nests accepted-value lists inside objects: take the first choice all the way down."""
    schema = _resolve(root, schema)
    if isinstance(value, dict):
        props = _object_properties(root, schema)
        if props is not None:
            return {k: _first_accepted(v[0] if isinstance(v, list) and v else v, root, props.get(k, {}))
                    for k, v in value.items() if not (isinstance(v, list) and v and v[0] == "")}
    if isinstance(value, list):
        items = _resolve(root, _array_items(schema))
        if _object_properties(root, items) is not None:
            return [_first_accepted(v, root, items) for v in value]
    return value


def _resolve(root: dict, schema: dict) -> dict:
    if "$ref" in schema:
        return root.get("$defs", {}).get(schema["$ref"].rsplit("/", 1)[-1], {})
    concrete = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    return _resolve(root, concrete[0]) if len(concrete) == 1 else schema


def _object_properties(root: dict, schema: dict) -> dict | None:
    schema = _resolve(root, schema)
    return schema.get("properties") if schema.get("type") == "object" and "properties" in schema else None


def _array_items(schema: dict) -> dict:
    return schema.get("items", {}) if isinstance(schema.get("items"), dict) else {}


def _check_truth(state: dict, truth: list, received: list[tuple[str, dict]]) -> list[str]:
    problems = []
    if state.get("failure"):
        problems.append(f"run failed: {state['failure']['message']}; {[v['error'] for v in state.get('verdicts', []) if v['error']]}")
    expected = sorted((e["tool"], _canonical(e["args"])) for _, e in truth)
    got = sorted((name, _canonical(args)) for name, args in received)
    if expected != got:
        problems.append(f"stubs received {got}, expected {expected}")
    return problems


def _check_conflict(state: dict, conflicted: list[tuple[str, list[str]]], received: list) -> list[str]:
    """Ground truth that breaks its own schema must be refused, naming the offending fields."""
    if received:
        return [f"schema-violating ground truth reached the stubs: {[n for n, _ in received]}"]
    verdicts = {v["id"]: v for v in state.get("verdicts", [])}
    problems = []
    for call_id, fields in conflicted:
        error = (verdicts.get(call_id) or {}).get("error") or ""
        missing = [f for f in fields if f not in error]
        if not error or missing:
            problems.append(f"call {call_id} breaks its schema at {fields}, but the error does not say so: {error[:200]}")
    return problems


def _canonical(value: Any) -> str:
    """Compare numbers by value (5 == 5.0), everything else exactly."""
    def norm(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, (int, float)):
            return float(v) if math.isfinite(v) else str(v)
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return v
    return json.dumps(norm(value), sort_keys=True)


def _mutants(tools: ToolRegistry, truth: list, index: int):
    """Every applicable mutation of call `index`; the other calls of the turn stay valid."""
    call, expected = truth[index]
    args = json.loads(call.arguments)
    tool = tools.get(expected["tool"])
    params = tool.source_schema.get("properties", {})
    required = tool.source_schema.get("required", [])

    def turn(name: str, arguments: str, mutation: str, field_name: str):
        calls = [c for c, _ in truth]
        calls[index] = RecordedCall(id=call.id, name=name, arguments=arguments)
        return RecordedTurn(tool_calls=calls), {"mutation": mutation, "call_id": call.id, "field": field_name}

    typed = next((p for p in params if _wrong_value(params[p]) is not None), None)
    if typed is not None:
        yield turn(call.name, json.dumps({**args, typed: _wrong_value(params[typed])}), "wrong_type", typed)
    if required:
        missing = required[0]
        yield turn(call.name, json.dumps({k: v for k, v in args.items() if k != missing}), "missing_required", missing)
    yield turn(call.name, json.dumps({**args, UNKNOWN_PARAMETER: 1}), "unknown_parameter", UNKNOWN_PARAMETER)
    yield turn(UNKNOWN_TOOL, call.arguments, "unknown_tool", UNKNOWN_TOOL)
    enum_param = next((p for p in params if _enum_of(params[p])), None)
    if enum_param is not None:
        outside = "NOT_IN_ENUM_xyz" if all(isinstance(v, str) for v in _enum_of(params[enum_param])) else -987654321
        yield turn(call.name, json.dumps({**args, enum_param: outside}), "outside_enum", enum_param)
    yield turn(call.name, call.arguments[:-1], "broken_json", "JSON")


def _enum_of(schema: dict) -> list:
    if "enum" in schema:
        return schema["enum"]
    return next((b["enum"] for b in schema.get("anyOf", []) if "enum" in b), [])


def _wrong_value(schema: dict) -> Any:
    """A value of a JSON type the parameter does not accept (None when it accepts any)."""
    kinds = {schema.get("type")} | {b.get("type") for b in schema.get("anyOf", [])}
    kinds.discard(None)
    kinds.discard("null")
    if not kinds or ("enum" in schema and not kinds):
        return None
    if kinds & {"integer", "number", "boolean", "array", "object"} and "string" not in kinds:
        return "not-a-valid-value"
    if "string" in kinds and not kinds & {"integer", "number"}:
        return 12345
    return None


def _check_mutant(state: dict, expectation: dict, received: list) -> str | None:
    """None when the mutant was refused as it must be; otherwise what went wrong."""
    if received:
        return f"stubs ran: {[name for name, _ in received]}"
    verdict = next((v for v in state.get("verdicts", []) if v["id"] == expectation["call_id"]), None)
    if verdict is None or verdict["valid"]:
        return "the mutated call was not marked invalid"
    sent_back = [m for m in state["messages"] if m.type == "tool" and m.tool_call_id == expectation["call_id"]]
    if not sent_back or str(sent_back[0].content) != verdict["error"]:
        return "the error did not go back to the model"
    if expectation["field"] not in verdict["error"]:
        return f"error does not name {expectation['field']!r}: {verdict['error'][:200]}"
    return None


async def run_suite(cases: list[Case], concurrency: int = 8) -> dict[str, CategoryReport]:
    reports: dict[str, CategoryReport] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(case: Case) -> None:
        async with gate:
            report = reports.setdefault(case.category, CategoryReport())
            try:
                accepted, outcomes, loose, problems, conflict = await run_case(case)
            except Exception as exc:  # a case that cannot even be compiled is a failure, not a crash
                accepted, outcomes, loose, problems, conflict = False, [], 0, [f"crash: {type(exc).__name__}: {exc}"], False
            if conflict and accepted:
                report.schema_conflicts.append(case.id)
            report.cases += 1
            report.accepted += accepted
            report.non_strict_tools += loose
            report.mutants += len(outcomes)
            report.rejected += sum(ok for _, ok, _ in outcomes)
            report.failures += [{"id": case.id, "what": "crash" if p.startswith("crash:") else "ground truth", "why": p} for p in problems]
            report.failures += [{"id": case.id, "what": m, "why": why} for m, ok, why in outcomes if not ok]

    for case in cases:
        reports.setdefault(case.category, CategoryReport())
    await asyncio.gather(*(one(case) for case in cases))
    return reports


def passed(reports: dict[str, CategoryReport]) -> bool:
    return all(r.accepted == r.cases and r.rejected == r.mutants and not r.failures for r in reports.values())


def summary(reports: dict[str, CategoryReport], seconds: float) -> dict[str, Any]:
    total = CategoryReport()
    for r in reports.values():
        for key in ("cases", "accepted", "mutants", "rejected", "non_strict_tools"):
            setattr(total, key, getattr(total, key) + getattr(r, key))
        total.failures += r.failures
        total.schema_conflicts += r.schema_conflicts
    return {
        "passed": passed(reports), "seconds": round(seconds, 1),
        "categories": {k: v.as_dict() for k, v in reports.items()}, "total": total.as_dict(),
    }


async def conformance(folder: Path, categories: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    reports = await run_suite(load_suite(folder, categories))
    return summary(reports, time.perf_counter() - started)
