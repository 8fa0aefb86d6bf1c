"""Tools from JSON Schema definitions (MCP servers, OpenAPI operations, Pydantic, BFCL, ...).

A definition is compiled into a Pydantic model, and from there it takes the same path as a
Python tool (`make_tool`): the same strict wire schema, the same validator, the same errors.
Compiling to Pydantic (rather than validating with a JSON Schema engine beside it) keeps one
validator for every tool: errors are shaped the same way, defaults and aliases behave the same,
and a call costs what a Python tool's call costs.

Dialects understood:
- JSON Schema Draft 2020-12 as MCP and OpenAPI 3.1 write it, and Pydantic's own
  `model_json_schema()`: `$ref` into `$defs`/`definitions` (recursive, and at the root, `#`
  included), `anyOf`/`oneOf` (unions), `allOf` (merged), `const`, `enum` on any type, type
  arrays (`["string", "null"]`), `format` (date, date-time, time, email, uuid, ipv4, ipv6, uri
  are checked; others are kept as a hint), bounds, `pattern`, `multipleOf`, `uniqueItems`,
  `minProperties`/`maxProperties`, defaults at every depth, `additionalProperties` as a schema
  (a typed map: validated, the tool goes non-strict);
- OpenAPI 3.0's `nullable: true`;
- BFCL's `dict` (object), `float` (number), `tuple` (array), `any`, Python-ish type names
  (`str`, `int`, `bool`, `list`, ...), `enum` on an array meaning "each item is one of these",
  and optional parameters marked `optional: true` or listed in an object-level `optional: [...]`;
- tool names that providers refuse (`math.factorial`): the tool keeps its name and gets a
  provider-legal `wire_name` (`math_factorial`), unique within a registry;
- property names that are not Python identifiers: every field is aliased to its original name,
  so schemas, errors and arguments all use the names the definition gave.

Strict mode cannot express a free-form object, an untyped value (`any`, `{}`), an array
without item type or a typed map. By default (`strict=None`) such a tool is still built with
`strict=False`: its wire schema goes without `strict: true`, and toolrail validates what the
definition does declare. `strict=True` refuses it instead, naming the tool and the field.
Unknown type names and references that cannot be resolved are always refused.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from typing import Annotated, Any, ForwardRef, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PydanticUserError, TypeAdapter, ValidationError, create_model

from toolrail.strict_proof import checks_only
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
# Keywords that only annotate: a `$ref` beside them is still just the reference.
_ANNOTATIONS = {"description", "title", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly"}


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
    """Compile one definition; `implementation` is a callable or anything with `ainvoke(dict)`.

    `definition` is `{"name", "description", "parameters"}` (OpenAI, BFCL), the same wrapped as
    `{"type": "function", "function": {...}}`, or an MCP tool (`inputSchema`).
    """
    function = definition.get("function", definition) if definition.get("type") == "function" else definition
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a tool definition needs a name, got {name!r}")
    parameters = function.get("parameters") or function.get("inputSchema") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise StrictSchemaError(name, "<root>", f"parameters must be a JSON Schema object, got {parameters!r}")
    model = compile_arguments(name, parameters)
    if strict and model.loose:
        raise StrictSchemaError(name, model.loose[0][0], model.loose[0][1])
    runnable = implementation if hasattr(implementation, "ainvoke") else (
        FunctionRunnable(implementation) if implementation is not None else Unimplemented(name)
    )
    legal = wire_name or provider_name(name)
    return make_tool(
        name=name,
        description=function.get("description") or "",
        args_model=model.model,
        runnable=runnable,
        strict=not model.loose,
        wire_name=None if legal == name else legal,
        **options,
    )


class CompiledArguments:
    """A definition's arguments as a Pydantic model, and what strict mode could not express."""

    def __init__(self, model: type[BaseModel], loose: list[tuple[str, str]], dropped_defaults: list[tuple[str, Any]]):
        self.model, self.loose, self.dropped_defaults = model, loose, dropped_defaults


def compile_arguments(tool: str, schema: dict[str, Any]) -> CompiledArguments:
    """JSON Schema (an object at the root, possibly through `$ref`) -> a Pydantic model."""
    compiler = _Compiler(tool, schema, _model_name(tool))
    model = compiler.root_model()
    return CompiledArguments(model, compiler.loose, compiler.dropped_defaults)


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
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^a-zA-Z0-9]+", name) if part) or "Args"


