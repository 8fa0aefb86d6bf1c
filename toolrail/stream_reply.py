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
- with a `ChatOpenAI` model and nothing listening to callbacks, toolrail reads the SSE stream
  itself (`_openai_chunks`: one generator, a batch per network read, no pydantic object per
  chunk); a chunk that is only argument text goes straight to the watcher — most of them
  recognised by their bytes around the text (`_ArgumentFrame`), only the text's JSON string
  decoded — and every other chunk (the first, text, finish reason, usage) goes through
  langchain-openai's own conversion, so the reply's text and metadata are exactly what
  `ChatOpenAI._astream` gives.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
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
        text = self.arguments
        try:  # nothing may follow the closing brace, and it must be an object
            return isinstance(_loads(text), dict)
        except ValueError:  # what orjson refuses and json may take (NaN, huge integers, lone surrogates, deep nesting)
            pass
        try:
            return isinstance(json.loads(text), dict)
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
        self._merged = False  # kept[0] is an `AIMessageChunk`: later chunks are kept only if they add something

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
                if key == self.current and args and not fragment.get("name") and not fragment.get("id"):
                    if not self._append(self.calls[key], args):  # the usual fragment: more text for the call being streamed
                        return
                    continue
                self.add(key, fragment.get("id"), fragment.get("name"), args)
                if self.too_many or self.too_big:
                    return
        if self._merged and isinstance(message, AIMessageChunk):
            if not (message.content or message.usage_metadata or message.id or message.additional_kwargs
                    or message.response_metadata):
                return  # only fragments (a generic model's usual chunk)
            if not self._carries_more(message):
                return
        elif not self.kept:
            self._first_id = message.id
            self._merged = isinstance(message, AIMessageChunk)
        self.kept.append(message)

    def feed_openai(self, deltas: list[dict[str, Any]]) -> None:
        """The `tool_calls` entries of OpenAI chunks' deltas, in order, as the SDK parses them (dicts)."""
        for delta in deltas:
            function = delta.get("function") or {}
            key, args = delta.get("index", 0), function.get("arguments")
            if key == self.current and args and not delta.get("id") and not function.get("name"):
                if not self._append(self.calls[key], args):  # the usual entry: more text for the call being streamed
                    return
                continue
            self.add(key, delta.get("id"), function.get("name"), args)
            if self.too_many or self.too_big:
                return

    def feed_text(self, key: Any, text: str) -> None:
        """The argument text of an OpenAI chunk that carries only text for call `key` (no id, no
        name): what `feed_openai` does with its entry, without the entry."""
        if key != self.current:
            return self.add(key, None, None, text)
        if text:
            self._append(self.calls[key], text)

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
            self._append(call, args)

    def _append(self, call: _Call, text: str) -> bool:
        """More argument text for `call`; False once the call is past the size limit (validation
        refuses it and the rest of the reply is not read). Reports the call when its JSON closes."""
        call.pieces.append(text)
        call.size += len(text)
        if call.size > self._max_bytes:
            self.too_big = True
            return False
        if "}" in text and not call.done and self.on_complete is not None and call.closed():
            self._complete(call)
        return True

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
    chunks, kind = _chunks(model, prompt, config, watcher)
    batches, generations = kind == "batches", kind == "generations"
    got_any = False
    async with StreamGuard(limits, run_deadline) as guard:
        # asyncio's own loop clock is time.monotonic: called directly, a Python frame less per chunk
        clock = time.monotonic if type(guard.loop).time is asyncio.BaseEventLoop.time else guard.loop.time
        try:
            async for item in chunks:
                if batches and item.__class__ is tuple:  # a read of one frame of argument text: (call index, text)
                    watcher.feed_text(item[0], item[1])
                elif batches:  # `ChatOpenAI` read by toolrail: a list per network read (`_openai_chunks`)
                    for piece in item:
                        if piece.__class__ is tuple:  # (call index, argument text)
                            watcher.feed_text(piece[0], piece[1])
                        elif piece.__class__ is list:
                            watcher.feed_openai(piece)
                        else:
                            watcher.feed(piece)
                        if watcher.too_many or watcher.too_big:
                            break
                elif generations:  # the model's own `_astream`: what `astream` would make of each (`_message_of`)
                    if item.generation_info:
                        item.message.response_metadata = {**item.generation_info, **item.message.response_metadata}
                    watcher.feed(item.message)
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


