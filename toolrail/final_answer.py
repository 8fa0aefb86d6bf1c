"""Strict final answers: the answer as a typed object, not prose to parse.

`build_graph(response_format=MyModel)` (a Pydantic model) or a JSON Schema (`--response-schema
FILE.json`) compiles into the same strict schema and validator tools use. The provider is asked
for structured output where it has it (OpenAI's `response_format` with `strict: true`); every
provider is told the schema in the system prompt; and toolrail validates the answer itself,
always. An invalid answer goes back to the model with the exact errors (field path, expected,
got) within the run's retry budget; a valid one is stored in state as `structured_response`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from toolrail.tools.registry import FieldError, InvalidToolCall, Tool, make_tool

_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL)


class _NeverRuns:
    async def ainvoke(self, fields: dict[str, Any]) -> Any:
        raise RuntimeError("a response format is validated, never run")


class ResponseFormat:
    """What the final answer must be: a strict schema and the validator that enforces it."""

    def __init__(self, schema: type[BaseModel] | dict[str, Any], name: str | None = None):
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            self.tool: Tool = make_tool(name=name or schema.__name__, description=(schema.__doc__ or "").strip(),
                                        args_model=schema, runnable=_NeverRuns(), strict=True)
        elif isinstance(schema, dict):
            from toolrail.tools.json_schema import tool_from_json_schema

            body = schema.get("schema", schema) if "schema" in schema else schema
            title = name or schema.get("name") or body.get("title") or "final_answer"
            if body.get("type") not in ("object", "dict") or not isinstance(body.get("properties"), dict):
                raise ValueError("a response schema must be a JSON object schema with \"properties\"")
            self.tool = tool_from_json_schema(
                {"name": str(title), "description": body.get("description", ""), "parameters": body},
                implementation=_NeverRuns(), strict=True,
            )
        else:
            raise TypeError(f"response_format must be a Pydantic model class or a JSON Schema dict, got {schema!r}")
        self.name = self.tool.wire_name or self.tool.name

    @property
    def schema(self) -> dict[str, Any]:
        return self.tool.parameters

    def openai_response_format(self) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": {"name": self.name, "schema": self.schema, "strict": True}}

    def bind(self, bound: Any, model: BaseChatModel, tools: Any = ()) -> Any:
        """Ask the provider for structured output where it has it (OpenAI's strict `response_format`).

        OpenAI accepts `response_format` beside tools only when every tool is strict; with a
        non-strict tool in the registry the schema goes in the prompt alone (validation is the same).
        """
        from toolrail.providers import provider_of
        from toolrail.recorded import RecordedChatModel

        if provider_of(model) == "openai" and not isinstance(model, RecordedChatModel) and all(t.strict for t in tools):
            return bound.bind(response_format=self.openai_response_format())
        return bound

    def instructions(self) -> str:
        return (
            "When you give your final answer (no more tool calls), reply with only one JSON object, no prose and "
            f"no code fences, matching this JSON Schema exactly:\n{json.dumps(self.schema, separators=(',', ':'))}"
        )

    def check(self, text: str) -> dict[str, Any]:
        """The validated answer as JSON data; raises InvalidToolCall with every problem found."""
        stripped = text.strip()
        fenced = _FENCE.match(stripped)
        if fenced:  # models outside OpenAI's strict mode often fence JSON: tolerated, nothing else is
            stripped = fenced.group(1).strip()
        if not stripped:
            raise InvalidToolCall(self.name, [FieldError("answer", "is empty; expected a JSON object", kind="json")])
        return self.tool.validate(stripped).model_dump(mode="json", by_alias=True)


def rejected_answer_feedback(error: InvalidToolCall) -> str:
    lines = "\n".join(e.render() for e in error.errors)
    return (
        "Your final answer was rejected: it must be one JSON object matching the response schema. "
        f"Fix these and reply again with only the JSON object:\n{lines}"
    )