# --- formats --------------------------------------------------------------------------------

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_TIME = re.compile(r"^\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S*$")


@checks_only  # returns its value unchanged: a call's kept keys still count through it
def _check_format(fmt: str, value: str) -> str:
    ok = True
    try:
        if fmt == "date":
            ok = bool(_DATE.match(value)) and bool(datetime.date.fromisoformat(value))
        elif fmt == "date-time":
            ok = bool(_DATE_TIME.match(value)) and bool(datetime.datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00")))
        elif fmt == "time":
            ok = bool(_TIME.match(value))
        elif fmt == "email":
            ok = bool(_EMAIL.match(value))
        elif fmt == "uuid":
            ok = len(value) == 36 and bool(uuid.UUID(value))
        elif fmt == "ipv4":
            ipaddress.IPv4Address(value)
        elif fmt == "ipv6":
            ipaddress.IPv6Address(value)
        elif fmt in ("uri", "url"):
            ok = bool(_URI.match(value))
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"not a valid {fmt}")
    return value


_CHECKED_FORMATS = {"date", "date-time", "time", "email", "uuid", "ipv4", "ipv6", "uri", "url"}


@checks_only  # returns its value unchanged: a call's kept keys still count through it
def _unique_items(value: list) -> list:
    seen = [json.dumps(v, sort_keys=True, default=str) for v in value]
    if len(set(seen)) != len(seen):
        raise ValueError("items must be unique")
    return value


@checks_only  # returns its value unchanged: a call's kept keys still count through it
def _member_of(allowed: list, value: Any) -> Any:
    canonical = json.dumps(value, sort_keys=True, default=str)
    if canonical not in {json.dumps(v, sort_keys=True) for v in allowed}:
        raise ValueError(f"must be one of {json.dumps(allowed)[:200]}")
    return value


@checks_only  # returns its value unchanged: a call's kept keys still count through it
def _property_count(low: int | None, high: int | None, value: Any) -> Any:
    data = value if isinstance(value, dict) else (value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else {})
    if low is not None and len(data) < low:
        raise ValueError(f"needs at least {low} properties")
    if high is not None and len(data) > high:
        raise ValueError(f"takes at most {high} properties")
    return value