def _chunks(model: Any, prompt: list[BaseMessage], config: RunnableConfig, watcher: CallWatcher) -> tuple[Any, str]:
    """The reply's chunks and their kind: "messages", "generations" (to unwrap) or "batches"
    (`_openai_chunks`: lists of messages and runs of argument text). When nothing listens to
    callbacks (no tracing, no token streaming to a client), they come straight from the chat
    model's own `_astream` (or, for `ChatOpenAI`, from the OpenAI SDK as dicts). When something
    listens (LangSmith, `stream_mode="messages"`, `astream_events`), `_listened_chunks` gives it
    every chunk and the callbacks `astream` gives, but the reply it reports at the end is the
    watcher's: `BaseChatModel.astream` merges all chunks for `on_llm_end` with a list merge that
    is O(fragments × calls) — 1,000 streamed calls cost it ~1.5 s."""
    unbound = _unbind(model)
    if unbound is None:
        return model.astream(prompt, config), "messages"
    chat, kwargs = unbound
    if chat.rate_limiter is None and not _listening():
        messages = chat._convert_input(prompt).to_messages()
        if _openai_fast_path(chat, kwargs):
            return _openai_chunks(chat, messages, kwargs), "batches"
        return chat._astream(messages, **kwargs), "generations"
    if isinstance(model, RunnableBinding) and (model.config or model.config_factories):
        return model.astream(prompt, config), "messages"  # a bound config of its own: langchain merges it
    listened = _listened_chunks(chat, kwargs, prompt, config, watcher)
    return (model.astream(prompt, config), "messages") if listened is None else (listened, "messages")


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
            batched = _openai_fast_path(chat, kwargs)
            source = _openai_chunks(chat, normalized, kwargs, every_chunk=True) if batched else chat._astream(normalized, **kwargs)
            try:
                async for item in source:
                    for chunk in item if batched else (item,):
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


