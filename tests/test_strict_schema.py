"""Tools become OpenAI strict-mode schemas; what strict mode cannot say is refused early."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from toolrail.tools.demo import demo_tools
from toolrail.tools.registry import InvalidToolCall, ToolRegistry, tool_from_function
from toolrail.tools.strict_schema import StrictSchemaError


def _objects(schema: Any):
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            yield schema
        for value in schema.values():
            yield from _objects(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _objects(value)


@pytest.mark.parametrize("tool", list(demo_tools), ids=lambda t: t.name)
def test_every_object_is_closed_and_fully_required(tool):
    schema = tool.openai_schema()
    assert schema["function"]["strict"] is True
    objects = list(_objects(schema["function"]["parameters"]))
    assert objects, "parameters must be an object"
    for obj in objects:
        assert obj["additionalProperties"] is False
        assert sorted(obj["required"]) == sorted(obj["properties"])
        for prop in obj["properties"].values():
            assert "default" not in prop


def test_optional_parameters_become_null_unions_with_their_default_described():
    params = demo_tools.get("search_flights").parameters
    max_stops = params["properties"]["max_stops"]
    assert {"type": "null"} in max_stops["anyOf"]
    assert "default: 2" in max_stops["description"]
    assert {"type": "null"} in params["properties"]["date"]["anyOf"]
    assert {"type": "null"} not in params["properties"].get("origin", {}).get("anyOf", [])


def test_null_for_an_optional_parameter_means_its_default():
    args = demo_tools.get("search_flights").validate('{"origin": "SF", "destination": "NYC", "date": null, "max_stops": null}')
    assert args.max_stops == 2 and args.date is None


def test_nested_models_are_strict_through_refs():
    params = demo_tools.get("estimate_trip_cost").parameters
    traveler = params["$defs"]["Traveler"]
    assert traveler["additionalProperties"] is False
    assert traveler["required"] == ["age", "checked_bags"]
    assert params["properties"]["cabin"]["enum"] == ["economy", "premium_economy", "business"]


def test_nested_constraints_are_enforced_with_field_paths():
    tool = demo_tools.get("estimate_trip_cost")
    with pytest.raises(InvalidToolCall) as caught:
        tool.validate({"travelers": [{"age": 200, "checked_bags": 1, "pet": "cat"}], "cabin": "first", "nights": 0, "fare_usd": 10})
    text = caught.value.feedback()
    for expected in ("travelers[0].age", "travelers[0].pet", "cabin", "nights", "'economy'"):
        assert expected in text, text


def test_free_form_dict_is_refused_naming_tool_and_field():
    def tag(labels: dict[str, str]) -> str:
        """Tag things.

        Args:
            labels: free-form labels
        """
        return "ok"

    with pytest.raises(StrictSchemaError) as caught:
        tool_from_function(tag)
    assert caught.value.tool == "tag" and caught.value.field == "labels"
    assert "free-form" in str(caught.value)


def test_tuples_and_untyped_values_are_refused():
    def pair(point: tuple[int, int]) -> str:
        """Pair."""
        return "ok"

    def anything(value: Any) -> str:
        """Any."""
        return "ok"

    with pytest.raises(StrictSchemaError, match="point"):
        tool_from_function(pair)
    with pytest.raises(StrictSchemaError, match="value"):
        tool_from_function(anything)


def test_value_only_keywords_are_dropped_from_the_wire_but_still_enforced_and_described():
    class Args(BaseModel):
        code: str = Field(min_length=3, max_length=3, description="IATA code")

    registry = ToolRegistry()
    registry.register(lambda code: code, name="airport", description="Look up an airport.", args_model=Args)
    tool = registry.get("airport")
    assert "minLength" not in tool.parameters["properties"]["code"]
    assert tool.parameters["properties"]["code"]["description"] == "IATA code (at least 3 characters; at most 3 characters)"
    with pytest.raises(InvalidToolCall, match="code"):
        tool.validate({"code": "JFKX"})


def test_docstring_and_hints_make_the_schema():
    def book(seat: Literal["aisle", "window"], when: dt.date, note: str | None = None) -> str:
        """Book a seat.

        Args:
            seat: Which seat.
            when: Travel day.
            note: Anything else.
        """
        return seat

    tool = tool_from_function(book)
    props = tool.parameters["properties"]
    assert tool.description == "Book a seat."
    assert props["seat"]["enum"] == ["aisle", "window"] and props["seat"]["description"] == "Which seat."
    assert props["when"]["format"] == "date"
    assert tool.validate('{"seat": "aisle", "when": "2026-12-01", "note": null}').when == dt.date(2026, 12, 1)


def test_duplicate_tool_names_are_refused():
    registry = ToolRegistry()
    registry.register(lambda: 1, name="x", description="x")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(lambda: 2, name="x", description="x")
