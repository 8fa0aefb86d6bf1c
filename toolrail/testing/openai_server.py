"""A real HTTP server speaking OpenAI chat-completions, replaying scripted replies.

Tests and benchmarks point the real `ChatOpenAI` client at it (127.0.0.1, a free port), so
what they prove holds over the actual wire: request bodies, SSE streaming, parallel
`tool_calls`, argument fragments arriving over time, and HTTP errors — and the misbehaviour of
real endpoints: calls without ids (`omit_ids`) or with one id repeated (script the same `id`),
endless streams, stalls, keep-alive comment trickles, huge or deep or non-finite arguments
(arguments are sent as raw text).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ScriptedCall:
    name: str
    arguments: str  # raw text, sent as-is: broken JSON stays broken
    id: str | None = None
    gap_before_s: float = 0.0  # streaming: pause before this call's first fragment


@dataclass
class ScriptedReply:
    content: str = ""
    tool_calls: list[ScriptedCall] = field(default_factory=list)
    fragment_size: int = 16
    fragment_delay_s: float = 0.0  # streaming: pause between argument fragments
    delay_s: float = 0.0  # before any byte of the response
    tail_delay_s: float = 0.0  # streaming: pause after the last call, before the stream ends
    http_status: int = 200
    fail_mid_stream: bool = False  # streaming: drop the connection after the calls
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"Retry-After": "1"} on a 429
    usage: tuple[int, int] = (10, 10)  # (input, output) tokens the server reports
    omit_ids: bool = False  # send tool calls without an `id`, as several OpenAI-compatible servers do
    endless: bool = False  # streaming: after the calls, send content tokens until the client hangs up
    keepalive_s: float = 0.0  # streaming: first send SSE `: keep-alive` comments for this long
    line_end: str = "\n"  # streaming: how SSE lines end ("\r\n" is allowed by the SSE spec too)
    error_mid_stream: str | None = None  # streaming: after the calls, an error payload (`data: {"error": ...}`)
    write_size: int = 0  # streaming: > 0 re-cuts the SSE bytes into HTTP chunks of this size (each its own read at the client)
    obfuscation: bool = False  # streaming: every chunk carries a random `obfuscation` string, as OpenAI's API adds
    gzip: bool = False  # streaming: the SSE bytes are sent gzip-coded (`Content-Encoding: gzip`), flushed frame by frame


def call(name: str, arguments: dict | str, **kw: Any) -> ScriptedCall:
    return ScriptedCall(name=name, arguments=arguments if isinstance(arguments, str) else json.dumps(arguments), **kw)


def answer(text: str) -> ScriptedReply:
    return ScriptedReply(content=text)


def calls(*scripted: ScriptedCall, **kw: Any) -> ScriptedReply:
    return ScriptedReply(tool_calls=list(scripted), **kw)


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 512  # the listen backlog: load tests open hundreds of connections at once
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients killed on purpose (crash tests) reset their connections: not an error here."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class OpenAICompatibleServer:
    """`with OpenAICompatibleServer([reply, ...]) as server:` then use `server.base_url`."""

    route = "/chat/completions"

    def __init__(self, replies: list[ScriptedReply] | Callable[[dict], ScriptedReply] | None = None):
        self._script = replies if callable(replies) else list(replies or [])
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.stream_ended_at: list[float] = []
        self.peers: list[tuple[str, int]] = []  # each request's client address: one per connection the client kept
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, *replies: ScriptedReply) -> None:
        with self._lock:
            self._script.extend(replies)

    def __enter__(self) -> "OpenAICompatibleServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_reply(self, body: dict) -> ScriptedReply | None:
        with self._lock:
            self.requests.append(body)
            if callable(self._script):
                return self._script(body)
            return self._script.pop(0) if self._script else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    return self._json(400, {"error": {"message": "request body is not JSON"}})
                if not self.path.split("?")[0].endswith(server.route):
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                server.peers.append(self.client_address)
                reply = server._next_reply(body)
                if reply is None:
                    return self._json(500, server.error_body(500, "the script has no more replies"))
                time.sleep(reply.delay_s)
                if reply.http_status != 200:
                    return self._json(reply.http_status, server.error_body(reply.http_status, "scripted error"), reply.headers)
                if body.get("stream"):
                    return self._stream(server.sse_frames(body, reply), reply)
                self._json(200, server.completion(body, reply))

            def _json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, frames: Iterator[tuple[str | None, float]], reply: ScriptedReply | None = None) -> None:
                size = reply.write_size if reply is not None else 0
                coder = zlib.compressobj(wbits=31) if reply is not None and reply.gzip else None
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                if coder is not None:
                    self.send_header("Content-Encoding", "gzip")
                self.end_headers()
                pending = b""  # with `write_size`: bytes not yet sent in a chunk of that size

                def send(data: bytes) -> None:
                    nonlocal pending
                    if not data:  # an empty chunk would end the body
                        return
                    if not size:
                        return self._chunk(data)
                    pending += data
                    while len(pending) >= size:
                        self._chunk(pending[:size])
                        pending = pending[size:]

                try:
                    for frame, pause in frames:
                        if pause and pending:
                            self._chunk(pending)
                            pending = b""
                        time.sleep(pause)
                        if frame is None:  # scripted connection drop, mid-body
                            self.wfile.flush()
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        data = frame.encode()
                        send(data if coder is None else coder.compress(data) + coder.flush(zlib.Z_SYNC_FLUSH))
                    if coder is not None:
                        send(coder.flush())
                    if pending:
                        self._chunk(pending)
                    self._chunk(b"")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away mid-stream (tests kill clients on purpose)
                finally:
                    server.stream_ended_at.append(time.perf_counter())

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return Handler

    # --- the wire format; the Anthropic server overrides these three ---

    def error_body(self, status: int, message: str) -> dict:
        return {"error": {"message": message, "type": "script_exhausted" if status == 500 and "script" in message else "server_error"}}

    def completion(self, body: dict, reply: ScriptedReply) -> dict:
        return _completion(body, reply)

    def sse_frames(self, body: dict, reply: ScriptedReply) -> Iterator[tuple[str | None, float]]:
        for _ in range(int(reply.keepalive_s / 0.05)):  # comments only: no data chunk at all
            yield ": keep-alive\n\n", 0.05
        end = reply.line_end
        for event, pause in _sse_events(body, reply):
            yield (None if event is None else f"data: {event}{end}{end}"), pause
        if not reply.fail_mid_stream:
            yield f"data: [DONE]{end}{end}", 0.0


def _ids(reply: ScriptedReply) -> list[str | None]:
    if reply.omit_ids:
        return [None] * len(reply.tool_calls)
    return [c.id or f"call_{uuid.uuid4().hex[:12]}" for c in reply.tool_calls]


def _without_missing_id(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if not (k == "id" and v is None)}


def _completion(body: dict, reply: ScriptedReply) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            _without_missing_id({"id": cid, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})
            for cid, c in zip(_ids(reply), reply.tool_calls)
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
        "usage": _usage(reply),
    }


def _usage(reply: ScriptedReply) -> dict:
    prompt, completion = reply.usage
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse_events(body: dict, reply: ScriptedReply) -> Iterator[tuple[str | None, float]]:
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body.get("model", "scripted")}

    def chunk(delta: dict, finish: str | None = None) -> str:
        extra = {"obfuscation": uuid.uuid4().hex[: 1 + len(delta) * 7 % 16]} if reply.obfuscation else {}
        return json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    yield chunk({"role": "assistant", "content": ""}), 0.0
    for word in re.findall(r"\S*\s*", reply.content or "")[:-1]:  # word by word, exactly the content
        yield chunk({"content": word}), reply.fragment_delay_s
    for index, (cid, c) in enumerate(zip(_ids(reply), reply.tool_calls)):
        head = _without_missing_id({"index": index, "id": cid, "type": "function", "function": {"name": c.name, "arguments": ""}})
        yield chunk({"tool_calls": [head]}), c.gap_before_s
        size = max(1, reply.fragment_size)
        for start in range(0, len(c.arguments), size):
            piece = c.arguments[start : start + size]
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}), reply.fragment_delay_s
    if reply.fail_mid_stream:
        yield None, reply.tail_delay_s
        return
    if reply.error_mid_stream:
        yield json.dumps({"error": {"message": reply.error_mid_stream, "type": "server_error"}}), reply.tail_delay_s
        return
    while reply.endless:
        yield chunk({"content": "more "}), max(reply.fragment_delay_s, 0.005)
    yield chunk({}, "tool_calls" if reply.tool_calls else "stop"), reply.tail_delay_s
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {**base, "choices": [], "usage": _usage(reply)}
        yield json.dumps(usage), 0.0
