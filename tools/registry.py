"""Tools as typed Python functions: one strict schema for the model, one validator for the call.

The provider's strict mode is a help, not a guarantee (OpenAI does not promise constrained
decoding for parallel calls, and many OpenAI-compatible servers ignore `strict`). Every call is
therefore parsed and validated here, against the same Pydantic model the schema came from.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import typing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ConfigDict, ValidationError

from toolrail.arguments import ArgumentsRejected, parse_arguments
from toolrail.tools.strict_schema import StrictSchemaError, to_strict_schema

Target = Literal["tools", "sandbox"]


@dataclass
class FieldError:
    """One reason a call was refused, phrased so the model can fix it."""

    path: str
    message: str
    got: Any = None
    kind: str = "invalid"

    def render(self) -> str:
        got = "" if self.kind in ("missing", "json", "unknown_tool") else f" (got {_short(self.got)})"
        return f"- {self.path}: {self.message}{got}"


class InvalidToolCall(Exception):
    """A call that must not run; `feedback()` is what goes back to the model."""

    def __init__(self, tool: str, errors: list[FieldError]):
        self.tool, self.errors = tool, errors
        super().__init__(self.feedback())

    def feedback(self) -> str:
        lines = "\n".join(e.render() for e in self.errors)
        return f"Invalid call to {self.tool!r}; it was not run. Fix these and call again:\n{lines}"


@dataclass(frozen=True)
class Tool:
    """A registered tool: its strict wire schema, its validator and its implementation."""

    name: str
    description: str
    args_model: type[BaseModel]
    runnable: BaseTool
    parameters: dict[str, Any]
    timeout: float | None = None
    speculative: bool = True
    side_effects: bool = False
    target: Target = "tools"
    strict: bool = True
    wire_name: str | None = None  # provider-legal alias when `name` is not
    source_schema: dict[str, Any] = field(default_factory=dict)  # the args model's own schema
    retries: int = 0  # re-runs after a raised error or timeout (toolrail/tool_retry.py)
    idempotent: bool | None = None  # None: idempotent unless it has side effects
    # A person must approve a call before it runs: True, or a rule on the validated arguments
    # answering True / a reason (e.g. "amount over 100") / False.
    requires_approval: bool | Callable[[dict[str, Any]], bool | str | None] = False
    sequential: bool = False  # runs after the turn's concurrent calls, one at a time, in the model's order
    # Arguments LangChain conventions fill in at call time, never shown to the model: name -> kind
    # ("tool_call_id", "state", "state:FIELD", "store", "runtime").
    injected: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from toolrail.tool_retry import check_retry_settings

        check_retry_settings(self)

    def openai_schema(self) -> dict[str, Any]:
        function = {
            "name": self.wire_name or self.name,
            "description": self.description,
            "parameters": self.parameters,
        }
        if self.strict:
            function["strict"] = True
        return {"type": "function", "function": function}

    def validate(self, arguments: str | dict[str, Any]) -> BaseModel:
        """Parse and validate raw arguments; raise InvalidToolCall with every problem found.

        Fast path: Pydantic parses and validates the raw text in one pass (its Rust JSON parser).
        Text that fails it takes the slow path (`_prepare`: null means "not given", 5.0 is the
        integer 5), whose verdict and errors are the ones that count; `_prepare` only ever turns
        what strict validation refuses into what it accepts, so the fast path agrees with it.
        """
        if isinstance(arguments, str):
            model = self.validate_json_fast(arguments)
            if model is not None:
                return model
        return self.validate_slow(arguments)

    def validate_json_fast(self, text: str) -> BaseModel | None:
        """Pydantic's one-pass parse and strict validation of the raw text; None when it refuses
        (the slow path then decides, and explains)."""
        try:  # what `model_validate_json` calls, without its per-call argument checks in Python
            return self.args_model.__pydantic_validator__.validate_json(text, strict=True, extra="forbid", by_alias=True, by_name=False)
        except ValidationError:
            return None

    def validate_slow(self, arguments: str | dict[str, Any]) -> BaseModel:
        """The path whose verdict and errors count when the fast path refuses (see `validate`)."""
        data = _parse_arguments(self.name, arguments)
        data = _prepare(data, self.source_schema)
        try:
            # by_name=False: with `populate_by_name`, a field's Python name is not what the wire schema names
            return self.args_model.model_validate_json(json.dumps(data), strict=True, extra="forbid", by_alias=True, by_name=False)
        except ValidationError as exc:
            raise InvalidToolCall(self.name, _field_errors(exc, self.args_model)) from None

    async def run(self, args: BaseModel, threads: Executor | None = None, config: dict | None = None,
                  call_id: str = "", state: dict[str, Any] | None = None) -> Any:
        """Run the implementation; a sync one goes to `threads` so the event loop stays free.

        `config` (run name, tags, metadata) reaches LangSmith when the tool is a langchain tool.
        Injected arguments (tool call id, graph state, store) are filled in here, the way
        LangGraph's ToolNode does: the tool is invoked with a full ToolCall.
        """
        fields: Any = {(info.alias or name): getattr(args, name) for name, info in type(args).model_fields.items()}
        if self.injected:
            fields = {"type": "tool_call", "name": self.runnable.name, "id": call_id or "call",
                      "args": {**fields, **self._injections(state, call_id)}}
        if not isinstance(self.runnable, BaseTool):
            return _unwrap(await self.runnable.ainvoke(fields))
        direct = None if self.injected else _direct_function(self.runnable)
        if direct is not None and not _traced():
            # Already validated: calling the function itself skips langchain's second validation
            # and its callback set-up (nothing would observe them with tracing off).
            function, is_async = direct
            if is_async:
                return await function(**fields)
            if threads is not None:
                call = functools.partial(contextvars.copy_context().run, functools.partial(function, **fields))
                return await asyncio.get_running_loop().run_in_executor(threads, call)
        if threads is not None and isinstance(self.runnable, StructuredTool) and self.runnable.coroutine is None:
            context = contextvars.copy_context()
            call = functools.partial(context.run, self.runnable.invoke, fields, config)
            return _unwrap(await asyncio.get_running_loop().run_in_executor(threads, call))
        return _unwrap(await self.runnable.ainvoke(fields, config))

    def _injections(self, state: dict[str, Any] | None, call_id: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, kind in self.injected.items():
            if kind == "state":
                values[name] = state or {}
            elif kind.startswith("state:"):
                values[name] = (state or {}).get(kind[6:])
            elif kind == "store":
                from langgraph.config import get_store

                values[name] = get_store()
            elif kind == "runtime":
                values[name] = _tool_runtime(state, call_id)
        return values

    @property
    def needs_state(self) -> bool:
        return _reads_state(self.injected)


@dataclass
class ToolRegistry:
    """The tools a graph offers, by name."""

    tools: dict[str, Tool] = field(default_factory=dict)

    def add(self, tool: Tool) -> Tool:
        if tool.name in self.tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        taken = {n for t in self.tools.values() for n in (t.name, t.wire_name) if n}
        if tool.wire_name and tool.wire_name in taken:
            # get(wire_name) would silently answer with the other tool
            raise ValueError(f"tool {tool.name!r}: its wire name {tool.wire_name!r} is already taken")
        self.tools[tool.name] = tool
        return tool

    def register(self, func: Callable | None = None, **options: Any) -> Any:
        """Decorator: `@registry.register` or `@registry.register(timeout=5)`."""

        def wrap(fn: Callable) -> Callable:
            self.add(tool_from_function(fn, **options))
            return fn

        return wrap(func) if func is not None else wrap

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name) or next(
            (t for t in self.tools.values() if t.wire_name == name), None
        )

    def names(self) -> list[str]:
        return list(self.tools)

    def openai_schemas(self) -> list[dict[str, Any]]:
        return [t.openai_schema() for t in self.tools.values()]

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools.values())

    def __len__(self) -> int:
        return len(self.tools)


def tool_from_function(
    func: Callable,
    *,
    name: str | None = None,
    description: str | None = None,
    args_model: type[BaseModel] | None = None,
    timeout: float | None = None,
    speculative: bool = True,
    side_effects: bool = False,
    target: Target = "tools",
    retries: int = 0,
    idempotent: bool | None = None,
    requires_approval: bool | Callable[[dict[str, Any]], bool | str | None] = False,
    sequential: bool = False,
) -> Tool:
    """Build a Tool from a typed function (hints + Google-style docstring) or an explicit model.

    The model sees the tool's `tool_call_schema` (LangChain's model-facing schema): injected
    arguments (`InjectedToolCallId`, `InjectedState`, `InjectedStore`) are filled in at call
    time and never appear on the wire or in validation.
    """
    is_async = _is_coroutine(func)
    runnable = StructuredTool.from_function(
        func=None if is_async else func,
        coroutine=func if is_async else None,
        name=name or func.__name__,
        description=description,
        args_schema=args_model,
        parse_docstring=args_model is None,
        error_on_invalid_docstring=False,
    )
    injected = _injected_arguments(runnable)
    model = args_model or _forbid_extra(runnable.tool_call_schema if injected else runnable.args_schema, runnable.name)
    return make_tool(
        name=runnable.name,
        description=runnable.description,
        args_model=model,
        runnable=runnable,
        timeout=timeout,
        # the graph state a tool reads is the state when the tools node runs, not mid-stream;
        # an ordered call must not start before the ones ahead of it
        speculative=speculative and not sequential and not _reads_state(injected),
        side_effects=side_effects,
        target=target,
        retries=retries,
        idempotent=idempotent,
        requires_approval=requires_approval,
        sequential=sequential,
        injected=injected,
    )


def _injected_arguments(runnable: BaseTool) -> dict[str, str]:
    """The arguments LangChain injects at call time, by kind; an injection toolrail cannot fill is refused."""
    from langchain_core.tools import InjectedToolCallId
    from langgraph.prebuilt import InjectedState, InjectedStore, ToolRuntime

    schema = runnable.args_schema
    if not isinstance(schema, type) or not issubclass(schema, BaseModel):
        return {}
    visible = set(runnable.tool_call_schema.model_fields) if isinstance(runnable.tool_call_schema, type) else set(schema.model_fields)
    kinds = {}
    for name, info in schema.model_fields.items():
        if name in visible:
            continue
        for marker in info.metadata:
            if marker is InjectedToolCallId or isinstance(marker, InjectedToolCallId):
                kinds[name] = "tool_call_id"
            elif isinstance(marker, InjectedState) or marker is InjectedState:
                field_name = getattr(marker, "field", None)
                kinds[name] = f"state:{field_name}" if field_name else "state"
            elif isinstance(marker, InjectedStore) or marker is InjectedStore:
                kinds[name] = "store"
        annotation = typing.get_origin(info.annotation) or info.annotation
        if isinstance(annotation, type) and issubclass(annotation, ToolRuntime):
            kinds[name] = "runtime"
        if name not in kinds:
            raise ValueError(f"tool {runnable.name!r}: argument {name!r} is injected in a way toolrail cannot fill "
                             "(supported: InjectedToolCallId, InjectedState, InjectedStore, ToolRuntime)")
    return kinds


def _reads_state(injected: dict[str, str]) -> bool:
    return any(kind.startswith("state") or kind == "runtime" for kind in injected.values())


def _tool_runtime(state: dict[str, Any] | None, call_id: str) -> Any:
    """LangChain's ToolRuntime for one call, from the running node's LangGraph runtime."""
    from langgraph.config import get_config
    from langgraph.prebuilt import ToolRuntime
    from langgraph.runtime import get_runtime

    runtime = get_runtime()
    return ToolRuntime(state=state or {}, context=runtime.context, config=get_config(), stream_writer=runtime.stream_writer,
                       tool_call_id=call_id, store=runtime.store)


def _unwrap(output: Any) -> Any:
    """A tool invoked with a full ToolCall answers with a ToolMessage: its content is the result."""
    from langchain_core.messages import ToolMessage

    return output.content if isinstance(output, ToolMessage) else output


def make_tool(*, name: str, args_model: type[BaseModel], strict: bool = True, **rest: Any) -> Tool:
    """The one place a Tool is born, so every tool gets its schema checked at registration."""
    schema = args_model.model_json_schema()
    try:
        parameters = to_strict_schema(schema, name)
    except StrictSchemaError:
        if strict:
            raise
        parameters = schema
    return Tool(name=name, args_model=args_model, parameters=parameters, strict=strict, source_schema=schema, **rest)


def all_tools(*registries: Iterable[Tool]) -> ToolRegistry:
    """One registry from several; a tool offered twice (the same object) counts once."""
    merged = ToolRegistry()
    for registry in registries:
        for tool in registry:
            if merged.tools.get(tool.name) is not tool:
                merged.add(tool)
    return merged


# --- parsing and error shaping -------------------------------------------------------------


def _direct_function(tool: BaseTool) -> tuple[Callable, bool] | None:
    """The plain function behind a StructuredTool built from a function, with whether it is async."""
    if type(tool) is not StructuredTool or tool.response_format != "content":
        return None
    if tool.coroutine is not None:
        return tool.coroutine, True
    return (tool.func, False) if tool.func is not None else None


def _traced() -> bool:
    """Is anything listening to callbacks here (LangSmith, a user's handler)?"""
    from langchain_core.runnables.config import var_child_runnable_config
    from langsmith.utils import tracing_is_enabled

    callbacks = (var_child_runnable_config.get() or {}).get("callbacks")
    handlers = getattr(callbacks, "handlers", callbacks) or []
    return bool(handlers) or tracing_is_enabled()


def _parse_arguments(tool: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    text = arguments.strip() if isinstance(arguments, str) else arguments
    if text == "":
        return {}
    if not isinstance(text, str):
        raise InvalidToolCall(tool, [FieldError("arguments", f"not valid JSON: got {type(text).__name__}", kind="json")])
    try:
        data = parse_arguments(text)
    except ArgumentsRejected as exc:
        raise InvalidToolCall(tool, [FieldError("arguments", str(exc), kind="json")]) from None
    if not isinstance(data, dict):
        raise InvalidToolCall(
            tool, [FieldError("arguments", "must be a JSON object", got=data, kind="json_type")]
        )
    return data


def _field_errors(exc: ValidationError, model: type[BaseModel]) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False):
        path = _loc_path(err["loc"])
        if err["type"] == "missing":
            errors.append(FieldError(path, "required argument is missing", kind="missing"))
        elif err["type"] == "extra_forbidden":
            allowed = ", ".join(i.alias or n for n, i in model.model_fields.items()) if len(err["loc"]) == 1 else None
            hint = f"; this tool takes: {allowed}" if allowed else ""
            errors.append(FieldError(path, f"unknown argument{hint}", got=err["input"], kind="extra"))
        else:
            errors.append(FieldError(path, err["msg"], got=err["input"], kind=err["type"]))
    return errors


def _loc_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "arguments"


def _prepare(data: Any, schema: dict[str, Any], node: dict | None = None) -> Any:
    """Bring strict-mode arguments to what the model means, at every depth.

    - Strict mode sends every key, with null for "not given": a null for an optional field whose
      schema has no null in it is dropped, so the field's default applies (also inside union
      branches: the branch the value belongs to decides).
    - JSON Schema counts 5.0 as an integer: an integral float where only integers are allowed
      becomes that integer.
    """
    node = _deref(schema if node is None else node, schema)
    if isinstance(data, dict):
        branch = _object_branch(data, node, schema)
        if branch is None:
            return data
        properties, required = branch.get("properties", {}), set(branch.get("required", []))
        out = {}
        for key, value in data.items():
            sub = properties.get(key)
            if sub is None:
                out[key] = value  # unknown: left for the validator to refuse
            elif value is None and key not in required and not _schema_accepts_null(sub, schema):
                continue
            else:
                out[key] = _prepare(value, schema, sub)
        return out
    if isinstance(data, list):
        items = next((b["items"] for b in _branches(node, schema) if isinstance(b.get("items"), dict)), None)
        return data if items is None else [_prepare(v, schema, items) for v in data]
    if isinstance(data, float) and data.is_integer() and _wants_integer(node, schema):
        return int(data)
    return data


def _deref(node: dict, schema: dict) -> dict:
    for _ in range(32):
        if not isinstance(node, dict) or "$ref" not in node:
            break
        node = schema.get("$defs", {}).get(node["$ref"].rsplit("/", 1)[-1], {})
    return node if isinstance(node, dict) else {}


def _branches(node: dict, schema: dict) -> list[dict]:
    """The concrete schemas a value may match: the node itself or its anyOf/oneOf members."""
    node = _deref(node, schema)
    members = node.get("anyOf") or node.get("oneOf")
    if not members:
        return [node]
    return [b for m in members for b in _branches(m, schema) if b.get("type") != "null"]


def _object_branch(data: dict, node: dict, schema: dict) -> dict | None:
    candidates = [b for b in _branches(node, schema) if "properties" in b]
    if len(candidates) > 1:
        def fits(branch: dict) -> bool:
            props = branch["properties"]
            if not set(data) <= set(props):
                return False
            for key, value in data.items():  # discriminators: const or enum fields must match
                sub = _deref(props[key], schema)
                if "const" in sub and sub["const"] != value or "enum" in sub and value not in sub["enum"]:
                    return False
            return all(k in data for k in branch.get("required", []))
        candidates = [b for b in candidates if fits(b)] or candidates
    return candidates[0] if candidates else None


def _wants_integer(node: dict, schema: dict) -> bool:
    kinds = set()
    for branch in _branches(node, schema):
        kind = branch.get("type")
        kinds |= set(kind) if isinstance(kind, list) else {kind}
        if "enum" in branch and all(isinstance(v, int) and not isinstance(v, bool) for v in branch["enum"]):
            kinds.add("integer")
    return "integer" in kinds and "number" not in kinds


def _schema_accepts_null(node: dict, schema: dict) -> bool:
    node = _deref(node, schema)
    kind = node.get("type")
    if kind == "null" or isinstance(kind, list) and "null" in kind or None in node.get("enum", [0]):
        return True
    return any(_schema_accepts_null(b, schema) for b in node.get("anyOf", []) + node.get("oneOf", []))


def _forbid_extra(model: type[BaseModel], name: str) -> type[BaseModel]:
    config = ConfigDict(**{**model.model_config, "extra": "forbid"})
    return type(model.__name__, (model,), {"model_config": config, "__module__": model.__module__})


def _is_coroutine(func: Callable) -> bool:
    import inspect

    return inspect.iscoroutinefunction(func)


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = json.dumps(text) if isinstance(value, str) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."
