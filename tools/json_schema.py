"""Tools from JSON Schema definitions (OpenAPI operations, MCP servers, BFCL, other frameworks).

A definition is compiled into a Pydantic model, and from there it takes the same path as a
Python tool (`make_tool`): the same strict wire schema, the same validator, the same errors.

Dialects met in the wild:
- BFCL's `dict` (object), `float` (number), `tuple` (array), `any`, and Python-ish type names
  (`str`, `int`, `bool`, `list`, ...);
- tool names that providers refuse (`math.factorial`): the tool keeps its name and gets a
  provider-legal `wire_name` (`math_factorial`), unique within a registry; the registry maps
  the wire name back;
- property names that are not Python identifiers: every field is aliased to its original name,
  so schemas, errors and arguments all use the names the definition gave;
- optional parameters: not in `required`, or marked `optional: true` on the property, or named
  in an object-level `optional: [...]` list.

Strict mode cannot express a free-form object (`dict` without properties), an untyped value
(`any`) or an array without item type. By default (`strict=None`) such a tool is still built,
with `strict=False`: its wire schema goes without `strict: true`, and toolrail validates what
the definition does declare. `strict=True` refuses it instead, naming the tool and the field.
Unknown type names are always refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from toolrail.tools.registry import Tool, ToolRegistry, make_tool
from toolrail.tools.strict_schema import StrictSchemaError

_SCALARS: dict[str, Any] = {
    "string": str, "str": str,
    "integer": int, "int": int,
    "number": float, "float": float, "double": float,
    "boolean": bool, "bool": bool,
    "null": type(None),
}
_ARRAYS = {"array", "list", "tuple"}
_OBJECTS = {"object", "dict"}
_BOUNDS = {"minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt", "exclusiveMaximum": "lt",
           "minItems": "min_length", "maxItems": "max_length", "minLength": "min_length",
           "maxLength": "max_length", "pattern": "pattern", "multipleOf": "multiple_of"}
_WIRE_NAME = re.compile(r"[^a-zA-Z0-9_-]")


class Unimplemented:
    """The default implementation: a definition alone says what a tool takes, not what it does."""

    def __init__(self, name: str):
        self.name = name

    async def ainvoke(self, fields: dict[str, Any]) -> Any:
        raise NotImplementedError(f"tool {self.name!r} was loaded from a schema without an implementation")


class FunctionRunnable:
    """Adapts a plain (async or sync) callable taking the arguments as keywords."""

    def __init__(self, func: Callable[..., Any]):
        self.func = func

    async def ainvoke(self, fields: dict[str, Any]) -> Any:
        result = self.func(**fields)
        if hasattr(result, "__await__"):
            result = await result
        return result


def tool_from_json_schema(
    definition: dict[str, Any],
    implementation: Callable[..., Any] | Any | None = None,
    *,
    strict: bool | None = None,
    wire_name: str | None = None,
    **options: Any,
) -> Tool:
    """Compile one definition; `implementation` is a callable or anything with `ainvoke(dict)`."""
    function = definition.get("function", definition) if definition.get("type") == "function" else definition
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a tool definition needs a name, got {name!r}")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    compiler = _Compiler(name)
    model = compiler.model(parameters, _model_name(name), path="")
    if strict and compiler.loose:
        raise StrictSchemaError(name, compiler.loose[0][0], compiler.loose[0][1])
    runnable = implementation if hasattr(implementation, "ainvoke") else (
        FunctionRunnable(implementation) if implementation is not None else Unimplemented(name)
    )
    legal = wire_name or provider_name(name)
    return make_tool(
        name=name,
        description=function.get("description") or "",
        args_model=model,
        runnable=runnable,
        strict=not compiler.loose,
        wire_name=None if legal == name else legal,
        **options,
    )


def registry_from_json_schemas(
    definitions: Iterable[dict[str, Any]],
    implementations: dict[str, Any] | Callable[[str], Any] | None = None,
    **options: Any,
) -> ToolRegistry:
    """Several definitions into one registry, with wire names kept unique."""
    functions = [d.get("function", d) if d.get("type") == "function" else d for d in definitions]
    # Names that are already legal keep themselves; the others get a name no tool has.
    taken = {f["name"] for f in functions if provider_name(f["name"]) == f["name"]}
    registry = ToolRegistry()
    for function in functions:
        name = function["name"]
        impl = implementations(name) if callable(implementations) else (implementations or {}).get(name)
        wire = name if name in taken else _unique(provider_name(name), taken)
        registry.add(tool_from_json_schema(function, impl, wire_name=wire, **options))
    return registry


def provider_name(name: str) -> str:
    """`math.factorial` -> `math_factorial`: what OpenAI accepts (^[a-zA-Z0-9_-]{1,64}$)."""
    return _WIRE_NAME.sub("_", name)[:64] or "tool"


def _unique(candidate: str, taken: set[str]) -> str:
    name, n = candidate, 2
    while name in taken:
        suffix = f"_{n}"
        name, n = candidate[: 64 - len(suffix)] + suffix, n + 1
    taken.add(name)
    return name


def _model_name(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^a-zA-Z0-9]+", name) if part) + "Args"


class _Compiler:
    """JSON Schema -> Pydantic types; remembers what strict mode could not express."""

    def __init__(self, tool: str):
        self.tool = tool
        self.loose: list[tuple[str, str]] = []  # (field path, why strict mode cannot say it)
        self.dropped_defaults: list[tuple[str, Any]] = []  # defaults that do not fit their type

    def fail(self, path: str, reason: str) -> StrictSchemaError:
        return StrictSchemaError(self.tool, path or "<root>", reason)

    def model(self, schema: dict[str, Any], model_name: str, path: str) -> type[BaseModel]:
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        optional_names = schema.get("optional")
        if isinstance(optional_names, list):
            required -= set(optional_names)
        fields: dict[str, Any] = {}
        for index, (prop, sub) in enumerate(properties.items()):
            sub_path = f"{path}.{prop}" if path else prop
            if not isinstance(sub, dict):
                raise self.fail(sub_path, f"property schema must be an object, got {sub!r}")
            kind = self.type_of(sub, sub_path, f"{model_name}_{_model_name(prop)}")
            is_required = prop in required and sub.get("optional") is not True
            fields[f"f{index}"] = self.field(kind, sub, prop, is_required)
        return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)

    def field(self, kind: Any, schema: dict[str, Any], alias: str, is_required: bool) -> tuple[Any, Any]:
        info = {"alias": alias, "description": schema.get("description")}
        if is_required:
            return kind, Field(**info)
        default = schema.get("default")
        if default is not None:
            default = self._fitted_default(kind, default, alias)
        if default is None:  # "may be omitted": None stands for "not given"
            return kind | None, Field(default=None, **info)
        return kind, Field(default=default, **info)  # null on the wire means "use the default"

    def _fitted_default(self, kind: Any, default: Any, field_path: str) -> Any:
        """Definitions in the wild write defaults like "false" for a boolean or "None" for a list.

        A default that coerces to the declared type is kept (coerced); one that does not is
        unusable, so the parameter becomes "may be omitted" (None), and the tool says so.
        """
        try:
            return TypeAdapter(kind).validate_python(default, strict=False)
        except ValidationError:
            self.dropped_defaults.append((field_path, default))
            return None

    def type_of(self, schema: dict[str, Any], path: str, model_name: str) -> Any:
        if "enum" in schema and schema["enum"]:
            return self._bounded(Literal[tuple(schema["enum"])], schema)
        kind = schema.get("type")
        if isinstance(kind, list):
            members = [self.type_of({**schema, "type": k}, path, model_name) for k in kind]
            union = members[0]
            for member in members[1:]:
                union = union | member
            return union
        if kind is None or kind == "any":
            self.loose.append((path, "has no type (an untyped/any value cannot be expressed in strict mode)"))
            return Any
        if kind in _SCALARS:
            return self._bounded(_SCALARS[kind], schema)
        if kind in _ARRAYS:
            items = schema.get("items")
            if not isinstance(items, dict) or not items:
                self.loose.append((path, "array items have no type"))
                return self._bounded(list[Any], schema)
            return self._bounded(list[self.type_of(items, f"{path}[]", model_name + "Item")], schema)
        if kind in _OBJECTS:
            if "properties" not in schema:
                self.loose.append((path, "free-form object (dict with arbitrary keys)"))
                return dict[str, Any]
            return self.model(schema, model_name, path)
        raise self.fail(path, f"unknown type {kind!r}")

    def _bounded(self, kind: Any, schema: dict[str, Any]) -> Any:
        bounds = {_BOUNDS[k]: v for k, v in schema.items() if k in _BOUNDS}
        return Annotated[kind, Field(**bounds)] if bounds else kind
