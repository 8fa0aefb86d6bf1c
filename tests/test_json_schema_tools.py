"""Tools compiled from JSON Schema definitions share the Python tools' strict path."""

from __future__ import annotations

import asyncio

import pytest

from toolrail.tools.json_schema import registry_from_json_schemas, tool_from_json_schema
from toolrail.tools.registry import InvalidToolCall
from toolrail.tools.strict_schema import StrictSchemaError


def bfcl(name: str, properties: dict, required: list[str], **extra) -> dict:
    return {"name": name, "description": "d", "parameters": {"type": "dict", "properties": properties, "required": required, **extra}}


def test_dotted_names_round_trip_to_provider_legal_names():
    registry = registry_from_json_schemas([
        bfcl("math.factorial", {"number": {"type": "integer"}}, ["number"]),
        bfcl("math_factorial", {"n": {"type": "integer"}}, ["n"]),
    ])
    dotted, plain = registry.get("math.factorial"), registry.get("math_factorial")
    assert dotted is not plain and dotted.name == "math.factorial"
    assert dotted.openai_schema()["function"]["name"] == "math_factorial_2"  # the legal name was taken
    assert plain.openai_schema()["function"]["name"] == "math_factorial"
    wires = {t.openai_schema()["function"]["name"] for t in registry}
    assert len(wires) == 2 and all(w.replace("_", "").isalnum() for w in wires)
    for tool in registry:
        assert registry.get(tool.openai_schema()["function"]["name"]) is tool


def test_bfcl_dict_type_becomes_a_closed_nested_object():
    tool = tool_from_json_schema(bfcl("paint", {
        "area": {"type": "dict", "properties": {"width": {"type": "float"}, "height": {"type": "float"}}, "required": ["width", "height"]},
    }, ["area"]))
    area = tool.parameters["properties"]["area"]
    if "$ref" in area:
        area = tool.parameters["$defs"][area["$ref"].rsplit("/", 1)[-1]]
    assert area["additionalProperties"] is False and sorted(area["required"]) == ["height", "width"]
    assert tool.validate({"area": {"width": 3, "height": 2.5}}).model_dump(by_alias=True) == {"area": {"width": 3.0, "height": 2.5}}
    with pytest.raises(InvalidToolCall, match=r"area\.depth: unknown argument"):
        tool.validate({"area": {"width": 3, "height": 2.5, "depth": 1}})


def test_tuple_float_enum_and_bounds_dialects():
    tool = tool_from_json_schema(bfcl("f", {
        "point": {"type": "tuple", "items": {"type": "float"}},
        "unit": {"type": "string", "enum": ["m", "ft"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 5},
    }, ["point", "unit", "count"]))
    props = tool.parameters["properties"]
    assert props["point"]["type"] == "array" and props["point"]["items"]["type"] == "number"
    assert props["unit"]["enum"] == ["m", "ft"] and props["count"]["maximum"] == 5
    assert tool.validate({"point": [1, 2.5], "unit": "m", "count": 3})
    with pytest.raises(InvalidToolCall) as caught:
        tool.validate({"point": "1,2", "unit": "km", "count": 9})
    text = caught.value.feedback()
    assert "point" in text and "unit" in text and "count" in text


def test_optional_parameters_are_null_unions_and_null_means_the_default():
    tool = tool_from_json_schema(bfcl("g", {
        "q": {"type": "string"},
        "limit": {"type": "integer", "default": 10},
        "flag": {"type": "boolean", "default": "false"},  # BFCL writes such defaults
        "tag": {"type": "string", "optional": True},
    }, ["q", "tag"]))
    props = tool.parameters["properties"]
    assert sorted(tool.parameters["required"]) == ["flag", "limit", "q", "tag"]
    assert {"type": "null"} in props["limit"]["anyOf"] and {"type": "null"} in props["tag"]["anyOf"]
    args = tool.validate({"q": "x", "limit": None, "flag": None, "tag": None}).model_dump(by_alias=True)
    assert args == {"q": "x", "limit": 10, "flag": False, "tag": None}


def test_unexpressible_schema_is_non_strict_by_default_and_refused_when_strict():
    definition = bfcl("h", {"filters": {"type": "dict", "description": "free-form"}}, ["filters"])
    loose = tool_from_json_schema(definition)
    assert loose.strict is False and "strict" not in loose.openai_schema()["function"]
    assert loose.validate({"filters": {"any": "thing"}})
    with pytest.raises(StrictSchemaError) as caught:
        tool_from_json_schema(definition, strict=True)
    assert caught.value.tool == "h" and caught.value.field == "filters"


def test_unknown_type_names_the_tool_and_field():
    with pytest.raises(StrictSchemaError, match=r"tool 'k', field 'when': unknown type 'datetime'"):
        tool_from_json_schema(bfcl("k", {"when": {"type": "datetime"}}, ["when"]))


def test_openai_wrapped_definitions_and_implementations_run():
    tool = tool_from_json_schema(
        {"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {
            "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}},
        lambda a, b: a + b,
    )
    assert asyncio.run(tool.run(tool.validate('{"a": 2, "b": 3}'))) == 5


def test_property_names_that_are_not_identifiers_keep_their_names():
    tool = tool_from_json_schema(bfcl("m", {"from": {"type": "string"}, "max-results": {"type": "integer"}}, ["from", "max-results"]))
    assert set(tool.parameters["properties"]) == {"from", "max-results"}
    assert tool.validate({"from": "a", "max-results": 2}).model_dump(by_alias=True) == {"from": "a", "max-results": 2}


def test_a_wire_name_that_clashes_with_a_registered_tool_is_refused():
    from toolrail.tools.registry import ToolRegistry

    registry = ToolRegistry()
    registry.add(tool_from_json_schema(bfcl("math_factorial", {"n": {"type": "integer"}}, ["n"])))
    with pytest.raises(ValueError, match="wire name 'math_factorial' is already taken"):
        registry.add(tool_from_json_schema(bfcl("math.factorial", {"n": {"type": "integer"}}, ["n"])))
