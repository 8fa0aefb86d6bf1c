"""A real HTTP server speaking Anthropic's Messages API, replaying scripted replies.

The Anthropic path is tested the way the OpenAI path is: the real `ChatAnthropic` client
(langchain-anthropic over the official SDK) points its base URL at this server. Streamed
replies carry each tool call as a `tool_use` content block whose arguments arrive as
`input_json_delta` fragments, several blocks in one reply; `stream: false` gets one JSON
message. Errors use Anthropic's error envelope (`rate_limit_error`, `overloaded_error`, ...).

The script is the same `ScriptedReply` list the OpenAI server takes.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

from toolrail.testing.openai_server import OpenAICompatibleServer, ScriptedReply

ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}


class AnthropicMessagesServer(OpenAICompatibleServer):
    """`with AnthropicMessagesServer([reply, ...]) as server:` then `ChatAnthropic(base_url=server.base_url)`."""

    route = "/v1/messages"

    @property
    def base_url(self) -> str:
        # The SDK appends /v1/messages itself.
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def error_body(self, status: int, message: str) -> dict:
        return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}

    def completion(self, body: dict, reply: ScriptedReply) -> dict:
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.content}] if reply.content else []
        for cid, scripted in zip(_ids(reply), reply.tool_calls):
            content.append({"type": "tool_use", "id": cid, "name": scripted.name, "input": _as_object(scripted.arguments)})
        return {
            "id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant",
            "model": body.get("model", "scripted"), "content": content,
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": reply.usage[0], "output_tokens": reply.usage[1]},
        }

    def sse_frames(self, body: dict, reply: ScriptedReply) -> Iterator[tuple[str | None, float]]:
        def frame(kind: str, data: dict) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        message = {
            "id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant", "content": [],
            "model": body.get("model", "scripted"), "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": reply.usage[0], "output_tokens": 1},
        }
        yield frame("message_start", {"message": message}), 0.0
        yield frame("ping", {}), 0.0
        index = 0
        if reply.content:
            yield frame("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}), 0.0
            for word in re.findall(r"\S*\s*", reply.content)[:-1]:
                delta = {"type": "text_delta", "text": word}
                yield frame("content_block_delta", {"index": index, "delta": delta}), reply.fragment_delay_s
            yield frame("content_block_stop", {"index": index}), 0.0
            index += 1
        for cid, scripted in zip(_ids(reply), reply.tool_calls):
            block = {"type": "tool_use", "id": cid, "name": scripted.name, "input": {}}
            yield frame("content_block_start", {"index": index, "content_block": block}), scripted.gap_before_s
            size = max(1, reply.fragment_size)
            for start in range(0, len(scripted.arguments), size):
                delta = {"type": "input_json_delta", "partial_json": scripted.arguments[start : start + size]}
                yield frame("content_block_delta", {"index": index, "delta": delta}), reply.fragment_delay_s
            yield frame("content_block_stop", {"index": index}), 0.0
            index += 1
        if reply.fail_mid_stream:
            yield None, reply.tail_delay_s
            return
        stop = {"stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None}
        # Today's API repeats the cumulative usage here, input tokens included.
        usage = {"input_tokens": reply.usage[0], "output_tokens": reply.usage[1]}
        yield frame("message_delta", {"delta": stop, "usage": usage}), reply.tail_delay_s
        yield frame("message_stop", {}), 0.0


def _ids(reply: ScriptedReply) -> list[str]:
    return [c.id or f"toolu_{uuid.uuid4().hex[:20]}" for c in reply.tool_calls]


def _as_object(arguments: str) -> dict[str, Any]:
    """A non-streamed `tool_use.input` is always an object on the real API."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