async def _openai_chunks(chat: Any, messages: list[BaseMessage], kwargs: dict[str, Any], every_chunk: bool = False) -> AsyncIterator[list[Any]]:
    """`BaseChatOpenAI._astream` without an object per chunk, a batch per network read: the same
    request and error handling; each batch is a list in stream order, where a run of chunks that
    are only tool-call argument text is one list of their raw `tool_calls` entries, a chunk
    recognised by its bytes (below) is a `(call index, text)` pair, and every other chunk is the
    message langchain-openai itself makes of it; a read that is one recognised chunk is yielded
    as its pair, not in a list. With `every_chunk` (someone
    listens to each token), every chunk is langchain-openai's own `ChatGenerationChunk` — what
    `_astream` gives, without the SDK's object per chunk.

    The SSE stream is read here, with the SDK's errors (`APIError` for an error payload,
    `APITimeoutError` / `APIConnectionError` for a broken read), but split with bytes operations
    instead of the SDK's line-by-line decoder, and in this one generator: a step of an async
    generator costs about as much as a chunk's own work, so a read that brings 20 frames costs
    one step here and one in `stream_reply`, not 20 in each of several layers.

    Most of a reply's frames are argument text that differs from the previous frame only in that
    text (same id, model, call index, same bytes around it): `_ArgumentFrame` recognises them by
    those bytes and decodes only the text's JSON string. Anything else (a new call, text, finish
    reason, usage, a field that changes per chunk) is parsed whole."""
    import openai
    from openai import AsyncStream
    from langchain_openai.chat_models import base

    kwargs = {**kwargs, "stream": True}
    stream_usage = chat._should_stream_usage(kwargs.pop("stream_usage", None), **kwargs)
    if stream_usage:
        kwargs["stream_options"] = {"include_usage": stream_usage}
    payload = chat._get_request_payload(messages, **kwargs)
    sorter = _ChunkSorter(chat._convert_chunk_to_generation_chunk, every_chunk)
    try:
        raw = await chat.async_client.with_raw_response.create(**payload)
        if not _sse_readable():  # an SDK without the pieces read here: its own stream of dicts
            stream = raw.parse(to=AsyncStream[object])
            try:
                async for chunk in stream:
                    batch: list[Any] = []
                    sorter.add(chunk, batch, None)
                    if batch:
                        yield batch
            finally:
                await stream.close()
            return
        from openai._httpx2 import request_exceptions, timeout_exceptions

        response, tail = raw.http_response, b""
        encoding = response.headers.get("content-encoding", "").strip().lower()
        # no content coding (an SSE stream's usual case): the raw bytes skip httpx's decoder layer
        blocks = response.aiter_raw() if encoding in ("", "identity") else response.aiter_bytes()
        template: _ArgumentFrame | None = None
        prefix: bytes | None = None  # the template's pieces, as locals: most events are matched against them
        suffix, start, stop, fixed, key = b"", 0, 0, 0, None
        suffix_end = b""  # the suffix and the blank line that ends an event
        # a template that recognised no frame was not worth making; after three in a row (a field
        # that changes every chunk, one frame per call), none is made for the rest of the reply
        matched, useless = False, 0
        try:
            async for block in blocks:
                if prefix is not None and not tail and block.endswith(suffix_end) and block.startswith(prefix):
                    # the usual read: one frame of argument text, alone (`_ArgumentFrame.match`, inline)
                    if block.find(b"\n") == len(block) - 2 and block.find(b"\r") < 0 and len(block) > fixed + 2:
                        try:
                            text = _loads(block[start:len(block) - stop - 2])
                        except ValueError:  # not one valid JSON string: parsed whole, below
                            pass
                        else:
                            matched = True
                            yield (key, text)
                            continue
                data = tail + block if tail else block
                if data.find(b"\r") >= 0:  # CRLF or CR line ends; a CR at the very end may be half of a CRLF
                    held = data.endswith(b"\r")
                    data = data[:-1].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + b"\r" if held else \
                        data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                end = data.rfind(b"\n\n")  # the end of the read's last complete event
                if end < 0:
                    tail = data
                    continue
                tail = data[end + 2:]
                # most reads bring one event of one line; bytes.find is a memchr, `in` and split are not
                events = data[:end].split(b"\n\n") if data.find(b"\n", 0, end) >= 0 else (data[:end],)
                batch = []
                run: list[Any] | None = None  # the batch's latest run of argument-only entries (parsed)
                for event in events:
                    if prefix is not None:  # `_ArgumentFrame.match`, inline: a (call index, text) pair per frame
                        if event.startswith(prefix):
                            if event.endswith(suffix) and len(event) > fixed:
                                try:
                                    batch.append((key, _loads(event[start:len(event) - stop])))
                                    run = None
                                    matched = True
                                    continue
                                except ValueError:  # not one valid JSON string: parsed whole
                                    pass
                        elif (other := template.reindexed(event)) is not None and (text := other.match(event)) is not None:
                            template = other  # the next call's first text
                            prefix, suffix, start, stop, fixed, key = template.pieces()
                            suffix_end = suffix + b"\n\n"
                            batch.append((key, text))
                            run = None
                            matched = True
                            continue
                    one_line = event.startswith(b"data: ") and event.find(b"\n") < 0
                    if one_line:
                        kind, body = None, event[6:]
                    else:
                        kind, body = _parse_event(event)
                        if body is None:
                            continue  # comments only (keep-alive): not a chunk
                    if body.startswith(b"[DONE]"):
                        if batch:
                            yield batch
                        if response.http_version == "HTTP/1.1":  # read to the end, so the connection is reused (as the SDK does)
                            async for _ in blocks:
                                pass
                        return
                    try:
                        chunk = _loads(body)
                    except ValueError:  # what orjson refuses and json takes (NaN, huge integers)
                        chunk = json.loads(body)
                    if kind == "error" or (chunk.__class__ is dict and chunk.get("error")):
                        if batch:
                            yield batch  # what came before the error is read, as with the SDK's stream
                        error = chunk.get("error") if isinstance(chunk, dict) else None
                        message = error.get("message") if isinstance(error, dict) else None
                        raise openai.APIError(message=message if isinstance(message, str) and message else "An error occurred during streaming",
                                              request=response.request, body=error)
                    run = sorter.add(chunk, batch, run)
                    if run is not None and one_line and useless < 3:  # argument text: the next frames may be the same but for it
                        made = _ArgumentFrame.of(event, chunk)
                        if made is not None:
                            useless = 0 if matched or template is None else useless + 1
                            template, matched = (made, False) if useless < 3 else (None, False)
                            if template is None:
                                prefix = None
                            else:
                                prefix, suffix, start, stop, fixed, key = template.pieces()
                                suffix_end = suffix + b"\n\n"
                if batch:
                    yield batch
        except timeout_exceptions() as exc:
            raise openai.APITimeoutError(request=response.request) from exc
        except request_exceptions() as exc:
            raise openai.APIConnectionError(request=response.request) from exc
        finally:
            await response.aclose()
    except openai.BadRequestError as exc:
        base._handle_openai_bad_request(exc)
        raise
    except openai.APIError as exc:
        base._handle_openai_api_error(exc)
        raise


