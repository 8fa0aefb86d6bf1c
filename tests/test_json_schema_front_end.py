"""The JSON Schema front end: standard dialects compile to the same strict validator.

The corpus test is a round trip: for each Pydantic model M, `tool_from_json_schema` on
M.model_json_schema() must accept and reject exactly what M (strict, as toolrail validates)
does, on valid examples and on every single-point mutation of them, and give the same values.
The one documented difference: a null for an optional field whose type has no null means
"use the default" (strict mode sends every key), so there the tool must behave like M on the
same input without that key.
"""

from __future__ import annotations

import datetime
import enum
import json
import uuid
from typing import Annotated, Any, Literal, Optional, Union

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolrail.tools.json_schema import tool_from_json_schema
from toolrail.tools.registry import InvalidToolCall, tool_from_function
from toolrail.tools.strict_schema import StrictSchemaError


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Addr(Closed):
    city: str
    zip: Optional[str] = None


class IssueExample(Closed):
    limit: Optional[int] = None
    addr: Addr
    mode: str | int


class Node(Closed):
    name: str
    children: list[Node] = []


class Cat(Closed):
    kind: Literal["cat"]
    lives: int = 9


class Dog(Closed):
    kind: Literal["dog"]
    good: bool = True


class Circle(Closed):
    radius: float
    label: str = "circle"


class Square(Closed):
    side: int
    filled: bool = False


class Pets(Closed):
    pet: Annotated[Union[Cat, Dog], Field(discriminator="kind")]
    shape: Circle | Square
    shapes: list[Circle | Square] = []
    owner: Optional[Addr] = None


class Constrained(Closed):
    name: Annotated[str, Field(min_length=2, max_length=5, pattern="^[a-z]+$")]
    age: Annotated[int, Field(ge=0, lt=150)]
    score: Annotated[float, Field(gt=0, le=1, multiple_of=0.25)] = 0.5
    tags: Annotated[list[str], Field(min_length=1, max_length=3)]


class Color(str, enum.Enum):
    red = "red"
    blue = "blue"


class Level(enum.IntEnum):
    low = 1
    high = 2


class Enums(Closed):
    color: Color
    level: Level = Level.low
    mixed: Literal[1, "a", None]
    flag: Literal[True]
    picks: list[Color] = []


class Formats(Closed):
    day: datetime.date
    at: datetime.datetime
    id: uuid.UUID


class Settings(Closed):
    depth: int = 3
    mode: Literal["fast", "slow"] = "fast"


class Defaults(Closed):
    n: int | None = 5  # null is a real value here: it must stay None
    settings: Settings = Settings()
    ratio: float = 1.0
    maybe: str | int | None = None
    from_: str = Field(default="here", alias="from")


class Forest(Closed):
    trees: list[Node]
    counts: dict[str, int] = {}


CORPUS: dict[type[BaseModel], list[dict[str, Any]]] = {
    IssueExample: [{"limit": 3, "addr": {"city": "Oslo", "zip": "0150"}, "mode": "fast"}, {"limit": None, "addr": {"city": "Rome"}, "mode": 2}],
    Node: [{"name": "root", "children": [{"name": "a", "children": [{"name": "b"}]}]}],
    Pets: [{"pet": {"kind": "cat", "lives": 7}, "shape": {"radius": 1.5}, "shapes": [{"side": 2}, {"radius": 1, "label": "c"}], "owner": {"city": "Oslo"}},
           {"pet": {"kind": "dog"}, "shape": {"side": 3, "filled": True}}],
    Constrained: [{"name": "abc", "age": 30, "score": 0.75, "tags": ["x"]}],
    Enums: [{"color": "red", "level": 2, "mixed": None, "flag": True, "picks": ["blue"]}, {"color": "blue", "mixed": "a", "flag": True}],
    Formats: [{"day": "2024-02-29", "at": "2024-02-29T10:00:00Z", "id": "12345678-1234-5678-1234-567812345678"}],
    Defaults: [{"n": 1, "settings": {"depth": 1, "mode": "slow"}, "ratio": 2, "maybe": "x", "from": "there"}, {}],
    Forest: [{"trees": [{"name": "t", "children": []}], "counts": {"a": 1}}],
}
WRONG_VALUES = [1, "x", "ABC", 1.5, True, None, [], {}, -1, 150, "", 0.25, 0.3, [1], ["a", "b", "c", "d"], {"kind": "cat"}]


