"""Reading a streamed reply in O(N) with a small constant per chunk.

A reply of 1,000 tool calls streams as ~7,000 chunks, so whatever is done per chunk is paid
7,000 times. Here each chunk costs a few dictionary look-ups:

- argument text is appended to a per-call list and joined once (`"".join`), never re-copied;
- a call's arguments are known to be complete when its JSON object closes — found by scanning
  only the new text, and only when a fragment holds a `}` — or when the next call begins;
- the reply's limits (first chunk, gap between chunks, whole reply, run deadline) share one
  timer that is re-armed only when it fires, not at every chunk;
- only chunks that carry text or new metadata are kept for langchain's merge; the tool calls
  are assembled from the fragments above (`CallWatcher.reply`);
- with a `ChatOpenAI` model and nothing listening to callbacks, the OpenAI SDK hands over the
  chunks as plain dicts (`AsyncStream[object]`: no pydantic object per chunk) and a chunk that
  is only argument text goes straight to the watcher; every other chunk (the first, text,
  finish reason, usage) goes through langchain-openai's own conversion, so the reply's text and
  metadata are exactly what `ChatOpenAI._astream` gives.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.runnables import RunnableBinding, RunnableConfig

from toolrail.calls import CallIds, as_raw_call, merge_chunks
from toolrail.limits import RunLimits, seconds_left
from toolrail.state import RawCall

_JSON_TOKENS = re.compile(r'[{}"\\]')

try:  # langsmith's dependency; several times faster than json for the ~7,000 small chunks of a reply
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads


class _Call:
    """One call being assembled from its fragments."""

    __slots__ = ("key", "id", "name", "pieces", "size", "position", "done", "scanned", "depth", "in_string", "escaped")

    def __init__(self, key: Any, position: int):
        self.key, self.position = key, position
        self.id, self.name = "", ""
        self.pieces: list[str] = []
        self.size = 0
        self.done = False
        self.scanned = 0  # pieces already scanned for the object's closing brace
        self.depth, self.in_string, self.escaped = 0, False, False

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)

    def closed(self) -> bool:
        """Did the arguments' JSON object just close? Scans only the text not scanned yet
        (strings and escapes tracked across fragments), so a call costs O(its length)."""
        text = "".join(self.pieces[self.scanned:])
        self.scanned = len(self.pieces)
        depth, in_string, skip = self.depth, self.in_string, 0 if self.escaped else -1
        closed = False
        for match in _JSON_TOKENS.finditer(text):
            at = match.start()
            if at == skip:
                continue
            char = text[at]
            if in_string:
                if char == "\\":
                    skip = at + 1
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char == "{":
                depth += 1
                closed = False
            elif char == "}":
                depth -= 1
                closed = depth == 0
        self.depth, self.in_string, self.escaped = depth, in_string, skip == len(text)
        if not closed:
            return False
        try:  # nothing may follow the closing brace, and it must be an object
            return isinstance(json.loads(self.arguments), dict)
        except (ValueError, RecursionError):
            return False


class CallWatcher:
    """Watches a reply's streamed chunks: assembles each tool call's raw text and reports each
    call once its arguments close (`on_complete`, for speculative starts), and keeps what the
    reply's final message needs.

    A call is complete when its accumulated arguments parse as a JSON object (nothing can
    legally follow the closing brace) or when the next call's first fragment arrives. It also
    says when the stream must be cut: more calls than a turn may have, or arguments past the
    size limit (the rest of such a reply is never read).
    """

    def __init__(self, on_complete: Callable[[RawCall], None] | None, ids: CallIds | None = None,
                 limits: RunLimits | None = None):
        self.on_complete, self.ids, self.limits = on_complete, ids or CallIds(), limits or RunLimits()
        self.calls: dict[Any, _Call] = {}
        self.open: dict[Any, None] = {}  # calls not yet complete, in order (usually one)
        self.current: Any = object()  # the key of the latest fragment's call
        self.too_many = self.too_big = False
        self._max_calls, self._max_bytes = self.limits.max_calls_per_turn, self.limits.arguments.max_bytes
        self.kept: list[BaseMessage] = []  # chunks with text or metadata, for the final message
        self._seen_metadata: dict[str, Any] = {}
        self._first_id: Any = None

    @property
    def stop(self) -> bool:
        return self.too_many or self.too_big

    # --- fragments in ------------------------------------------------------------------------

    def feed(self, message: BaseMessage) -> None:
        """One chunk as langchain streams it (an `AIMessageChunk` with `tool_call_chunks`)."""
        fragments = getattr(message, "tool_call_chunks", None)
        if fragments:
            for fragment in fragments:
                key, args = fragment.get("index", 0), fragment.get("args")
                call = self.calls.get(key) if key == self.current else None
                if call is not None and args and not fragment.get("name") and not fragment.get("id"):
                    call.pieces.append(args)  # the usual fragment: more text for the call being streamed
                    call.size += len(args)
                    if call.size > self._max_bytes:
                        self.too_big = True
                        return
                    if "}" in args and not call.done and self.on_complete is not None and call.closed():
                        self._complete(call)
                    continue
                self.add(key, fragment.get("id"), fragment.get("name"), args)
                if self.too_many or self.too_big:
                    return
        if not self.kept or not isinstance(message, AIMessageChunk) or not isinstance(self.kept[0], AIMessageChunk):
            if not self.kept:
                self._first_id = message.id
            self.kept.append(message)
        elif self._carries_more(message):
            self.kept.append(message)

    def feed_openai(self, deltas: list[dict[str, Any]]) -> None:
        """The `tool_calls` of one OpenAI chunk's delta, as the SDK parsed them (dicts)."""
        for delta in deltas:
            function = delta.get("function") or {}
            self.add(delta.get("index", 0), delta.get("id"), function.get("name"), function.get("arguments"))
            if self.too_many or self.too_big:
                return

    def add(self, key: Any, call_id: str | None, name: str | None, args: str | None) -> None:
        call = self.calls.get(key)
        if key != self.current or call is None:
            for earlier in [k for k in self.open if k != key]:
                self._complete(self.calls[earlier])
            self.current = key
            if call is None:
                call = self.calls[key] = _Call(key, len(self.calls))
                if len(self.calls) > self._max_calls:
                    self.too_many = True
                    return
            if not call.done:
                self.open[key] = None
        if call_id and not call.id:
            call.id = call_id
        if name:
            call.name += name
        if args:
            call.pieces.append(args)
            call.size += len(args)
            if call.size > self._max_bytes:
                self.too_big = True  # validation refuses the call; the rest of the reply is not read
                return
            if "}" in args and not call.done and self.on_complete is not None and call.closed():
                self._complete(call)

    # --- out ---------------------------------------------------------------------------------

    def raw_calls(self) -> list[RawCall]:
        return [as_raw_call(c.id, c.name, c.arguments, i) for i, c in enumerate(self.calls.values())]

    def reply(self) -> BaseMessage:
        """The reply as one message, as merging every chunk would give it, in O(N): the kept
        chunks are merged by langchain (without their fragments), the calls come from `calls`."""
        kept = self.kept
        if not all(isinstance(m, AIMessageChunk) for m in kept):
            return merge_chunks(kept)
        bare = [_without_fragments(m) for m in kept]
        merged = add_ai_message_chunks(bare[0], *bare[1:]) if len(bare) > 1 else bare[0]
        if not self.calls:
            return merged
        tool_call_chunks = [
            {"name": c.name or None, "args": c.arguments, "id": c.id or None,
             "index": c.key if isinstance(c.key, int) else c.position, "type": "tool_call_chunk"}
            for c in self.calls.values()
        ]
        return AIMessageChunk(content=merged.content, additional_kwargs=merged.additional_kwargs,
                              response_metadata=merged.response_metadata, usage_metadata=merged.usage_metadata,
                              id=merged.id, tool_call_chunks=tool_call_chunks)

    def _carries_more(self, message: AIMessageChunk) -> bool:
        """Does this chunk add anything but tool-call fragments? (Every ChatOpenAI chunk repeats
        `model_provider`; the raw `tool_calls` in `additional_kwargs` are what `calls` holds.)"""
        if message.content or message.usage_metadata or (message.id and message.id != self._first_id):
            return True
        extra = message.additional_kwargs
        if extra and (len(extra) > 1 or "tool_calls" not in extra):
            return True
        metadata, seen = message.response_metadata, self._seen_metadata
        if metadata:
            for key, value in metadata.items():
                if key not in seen or seen[key] != value:
                    seen.update(metadata)
                    return True
        return False

    def _complete(self, call: _Call) -> None:
        call.done = True
        self.open.pop(call.key, None)
        if self.on_complete is not None:
            self.on_complete(self.ids.assign(as_raw_call(call.id, call.name, call.arguments, call.position), call.position))


