"""A nested valid call skips the second strict parse only when its validated model proves the text
strict (toolrail/strict_proof.py): the verdict and the reason are always the full strict path's.

Random nested calls, valid and broken (a key sent twice at every depth: in nested models, in
lists, in dict fields, in untyped values, under aliases and escapes; NaN and Infinity; colons and
escaped quotes inside strings; nesting past a tight depth limit) are judged by `validate_arguments`
and by the path before the shortcut (the full strict parse, then the tool's validation). Then
models built to fool a key count (two fields reading one key, validators that set fields or return
new values, a JSON-in-a-string field, root models) are refused exactly as the full path refuses.
"""

from __future__ import annotations

import json
import random
from typing import Annotated, Any, Literal

import pytest
from pydantic import (AfterValidator, AliasChoices, AliasPath, BaseModel, BeforeValidator, ConfigDict, Field, GetPydanticSchema,
                      Json, RootModel, ValidationInfo, field_validator, model_validator)
from pydantic_core import core_schema

from toolrail.arguments import DEFAULT_LIMITS, ArgumentLimits, ArgumentsRejected, parse_arguments
from toolrail.nodes.validate import validate_arguments
from toolrail.strict_proof import kept_keys, kept_strings, proves_strict
from toolrail.tools.json_schema import tool_from_json_schema
from toolrail.tools.registry import FieldError, InvalidToolCall, make_tool


class Point(BaseModel):
    x: int
    y: int = 0


class Stop(BaseModel):
    name: str = Field(alias="stop-name")
    at: Point | None = None
    tags: list[str] = []
    notes: dict[str, str] = {}


class Counts(RootModel[dict[str, int]]):
    pass


class Tree(BaseModel):
    label: str
    kids: list[Tree] = []


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = 9


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool = True


class Trip(BaseModel):
    traveller: str
    stops: list[Stop]
    meta: dict[str, Any] = {}
    extra: Any = None
    counts: Counts | None = None
    tree: Tree | None = None
    pet: Cat | Dog | None = None
    pet2: Annotated[Cat | Dog, Field(discriminator="kind")] | None = None
    pair: tuple[int, Point] | None = None
    choice: int | str | list[int] | dict[str, int] | None = None
    by_name: dict[str, Point] = {}
    ratio: float = 1.0
    prefs: dict[str, int] = {"seat": 1}  # a default with a key: counted only when the call sets it
    remark: str | None = 'said "hi" at 10:30'  # a default string: counted only when the call sets it


class Leg(BaseModel):
    origin: str
    day: int


class Itinerary(BaseModel):  # nests 3 deep at most, whatever the call: no bracket count needed
    traveller: str
    legs: list[Leg]


def tool_for(model: type[BaseModel]):
    return make_tool(name="t", description="A tool.", args_model=model, runnable=None, strict=False)


def reference(tool, text: str, limits: ArgumentLimits = DEFAULT_LIMITS):
    """The path before the shortcut: the full strict parse, then the tool's validation."""
    text = text.strip()
    if not text:
        return tool.validate({})
    try:
        parse_arguments(text, limits)
    except ArgumentsRejected as exc:
        raise InvalidToolCall(tool.name, [FieldError("arguments", str(exc), kind="json")]) from None
    return tool.validate(text)


def outcome(validate, tool, text: str, limits: ArgumentLimits = DEFAULT_LIMITS):
    try:
        return ("valid", validate(tool, text, limits).model_dump(mode="json"))
    except InvalidToolCall as exc:
        return ("invalid", str(exc))


# --- random calls: JSON objects as lists of pairs, so a key can be sent twice -----------------


class Obj(list):
    """A JSON object as its (key, value) pairs, in the order sent."""


TRICKY = ['a":1', 'say \\"hi\\": ok', "10:30", "https://x.io/a:b", "{", "[", "NaN", "Infinity", "é ✈", "", '\\"":"']


def text_value(rng: random.Random) -> str:
    return rng.choice(TRICKY) if rng.random() < 0.3 else rng.choice(["SF", "NYC", "dana", "x"]) + str(rng.randrange(99))


def keys(rng: random.Random, n: int) -> list[str]:
    return rng.sample(["a", "b", "k", "key", "z", "é", "q:r", 'w"v'], n)