def _sse_readable() -> bool:
    """Does this OpenAI SDK have the lists of read errors `_openai_chunks` maps as the SDK does?"""
    try:
        from openai import _httpx2
    except ImportError:
        return False
    return hasattr(_httpx2, "timeout_exceptions") and hasattr(_httpx2, "request_exceptions")


class _ChunkSorter:
    """Puts a parsed OpenAI chunk into its batch: once the first chunk has gone through
    langchain-openai (role, id, model) and unless every chunk must (`every_chunk`), a chunk that
    is only argument text joins the batch's run of `tool_calls` entries; any other becomes the
    message (or generation) langchain-openai makes of it."""

    __slots__ = ("convert", "every_chunk", "arguments_only")

    def __init__(self, convert: Callable[..., Any], every_chunk: bool):
        self.convert, self.every_chunk = convert, every_chunk
        self.arguments_only = False

    def add(self, chunk: Any, batch: list[Any], run: list[Any] | None) -> list[Any] | None:
        """Adds the chunk; returns the batch's run of entries when the chunk joined it, else None."""
        if self.arguments_only and (deltas := _only_arguments(chunk)) is not None:
            if run is None:
                run = []
                batch.append(run)
            run.extend(deltas)
            return run
        generation = self.convert(chunk, AIMessageChunk, {})
        if generation is not None:
            if not self.every_chunk:
                self.arguments_only = True
            batch.append(generation if self.every_chunk else _message_of(generation))
        return None


def _only_arguments(chunk: Any) -> list[dict[str, Any]] | None:
    """The chunk's `tool_calls` when that is all it carries (no text, finish reason, usage,
    logprobs), else None."""
    if chunk.__class__ is not dict or chunk.get("usage"):
        return None
    choices = chunk.get("choices")
    if not choices or choices.__class__ is not list or len(choices) != 1:
        return None
    choice = choices[0]
    if choice.__class__ is not dict or choice.get("finish_reason") or choice.get("logprobs"):
        return None
    delta = choice.get("delta")
    if not delta or delta.__class__ is not dict:
        return None
    deltas = delta.get("tool_calls")
    if not deltas or deltas.__class__ is not list:
        return None
    if len(delta) > 1:
        for key, value in delta.items():
            if value and key != "tool_calls" and not (key == "role" and value == "assistant"):
                return None
    return deltas