def _without_fragments(message: AIMessageChunk) -> AIMessageChunk:
    if not message.tool_call_chunks and "tool_calls" not in message.additional_kwargs:
        return message
    extra = {k: v for k, v in message.additional_kwargs.items() if k != "tool_calls"}
    return message.model_copy(update={"tool_call_chunks": [], "tool_calls": [], "invalid_tool_calls": [], "additional_kwargs": extra})


# --- the reply's limits ------------------------------------------------------------------------


class ModelTimedOut(Exception):
    """The reply did not arrive within one of the model limits (or the run's deadline)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class StreamGuard:
    """One timer for all of a reply's limits: the first chunk's, the gap between chunks, the
    whole reply's and the run's deadline. A chunk only notes its time (`last`); the timer, when
    it fires, works out the nearest limit from there and either re-arms for it or cancels the
    stream — so the limits cost nothing per chunk. Keep-alive comments are not chunks."""

    def __init__(self, limits: RunLimits, run_deadline: float | None):
        self.loop = asyncio.get_running_loop()
        start = self.loop.time()
        self.last: float | None = None  # loop time of the latest chunk
        self.gap = limits.chunk_gap_timeout_s
        self.first = (start + limits.first_chunk_timeout_s, "model_timeout",
                      f"the model sent nothing for {limits.first_chunk_timeout_s:g}s (--model-first-chunk-timeout)")
        self.gap_why = f"the model's stream stalled for {self.gap:g}s between chunks (--model-chunk-timeout)"
        self.fixed = [
            (start + limits.reply_timeout_s, "model_timeout", f"the model's reply took longer than {limits.reply_timeout_s:g}s (--model-reply-timeout)"),
            (start + seconds_left(run_deadline), "deadline", "the run passed its deadline (--deadline) while the model was replying"),
        ]
        self.fired: tuple[str, str] | None = None
        self._handle: asyncio.TimerHandle | None = None

    def _nearest(self) -> tuple[float, str, str]:
        step = self.first if self.last is None else (self.last + self.gap, "model_timeout", self.gap_why)
        return min([step, *self.fixed], key=lambda limit: limit[0])

    def _arm(self) -> None:
        at, reason, why = self._nearest()
        if not math.isfinite(at):
            self._handle = None
        elif self.loop.time() + 1e-3 >= at:  # passed (within the loop's clock resolution)
            self._handle = None
            self.fired = (reason, why)
            self._task.cancel()
        else:
            self._handle = self.loop.call_at(at, self._arm)

    def first_chunk(self) -> None:
        """Re-arm once: the timer may sit at the first chunk's limit, beyond the gap's."""
        self.last = self.loop.time()
        if self._handle is not None:
            self._handle.cancel()
        self._arm()

    def error(self) -> ModelTimedOut:
        reason, why = self.fired or ("model_timeout", "the model's reply timed out")
        return ModelTimedOut(reason, why)

    async def __aenter__(self) -> "StreamGuard":
        task = asyncio.current_task()
        assert task is not None
        self._task, self._cancelling = task, task.cancelling()
        self._arm()
        return self

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self.fired is not None and self._task.cancelling() > self._cancelling:
            if self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
                raise self.error() from None


async def stream_reply(model: Any, prompt: list[BaseMessage], config: RunnableConfig, watcher: CallWatcher,
                       limits: RunLimits, run_deadline: float | None) -> BaseMessage:
    """Stream the reply (so calls start and text shows as they are generated) under the model
    limits; the watcher assembles it. The guard wraps the chunks however they come (the OpenAI
    SDK's dicts, the model's own `_astream`, or `astream` when something listens)."""
    chunks, generations = _chunks(model, prompt, config, watcher)
    got_any = False
    async with StreamGuard(limits, run_deadline) as guard:
        clock = guard.loop.time
        try:
            async for item in chunks:
                if item.__class__ is list:
                    watcher.feed_openai(item)
                elif generations:  # the model's own `_astream`: what `astream` would make of each
                    watcher.feed(_message_of(item))
                else:
                    watcher.feed(item)
                if watcher.too_many or watcher.too_big:
                    got_any = True
                    break
                if guard.fired is not None:  # it fired while chunks were buffered (or a layer below ate the cancel)
                    await asyncio.sleep(0)
                    raise guard.error()
                if got_any:
                    guard.last = clock()
                else:  # the first chunk: from here the gap's limit applies, often nearer than the first chunk's
                    got_any = True
                    guard.first_chunk()
        finally:
            await chunks.aclose()  # closes the HTTP response when a limit cuts the stream
    if not got_any:
        from toolrail.errors import ModelUnavailable

        raise ModelUnavailable("the model returned an empty stream")
    return watcher.reply()


def _message_of(generation: Any) -> BaseMessage:
    """A generation chunk's message, with its generation info moved into the message's metadata
    (as `astream` does)."""
    message = generation.message
    if generation.generation_info:
        message.response_metadata = {**generation.generation_info, **message.response_metadata}
    return message


def _chunks(model: Any, prompt: list[BaseMessage], config: RunnableConfig, watcher: CallWatcher) -> tuple[Any, bool]:
    """The reply's chunks, and whether they are generations (to unwrap). When nothing listens to
    callbacks (no tracing, no token streaming to a client), they come straight from the chat
    model's own `_astream` (or, for `ChatOpenAI`, from the OpenAI SDK as dicts). When something
    listens (LangSmith, `stream_mode="messages"`, `astream_events`), `_listened_chunks` gives it
    every chunk and the callbacks `astream` gives, but the reply it reports at the end is the
    watcher's: `BaseChatModel.astream` merges all chunks for `on_llm_end` with a list merge that
    is O(fragments × calls) — 1,000 streamed calls cost it ~1.5 s."""
    unbound = _unbind(model)
    if unbound is None:
        return model.astream(prompt, config), False
    chat, kwargs = unbound
    if chat.rate_limiter is None and not _listening():
        messages = chat._convert_input(prompt).to_messages()
        if _openai_fast_path(chat, kwargs):
            return _openai_chunks(chat, messages, kwargs), False
        return chat._astream(messages, **kwargs), True
    if isinstance(model, RunnableBinding) and (model.config or model.config_factories):
        return model.astream(prompt, config), False  # a bound config of its own: langchain merges it
    listened = _listened_chunks(chat, kwargs, prompt, config, watcher)
    return (model.astream(prompt, config), False) if listened is None else (listened, False)


def _listening() -> bool:
    from toolrail.tools.registry import _traced

    return _traced()


def _unbind(model: Any) -> tuple[BaseChatModel, dict[str, Any]] | None:
    """The chat model and its bound arguments, when its own `_astream` streams this reply."""
    chat, kwargs = (model.bound, dict(model.kwargs)) if isinstance(model, RunnableBinding) else (model, {})
    if not isinstance(chat, BaseChatModel) or type(chat)._astream is BaseChatModel._astream:
        return None
    if kwargs.get("ls_structured_output_format") or kwargs.get("structured_output_format"):
        return None
    if not chat._should_stream(async_api=True, **{**kwargs, "stream": True}):
        return None  # streaming disabled: astream falls back to one non-streamed reply
    return chat, kwargs


_ASTREAM_HELPERS = ("_filter_invocation_params_for_tracing", "_format_for_tracing", "_normalize_messages",
                    "_gen_info_and_msg_metadata", "_generate_response_from_error", "LC_ID_PREFIX")


def _listened_chunks(chat: BaseChatModel, kwargs: dict[str, Any], prompt: list[BaseMessage], config: RunnableConfig,
                     watcher: CallWatcher) -> AsyncIterator[BaseMessage] | None:
    """`BaseChatModel.astream`'s callbacks, chunk for chunk (`on_chat_model_start`, a token per
    chunk, the closing empty chunk, `on_llm_end` / `on_llm_error`), with the watcher's O(N) reply
    in `on_llm_end`. None when this langchain-core lacks a helper it needs, or the model is not
    plain (`output_version="v1"`): then `astream` itself is used."""
    from langchain_core.language_models import chat_models

    if getattr(chat, "output_version", None) == "v1" or not all(hasattr(chat_models, name) for name in _ASTREAM_HELPERS):
        return None
    lc = chat_models

    async def chunks() -> AsyncIterator[BaseMessage]:
        from langchain_core.callbacks import AsyncCallbackManager
        from langchain_core.outputs import ChatGenerationChunk, LLMResult
        from langchain_core.runnables.config import ensure_config

        settings = ensure_config(config)
        messages = chat._convert_input(prompt).to_messages()
        params = chat._get_invocation_params(stop=None, **kwargs)
        options = {"stop": None, **{key: params[key] for key in kwargs if key in params}}
        manager = AsyncCallbackManager.configure(
            settings.get("callbacks"), chat.callbacks, chat.verbose, settings.get("tags"), chat.tags,
            {**(settings.get("metadata") or {}), **chat._get_ls_params_with_defaults(stop=None, **kwargs)}, chat.metadata,
            langsmith_inheritable_metadata=lc._filter_invocation_params_for_tracing(params),
        )
        (run,) = await manager.on_chat_model_start(chat._serialized, [lc._format_for_tracing(messages)], invocation_params=params,
                                                   options=options, name=settings.get("run_name"),
                                                   run_id=settings.pop("run_id", None), batch_size=1)
        if chat.rate_limiter:
            await chat.rate_limiter.aacquire(blocking=True)
        message_id = "-".join((lc.LC_ID_PREFIX, str(run.run_id)))
        last = None
        try:
            normalized = lc._normalize_messages(messages)
            source = (_openai_chunks(chat, normalized, kwargs, every_chunk=True) if _openai_fast_path(chat, kwargs)
                      else chat._astream(normalized, **kwargs))
            try:
                async for chunk in source:
                    if chunk.message.id is None:
                        chunk.message.id = message_id
                    chunk.message.response_metadata = lc._gen_info_and_msg_metadata(chunk)
                    await run.on_llm_new_token(chunk.message.content, chunk=chunk)
                    last = chunk.message
                    yield chunk.message
            finally:
                await source.aclose()  # a limit that cuts the stream closes the HTTP response now
            if isinstance(last, AIMessageChunk) and not last.chunk_position:
                closing = AIMessageChunk(content="" if isinstance(last.content, str) else [], chunk_position="last", id=message_id)
                await run.on_llm_new_token("", chunk=ChatGenerationChunk(message=closing))
                yield closing
        except BaseException as exc:
            await run.on_llm_error(exc, response=LLMResult(generations=[lc._generate_response_from_error(exc)]))
            raise
        if last is None:
            error = ValueError("No generation chunks were returned")
            await run.on_llm_error(error, response=LLMResult(generations=[]))
            raise error
        await run.on_llm_end(LLMResult(generations=[[ChatGenerationChunk(message=watcher.reply())]]))

    return chunks()


def _openai_fast_path(chat: BaseChatModel, kwargs: dict[str, Any]) -> bool:
    """Only the plain Chat Completions stream of langchain-openai's own `ChatOpenAI._astream`
    (not the Responses API, structured output's beta stream, response headers or gateways)."""
    try:
        from langchain_openai import ChatOpenAI
        from langchain_openai.chat_models import base
    except ImportError:
        return False
    if type(chat)._astream is not ChatOpenAI._astream:
        return False
    # the private pieces of `_astream` this path reuses: a langchain-openai without any of them
    # takes langchain's own stream instead of failing mid-run
    if not all(hasattr(base, name) for name in ("_handle_openai_api_error", "_handle_openai_bad_request")) or not all(
            hasattr(chat, name) for name in ("_get_request_payload", "_convert_chunk_to_generation_chunk",
                                             "_should_stream_usage", "_use_responses_api", "model_kwargs")):
        return False
    if getattr(chat, "include_response_headers", False) or getattr(chat, "_uses_gateway", False):
        return False
    if getattr(chat, "n", None) not in (None, 1) or "response_format" in kwargs or "response_format" in chat.model_kwargs:
        return False
    return not chat._use_responses_api({**kwargs, **chat.model_kwargs})


async def _openai_chunks(chat: Any, messages: list[BaseMessage], kwargs: dict[str, Any], every_chunk: bool = False) -> AsyncIterator[Any]:
    """`BaseChatOpenAI._astream` without an object per chunk: the same request and error
    handling; a chunk that is only tool-call argument text is yielded as its raw `tool_calls`
    list; every other chunk becomes the message langchain-openai itself makes of it. With
    `every_chunk` (someone listens to each token), every chunk is yielded as langchain-openai's
    own `ChatGenerationChunk` — what `_astream` gives, without the SDK's object per chunk."""
    import openai
    from openai import AsyncStream
    from langchain_openai.chat_models import base

    kwargs = {**kwargs, "stream": True}
    stream_usage = chat._should_stream_usage(kwargs.pop("stream_usage", None), **kwargs)
    if stream_usage:
        kwargs["stream_options"] = {"include_usage": stream_usage}
    payload = chat._get_request_payload(messages, **kwargs)
    convert = chat._convert_chunk_to_generation_chunk
    try:
        raw = await chat.async_client.with_raw_response.create(**payload)
        stream = _SsePayloads(raw.http_response) if _SsePayloads.usable() else raw.parse(to=AsyncStream[object])
        try:
            first = True
            async for chunk in stream:
                if not first and not every_chunk and (deltas := _only_arguments(chunk)) is not None:
                    yield deltas
                    continue
                generation = convert(chunk, AIMessageChunk, {})
                if generation is None:
                    continue
                first = False
                if every_chunk:
                    yield generation
                    continue
                yield _message_of(generation)
        finally:
            await stream.close()
    except openai.BadRequestError as exc:
        base._handle_openai_bad_request(exc)
        raise
    except openai.APIError as exc:
        base._handle_openai_api_error(exc)
        raise


def _only_arguments(chunk: Any) -> list[dict[str, Any]] | None:
    """The chunk's `tool_calls` when that is all it carries (no text, finish reason, usage,
    logprobs), else None."""
    if chunk.__class__ is not dict or chunk.get("usage"):
        return None
    choices = chunk.get("choices")
    if not choices or len(choices) != 1:
        return None
    choice = choices[0]
    if choice.get("finish_reason") or choice.get("logprobs"):
        return None
    delta = choice.get("delta")
    if not delta:
        return None
    deltas = delta.get("tool_calls")
    if not deltas:
        return None
    for key, value in delta.items():
        if value and key != "tool_calls" and not (key == "role" and value == "assistant"):
            return None
    return deltas


class _SsePayloads:
    """The `data:` payloads of an OpenAI SSE stream, parsed — what the SDK's `AsyncStream[object]`
    yields, with the same errors (`APIError` for an error payload, `APITimeoutError` /
    `APIConnectionError` for a broken read), but split with bytes operations instead of the
    SDK's line-by-line decoder (a third of the client's time on a 7,000-chunk reply)."""

    def __init__(self, response: Any):
        self.response = response

    @staticmethod
    def usable() -> bool:
        try:
            from openai import _httpx2  # the SDK's own lists of read errors
        except ImportError:
            return False
        return hasattr(_httpx2, "timeout_exceptions") and hasattr(_httpx2, "request_exceptions")

    async def close(self) -> None:
        await self.response.aclose()

    async def __aiter__(self) -> AsyncIterator[Any]:
        import openai
        from openai._httpx2 import request_exceptions, timeout_exceptions

        response, tail = self.response, b""
        blocks = response.aiter_bytes()
        try:
            async for block in blocks:
                data = tail + block if tail else block
                if b"\r" in data:  # CRLF or CR line ends; a CR at the very end may be half of a CRLF
                    held = data.endswith(b"\r")
                    data = data[:-1].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + b"\r" if held else \
                        data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                if b"\n\n" not in data:
                    tail = data
                    continue
                events = data.split(b"\n\n")
                tail = events.pop()
                for event in events:
                    if event.startswith(b"data: ") and b"\n" not in event:
                        kind, payload = None, event[6:]
                    else:
                        kind, payload = _parse_event(event)
                        if payload is None:
                            continue  # comments only (keep-alive): not a chunk
                    if payload.startswith(b"[DONE]"):
                        if response.http_version == "HTTP/1.1":  # read to the end, so the connection is reused (as the SDK does)
                            async for _ in blocks:
                                pass
                        return
                    try:
                        chunk = _loads(payload)
                    except ValueError:  # what orjson refuses and json takes (NaN, huge integers)
                        chunk = json.loads(payload)
                    if kind == "error" or (isinstance(chunk, dict) and chunk.get("error")):
                        error = chunk.get("error") if isinstance(chunk, dict) else None
                        message = error.get("message") if isinstance(error, dict) else None
                        raise openai.APIError(message=message if isinstance(message, str) and message else "An error occurred during streaming",
                                              request=response.request, body=error)
                    yield chunk
        except timeout_exceptions() as exc:
            raise openai.APITimeoutError(request=response.request) from exc
        except request_exceptions() as exc:
            raise openai.APIConnectionError(request=response.request) from exc


def _parse_event(event: bytes) -> tuple[str | None, bytes | None]:
    """One SSE event's type and data (its `data:` lines joined), per the SSE spec."""
    kind, data = None, []
    for line in event.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            kind = value.decode("utf-8", "replace")
    return kind, (b"\n".join(data) if data else None)