def untyped(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.4:
        return rng.choice([1, -2.5, True, None, "s", "t:u"])
    if roll < 0.7:
        return [untyped(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return Obj((k, untyped(rng, depth + 1)) for k in keys(rng, rng.randint(0, 3)))


def point(rng: random.Random) -> Obj:
    return Obj([("x", rng.randrange(9))] + ([("y", 1)] if rng.random() < 0.5 else []))


def stop(rng: random.Random) -> Obj:
    pairs = [("stop-name", text_value(rng))]
    if rng.random() < 0.5:
        pairs.append(("at", point(rng) if rng.random() < 0.8 else None))
    if rng.random() < 0.5:
        pairs.append(("tags", [text_value(rng) for _ in range(rng.randint(0, 3))]))
    if rng.random() < 0.5:
        pairs.append(("notes", Obj((k, text_value(rng)) for k in keys(rng, rng.randint(0, 3)))))
    rng.shuffle(pairs)
    return Obj(pairs)


def tree(rng: random.Random, depth: int = 0) -> Obj:
    pairs = [("label", text_value(rng))]
    if depth < 3 and rng.random() < 0.6:
        pairs.append(("kids", [tree(rng, depth + 1) for _ in range(rng.randint(0, 2))]))
    return Obj(pairs)


def pet(rng: random.Random) -> Obj:
    return Obj([("kind", "cat"), ("lives", 3)] if rng.random() < 0.5 else [("kind", "dog")])


def trip(rng: random.Random) -> Obj:
    optional = {
        "meta": lambda: Obj((k, untyped(rng)) for k in keys(rng, rng.randint(0, 3))),
        "extra": lambda: untyped(rng),
        "counts": lambda: Obj((k, rng.randrange(5)) for k in keys(rng, rng.randint(0, 3))),
        "tree": lambda: tree(rng),
        "pet": lambda: pet(rng),
        "pet2": lambda: pet(rng),
        "pair": lambda: [rng.randrange(9), point(rng)],
        "choice": lambda: rng.choice([3, "s", [1, 2], Obj([("a", 1), ("b", 2)])]),
        "by_name": lambda: Obj((k, point(rng)) for k in keys(rng, rng.randint(0, 2))),
        "ratio": lambda: rng.choice([0.5, 2, -1e-3]),
        "prefs": lambda: Obj((k, rng.randrange(3)) for k in keys(rng, rng.randint(0, 2))),
        "remark": lambda: rng.choice([None, text_value(rng)]),
    }
    pairs = [("traveller", text_value(rng)), ("stops", [stop(rng) for _ in range(rng.randint(0, 3))])]
    pairs += [(name, make()) for name, make in optional.items() if rng.random() < 0.5]
    rng.shuffle(pairs)
    return Obj(pairs)


def objects(value: Any) -> list[Obj]:
    """Every object in the call, at any depth."""
    found = []
    if isinstance(value, Obj):
        found.append(value)
        for _, inner in value:
            found += objects(inner)
    elif isinstance(value, list):
        for inner in value:
            found += objects(inner)
    return found


def dump(value: Any, rng: random.Random) -> str:
    """JSON text of `value`, spaced and escaped at random the ways a model's output varies."""
    space = rng.choice(["", " ", "\n  "])
    if isinstance(value, Obj):
        return "{" + ",".join(f"{space}{key_text(k, rng)}{rng.choice(BEFORE_COLON)}:{space}{dump(v, rng)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(space + dump(v, rng) for v in value) + "]"
    if isinstance(value, str) and "\\" in value:
        return '"' + value + '"'  # already escaped on purpose
    return json.dumps(value, ensure_ascii=rng.random() < 0.5)


BEFORE_COLON = ["", "", "", " ", "\n", "\t", "\r\n "]  # JSON lets whitespace sit between a key and its colon


def key_text(key: str, rng: random.Random) -> str:
    if rng.random() < 0.15:  # the same key, spelled with escapes: still the same key
        return '"' + "".join(f"\\u{ord(c):04x}" for c in key) + '"'
    return json.dumps(key)


def broken(call: Obj, rng: random.Random) -> str | None:
    """The call with one key sent twice (at a random depth), or a non-finite number."""
    if rng.random() < 0.15:
        return dump(call, rng).replace('"ratio": 0.5', '"ratio": ' + rng.choice(["NaN", "Infinity", "-Infinity"]), 1)
    candidates = [o for o in objects(call) if o]
    if not candidates:
        return None
    target = rng.choice(candidates)
    key, value = rng.choice(target)
    twin = value if rng.random() < 0.5 else rng.choice([1, "other", None, Obj(), [], Obj([("x", 1)])])
    target.insert(rng.randint(0, len(target)), (key, twin))
    return dump(call, rng)


def corpus(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    while len(texts) < count:
        call = trip(rng)
        texts.append(dump(call, rng))
        text = broken(call, rng)
        if text is not None:
            texts.append(text)
    return texts


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, ArgumentLimits(max_depth=4)], ids=["default-limits", "depth-4"])
def test_nested_calls_get_the_full_strict_paths_verdict_valid_or_broken(limits):
    tool = tool_for(Trip)
    texts = corpus(seed=14, count=1500)
    proven = proven_past_colons = 0
    kinds = set()
    for text in texts:
        expected = outcome(reference, tool, text, limits)
        assert outcome(validate_arguments, tool, text, limits) == expected, text
        kinds.add("appears twice" in expected[1] if expected[0] == "invalid" else "valid")
        model = tool.validate_json_fast(text)
        if model is not None and proves_strict(text, model, limits):
            assert expected[0] == "valid", text  # a proof only ever stands for a strict, valid call
            proven += 1
            proven_past_colons += text.count(":") > kept_keys(model)
    assert kinds == {"valid", True, False}  # valid calls, duplicate keys, and other refusals
    assert proven >= 100  # valid calls skip the second parse (a seeded corpus)
    assert proven_past_colons >= 50  # ... also when strings hold colons (the quote and quote-colon bounds)


def test_a_key_sent_twice_is_caught_at_every_depth():
    tool = tool_for(Trip)
    base = ('{"traveller":"d","stops":[{"stop-name":"s","at":{"x":1},"notes":{"k":"v"}}],"meta":{"m":[{"n":1}]},'
            '"extra":{"e":{"f":[{"g":1}]}},"counts":{"c":1},"tree":{"label":"r","kids":[{"label":"k"}]},'
            '"pet":{"kind":"cat"},"pet2":{"kind":"dog"},"pair":[1,{"x":2}],"choice":{"a":1},"by_name":{"p":{"x":3}}}')
    model = tool.validate_json_fast(base)
    assert proves_strict(base, model, DEFAULT_LIMITS) and kept_keys(model) == base.count(":")
    twice = 0
    for key in ("traveller", "stop-name", "x", "k", "m", "n", "e", "f", "g", "c", "label", "kind", "a", "p"):
        for at in range(base.count(f'"{key}":')):
            start = _nth(base, f'"{key}":', at)
            text = base[:start] + f'"{key}":null,' + base[start:]  # the same key, once more, before the first
            assert outcome(validate_arguments, tool, text) == outcome(reference, tool, text), text
            twice += "appears twice" in outcome(validate_arguments, tool, text)[1]
    assert twice >= 14


def _nth(text: str, needle: str, n: int) -> int:
    at = -1
    for _ in range(n + 1):
        at = text.index(needle, at + 1)
    return at


# --- models that would fool a naive key count ------------------------------------------------


class TwoFieldsOneKey(BaseModel):
    a: int = Field(validation_alias="x")
    b: int = Field(validation_alias="x")


class ChoicesOverlap(BaseModel):
    a: int = Field(default=0, validation_alias=AliasChoices("p", "q"))
    b: int = Field(default=0, validation_alias=AliasChoices("q", "r"))


class PathsIntoOneList(BaseModel):
    first: int = Field(validation_alias=AliasPath("xs", 0))
    second: int = Field(validation_alias=AliasPath("xs", 1))
    z: int = 0


class PostInitSetsAField(BaseModel):
    a: int
    b: int = 0

    def model_post_init(self, context: Any) -> None:
        self.b = 1  # marks b as set


class CustomInitSetsAField(BaseModel):
    a: int
    b: int = 0

    def __init__(self, **data: Any) -> None:
        super().__init__(**data, b=1)


class BeforeAddsAKey(BaseModel):
    a: int
    b: int = 0

    @model_validator(mode="before")
    @classmethod
    def add_b(cls, data: Any) -> Any:
        return {**data, "b": 1} if isinstance(data, dict) else data


class AfterSetsAField(BaseModel):
    a: int
    b: int = 0

    @model_validator(mode="after")
    def set_b(self):
        self.b = 1
        return self


class ValidatorAddsKeys(BaseModel):
    m: Annotated[dict[str, int], AfterValidator(lambda d: {**d, "added": 0})]


class ValidatorMakesAnObject(BaseModel):
    p: Annotated[Any, BeforeValidator(lambda v: {"made": 1} if v == 0 else v)] = None
    z: int = 0


class UnionWithAValidatedMember(BaseModel):
    u: Point | Annotated[dict[str, int], AfterValidator(lambda d: {**d, "added": 0})]


class PathOneLevelDown(BaseModel):
    v: int = Field(validation_alias=AliasPath("o", 0))


class JsonInAString(BaseModel):
    j: Json[dict[str, int]]
    x: int = 0


class RootCounts(RootModel[dict[str, int]]):
    pass


# ... or the quote count: half the quotes, less the string values taken from string tokens


class DefaultString(BaseModel):
    a: int
    s: str = "at 10:30"


class NoneIsNoString(BaseModel):
    c: str | None
    b: int = 0


class BeforeMakesAString(BaseModel):
    a: Annotated[str, BeforeValidator(str)]
    b: int = 0


class AfterMakesAString(BaseModel):
    a: Annotated[int, AfterValidator(str)]
    b: int = 0


class AfterAddsAString(BaseModel):
    a: Annotated[list[str], AfterValidator(lambda items: [*items, "added"])]
    b: int = 0


def _core(make):
    return GetPydanticSchema(lambda source, handler: make(handler(source)))


class Named(BaseModel):
    s: str


class OneChoiceUnionWithADefault(BaseModel):  # pydantic-core looks through the union for a default
    a: Annotated[Named, _core(lambda inner: core_schema.union_schema([core_schema.with_default_schema(inner, default=Named(s="d"))]))]
    b: int = 0


class RefusedStringBecomesDefault(BaseModel):  # on_error="default": a refused value becomes the default, and counts as set
    a: Annotated[str, _core(lambda inner: core_schema.with_default_schema(inner, default="d", on_error="default"))]
    b: int = 0


class InfoAddsAKeyToAnotherField(BaseModel):
    a: dict[str, int] = {}
    b: int = 0
    z: int = 0

    @field_validator("b")
    @classmethod
    def sneak(cls, value: int, info: ValidationInfo) -> int:
        info.data["a"]["added"] = 0  # the fields validated so far, live
        return value


class InfoMakesAnotherFieldAString(BaseModel):
    c: str | None = None
    b: int = 0
    z: int = 0

    @field_validator("b")
    @classmethod
    def sneak(cls, value: int, info: ValidationInfo) -> int:
        info.data["c"] = "made"
        return value


class RefusedDictBecomesDefault(BaseModel):
    m: Annotated[dict[str, int], _core(lambda inner: core_schema.with_default_schema(inner, default={"k": 1}, on_error="default"))]
    z: int = 0


class ListOfRoots(BaseModel):
    items: list[RootCounts]


FOOLERS = [
    (TwoFieldsOneKey, '{"x":1,"x":2}'),
    (ChoicesOverlap, '{"q":1,"q":2}'),
    (PathsIntoOneList, '{"xs":[1,2],"z":1,"z":2}'),
    (PostInitSetsAField, '{"a":1,"a":2}'),
    (CustomInitSetsAField, '{"a":1,"a":2}'),
    (BeforeAddsAKey, '{"a":1,"a":2}'),
    (AfterSetsAField, '{"a":1,"a":2}'),
    (ValidatorAddsKeys, '{"m":{"k":1,"k":2}}'),
    (ValidatorMakesAnObject, '{"p":0,"z":1,"z":2}'),
    (UnionWithAValidatedMember, '{"u":{"k":1,"k":2}}'),
    (JsonInAString, '{"j":"{\\"k\\"\\u003a1}","x":1,"x":2}'),  # the inner key's colon is escaped: no colon in the text
    (RootCounts, '{"a":1,"a":2}'),
    (ListOfRoots, '{"items":[{"a":1,"a":2},{"b":1}]}'),
    (DefaultString, '{"a":1,"a":2}'),
    (NoneIsNoString, '{"c":null,"b":1,"b":2}'),
    (BeforeMakesAString, '{"a":5,"b":1,"b":2}'),
    (AfterMakesAString, '{"a":5,"b":1,"b":2}'),
    (AfterAddsAString, '{"a":[],"b":1,"b":2}'),
    (OneChoiceUnionWithADefault, '{"b":1,"b":2}'),
    (RefusedStringBecomesDefault, '{"a":5,"b":1,"b":2}'),
    (RefusedDictBecomesDefault, '{"m":5,"z":1,"z":2}'),
    (InfoAddsAKeyToAnotherField, '{"a":{},"b":1,"z":1,"z":2}'),
    (InfoMakesAnotherFieldAString, '{"c":null,"b":1,"z":1,"z":2}'),
]


@pytest.mark.parametrize("model, text", FOOLERS, ids=[m.__name__ for m, _ in FOOLERS])
def test_a_duplicate_key_is_refused_whatever_the_model_counts(model, text):
    """Each model here keeps as many fields or keys as the text has colons (or as many keys and
    strings as half its quotes) although a key came twice, if counted naively; the proof must
    not stand, and the full path refuses the call."""
    tool = tool_for(model)
    expected = outcome(reference, tool, text)
    assert "appears twice" in expected[1]
    assert outcome(validate_arguments, tool, text) == expected
    valid = tool.validate_json_fast(text)
    assert valid is not None  # Pydantic itself takes the text: only the strict rules refuse it
    assert not proves_strict(text, valid, DEFAULT_LIMITS)


class CoercedByConfig(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)
    a: str
    b: int = 0


class CoercedByField(BaseModel):
    a: str = Field(coerce_numbers_to_str=True)
    b: int = 0


class HoldsACoercedModel(BaseModel):
    inner: CoercedByConfig
    c: int = 0


@pytest.mark.parametrize("model, text", [
    (CoercedByConfig, '{"a":5,"b":1,"b":2}'),
    (CoercedByField, '{"a":5,"b":1,"b":2}'),
    (HoldsACoercedModel, '{"inner":{"a":5},"c":1,"c":2}'),
], ids=["config", "field", "nested-config"])
def test_a_string_a_number_became_is_not_counted_as_a_string_token(model, text):
    """Lax Pydantic turns a number into a str when told to: that str had no quotes in the text."""
    valid = model.model_validate_json(text)
    assert kept_strings(valid) == 0 and not proves_strict(text, valid, DEFAULT_LIMITS)


def test_a_field_read_through_an_alias_path_leaves_the_depth_to_the_bracket_count():
    tool = tool_for(PathOneLevelDown)
    text = '{"o":[1]}'  # the schema nests one level (an int field); the text two
    assert "nested 2 levels deep" in outcome(validate_arguments, tool, text, ArgumentLimits(max_depth=1))[1]
    assert outcome(validate_arguments, tool, text)[0] == "valid"


def test_a_root_model_counts_its_keys_not_its_root_field():
    tool = tool_for(ListOfRoots)
    text = '{"items":[{"a":1,"b":2},{"c":3}]}'
    model = tool.validate_json_fast(text)
    assert kept_keys(model) == 4 == text.count(":") and proves_strict(text, model, DEFAULT_LIMITS)


def test_a_schema_that_nests_a_bounded_depth_needs_no_bracket_count_but_a_tight_limit_still_applies():
    tool = tool_for(Itinerary)
    text = json.dumps({"traveller": "d", "legs": [{"origin": "SF", "day": i} for i in range(100)]})
    model = tool.validate_json_fast(text)
    assert proves_strict(text, model, DEFAULT_LIMITS)
    assert not proves_strict(text, model, ArgumentLimits(max_depth=2))
    assert "nested 3 levels deep" in outcome(validate_arguments, tool, text, ArgumentLimits(max_depth=2))[1]


def test_json_schema_tools_count_through_their_check_only_validators():
    """MCP/OpenAPI tools check formats, unique items, property counts and enums with validators
    that return the value unchanged: their nested calls take the proof too, and still refuse a
    key sent twice."""
    tool = tool_from_json_schema({"name": "book", "description": "Book.", "parameters": {
        "type": "object", "required": ["legs"], "properties": {
            "legs": {"type": "array", "uniqueItems": True, "items": {
                "type": "object", "required": ["day"], "minProperties": 1,
                "properties": {"day": {"type": "string", "format": "date"}, "seat": {"enum": ["a", {"k": 1}]}}}}}}})
    text = '{"legs":[{"day":"2026-01-02","seat":{"k":1}},{"day":"2026-01-03"}]}'
    model = tool.validate_json_fast(text)
    assert proves_strict(text, model, DEFAULT_LIMITS)
    twice = '{"legs":[{"day":"2026-01-02","seat":{"k":1,"k":1}},{"day":"2026-01-03"}]}'
    assert outcome(validate_arguments, tool, twice) == outcome(reference, tool, twice)
    assert "appears twice" in outcome(validate_arguments, tool, twice)[1]


def test_colons_inside_strings_still_leave_a_proof_and_never_hide_a_key_sent_twice():
    tool = tool_for(Itinerary)
    legs = [{"origin": f"https://x.io/{i}?t=10:{i:02d}", "day": i} for i in range(20)]
    for text in (json.dumps({"traveller": "d", "legs": legs}), json.dumps({"traveller": "d", "legs": legs}, indent=2)):
        model = tool.validate_json_fast(text)
        assert text.count(":") > kept_keys(model) and proves_strict(text, model, DEFAULT_LIMITS)
    twice = '{"traveller": "d", "legs": [{"origin": "10:30", "day": 1, "day"\n : 2}]}'
    assert outcome(validate_arguments, tool, twice) == outcome(reference, tool, twice)
    assert "appears twice" in outcome(validate_arguments, tool, twice)[1]


def test_only_strings_the_input_set_from_string_tokens_are_counted():
    tool = tool_for(Trip)
    text = ('{"traveller":"d","stops":[{"stop-name":"s","tags":["a","b"],"notes":{"k":"v"}}],'
            '"meta":{"m":["x",{"n":"y"},1]},"choice":"s","remark":null}')
    model = tool.validate_json_fast(text)
    # traveller, stop-name, both tags, the note, the untyped "x" and "y"; not the union's "s",
    # not the null remark, not the defaults (remark's, the stop's "at")
    assert kept_strings(model) == 7
    assert kept_keys(model) + kept_strings(model) < text.count('"') // 2  # the union's string: no proof by quotes
    assert proves_strict(text, model, DEFAULT_LIMITS)  # ... but the colons prove it


GAPS = ["", " ", "\n", "\t", "\r\n", " \t\r\n "]  # whitespace between a key and its colon


def itinerary_text(gap: str, legs: list[str]) -> str:
    return f'{{"traveller"{gap}:"d",{gap}"legs"{gap}:[' + ",".join(legs) + "]}"


def leg_text(gap: str, origin: str, day: str, extra: str = "") -> str:
    return f'{{"origin"{gap}:"{origin}",{gap}"day"{gap}:{day}{extra}}}'


@pytest.mark.parametrize("gap", GAPS, ids=["none", "space", "newline", "tab", "crlf", "mixed"])
def test_strings_with_colons_are_proven_by_their_quotes_and_never_hide_a_key_sent_twice(gap):
    tool = tool_for(Itinerary)
    legs = [leg_text(gap, f"https://x.io/{i}?t=10:{i:02d}", str(i)) for i in range(3)]
    text = itinerary_text(gap, legs)
    model = tool.validate_json_fast(text)
    assert kept_keys(model) + kept_strings(model) == text.count('"') // 2 < text.count(":")
    assert proves_strict(text, model, DEFAULT_LIMITS)
    twice = [
        itinerary_text(gap, legs[:2] + [leg_text(gap, "10:30", "1", f',{gap}"day"{gap}:2')]),  # a number sent twice
        itinerary_text(gap, legs[:2] + [leg_text(gap, "10:30", "1", f',"origin"{gap}:"11:45"')]),  # a string sent twice
        itinerary_text(gap, legs[:2] + [leg_text(gap, "10\\u003a30", "1", f',"day"{gap}:2')]),  # an escaped colon
        itinerary_text(gap, legs).replace('"d",', f'"d",{gap}"traveller"{gap}:"e:f",', 1),
    ]
    for broken_text in twice:
        assert outcome(validate_arguments, tool, broken_text) == outcome(reference, tool, broken_text), broken_text
        assert "appears twice" in outcome(validate_arguments, tool, broken_text)[1]
        assert not proves_strict(broken_text, tool.validate_json_fast(broken_text), DEFAULT_LIMITS)


class Notes(BaseModel):
    notes: dict[str, str]
    n: int = 0


@pytest.mark.parametrize("text", [
    '{"notes":{"a\\"b":"10:30","a\\"b":"x"}}',  # a key with an escaped quote, sent twice
    '{"notes":{"a\\"b":"10:30"},"n":1,"n":2}',  # one escaped quote: half the quotes rounds down
    '{"notes":{"a":"10:30","\\u0061":"x"}}',  # the same key spelled with an escape
    '{"notes":{"k":"say \\"hi\\": 10:30"},"n":1,"n":2}',  # an escaped quote before a colon
])
def test_escaped_quotes_only_raise_the_quote_count(text):
    tool = tool_for(Notes)
    assert "appears twice" in outcome(reference, tool, text)[1]
    assert outcome(validate_arguments, tool, text) == outcome(reference, tool, text)
    assert not proves_strict(text, tool.validate_json_fast(text), DEFAULT_LIMITS)
