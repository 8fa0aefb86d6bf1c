"""Tool-call arguments parsed strictly and within limits, before any validator sees them.

Python's `json.loads` accepts `NaN`/`Infinity` (not JSON), keeps the last of duplicate keys
silently, and raises `RecursionError` on deep nesting. A model's arguments are untrusted input:
here they are refused with a short reason the model can act on — the reason echoes at most a
few hundred characters of what was sent, however large it was.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jiter

DEFAULT_MAX_ARGUMENT_BYTES = 1 << 20  # 1 MiB per call
DEFAULT_MAX_ARGUMENT_DEPTH = 64  # nested objects/arrays
ECHO_CHARS = 200  # how much of a refused argument text an error quotes


@dataclass(frozen=True)
class ArgumentLimits:
    max_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES
    max_depth: int = DEFAULT_MAX_ARGUMENT_DEPTH

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_depth < 1:
            raise ValueError(f"argument limits must be >= 1, got {self.max_bytes} bytes, depth {self.max_depth}")


DEFAULT_LIMITS = ArgumentLimits()


class ArgumentsRejected(ValueError):
    """The argument text is not acceptable JSON; `kind` names the rule (json, size, depth)."""

    def __init__(self, message: str, kind: str = "json"):
        super().__init__(message)
        self.kind = kind


def excerpt(text: str, limit: int = ECHO_CHARS) -> str:
    """At most `limit` characters of `text`, marked when cut, with its full size."""
    if len(text) <= limit:
        return json.dumps(text)
    return f"{json.dumps(text[:limit])}... ({len(text):,} characters in all)"


def parse_arguments(text: str, limits: ArgumentLimits = DEFAULT_LIMITS) -> Any:
    """Parse strict JSON: no NaN/Infinity, no duplicate keys, within the size and depth limits."""
    size = _byte_size(text, limits)
    if size > limits.max_bytes:
        raise ArgumentsRejected(
            f"arguments are over the size limit of {limits.max_bytes:,} bytes (at least {size:,}); send smaller "
            f"arguments (they began {excerpt(text)})", kind="size",
        )
    depth = nesting_depth(text) if text.count("[") + text.count("{") > limits.max_depth else 0
    if depth > limits.max_depth:
        raise ArgumentsRejected(
            f"arguments are nested {depth} levels deep; the limit is {limits.max_depth}", kind="depth",
        )
    try:
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicates)
    except ArgumentsRejected:
        raise
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        where = f" at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ArgumentsRejected(f"not valid JSON: {reason}{where} in {excerpt(text)}") from None


def check_arguments(text: str, limits: ArgumentLimits = DEFAULT_LIMITS) -> None:
    """Refuse what `parse_arguments` refuses, at a fraction of its cost, for a caller that only
    needs the verdict (Pydantic then parses the text itself, so the value would be thrown away).

    jiter (the Rust JSON parser inside Pydantic) checks strict JSON in one pass: no NaN/Infinity,
    no duplicate keys at any depth. Text that breaks a rule — or that jiter cannot take, like a
    lone surrogate — goes through `parse_arguments`, whose reason is the one reported and whose
    verdict is the one that counts.
    """
    if len(text) > limits.max_bytes:  # over the limit whatever its encoding: no need to encode it
        parse_arguments(text, limits)  # raises, with the size reason
        return
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate stays in: jiter refuses it below
    if len(data) > limits.max_bytes or _nesting_over(text, data, limits):
        parse_arguments(text, limits)  # raises, with the size or depth reason
        return
    try:
        jiter.from_json(data, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys")
    except ValueError:
        parse_arguments(text, limits)


def _byte_size(text: str, limits: ArgumentLimits) -> int:
    """The UTF-8 size, computed only when the character count cannot settle the limit."""
    return len(text.encode("utf-8", "surrogatepass")) if len(text) * 4 > limits.max_bytes else len(text)


def _nesting_over(text: str, data: bytes | None, limits: ArgumentLimits) -> bool:
    """Deeper than the limit? Short text cannot be (each level is at least one bracket), nor text
    with few brackets; otherwise the brackets outside strings of `data` (the text's UTF-8, encoded
    here when None) are peeled, innermost pairs first, one level per pass, in C (`nesting_depth`'s
    character loop costs ~35 ns a character)."""
    if len(text) <= limits.max_depth or text.count("[") + text.count("{") <= limits.max_depth:
        return False
    if data is None:
        data = text.encode("utf-8", "surrogatepass")
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")  # escaped backslashes, then escaped quotes
    # two quotes side by side close and open (or open and close) a string: dropping them changes
    # no other character's side, so only the few strings that hold brackets need the regex
    brackets = data.translate(None, _NOT_A_BRACKET_OR_QUOTE).replace(b'""', b"")
    if b'"' in brackets:
        brackets = _STRINGS.sub(b"", brackets)
    for _ in range(limits.max_depth):
        peeled = _INNERMOST_PAIRS.sub(b"", brackets)
        if not peeled or peeled == brackets:  # empty: within the limit; unchanged: not brackets JSON nests
            return False if not peeled else nesting_depth(text) > limits.max_depth
        brackets = peeled
    return True  # still brackets left after max_depth levels were peeled


_NOT_A_BRACKET_OR_QUOTE = bytes(b for b in range(256) if b not in b'[]{}"')
_STRINGS = re.compile(rb'"[^"]*"')
_INNERMOST_PAIRS = re.compile(rb"\[\]|\{\}")


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting outside strings: linear, no recursion, no parse."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ArgumentsRejected(f"{name} is not a JSON number: send a finite number (or null)")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ArgumentsRejected(f"the key {excerpt(key, 80)} appears twice in one object: send each key once")
        result[key] = value
    return result
