"""The fast strict-JSON check (jiter) refuses exactly what the full strict parse refuses, with the
same reason: it is only a faster road to the same verdict, never a looser one."""

from __future__ import annotations

import json
import random

import pytest

from toolrail.arguments import ArgumentLimits, ArgumentsRejected, check_arguments, parse_arguments

EDGE_CASES = [
    '{"a":1}', ' {"a" : 1 } \n', '{"a":"x\ny"}', '{"a":"\x00"}', '{"a":"\\u0000"}', '\ufeff{}', '{"a":01}', '{"a":1.}',
    '{"a":.5}', '{"a":+1}', '{"a":-0}', '{"a":1E400}', '{"a":-1e999}', '{"a":"\\ud800"}', '{"a":"\\udc00\\ud800"}',
    '{"a":"\ud800"}', "{'a':1}", '{"a":1,}', '[1,]', '{"a":tru}', '{"\\u0061":1,"a":2}', '{"a":1,"\\u0061":2}',
    '{"é":1,"e\\u0301":2}', '123', '"s"', 'null', '   ', '{"a":"\\x41"}', '{"a":"\t"}', '{"a":1}{"b":2}',
    '{"a":[1,2,{"b":NaN}]}', '{"a":Infinity}', '{"a":-Infinity}', '{"a":9999999999999999999999999999}',
    '{"x":{"y":[{"z":1,"z":1}]}}', '[' * 65 + ']' * 65, '[' * 64 + ']' * 64, '{"a":' * 70 + '1' + '}' * 70,
    '[' * 300 + ']' * 300, '[' * 70 + '"\\\\"' + ']' * 70, '[' * 40 + '"[[[[\\"]]"' + '{"k":' * 40 + '1' + '}' * 40 + ']' * 40,
    '\\"' + '"' + '[' * 70 + '"' + '"' + '"', '["a\\\\", ' + '[' * 66 + ']' * 66 + ']', '[' * 66 + '[}' + ']' * 66, '"' + 'é' * 300_000 + '"', '"' + 'a' * (1 << 20) + '"',
]


def verdict(check, text: str, limits: ArgumentLimits) -> str:
    try:
        check(text, limits)
    except ArgumentsRejected as exc:
        return f"refused ({exc.kind}): {exc}"
    return "accepted"


def mutants(seed: int, count: int) -> list[str]:
    """Valid calls broken the ways a model breaks them: cut, duplicated, doubled, NaN'd, quoted."""
    rng = random.Random(seed)
    base = json.dumps({"origin": "SF", "destination": "NYC", "legs": [{"day": 1, "stops": [1, 2]}, {"day": 2}], "note": "é ✈"})
    pieces = ['"', ",", ":", "{", "}", "[", "]", "NaN", "Infinity", '"origin": "LA", ', "\\", "\\u", "-", "e9", " ", "\x01"]
    out = []
    for _ in range(count):
        text = base
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            if rng.random() < 0.5:
                text = text[:at] + rng.choice(pieces) + text[at:]
            else:
                text = text[:at] + text[at + rng.randint(1, 4):]
        out.append(text)
    return out


@pytest.mark.parametrize("limits", [ArgumentLimits(), ArgumentLimits(max_bytes=64, max_depth=3), ArgumentLimits(max_depth=500)],
                         ids=["default-limits", "tight-limits", "deeper-than-jiter"])
def test_fast_check_gives_the_full_parses_verdict_and_reason_on_edge_cases(limits):
    for text in EDGE_CASES:
        assert verdict(check_arguments, text, limits) == verdict(parse_arguments, text, limits), repr(text[:80])


@pytest.mark.parametrize("limits", [ArgumentLimits(), ArgumentLimits(max_depth=4), ArgumentLimits(max_depth=5)],
                         ids=["default-limits", "depth-4", "depth-5"])
def test_fast_check_gives_the_full_parses_verdict_and_reason_on_broken_calls(limits):
    texts = mutants(seed=14, count=3000)
    verdicts = [verdict(parse_arguments, t, limits) for t in texts]
    assert 0 < sum(v == "accepted" for v in verdicts) < len(texts)  # the corpus has both kinds
    for text, expected in zip(texts, verdicts):
        assert verdict(check_arguments, text, limits) == expected, repr(text)


