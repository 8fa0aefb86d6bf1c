"""Tool calls as the model really sent them.

langchain-core parses streamed arguments with a *partial* JSON parser that quietly closes
truncated JSON (`{"city": "NY` becomes `{"city": "NY"}`). A validator must see the raw text,
so toolrail assembles each call's raw argument string from the stream itself and only then
builds the message it keeps in history.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import add_ai_message_chunks

from toolrail.arguments import DEFAULT_LIMITS, ArgumentLimits, ArgumentsRejected, excerpt, parse_arguments
from toolrail.state import RawCall


def raw_calls(message: BaseMessage) -> list[RawCall]:
    """Every tool call of an assistant message, arguments as raw text, in order."""
    if isinstance(message, AIMessageChunk) and message.tool_call_chunks:
        return _from_chunks(message.tool_call_chunks)
    openai_calls = message.additional_kwargs.get("tool_calls") if isinstance(message, AIMessage) else None
    if openai_calls:
        return [
            as_raw_call(c.get("id"), c.get("function", {}).get("name"), c.get("function", {}).get("arguments"), i)
            for i, c in enumerate(openai_calls)
        ]
    if not isinstance(message, AIMessage):
        return []
    parsed = [as_raw_call(c.get("id"), c["name"], json.dumps(c["args"]), i) for i, c in enumerate(message.tool_calls)]
    broken = [
        as_raw_call(c.get("id"), c.get("name"), c.get("args"), len(parsed) + i)
        for i, c in enumerate(message.invalid_tool_calls)
    ]
    return parsed + broken


def add_fragment(calls: dict[Any, dict[str, str]], fragment: dict[str, Any], position: int = 0) -> Any:
    """Append one streamed tool-call fragment to the call it belongs to; returns that call's key."""
    key = fragment.get("index", position)
    entry = calls.setdefault(key, {"id": "", "name": "", "arguments": ""})
    entry["id"] = entry["id"] or (fragment.get("id") or "")
    entry["name"] += fragment.get("name") or ""
    entry["arguments"] += fragment.get("args") or ""
    return key


def _from_chunks(chunks: list[dict[str, Any]]) -> list[RawCall]:
    by_index: dict[Any, dict[str, str]] = {}
    for position, chunk in enumerate(chunks):
        add_fragment(by_index, chunk, position)
    return [as_raw_call(e["id"], e["name"], e["arguments"], i) for i, e in enumerate(by_index.values())]


def as_raw_call(call_id: str | None, name: str | None, arguments: Any, position: int) -> RawCall:
    """A RawCall; a call without an id gets one from `CallIds.assign` (see there)."""
    if arguments is not None and not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return RawCall(id=call_id or "", name=name or "", arguments=arguments or "")


def wire_id(call: dict[str, Any]) -> str:
    """The id the model knows the call by (its own, when it sent a usable one)."""
    return call.get("wire_id") or call["id"]


class CallIds:
    """Run-unique call ids, whatever the provider sends.

    Several OpenAI-compatible servers send no ids (or `call_0`, `call_1` in every turn), and some
    repeat one id within a turn. Results, speculation and the side-effect ledger are keyed by
    call id, so a repeated id would hand one call another's result. A call keeps the provider's
    id when it is new to the thread; otherwise toolrail gives it a fresh one. The provider's id
    stays what the model sees (`wire_id`) unless it is repeated within the turn, where the model
    could not tell the calls apart either.
    """

    def __init__(self, used: Iterable[str] = ()):
        self.used = set(used)
        self._by_position: dict[int, tuple[str, str]] = {}
        self._wire_in_turn: set[str] = set()

    def assign(self, call: RawCall, position: int) -> RawCall:
        if position not in self._by_position:
            provided = call["id"]
            unique = provided if provided and provided not in self.used else f"call_tr_{uuid.uuid4().hex[:16]}"
            wire = provided if provided and provided not in self._wire_in_turn else unique
            self.used.add(unique)
            self._wire_in_turn.add(wire)
            self._by_position[position] = (unique, wire)
        unique, wire = self._by_position[position]
        assigned = RawCall(id=unique, name=call["name"], arguments=call["arguments"])
        if wire != unique:
            assigned["wire_id"] = wire
        return assigned