class _ArgumentFrame:
    """An argument-only SSE event as bytes around its argument text: an event with the same
    bytes before and after a valid JSON string is the same chunk with that string as its text,
    so only the string is decoded (a fifth of parsing the whole chunk). When the call's index
    is a number before the text, an event that differs only in that number too (the next call's
    first text) is the same chunk for that call (`reindexed`).

    Made only when that is certain: a chunk whose one `tool_calls` entry has no id and no name
    and whose text is a string; one `"arguments"` in the event; no backslash outside the text (so
    no key is written with escapes, and that `"arguments"` is the entry's key); the index's digits
    are the ones whose change changes the entry's index and nothing else (one probe, parsed)."""

    __slots__ = ("prefix", "suffix", "start", "stop", "index", "head", "mid")

    def __init__(self, prefix: bytes, suffix: bytes, index: Any, head: bytes | None = None, mid: bytes | None = None):
        self.prefix, self.suffix, self.index = prefix, suffix, index
        self.start, self.stop = len(prefix) - 1, len(suffix) - 1  # the string's quotes are the last and first bytes of these
        self.head, self.mid = head, mid  # the prefix before and after the index's digits (None: not known)

    @classmethod
    def of(cls, event: bytes, chunk: dict[str, Any]) -> "_ArgumentFrame | None":
        deltas = chunk["choices"][0]["delta"]["tool_calls"]
        if len(deltas) != 1 or deltas[0].__class__ is not dict:
            return None
        delta = deltas[0]
        function = delta.get("function")
        if function.__class__ is not dict or delta.get("id") or function.get("name"):
            return None
        text = function.get("arguments")
        if text.__class__ is not str or event.count(b'"arguments"') != 1:
            return None
        found = _STRING_START.match(event, event.index(b'"arguments"') + len(b'"arguments"'))
        if found is None:
            return None
        start = end = found.end()
        while True:  # the string's closing quote: the first one not escaped
            end = event.find(b'"', end)
            if end < 0:
                return None
            backslashes = 0
            while event[end - 1 - backslashes] == 92:  # a backslash
                backslashes += 1
            if backslashes % 2 == 0:
                break
            end += 1
        prefix, suffix = event[:start], event[end:]
        if b"\\" in prefix or b"\\" in suffix:
            return None
        try:
            if _loads(event[start - 1:end + 1]) != text:
                return None
        except ValueError:
            return None
        index = delta.get("index", 0)
        head, mid = _index_digits(event, start, chunk, index) if index.__class__ is int and index >= 0 else (None, None)
        return cls(prefix, suffix, index, head, mid)

    def pieces(self) -> tuple[bytes, bytes, int, int, int, Any]:
        """What `match` uses, for a caller that inlines it: prefix, suffix, where the string
        starts and how far from the end it stops, the shortest frame, the call's index."""
        return self.prefix, self.suffix, self.start, self.stop, self.start + self.stop + 1, self.index

    def match(self, event: bytes) -> str | None:
        """The event's argument text when it is this frame with other text, else None."""
        if not event.startswith(self.prefix) or not event.endswith(self.suffix) or len(event) <= self.start + self.stop:
            return None
        try:
            text = _loads(event[self.start:len(event) - self.stop])
        except ValueError:  # not one valid JSON string: parsed whole, as any other event
            return None
        return text

    def reindexed(self, event: bytes) -> "_ArgumentFrame | None":
        """This frame for another call, when the event starts as this frame with another index;
        None otherwise. (Whether the rest is this frame's is `match`'s to say.)"""
        head, mid = self.head, self.mid
        if head is None or mid is None or not event.startswith(head):
            return None
        at = len(head)
        end = event.find(mid, at, at + 20 + len(mid))
        if end <= at:
            return None
        digits = event[at:end]
        if not digits.isdigit() or (digits[0] == 48 and end - at > 1):  # a JSON integer: no leading zero
            return None
        return _ArgumentFrame(head + digits + mid, self.suffix, int(digits), head, mid)


def _index_digits(event: bytes, start: int, chunk: dict[str, Any], index: int) -> tuple[bytes | None, bytes | None]:
    """The event's bytes before and after the digits of the entry's index, when those come
    before the text (which starts at `start`): the digits whose change to 7777777 turns the
    parsed chunk into the same chunk with index 7777777."""
    digits = str(index).encode()
    for found in reversed(list(_INDEX_KEY.finditer(event, 0, start))):
        at, after = found.end(), found.end() + len(digits)
        if event[at:after] != digits:
            continue
        try:
            probe = _loads(event[6:at] + b"7777777" + event[after:])
            entry = probe["choices"][0]["delta"]["tool_calls"][0]
        except (ValueError, LookupError, TypeError):
            continue
        if entry.__class__ is dict and entry.get("index") == 7777777:
            entry["index"] = index
            if probe == chunk:
                return event[:at], event[after:start]
    return None, None


_STRING_START = re.compile(rb'[ \t\n\r]*:[ \t\n\r]*"')
_INDEX_KEY = re.compile(rb'"index"[ \t\n\r]*:[ \t\n\r]*')


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
