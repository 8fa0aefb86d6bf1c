"""Proof that a call Pydantic accepted broke no strict-JSON rule, without parsing its text again.

Pydantic parses and validates the raw text in one pass, but its parser keeps the last of
duplicate keys and reads `NaN`/`Infinity`; the strict check (`toolrail/arguments.py`) refuses
both, and a second full parse only to learn that nothing was wrong costs more than Pydantic's
own. For a valid call the validated model itself settles it:

- **No duplicate key.** Every key in the text, at any depth, is followed by its own colon
  outside strings, so the text's colons bound its key count from above (and so do the pairs of a
  quote and a colon once whitespace is taken out: strings with colons, like times and URLs,
  spoil only the first bound). Every key and every string value is also a pair of quotes, so
  half the text's quotes, less the string values the model provably took from string tokens,
  bounds the keys too, whatever the whitespace and whatever colons the strings hold. The keys
  the model kept are counted from the validated tree: per model the fields set by input, per
  dict its length, through lists, tuples, nested models, unions and untyped values. A key sent
  twice in one object is kept once, so then the kept count is below the key count, below the
  colons.
  Equal counts therefore prove every key was sent once. A colon inside a string only makes the
  counts differ; then the full check runs, so the shortcut never accepts more, it only skips.
- **No NaN/Infinity.** The text holds no `N` or `I`, or at least not `NaN` or `Infinity`.
- **Within the depth limit.** With every key kept (above) and unknown keys forbidden, every
  value in the text was validated by the model's schema, so the text is no deeper than the
  schema nests; a schema that nests without bound (recursion, untyped values, validators that
  take raw input) gets the bracket check.

The count must never exceed the keys the text really had, or a duplicate could hide. So only
what the schema proves comes from the input is counted: a model whose fields set could come
from elsewhere (a model validator, `model_post_init`, a custom `__init__`, two fields reading
one key, an alias path, a validator given `info`, whose `info.data` holds the other fields) and
a value a validator function returned count as no keys at all — which only ever makes the
counts differ and the full check run. Functions that only check a value and return it
unchanged (marked with `checks_only`) are looked through.

The string values, likewise, must never exceed the text's string tokens: only values of a plain
`str` schema are counted (in JSON it takes nothing but a string token, unless a schema or config
anywhere in the model coerces numbers to strings: then none is), only where the input set them
(fields set by input, list items, dict values, untyped JSON), never a default, a `None`, a union's
or a validator's value. Each sits at its own place in the validated tree, so each had its own token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from pydantic import BaseModel

from toolrail.arguments import ArgumentLimits, _nesting_over

Counter = Callable[[Any], int]


def proves_strict(text: str, model: BaseModel, limits: ArgumentLimits) -> bool:
    """True when `text`, which Pydantic validated into `model`, is certainly strict JSON within
    `limits`' depth: no duplicate key, no NaN/Infinity (the size is the caller's to settle).
    False means "not proven": the full strict check decides."""
    if ("N" in text and "NaN" in text) or ("I" in text and "Infinity" in text):
        return False
    proof = _proof_for(type(model))
    if proof.depth is None or proof.depth > limits.max_depth:
        if _nesting_over(text, None, limits):
            return False
    try:  # None: no key is provably from the input, so only a text without keys passes
        kept = 0 if proof.count is None else proof.count(model)
    except Exception:  # _Unprovable, RecursionError, or a value not shaped as foreseen: not proven
        return False
    if kept == text.count(":"):
        return True
    # colons inside strings (times, URLs): each key and each string value holds two quotes of
    # its own (an escaped quote only adds one), so keys <= quotes // 2 - string values
    strings = proof.strings
    if type(strings) is not int:
        try:
            strings = strings(model)
        except Exception:  # a value not shaped as foreseen: no string counted, the bound stays sound
            strings = 0
    if kept + strings == text.count('"') // 2:
        return True
    # colons inside strings (times, URLs): with JSON's whitespace taken out (in bytes, in C), a
    # key's closing quote sits right before its colon, so quote-colon pairs bound the keys
    data = text.encode("utf-8", "surrogatepass")
    if b" " in data or b"\n" in data or b"\r" in data or b"\t" in data:
        data = data.translate(None, b" \n\r\t")
    return kept == data.count(b'":')


def kept_keys(model: BaseModel) -> int | None:
    """The keys of the input `model` provably kept (see the module's docstring); None when its
    schema proves none."""
    count = _proof_for(type(model)).count
    return None if count is None else count(model)


def kept_strings(model: BaseModel) -> int:
    """The string values of the input `model` provably taken from string tokens of its text (a
    lower bound: 0 when its schema proves none)."""
    return _strings_of(_proof_for(type(model)).strings, model)


def checks_only(func: Callable) -> Callable:
    """Mark a validator function that returns its value unchanged (or raises), so a value it
    checked is still counted key by key."""
    _CHECKS_ONLY.add(func)
    return func


# --- compiling a model's schema into a counter ------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """What a schema node proves: how to count the keys of a value it validated (None: no key
    counted, either because it holds none or because they are not provably the input's), how
    deep the input it takes can nest (None: no bound), and whether every dict and model under
    it (outside of nested models, which count themselves) comes from the input, so a value of a
    union or an untyped field can be walked without its schema (`pure`). `strings` counts the
    string values under a value that provably came from string tokens of the text, each from its
    own: an int when it is the same for every value, 0 when none is proven (always safe)."""

    count: Counter | None
    depth: int | None
    pure: bool
    strings: Counter | int = 0


class _Unprovable(Exception):
    """A walked value holds a model whose class has no trusted counter."""


_CHECKS_ONLY: set[Callable] = set()
_PROOFS: dict[type, _Node] = {}
_CLASS_COUNTERS: dict[type, Counter] = {}  # trusted model classes: their instances' own counters
_FIELDS_SET = attrgetter("__pydantic_fields_set__")
_LEAF = _Node(None, 0, True)  # a scalar: no keys, no nesting
_STRING = _Node(None, 0, True, 1)  # a plain str: in JSON, only a string token validates as one
_OPAQUE = _Node(None, None, False)  # unknown, or a validator's own output: nothing counted, no bound
_SCALARS = {"str", "int", "float", "bool", "none", "literal", "enum", "date", "time", "datetime", "timedelta",
            "uuid", "decimal", "bytes", "url", "multi-host-url"}


def _proof_for(model: type[BaseModel]) -> _Node:
    proof = _PROOFS.get(model)
    if proof is None:
        try:
            schema = model.__pydantic_core_schema__
            proof = _Compiler(count_strings=not _mentions(schema, "coerce_numbers_to_str")).node(schema)
        except Exception:  # a schema shape not foreseen proves nothing: the full check runs
            proof = _OPAQUE
        _PROOFS[model] = proof
    return proof


def _fields_set_length(model: BaseModel) -> int:
    return len(model.__pydantic_fields_set__)


def _strings_of(strings: Counter | int, value: Any) -> int:
    return strings if type(strings) is int else strings(value)


def _walk_strings(value: Any) -> int:
    """The strings under an untyped value: decoded JSON, whose every str was a string token."""
    kind = type(value)
    if kind is str:
        return 1
    if kind is dict:
        return sum(map(_walk_strings, value.values()))
    if kind is list:
        return sum(map(_walk_strings, value))
    return 0


def _mentions(schema: Any, key: str) -> bool:
    """Does `key` hold a true value anywhere in the core schema (its definitions, configs and
    nested schemas, which it holds itself: no reference needs following)?"""
    return _anywhere(schema, lambda node: bool(node.get(key)))


def _anywhere(schema: Any, found: Callable[[dict], bool], definitions: dict | None = None,
              refs: set[str] | None = None) -> bool:
    """Is `found` true of a node anywhere within `schema`? With `definitions`, references are
    followed too (each once; one that cannot be followed counts as found)."""
    if isinstance(schema, dict):
        if found(schema):
            return True
        ref = schema.get("schema_ref")
        if definitions is not None and schema.get("type") == "definition-ref" and isinstance(ref, str):
            refs = set() if refs is None else refs
            if ref not in refs:
                refs.add(ref)
                if ref not in definitions or _anywhere(definitions[ref], found, definitions, refs):
                    return True
        return any(_anywhere(v, found, definitions, refs) for v in schema.values())
    if isinstance(schema, (list, tuple)):
        return any(_anywhere(v, found, definitions, refs) for v in schema)
    return False


def _walk(value: Any) -> int:
    """The keys under a value whose schema is not at hand: a union's or an untyped field's."""
    kind = type(value)
    if kind is dict:
        return len(value) + sum(map(_walk, value.values()))
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return sum(map(_walk, value))
    counter = _CLASS_COUNTERS.get(kind)
    if counter is not None:
        return counter(value)
    if isinstance(value, BaseModel):
        raise _Unprovable
    return 0


_UNTYPED = _Node(_walk, None, True, _walk_strings)  # decoded JSON, whatever its shape


class _Compiler:
    def __init__(self, count_strings: bool = True) -> None:
        self.count_strings = count_strings  # False: a str could have been a number in the text
        self.definitions: dict[str, dict] = {}
        self.done: dict[str, _Node] = {}
        self.active: set[str] = set()

    def node(self, schema: dict) -> _Node:
        kind = schema.get("type")
        if kind == "str" and self.count_strings:
            return _STRING
        if kind in _SCALARS:
            return _LEAF if kind != "enum" and kind != "literal" or _scalar_values(schema) else _OPAQUE
        handler = getattr(self, "_" + str(kind).replace("-", "_"), None)
        return handler(schema) if handler is not None else _OPAQUE

    def _definitions(self, schema: dict) -> _Node:
        for definition in schema["definitions"]:
            self.definitions[definition["ref"]] = definition
        return self.node(schema["schema"])

    def _definition_ref(self, schema: dict) -> _Node:
        ref = schema["schema_ref"]
        if ref in self.done:
            return self.done[ref]
        if ref not in self.definitions:
            return _OPAQUE
        if ref in self.active:  # recursion: counted through a late lookup, nesting unbounded, not walked
            done = self.done
            return _Node(lambda value: (done[ref].count or _zero)(value), None, False,
                         lambda value: _strings_of(done[ref].strings, value))
        self.active.add(ref)
        try:
            node = self.node(self.definitions[ref])
        finally:
            self.active.discard(ref)
        self.done[ref] = node
        return node

    def _model(self, schema: dict) -> _Node:
        if schema.get("post_init") or schema.get("custom_init"):
            return _OPAQUE
        inner = schema["schema"]
        if schema.get("root_model"):  # `root` is set, but is not a key of the input
            root = self.node(inner)
            count, strings = root.count, root.strings
            node = _Node(None if count is None else (lambda model: count(model.root)),
                         root.depth, root.pure,
                         strings if type(strings) is int else (lambda model: strings(model.root)))
        else:
            if inner.get("type") != "model-fields" or not _one_key_per_field(inner["fields"]):
                return _OPAQUE  # e.g. a model validator sits between
            if self._reads_siblings(inner["fields"], set()):
                return _OPAQUE  # a validator given `info.data` can change what other fields hold
            fields = [(name, self.node(field["schema"])) for name, field in inner["fields"].items()]
            nested = tuple((name, f.count) for name, f in fields if f.count is not None)
            depths = [f.depth for _, f in fields]
            depth = None if None in depths else 1 + max(depths, default=0)
            strings = _model_strings(
                [(name, f.strings, not self._may_default(inner["fields"][name]["schema"], set()))
                 for name, f in fields])
            node = _Node(_model_counter(nested), depth, True, strings)
        # every counter compiled from the schema is sound for the values it validated, so `_walk`
        # may count an instance of this class by it (no keys proven counts none)
        _CLASS_COUNTERS.setdefault(schema["cls"], node.count or _zero)
        return _Node(node.count, node.depth, True, node.strings)

    def _reads_siblings(self, schema: Any, refs: set[str]) -> bool:
        """Does a validator under these fields take `info`? Its `info.data` is the dict of the
        fields validated so far, which it can change after they were validated (only a
        `checks_only` function is trusted not to)."""
        return _anywhere(schema, lambda node: node.get("type") == "with-info" and not _checks_only(node.get("function")),
                         self.definitions, refs)

    def _may_default(self, schema: Any, refs: set[str]) -> bool:
        """Could a field of this schema take a default, so be left out of the fields set? Not
        only a `default` on top does: a one-choice union or a reference to one gives its own
        (pydantic-core looks through them), so any `default` within counts."""
        return _anywhere(schema, lambda node: node.get("type") == "default", self.definitions, refs)

    def _list(self, schema: dict) -> _Node:
        item = self.node(schema["items_schema"]) if "items_schema" in schema else _UNTYPED
        return _Node(_sequence_counter(item.count), _deeper(item.depth), item.pure, _each(item.strings, len, iter))

    _set = _frozenset = _list

    def _tuple(self, schema: dict) -> _Node:
        items = [self.node(item) for item in schema.get("items_schema", [])]
        if not items:
            return _Node(None, 1, True)  # tuple[()]: only []
        depth = None if any(i.depth is None for i in items) else 1 + max(i.depth for i in items)
        if all(i.count is None for i in items):
            return _Node(None, depth, all(i.pure for i in items))
        if all(i.pure for i in items):  # positions and a variadic tail: walk what is there
            return _Node(_sequence_counter(_walk), depth, True)
        return _Node(None, depth, False)

    def _dict(self, schema: dict) -> _Node:
        # keys arrive as strings: a key validator can merge keys, never add one
        value = self.node(schema["values_schema"]) if "values_schema" in schema else _UNTYPED
        keys = self.node(schema["keys_schema"]) if "keys_schema" in schema else _LEAF
        depth = None if value.depth is None or keys.depth is None else 1 + value.depth
        count = value.count
        strings = _each(value.strings, len, dict.values)  # a key validator can merge keys: fewer values
        if count is None:
            return _Node(len, depth, value.pure, strings)
        return _Node(lambda d: len(d) + sum(map(count, d.values())), depth, value.pure, strings)

    def _any(self, schema: dict) -> _Node:
        return _UNTYPED

    def _nullable(self, schema: dict) -> _Node:
        inner = self.node(schema["schema"])
        count, strings = inner.count, inner.strings
        if count is None and strings == 0:
            return inner
        return _Node(None if count is None else (lambda value: 0 if value is None else count(value)),
                     inner.depth, inner.pure, _unless_none(strings))

    def _default(self, schema: dict) -> _Node:
        # only a field the input set is counted, so a default is never walked; but with
        # on_error="default" a value the input set but its schema refused becomes the default
        # (and the field counts as set): nothing about it is the input's
        if schema.get("on_error") == "default":
            return _OPAQUE
        return self.node(schema["schema"])

    def _union(self, schema: dict) -> _Node:
        choices = [c[0] if isinstance(c, tuple) else c for c in schema["choices"]]
        return self._choice([self.node(c) for c in choices])

    def _tagged_union(self, schema: dict) -> _Node:
        return self._choice([self.node(c) for c in schema["choices"].values()])

    def _choice(self, members: list[_Node]) -> _Node:
        depth = None if any(m.depth is None for m in members) else max((m.depth for m in members), default=0)
        pure = all(m.pure for m in members)
        if all(m.count is None for m in members):
            return _Node(None, depth, pure)
        if len(members) == 1:
            return members[0]
        # which member took the value is not known: walk it, if every member's values may be walked
        return _Node(_walk if pure else None, depth, pure)

    def _function_after(self, schema: dict) -> _Node:
        inner = self.node(schema["schema"])
        if _checks_only(schema["function"]["function"]):
            return inner
        return _Node(None, inner.depth, False)  # the input was the inner schema's; the value is not

    def _custom_error(self, schema: dict) -> _Node:
        return self.node(schema["schema"])

    def _json_or_python(self, schema: dict) -> _Node:
        return self.node(schema["json_schema"])  # the input is JSON text


def _checks_only(func: Any) -> bool:
    return any(f in _CHECKS_ONLY for f in (func, getattr(func, "func", None)) if _hashable(f))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _zero(value: Any) -> int:
    return 0


def _deeper(depth: int | None) -> int | None:
    return None if depth is None else depth + 1


def _scalar_values(schema: dict) -> bool:
    values = schema.get("expected") if schema["type"] == "literal" else [m.value for m in schema.get("members", [])]
    return all(isinstance(getattr(v, "value", v), (str, int, float, bool, type(None))) for v in values or [])


def _one_key_per_field(fields: dict[str, dict]) -> bool:
    """Each field reads one plain key of its own (no alias path, no key two fields share)."""
    seen: set[str] = set()
    for name, field in fields.items():
        alias = field.get("validation_alias")
        keys = {name}
        if isinstance(alias, str):
            keys.add(alias)
        elif alias is not None:
            paths = alias if all(isinstance(p, list) for p in alias) else [alias]
            for path in paths:
                if len(path) != 1 or not isinstance(path[0], str):
                    return False
                keys.add(path[0])
        if keys & seen:
            return False
        seen |= keys
    return True


def _model_counter(nested: tuple[tuple[str, Counter], ...]) -> Counter:
    if not nested:
        return _fields_set_length

    def count(model: Any) -> int:
        fields_set = model.__pydantic_fields_set__
        total = len(fields_set)
        for name, counter in nested:
            if name in fields_set:
                total += counter(model.__dict__[name])
        return total

    return count


def _model_strings(fields: list[tuple[str, Counter | int, bool]]) -> Counter | int:
    """The strings of a model's fields (name, strings, required): a required field is always set
    by the input, so its constant counts for every instance; any other only when set."""
    static = sum(s for _, s, required in fields if required and type(s) is int)
    dynamic = tuple((name, s if type(s) is not int else _constant(s))
                    for name, s, required in fields if s != 0 and not (required and type(s) is int))
    if not dynamic:
        return static

    def strings(model: Any) -> int:
        fields_set = model.__pydantic_fields_set__
        total = static
        for name, counter in dynamic:
            if name in fields_set:
                total += counter(model.__dict__[name])
        return total

    return strings


def _each(strings: Counter | int, size: Callable, items: Callable) -> Counter | int:
    """The strings of a container whose every item has `strings`."""
    if type(strings) is int:
        return 0 if strings == 0 else (lambda value: strings * size(value))
    return lambda value: sum(map(strings, items(value)))


def _unless_none(strings: Counter | int) -> Counter | int:
    if strings == 0:
        return 0
    if type(strings) is int:
        return lambda value: 0 if value is None else strings
    return lambda value: 0 if value is None else strings(value)


def _constant(n: int) -> Counter:
    return lambda value: n


def _sequence_counter(item: Counter | None) -> Counter | None:
    if item is None:
        return None
    if item is _fields_set_length:  # a list of flat models: no Python call per item
        return lambda items: sum(map(len, map(_FIELDS_SET, items)))
    return lambda items: sum(map(item, items))

