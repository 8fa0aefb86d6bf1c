"""Validation cost of a tool defined by JSON Schema (as an MCP server sends it).

toolrail compiles the schema to a Pydantic model once and validates every call with it; the
alternatives validate the same call against the schema itself: `jsonschema` (pure Python) and
`jsonschema-rs` (Rust), when installed. Each side validates the same raw arguments text, JSON
parsing included, in one run, interleaved, so the ratios compare like with like.
"""

from __future__ import annotations

import json
import time
from typing import Any

# What an MCP server built on Pydantic lists: $defs/$ref, anyOf unions, optional and defaulted fields.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "Filters": {"type": "object", "properties": {
            "genre": {"anyOf": [{"enum": ["sf", "novel"], "type": "string"}, {"type": "null"}], "default": None},
            "after_year": {"anyOf": [{"minimum": 0, "type": "integer"}, {"type": "null"}], "default": None}}},
    },
    "properties": {
        "query": {"type": "string", "minLength": 1},
        "filters": {"anyOf": [{"$ref": "#/$defs/Filters"}, {"type": "null"}], "default": None},
        "limit": {"type": "integer", "default": 5, "minimum": 1, "maximum": 50},
        "mode": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    },
    "required": ["query", "mode"],
}
CALL = json.dumps({"query": "dune", "filters": {"genre": "sf", "after_year": 1960}, "limit": 3, "mode": "fast"})


def bench_json_schema_validation(n: int = 20000) -> dict[str, float]:
    import jsonschema

    from toolrail.tools.json_schema import tool_from_json_schema

    tool = tool_from_json_schema({"name": "find_books", "parameters": SCHEMA})
    python_validator = jsonschema.Draft202012Validator(SCHEMA)
    sides = {"toolrail": lambda: tool.validate(CALL), "jsonschema": lambda: python_validator.validate(json.loads(CALL))}
    try:
        import jsonschema_rs

        rust_validator = jsonschema_rs.Draft202012Validator(SCHEMA)
        sides["jsonschema_rs"] = lambda: rust_validator.validate(json.loads(CALL))
    except ImportError:
        pass
    timings = {name: float("inf") for name in sides}
    for _ in range(2):  # interleaved rounds; the best round of each side counts
        for name, fn in sides.items():
            start = time.perf_counter()
            for _ in range(n):
                fn()
            timings[name] = min(timings[name], (time.perf_counter() - start) / n)
    figures = {f"{name}_us": seconds * 1e6 for name, seconds in timings.items()}
    figures["toolrail_over_jsonschema"] = timings["toolrail"] / timings["jsonschema"]
    if "jsonschema_rs" in timings:
        figures["toolrail_over_jsonschema_rs"] = timings["toolrail"] / timings["jsonschema_rs"]
    return figures