def test_fast_check_refuses_duplicate_keys_and_non_finite_numbers_at_any_depth():
    for text in ('{"a":{"b":[{"c":1,"c":2}]}}', '{"a":[1,NaN]}', '{"a":{"b":-Infinity}}'):
        with pytest.raises(ArgumentsRejected):
            check_arguments(text)


# --- validate_arguments: the shortcut for flat calls gives the full path's verdict -------------

from pydantic import AliasChoices, BaseModel, Field, model_validator  # noqa: E402

from toolrail.arguments import DEFAULT_LIMITS  # noqa: E402
from toolrail.nodes.validate import validate_arguments  # noqa: E402
from toolrail.tools.registry import FieldError, InvalidToolCall, ToolRegistry  # noqa: E402


class Flat(BaseModel):
    a: str
    b: int | None = None
    x: float = 0.0


class SetsAFieldItself(BaseModel):
    a: str
    b: int | None = None

    @model_validator(mode="after")
    def fill_b(self):
        self.b = 7  # marks b as set: a fields-set count would no longer match the keys sent
        return self


class TwoNamesOneField(BaseModel):
    a: str = Field(validation_alias=AliasChoices("a", "alpha"))
    b: int | None = None


class Nested(BaseModel):
    a: str
    inner: Flat | None = None
    tags: list[str] = []


def reference(tool, text: str):
    """The path before the shortcut: the full strict parse, then the tool's validation."""
    text = text.strip()
    if not text:
        return tool.validate({})
    try:
        parse_arguments(text, DEFAULT_LIMITS)
    except ArgumentsRejected as exc:
        raise InvalidToolCall(tool.name, [FieldError("arguments", str(exc), kind="json")]) from None
    return tool.validate(text)


def outcome(validate, tool, text: str):
    try:
        return ("valid", validate(tool, text).model_dump(mode="json"))
    except InvalidToolCall as exc:
        return ("invalid", str(exc))


CALLS = [
    '{"a":"x"}', '{"a":"x","b":1}', '{"a":"x","a":"y"}', '{"a" : "x" , "a" : "y"}', '{"a":"x","b":1,"b":2}',
    '{"a":"10:30","b":1}', '{"a":"10:30","a":"y"}', '{"a":"x:y:z"}', '{"a":"x","\\u0062":1,"b":2}', '{"\\u0061":"x"}',
    '{"a":"x","x":NaN}', '{"a":"x","x":Infinity}', '{"a":"NaN"}', '{"a":"x","x":-Infinity}', '{"a":"x","x":1e999}',
    '{"a":"x","b":1.0}', '{"a":"x","b":null}', '{"a":"x","c":1}', '{"a":"{"}', '{"a":"["}', '{"alpha":"x"}',
    '{"a":"x","alpha":"y"}', '{"alpha":"x","alpha":"y"}', '{"a":"x","inner":{"a":"y","a":"z"}}',
    '{"a":"x","inner":{"a":"y","x":NaN}}', '{"a":"x","tags":["p","q"]}', '{"a":"x","tags":[NaN]}', '{"a":"x"} ',
    ' {"a":"x"}', '{"a":"x",}', '{"a":"x"}{"a":"y"}', '{"a":"\\ud800"}', '{"a":"x","b":true}', '', '{}', '[]', 'null',
    '{"a":"x","b":1,"x":2.5}', '{"a":"x","b":1,"b":1}', '{"a":"x","b":9999999999999999999999}',
]


@pytest.mark.parametrize("model", [Flat, SetsAFieldItself, TwoNamesOneField, Nested], ids=lambda m: m.__name__)
def test_validate_arguments_gives_the_full_strict_paths_verdict_for_every_call(model):
    registry = ToolRegistry()
    registry.register(lambda **kw: None, name="t", description="A tool.", args_model=model)
    tool = registry.get("t")
    verdicts = [outcome(reference, tool, text) for text in CALLS]
    assert {v[0] for v in verdicts} == {"valid", "invalid"}
    for text, expected in zip(CALLS, verdicts):
        assert outcome(validate_arguments, tool, text) == expected, text


def test_a_duplicate_key_is_refused_even_when_a_model_validator_sets_fields_itself():
    registry = ToolRegistry()
    registry.register(lambda **kw: None, name="t", description="A tool.", args_model=SetsAFieldItself)
    with pytest.raises(InvalidToolCall, match="appears twice"):
        validate_arguments(registry.get("t"), '{"a":"x","a":"y"}')