def _patterns(schema: Any) -> Iterable[str]:
    if isinstance(schema, dict):
        if isinstance(schema.get("pattern"), str):
            yield schema["pattern"]
        for value in schema.values():
            yield from _patterns(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _patterns(value)


def _needs_python_re(schema: dict[str, Any]) -> bool:
    for pattern in _patterns(schema):
        try:
            TypeAdapter(Annotated[str, Field(pattern=pattern)])
        except Exception:  # noqa: BLE001 - pydantic-core's SchemaError: the Rust engine refuses it
            return True
    return False


def _union(members: list[Any]) -> Any:
    unique: list[Any] = []
    for member in members:
        if not any(member is u or member == u for u in unique):
            unique.append(member)
    return unique[0] if len(unique) == 1 else Union[tuple(unique)]  # noqa: UP007 (forward refs)


def _optional(kind: Any) -> Any:
    return Union[kind, None]  # noqa: UP007 (forward refs cannot use |)


def _hashable_literal(values: list) -> bool:
    return all(v is None or isinstance(v, (str, int, float, bool)) for v in values)


class _Compiler:
    """JSON Schema -> Pydantic types; remembers what strict mode could not express."""

    def __init__(self, tool: str, root: dict[str, Any], root_name: str):
        self.tool, self.root, self.root_name = tool, root, root_name
        self.loose: list[tuple[str, str]] = []  # (field path, why strict mode cannot say it)
        self.dropped_defaults: list[tuple[str, Any]] = []  # defaults that do not fit their type
        self.done: dict[str, Any] = {}  # $ref -> compiled type
        self.pending: dict[str, str] = {}  # $ref being compiled -> the name forward references use
        self.namespace: dict[str, Any] = {}  # forward-reference name -> type
        self.models: list[type[BaseModel]] = []
        self.taken_names: set[str] = set()
        # JSON Schema patterns are ECMA-262 regexes; Pydantic's default (Rust) engine has no
        # look-around or back-references, Python's `re` has both (and also searches, unanchored).
        self.config = ConfigDict(extra="forbid", **({"regex_engine": "python-re"} if _needs_python_re(root) else {}))

    def fail(self, path: str, reason: str) -> StrictSchemaError:
        return StrictSchemaError(self.tool, path or "<root>", reason)

    def name(self, wanted: str) -> str:
        base = _model_name(wanted)
        name, n = base, 2
        while name in self.taken_names:
            name, n = f"{base}{n}", n + 1
        self.taken_names.add(name)
        return name

    # --- the root -----------------------------------------------------------------------

    def root_model(self) -> type[BaseModel]:
        root = self.root
        if "$ref" not in root and not self._is_object(root) and not ({"anyOf", "oneOf", "allOf"} & set(root)):
            raise self.fail("", f"the arguments must be a JSON object, got type {root.get('type')!r}")
        self.pending["#"] = self.root_name
        self.taken_names.add(self.root_name)
        if self._is_object(root) and not root.get("properties") and root.get("additionalProperties") in (None, False):
            kind = self.model(root, self.root_name, "")  # no arguments at all
        else:
            kind = self.type_of(root, "", self.root_name, object_name=self.root_name)
        self.done["#"] = self.namespace[self.root_name] = kind
        self._rebuild()
        if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
            raise self.fail("", "the arguments must be one JSON object with named properties (not a union or a map)")
        return kind

    def _rebuild(self) -> None:
        for _ in range(len(self.models) + 1):
            incomplete = [m for m in self.models if not m.__pydantic_complete__]
            if not incomplete:
                return
            for model in incomplete:
                model.model_rebuild(_types_namespace=self.namespace, raise_errors=False)
        for model in self.models:
            if not model.__pydantic_complete__:
                model.model_rebuild(_types_namespace=self.namespace)  # raises, naming what is missing

    # --- references ---------------------------------------------------------------------

    def resolve(self, ref: str, path: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            raise self.fail(path, f"unresolvable reference {ref!r} (only references inside the definition are followed)")
        node: Any = self.root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise self.fail(path, f"unresolvable reference {ref!r}")
        if not isinstance(node, dict):
            raise self.fail(path, f"reference {ref!r} does not point to a schema")
        return node

    def ref_type(self, ref: str, path: str) -> Any:
        if ref in self.done:
            return self.done[ref]
        if ref in self.pending:  # recursion: a forward reference, resolved when all is built
            return ForwardRef(self.pending[ref])
        target = self.resolve(ref, path)
        name = self.name(ref.rstrip("/").rsplit("/", 1)[-1] or "Root")
        self.pending[ref] = name
        try:
            kind = self.type_of(target, path, name, object_name=name)
        finally:
            del self.pending[ref]
        self.done[ref] = self.namespace[name] = kind
        return kind

    # --- schemas ------------------------------------------------------------------------

    def merged(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        """allOf folded into one schema: properties and required joined, other keywords kept."""
        parts = schema.get("allOf") or []
        out = {k: v for k, v in schema.items() if k != "allOf"}
        for part in parts:
            if not isinstance(part, dict):
                raise self.fail(path, f"allOf entries must be schemas, got {part!r}")
            while "$ref" in part:
                part = {**self.resolve(part["$ref"], path), **{k: v for k, v in part.items() if k != "$ref"}}
            if "allOf" in part:
                part = self.merged(part, path)
            for key, value in part.items():
                if key == "properties":
                    out["properties"] = {**value, **out.get("properties", {})}
                elif key == "required":
                    out["required"] = list(dict.fromkeys([*out.get("required", []), *value]))
                elif key == "type" and "type" in out and out["type"] != value:
                    out["type"] = self._type_intersection(out["type"], value, path)
                elif key not in out:
                    out[key] = value
        return out

    def _type_intersection(self, a: Any, b: Any, path: str) -> Any:
        left, right = set(a if isinstance(a, list) else [a]), set(b if isinstance(b, list) else [b])
        if "number" in left and "integer" in right or "integer" in left and "number" in right:
            left |= {"integer"}
            right |= {"integer"}
        both = sorted(left & right)
        if not both:
            raise self.fail(path, f"allOf asks for types {a!r} and {b!r} at once: no value can match")
        return both[0] if len(both) == 1 else both

    def type_of(self, schema: Any, path: str, model_name: str, object_name: str | None = None) -> Any:
        if schema is True or schema == {}:
            self.loose.append((path or "<root>", "has no type (an untyped/any value cannot be expressed in strict mode)"))
            return Any
        if not isinstance(schema, dict):
            raise self.fail(path, f"schema must be an object, got {schema!r}")
        if "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k not in _ANNOTATIONS and k != "$ref"}
            if not rest:
                kind = self.ref_type(schema["$ref"], path)
                return _optional(kind) if schema.get("nullable") is True else kind
            schema = {"allOf": [{"$ref": schema["$ref"]}], **rest}
        if "allOf" in schema:
            schema = self.merged(schema, path)
        kind = self._type_of(schema, path, model_name, object_name)
        return _optional(kind) if schema.get("nullable") is True else kind

    def _type_of(self, schema: dict[str, Any], path: str, model_name: str, object_name: str | None) -> Any:
        kind = schema.get("type")
        if "const" in schema:
            return self._enum([schema["const"]], schema)
        if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
            values = schema["enum"]
            is_array = kind in _ARRAYS or isinstance(kind, list) and any(k in _ARRAYS for k in kind)
            if is_array and not any(isinstance(v, list) for v in values):
                # BFCL (and some hand-written specs) put the allowed item values on the array.
                items = {"enum": values, **({"type": schema["items"]["type"]} if isinstance(schema.get("items"), dict) and "type" in schema["items"] else {})}
                return self._bounded(list[self._enum(values, items)], schema)
            return self._enum(values, schema)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self._union_of(schema, key, path, model_name)
        if isinstance(kind, list):
            if not kind:
                raise self.fail(path, "an empty type list admits no value")
            members = [self._type_of({**schema, "type": k}, path, f"{model_name}{_model_name(str(k))}", object_name) for k in kind]
            return _union(members)
        if kind is None:
            if self._is_object(schema):
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                self.loose.append((path or "<root>", "has no type (an untyped/any value cannot be expressed in strict mode)"))
                return Any
        if kind == "any":
            self.loose.append((path or "<root>", "has no type (an untyped/any value cannot be expressed in strict mode)"))
            return Any
        if not isinstance(kind, str):
            raise self.fail(path, f"unknown type {kind!r}")
        if kind in _SCALARS:
            return self._scalar(kind, schema)
        if kind in _ARRAYS:
            return self._array(schema, path, model_name)
        if kind in _OBJECTS:
            return self._object(schema, path, object_name or model_name, fixed=object_name is not None)
        raise self.fail(path, f"unknown type {kind!r}")

    def _scalar(self, kind: str, schema: dict[str, Any]) -> Any:
        python = _SCALARS[kind]
        fmt = schema.get("format")
        if python is str and isinstance(fmt, str):
            extra = [Field(json_schema_extra={"format": fmt})]
            if fmt in _CHECKED_FORMATS:
                extra.append(AfterValidator(partial(_check_format, fmt)))
            return Annotated[(self._bounded(python, schema), *extra)]
        return self._bounded(python, schema)

    def _array(self, schema: dict[str, Any], path: str, model_name: str) -> Any:
        items = schema.get("items")
        if "prefixItems" in schema or isinstance(items, list):
            self.loose.append((path or "<root>", "tuples (prefixItems) cannot be expressed in strict mode"))
            kind: Any = list[Any]
        elif not isinstance(items, dict) or not items:
            self.loose.append((path or "<root>", "array items have no type"))
            kind = list[Any]
        else:
            kind = list[self.type_of(items, f"{path}[]", model_name + "Item")]
        kind = self._bounded(kind, schema)
        if schema.get("uniqueItems") is True:
            kind = Annotated[kind, AfterValidator(_unique_items)]
        return kind

    def _object(self, schema: dict[str, Any], path: str, model_name: str, fixed: bool = False) -> Any:
        name = (lambda: model_name) if fixed else (lambda: self.name(model_name))
        extra = schema.get("additionalProperties")
        properties = schema.get("properties")
        if not properties and ("properties" not in schema or isinstance(extra, dict) or extra is True) and extra is not False:
            if isinstance(extra, dict) and extra:
                self.loose.append((path or "<root>", "a typed map (additionalProperties) cannot be expressed in strict mode"))
                kind: Any = dict[str, self.type_of(extra, f"{path}.*", model_name + "Value")]
            elif "properties" in schema and extra is None:
                return self._counted(self.model(schema, name(), path), schema)
            else:
                self.loose.append((path or "<root>", "free-form object (dict with arbitrary keys)"))
                kind = dict[str, Any]
            return self._counted(kind, schema)
        if extra not in (None, False):
            self.loose.append((path or "<root>", "extra keys beside declared properties cannot be expressed in strict mode; they are refused"))
        return self._counted(self.model(schema, name(), path), schema)

    def _counted(self, kind: Any, schema: dict[str, Any]) -> Any:
        low, high = schema.get("minProperties"), schema.get("maxProperties")
        if low is None and high is None:
            return kind
        return Annotated[kind, AfterValidator(partial(_property_count, low, high))]

    def _union_of(self, schema: dict[str, Any], key: str, path: str, model_name: str) -> Any:
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise self.fail(path, f"{key} must be a non-empty list of schemas")
        shared = {k: v for k, v in schema.items() if k not in (key, "nullable", "discriminator", *_ANNOTATIONS)}
        members = []
        for index, branch in enumerate(branches):
            if not isinstance(branch, dict):
                raise self.fail(path, f"{key} entries must be schemas, got {branch!r}")
            merged = {"allOf": [shared, branch]} if shared else branch
            members.append(self.type_of(merged, path, f"{model_name}{index + 1}"))
        return _union(members)

    def _enum(self, values: list, schema: dict[str, Any]) -> Any:
        if _hashable_literal(values):
            return Literal[tuple(values)]
        # Objects or arrays among the values: checked by value, described as an enum.
        return Annotated[Any, AfterValidator(partial(_member_of, values)), Field(json_schema_extra={"enum": values})]

    @staticmethod
    def _is_object(schema: dict[str, Any]) -> bool:
        kind = schema.get("type")
        return kind in _OBJECTS or (kind is None and ("properties" in schema or "additionalProperties" in schema))

    def model(self, schema: dict[str, Any], model_name: str, path: str) -> type[BaseModel]:
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise self.fail(path, f"properties must be an object, got {properties!r}")
        required = set(schema.get("required") or []) if isinstance(schema.get("required"), list) else set()
        optional_names = schema.get("optional")
        if isinstance(optional_names, list):
            required -= set(optional_names)
        fields: dict[str, Any] = {}
        for index, (prop, sub) in enumerate(properties.items()):
            sub_path = f"{path}.{prop}" if path else prop
            if not isinstance(sub, dict) and sub is not True:
                raise self.fail(sub_path, f"property schema must be an object, got {sub!r}")
            kind = self.type_of(sub, sub_path, f"{model_name}{_model_name(prop)}")
            is_required = prop in required and (not isinstance(sub, dict) or sub.get("optional") is not True)
            fields[f"f{index}"] = self.field(kind, sub if isinstance(sub, dict) else {}, prop, is_required, sub_path)
        model = create_model(model_name, __config__=self.config, **fields)
        self.models.append(model)
        return model

    def field(self, kind: Any, schema: dict[str, Any], alias: str, is_required: bool, path: str) -> tuple[Any, Any]:
        info = {"alias": alias, "description": schema.get("description")}
        if is_required:
            return kind, Field(**info)
        default = schema.get("default")
        if default is not None:
            default = self._fitted_default(kind, default, path)
        if default is None:  # "may be omitted": None stands for "not given"
            return _optional(kind), Field(default=None, **info)
        return kind, Field(default=default, **info)  # null on the wire means "use the default"

    def _fitted_default(self, kind: Any, default: Any, field_path: str) -> Any:
        """Definitions in the wild write defaults like "false" for a boolean or "None" for a list.

        A default that coerces to the declared type is kept (coerced); one that does not is
        unusable, so the parameter becomes "may be omitted" (None), and the tool says so.
        """
        try:
            fitted = TypeAdapter(kind).validate_python(default, strict=False)
        except PydanticUserError:  # a forward reference not built yet: keep the default as written
            return default
        except ValidationError:
            self.dropped_defaults.append((field_path, default))
            return None
        return fitted

    def _bounded(self, kind: Any, schema: dict[str, Any]) -> Any:
        bounds = {_BOUNDS[k]: v for k, v in schema.items() if k in _BOUNDS and v is not None}
        if isinstance(bounds.get("pattern"), str):
            try:
                re.compile(bounds["pattern"])
            except re.error:
                bounds.pop("pattern")
        return Annotated[kind, Field(**bounds)] if bounds else kind
