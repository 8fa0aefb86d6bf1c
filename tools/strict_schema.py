"""Pydantic JSON Schema -> OpenAI Structured Outputs *strict* form.

Strict mode asks three things of every object: `additionalProperties: false`, every property
listed in `required`, and optional values expressed as a union with `null`. Some keywords only
narrow values (minLength, default, ...): they are dropped from the wire schema because the
provider rejects them, and toolrail's own validation still enforces them. Shapes the strict
grammar cannot express at all (free-form dicts, tuples, untyped values) are refused here, at
registration time, naming the tool and the field.
"""

from __future__ import annotations

import copy
import json
from typing import Any

# Keywords the strict grammar accepts, per JSON type family.
_COMMON = {"type", "description", "enum", "const", "anyOf", "$ref", "title"}
_ALLOWED = {
    "object": _COMMON | {"properties", "required", "additionalProperties", "$defs"},
    "array": _COMMON | {"items", "minItems", "maxItems"},
    "string": _COMMON | {"pattern", "format"},
    "number": _COMMON | {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "integer": _COMMON | {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "boolean": _COMMON,
    "null": _COMMON,
}
# Keywords that narrow values only: safe to drop from the wire, enforced locally.
_DROPPABLE = {
    "default", "minLength", "maxLength", "examples", "uniqueItems", "minProperties",
    "maxProperties", "readOnly", "writeOnly", "deprecated", "contentEncoding",
    "contentMediaType", "discriminator", "title",  # titles repeat the key: tokens for nothing
}
_STRING_FORMATS = {
    "date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid",
}
MAX_DEPTH = 10


class StrictSchemaError(ValueError):
    """A tool's arguments cannot be expressed in strict mode."""

    def __init__(self, tool: str, field: str, reason: str):
        self.tool, self.field, self.reason = tool, field, reason
        super().__init__(f"tool {tool!r}, field {field!r}: {reason}")


def to_strict_schema(schema: dict[str, Any], tool: str) -> dict[str, Any]:
    """Return a strict-mode copy of `schema` (a JSON Schema whose root is an object)."""
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", {})
    if "$ref" in schema:  # a recursive model as the arguments themselves: inline the root, as OpenAI's SDK does
        schema = {**_Converter(tool, defs)._resolve(schema.pop("$ref"), "<root>"), **schema}
    root = _Converter(tool, defs).convert(schema, path="", depth=0)
    if root.get("type") != "object":
        raise StrictSchemaError(tool, "<root>", "the arguments must be a JSON object")
    root.pop("title", None)
    if defs:
        root["$defs"] = {
            name: _Converter(tool, defs).convert(d, path=f"$defs.{name}", depth=1)
            for name, d in defs.items()
        }
    return root


class _Converter:
    def __init__(self, tool: str, defs: dict[str, Any]):
        self.tool, self.defs = tool, defs

    def fail(self, path: str, reason: str) -> StrictSchemaError:
        return StrictSchemaError(self.tool, path or "<root>", reason)

    def convert(self, node: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise self.fail(path, f"nested deeper than strict mode's limit of {MAX_DEPTH} levels")
        if not isinstance(node, dict):
            raise self.fail(path, f"schema must be an object, got {node!r}")
        unsaid = describe_constraints(node)
        node = {k: v for k, v in node.items() if k not in _DROPPABLE}
        if unsaid:  # enforced by toolrail's validation all the same; the model should know
            node["description"] = f"{node['description']} ({unsaid})" if node.get("description") else f"({unsaid})"
        if "$ref" in node:
            return self._ref(node, path, depth)
        if "allOf" in node:
            node = self._flatten_all_of(node, path)
        if "oneOf" in node:  # a tagged union: anyOf accepts the same values
            node["anyOf"] = node.pop("oneOf")
        if "anyOf" in node:
            return self._any_of(node, path, depth)
        kind = node.get("type")
        if isinstance(kind, list):
            return self._type_list(node, kind, path, depth)
        if kind is None:
            if "enum" in node or "const" in node:
                return node
            raise self.fail(path, "has no type (an untyped/Any value cannot be expressed in strict mode)")
        if kind not in _ALLOWED:
            raise self.fail(path, f"unknown JSON type {kind!r}")
        self._reject_unsupported(node, kind, path)
        if kind == "object":
            return self._object(node, path, depth)
        if kind == "array":
            if "items" not in node or node["items"] in ({}, True):
                raise self.fail(path, "array items have no type (list[Any] cannot be expressed in strict mode)")
            node["items"] = self.convert(node["items"], f"{path}[]", depth + 1)
        if kind == "string" and node.get("format") not in (None, *_STRING_FORMATS):
            node.pop("format")  # unknown formats would be rejected by the provider
        return node

    def _reject_unsupported(self, node: dict, kind: str, path: str) -> None:
        extra = set(node) - _ALLOWED[kind]
        if "prefixItems" in extra:
            raise self.fail(path, "tuples (prefixItems) cannot be expressed in strict mode; use a list or a model")
        if extra:
            raise self.fail(path, f"keyword(s) {sorted(extra)} are not supported in strict mode")

    def _object(self, node: dict, path: str, depth: int) -> dict:
        props = node.get("properties") or {}
        extra = node.get("additionalProperties", False)
        if extra not in (False, None) or not props and extra is not False and "properties" not in node:
            raise self.fail(
                path,
                "free-form objects (dict with arbitrary keys) cannot be expressed in strict mode; "
                "declare a model with fixed fields",
            )
        required = set(node.get("required", []))
        out_props = {}
        for name, sub in props.items():
            sub_path = f"{path}.{name}" if path else name
            converted = self.convert(sub, sub_path, depth + 1)
            if name not in required:
                null_is_a_value = _accepts_null(converted)  # then null cannot also mean "the default"
                converted = _nullable(converted)
                if sub.get("default") is not None and not null_is_a_value:
                    converted["description"] = describe_default(converted.get("description"), sub["default"])
            out_props[name] = converted
        node["properties"] = out_props
        node["required"] = list(out_props)
        node["additionalProperties"] = False
        node.pop("title", None)
        return node

    def _ref(self, node: dict, path: str, depth: int) -> dict:
        ref = node["$ref"]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if not siblings:
            return {"$ref": ref}
        # A $ref with siblings is not accepted by strict mode: inline the definition.
        target = self._resolve(ref, path)
        merged = {**copy.deepcopy(target), **siblings}
        return self.convert(merged, path, depth)

    def _resolve(self, ref: str, path: str) -> dict:
        prefix = "#/$defs/"
        if not ref.startswith(prefix) or ref[len(prefix):] not in self.defs:
            raise self.fail(path, f"unresolvable reference {ref!r}")
        return self.defs[ref[len(prefix):]]

    def _flatten_all_of(self, node: dict, path: str) -> dict:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise self.fail(path, "allOf with several schemas cannot be expressed in strict mode")
        return {**parts[0], **node}

    def _any_of(self, node: dict, path: str, depth: int) -> dict:
        branches = [self.convert(b, path, depth + 1) for b in node["anyOf"]]
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "type")}
        if set(rest) - {"description", "title"}:
            raise self.fail(path, f"anyOf beside {sorted(set(rest) - {'description', 'title'})} is not supported in strict mode")
        return {**rest, "anyOf": branches}

    def _type_list(self, node: dict, kinds: list, path: str, depth: int) -> dict:
        """["string", "null"] is fine as is; richer lists become anyOf branches."""
        if len(kinds) == 2 and "null" in kinds:
            single = dict(node, type=next(k for k in kinds if k != "null"))
            converted = self.convert(single, path, depth)
            return _nullable(converted)
        branches = [{"type": k} for k in kinds]
        return self.convert({"anyOf": branches, **{k: v for k, v in node.items() if k == "description"}}, path, depth)


def _nullable(schema: dict) -> dict:
    """Optional parameters travel as a union with null: strict mode requires every key."""
    if _accepts_null(schema):
        return schema
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    description = schema.get("description")
    inner = {k: v for k, v in schema.items() if k != "description"}
    out: dict[str, Any] = {"anyOf": [inner, {"type": "null"}]}
    if description:
        out["description"] = description
    return out


def _accepts_null(schema: dict) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    if None in schema.get("enum", [object()]):
        return True
    return any(_accepts_null(b) for b in schema.get("anyOf", []))


_UNSAID = {
    "minLength": "at least {} characters", "maxLength": "at most {} characters",
    "minProperties": "at least {} entries", "maxProperties": "at most {} entries",
}


def describe_constraints(node: dict[str, Any]) -> str:
    """Constraints strict mode cannot carry, in words: they still bind the call."""
    said = [text.format(node[key]) for key, text in _UNSAID.items() if isinstance(node.get(key), int)]
    if node.get("uniqueItems") is True:
        said.append("items must be unique")
    return "; ".join(said)


def describe_default(description: str | None, default: Any) -> str | None:
    """Defaults cannot travel as a keyword in strict mode; keep them visible to the model."""
    try:
        text = json.dumps(default)
    except TypeError:
        text = repr(default)
    note = f"(default: {text}; send null to use it)"
    return f"{description} {note}" if description else note