def mutations(value: Any) -> list[Any]:
    """Every input that differs from `value` at one point: a value replaced, a key removed."""
    out = []
    if isinstance(value, dict):
        for key, sub in value.items():
            out += [{**value, key: wrong} for wrong in WRONG_VALUES]
            out.append({k: v for k, v in value.items() if k != key})
            out += [{**value, key: m} for m in mutations(sub)]
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            out += [value[:i] + [wrong] + value[i + 1:] for wrong in WRONG_VALUES]
            out += [value[:i] + [m] + value[i + 1:] for m in mutations(sub)]
    return out


def pydantic_verdict(model: type[BaseModel], data: Any) -> tuple[bool, Any]:
    try:
        return True, model.model_validate_json(json.dumps(data), strict=True).model_dump(mode="json", by_alias=True)
    except ValidationError:
        return False, None


def toolrail_verdict(tool, data: Any) -> tuple[bool, Any]:
    try:
        return True, tool.validate(data).model_dump(mode="json", by_alias=True)
    except InvalidToolCall:
        return False, None


def property_names(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        own = set(schema.get("properties", {})) if isinstance(schema.get("properties"), dict) else set()
        return own | {n for v in schema.values() for n in property_names(v)}
    if isinstance(schema, list):
        return {n for v in schema for n in property_names(v)}
    return set()


def nulls_removed(data: Any, fields: set[str]) -> list[Any]:
    """`data` with one null-valued field left out, for every such field at any depth."""
    out = []
    if isinstance(data, dict):
        for key, value in data.items():
            if value is None and key in fields:
                out.append({k: v for k, v in data.items() if k != key})
            out += [{**data, key: m} for m in nulls_removed(value, fields)]
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += [data[:i] + [m] + data[i + 1:] for m in nulls_removed(value, fields)]
    return out


def expected_verdict(model: type[BaseModel], data: Any) -> tuple[bool, Any]:
    """M's verdict, with the documented difference applied on M's side: a null M refuses for an
    optional field counts as leaving that key out."""
    verdict = pydantic_verdict(model, data)
    if verdict[0]:
        return verdict
    return next((v for v in map(lambda d: pydantic_verdict(model, d), nulls_removed(data, property_names(model.model_json_schema()))) if v[0]), verdict)


@pytest.mark.parametrize("model", list(CORPUS), ids=lambda m: m.__name__)
def test_compiled_pydantic_schema_accepts_and_rejects_exactly_what_the_model_does(model):
    tool = tool_from_json_schema({"name": model.__name__, "parameters": model.model_json_schema()})
    inputs = [data for example in CORPUS[model] for data in [example, *mutations(example)]]
    assert len(inputs) > 20
    disagreements = []
    for data in inputs:
        expected = expected_verdict(model, data)
        got = toolrail_verdict(tool, data)
        if got != expected:
            disagreements.append((data, expected, got))
    assert disagreements == [], disagreements[:3]
    assert sum(pydantic_verdict(model, d)[0] for d in inputs) >= len(CORPUS[model])  # the examples are valid


def test_issue_example_is_strict_typed_and_rejects_every_wrong_field():
    tool = tool_from_json_schema({"name": "f", "parameters": IssueExample.model_json_schema()})
    assert tool.strict and tool.openai_schema()["function"]["strict"] is True
    props = tool.parameters["properties"]
    assert props["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert props["addr"] == {"$ref": "#/$defs/Addr"} and tool.parameters["$defs"]["Addr"]["properties"]["city"] == {"type": "string"}
    assert props["mode"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    with pytest.raises(InvalidToolCall) as caught:
        tool.validate({"limit": "abc", "addr": {"city": 1}, "mode": []})
    paths = {e.path.split(".")[0] for e in caught.value.errors} | {e.path for e in caught.value.errors}
    assert {"limit", "addr.city", "mode"} <= paths


def test_draft_2020_12_and_openapi_dialects():
    schema = {
        "type": "object",
        "$defs": {"tag": {"type": "string", "enum": ["a", "b"]},
                  "tree": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/tree"}}}}},
        "properties": {
            "tag": {"$ref": "#/$defs/tag", "description": "a tag"},
            "tree": {"$ref": "#/$defs/tree"},
            "either": {"oneOf": [{"type": "integer"}, {"type": "string", "format": "date"}]},
            "merged": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                                 {"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
            "fixed": {"const": "v1"},
            "picks": {"type": "array", "items": {"type": "string"}, "enum": ["x", "y"]},  # BFCL: enum on the array means its items
            "legacy": {"type": "string", "nullable": True},  # OpenAPI 3.0
            "multi": {"type": ["string", "null"]},
            "mail": {"type": "string", "format": "email"},
            "when": {"type": "string", "format": "date-time"},
            "count": {"type": "integer", "minimum": 1, "maximum": 9},
            "shapes": {"enum": [{"x": 1}, [1, 2]]},
        },
        "required": ["tag", "tree", "either", "merged", "fixed", "picks", "legacy", "multi", "mail", "when", "count", "shapes"],
    }
    tool = tool_from_json_schema({"name": "d", "parameters": schema})
    assert tool.strict is True
    good = {"tag": "a", "tree": {"kids": [{"kids": []}]}, "either": "2024-01-31", "merged": {"a": 1, "b": "x"}, "fixed": "v1",
            "picks": ["x", "y", "x"], "legacy": None, "multi": None, "mail": "a@b.co", "when": "2024-01-31T12:00:00+02:00",
            "count": 9.0, "shapes": {"x": 1}}
    assert tool.validate(good).model_dump(mode="json", by_alias=True)["count"] == 9  # 5.0 is an integer in JSON Schema
    assert tool.parameters["properties"]["picks"]["items"]["enum"] == ["x", "y"]
    bad = {"tag": "c", "tree": {"kids": [{"kids": "no"}]}, "either": "31/01/2024", "merged": {"a": 1}, "fixed": "v2",
           "picks": ["z"], "legacy": 1, "multi": 2, "mail": "nope", "when": "tomorrow", "count": 9.5, "shapes": [2, 1]}
    with pytest.raises(InvalidToolCall) as caught:
        tool.validate(bad)
    failed = {e.path.split(".")[0].split("[")[0] for e in caught.value.errors}
    assert failed == set(bad), set(bad) - failed


def test_root_ref_and_hash_recursion():
    by_root_ref = tool_from_json_schema({"name": "r", "parameters": Node.model_json_schema()})
    assert by_root_ref.parameters["type"] == "object" and by_root_ref.strict
    assert by_root_ref.validate({"name": "a", "children": [{"name": "b", "children": None}]})
    by_hash = tool_from_json_schema({"name": "h", "parameters": {
        "type": "object", "properties": {"v": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}, "required": ["v", "next"]}})
    assert by_hash.validate({"v": 1, "next": {"v": 2, "next": None}})
    with pytest.raises(InvalidToolCall, match=r"next\.next"):
        by_hash.validate({"v": 1, "next": {"v": 2}})


def test_typed_map_is_validated_and_makes_the_tool_non_strict_with_the_reason():
    schema = {"type": "object", "properties": {"counts": {"type": "object", "additionalProperties": {"type": "integer"}}}, "required": ["counts"]}
    tool = tool_from_json_schema({"name": "m", "parameters": schema})
    assert tool.strict is False
    assert tool.validate({"counts": {"a": 1}})
    with pytest.raises(InvalidToolCall, match=r"counts\.a"):
        tool.validate({"counts": {"a": "x"}})
    with pytest.raises(StrictSchemaError, match="typed map"):
        tool_from_json_schema({"name": "m", "parameters": schema}, strict=True)


def test_unresolvable_references_and_impossible_allof_are_clear_errors():
    with pytest.raises(StrictSchemaError, match=r"field 'x': unresolvable reference '#/\$defs/nope'"):
        tool_from_json_schema({"name": "u", "parameters": {"type": "object", "properties": {"x": {"$ref": "#/$defs/nope"}}}})
    with pytest.raises(StrictSchemaError, match="no value can match"):
        tool_from_json_schema({"name": "u", "parameters": {"type": "object", "properties": {"x": {"allOf": [{"type": "string"}, {"type": "integer"}]}}}})
    with pytest.raises(StrictSchemaError, match="remote.json"):
        tool_from_json_schema({"name": "u", "parameters": {"type": "object", "properties": {"x": {"$ref": "remote.json#/a"}}}})


# --- the validator issues, each fixed -------------------------------------------------------


def python_tool(model: type[BaseModel]):
    def f(**kwargs: Any) -> str:
        """f"""
        return "ok"

    return tool_from_function(f, name="f", args_model=model)


def test_null_means_default_inside_union_branches_at_any_depth():
    tool = python_tool(Pets)
    args = tool.validate({
        "pet": {"kind": "dog", "good": None},  # discriminated union
        "shape": {"side": 2, "filled": None},  # plain union
        "shapes": [{"radius": 1.0, "label": None}, {"side": 1, "filled": None}],  # list of unions
        "owner": {"city": "Oslo", "zip": None},  # optional model
    })
    dumped = args.model_dump(mode="json")
    assert dumped["pet"] == {"kind": "dog", "good": True}
    assert dumped["shape"] == {"side": 2, "filled": False}
    assert dumped["shapes"] == [{"radius": 1.0, "label": "circle"}, {"side": 1, "filled": False}]
    assert dumped["owner"] == {"city": "Oslo", "zip": None}


def test_no_default_promise_where_null_is_a_real_value():
    tool = python_tool(Defaults)
    props = tool.parameters["properties"]
    assert "send null to use it" not in (props["n"].get("description") or "")
    assert "send null to use it" in props["ratio"]["description"]
    assert tool.validate({"n": None}).n is None
    assert tool.validate({}).n == 5


def test_recursive_model_as_the_arguments_themselves():
    tool = python_tool(Node)
    assert tool.strict and tool.parameters["type"] == "object" and tool.parameters["additionalProperties"] is False
    assert tool.validate({"name": "a", "children": [{"name": "b", "children": []}]}).children[0].name == "b"


def test_integral_floats_are_integers_and_other_floats_are_not():
    tool = python_tool(Constrained)
    assert tool.validate({"name": "ab", "age": 5.0, "tags": ["t"]}).age == 5
    with pytest.raises(InvalidToolCall, match="age"):
        tool.validate({"name": "ab", "age": 5.5, "tags": ["t"]})
    with pytest.raises(InvalidToolCall, match="age"):
        tool.validate({"name": "ab", "age": "5", "tags": ["t"]})


def test_aliases_are_accepted_only_as_the_wire_schema_names_them():
    class Aliased(Closed):
        model_config = ConfigDict(extra="forbid", populate_by_name=True)
        start_date: str = Field(alias="startDate")

    tool = python_tool(Aliased)
    assert list(tool.parameters["properties"]) == ["startDate"]
    assert tool.validate({"startDate": "x"}).start_date == "x"
    with pytest.raises(InvalidToolCall):
        tool.validate({"start_date": "x"})


def test_ecma_patterns_with_look_around_are_enforced():
    tool = tool_from_json_schema({"name": "p", "parameters": {"type": "object", "required": ["codes"], "properties": {
        "codes": {"type": "array", "items": {"type": "string", "pattern": "^(?!TMP)[A-Z]{3}$"}}}}})
    assert tool.validate({"codes": ["JFK", "SFO"]})
    with pytest.raises(InvalidToolCall, match=r"codes\[1\]: String should match pattern"):
        tool.validate({"codes": ["JFK", "TMP"]})