def ids_in_thread(state: dict[str, Any]) -> set[str]:
    """Every call id the thread has used: toolrail's (verdicts) and the wire's (history)."""
    used = {v["id"] for v in state.get("verdicts") or []}
    for message in state.get("messages") or []:
        if getattr(message, "type", None) != "ai":  # only the model's messages carry calls (and getattr's miss is slow)
            continue
        for call in [*getattr(message, "tool_calls", []), *getattr(message, "invalid_tool_calls", [])]:
            if call.get("id"):
                used.add(call["id"])
    return used


def history_message(message: BaseMessage, calls: list[RawCall], limits: ArgumentLimits = DEFAULT_LIMITS) -> AIMessage:
    """The assistant message kept in state: valid JSON as `tool_calls`, the rest as invalid.

    Broken arguments stay broken in history (as `invalid_tool_calls`), so the model is shown
    exactly what it sent next to the error it caused — cut to an excerpt when over the size limit.
    """
    tool_calls, invalid = [], []
    for call in calls:
        try:
            args = parse_arguments(call["arguments"] or "{}", limits)
            if not isinstance(args, dict):
                raise ArgumentsRejected("arguments are not a JSON object")
            tool_calls.append({"id": wire_id(call), "name": call["name"], "args": args, "type": "tool_call"})
        except ArgumentsRejected as exc:
            text = call["arguments"] if len(call["arguments"]) <= limits.max_bytes else excerpt(call["arguments"])
            invalid.append(
                {"id": wire_id(call), "name": call["name"], "args": text, "error": str(exc), "type": "invalid_tool_call"}
            )
    return AIMessage(
        content=message.content,
        id=message.id,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
        response_metadata=getattr(message, "response_metadata", {}) or {},
        usage_metadata=getattr(message, "usage_metadata", None),
    )


def merge_chunks(chunks: list[BaseMessage]) -> BaseMessage:
    """All chunks merged in O(N): `a + b` per chunk copies the growing reply each time, and
    langchain's list merge looks up every tool-call fragment's index in the list merged so far
    (both O(N²) in the number of calls). Fragments are assembled per call here, in one pass, and
    only the chunks that carry text or metadata go through langchain's merge."""
    if len(chunks) == 1 or not all(isinstance(c, AIMessageChunk) for c in chunks):
        reply = chunks[0]
        for chunk in chunks[1:]:
            reply = reply + chunk
        return reply
    calls: dict[Any, dict[str, str]] = {}
    rest: list[AIMessageChunk] = []
    for i, chunk in enumerate(chunks):
        fragments = chunk.tool_call_chunks
        for fragment in fragments:
            add_fragment(calls, fragment, len(calls))
        if i == 0 or chunk.content or chunk.additional_kwargs or chunk.response_metadata or chunk.usage_metadata:
            rest.append(chunk.model_copy(update={"tool_call_chunks": []}) if fragments else chunk)
    merged = add_ai_message_chunks(rest[0], *rest[1:]) if len(rest) > 1 else rest[0]
    tool_call_chunks = [
        {"name": e["name"] or None, "args": e["arguments"], "id": e["id"] or None,
         "index": key if isinstance(key, int) else position, "type": "tool_call_chunk"}
        for position, (key, e) in enumerate(calls.items())
    ]
    return AIMessageChunk(content=merged.content, additional_kwargs=merged.additional_kwargs,
                          response_metadata=merged.response_metadata, usage_metadata=merged.usage_metadata,
                          id=merged.id, tool_call_chunks=tool_call_chunks)
