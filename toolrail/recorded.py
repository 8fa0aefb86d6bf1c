"""The recorded model: replays a scripted transcript shipped with toolrail.

It lets a newcomer watch the whole graph work with no key and no network. It is *not* an AI
model: it replays the planner's replies for one known prompt, streamed in chunks the way an
OpenAI-compatible server streams them, and refuses any other prompt.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage

from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import BaseModel, Field

from toolrail.calls import merge_chunks
from toolrail.errors import ModelUnavailable

RECORDED_LABEL = "recorded model (scripted transcript, no AI is called)"


class RecordedCall(BaseModel):
    id: str
    name: str
    arguments: str  # raw JSON text, possibly broken on purpose


class RecordedTurn(BaseModel):
    content: str = ""
    tool_calls: list[RecordedCall] = Field(default_factory=list)
    # The recording's next reply assumes validation rejects this turn (else: that its calls succeed).
    expect_rejected: bool = False


class Transcript(BaseModel):
    name: str
    description: str
    prompt: str
    turns: list[RecordedTurn]
    inputs: list[str] = Field(default_factory=list)  # files shipped beside it, handed to the sandbox

    def input_files(self) -> dict[str, bytes]:
        folder = resources.files("toolrail").joinpath("recorded")
        return {name: folder.joinpath(name).read_bytes() for name in self.inputs}


def load_transcript(name_or_path: str) -> Transcript:
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        text = path.read_text()
    else:
        text = resources.files("toolrail").joinpath("recorded", f"{name_or_path}.json").read_text()
    return Transcript.model_validate_json(text)


def available_transcripts() -> list[Transcript]:
    folder = resources.files("toolrail").joinpath("recorded")
    return sorted(
        (Transcript.model_validate_json(f.read_text()) for f in folder.iterdir() if f.name.endswith(".json")),
        key=lambda t: t.name,
    )


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _gist(content: Any) -> str:
    """The line that says what went wrong (a traceback's last line, not its first)."""
    lines = [line for line in str(content).splitlines() if line.strip()] or [""]
    return next((line for line in lines if not line.startswith((" ", "Traceback"))), lines[0])[:200]


class RecordedChatModel(BaseChatModel):
    """Replays `transcript`; the turn is chosen by how many assistant turns the history holds."""

    transcript: Transcript
    chunk_delay_s: float = 0.002

    @property
    def _llm_type(self) -> str:
        return "toolrail-recorded"

    @classmethod
    def for_prompt(cls, prompt: str) -> "RecordedChatModel":
        transcripts = available_transcripts()
        for transcript in transcripts:
            if _normalise(transcript.prompt) == _normalise(prompt):
                return cls(transcript=transcript)
        known = "; ".join(repr(t.prompt) for t in transcripts)
        raise ModelUnavailable(
            "no API key set, and the recorded model only replays these prompts: "
            f"{known}. Set OPENAI_API_KEY (and OPENAI_BASE_URL for a local server) for a live model."
        )

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=tools, **kwargs)

    def _turn(self, messages: list[BaseMessage]) -> RecordedTurn:
        human = next((m for m in messages if m.type == "human"), None)
        if human is None or _normalise(str(human.content)) != _normalise(self.transcript.prompt):
            raise ModelUnavailable(
                f"the recorded model only replays the prompt {self.transcript.prompt!r}; "
                "set OPENAI_API_KEY for a live model"
            )
        index = sum(1 for m in messages if m.type == "ai")
        if index >= len(self.transcript.turns):
            raise ModelUnavailable(
                f"the recording {self.transcript.name!r} has no reply for turn {index + 1}; "
                "set OPENAI_API_KEY for a live model"
            )
        if index:
            self._check_results(self.transcript.turns[index - 1], messages)
        return self.transcript.turns[index]

    def _check_results(self, previous: RecordedTurn, messages: list[BaseMessage]) -> None:
        """A scripted reply only fits the results it was recorded after: refuse to pretend otherwise."""
        last_ai = max(i for i, m in enumerate(messages) if m.type == "ai")
        results = [m for m in messages[last_ai + 1 :] if m.type == "tool"]
        failed = [m for m in results if m.status == "error"]
        if previous.expect_rejected and not failed:
            raise ModelUnavailable("the recording expected validation to reject the previous turn, but its calls ran; "
                                   "set OPENAI_API_KEY for a live model")
        if not previous.expect_rejected and failed:
            raise ModelUnavailable(f"the recording expected {failed[0].name} to succeed, but it returned: {_gist(failed[0].content)} — "
                                   "the recorded reply would not fit; set OPENAI_API_KEY for a live model")

    def _chunks(self, turn: RecordedTurn) -> Iterator[AIMessageChunk]:
        for word in re.findall(r"\S*\s*", turn.content)[:-1]:  # word by word, exactly the content
            yield AIMessageChunk(content=word)
        for index, call in enumerate(turn.tool_calls):
            pieces = [call.arguments[i : i + 12] for i in range(0, len(call.arguments), 12)] or [""]
            for n, piece in enumerate(pieces):
                head = {"id": call.id, "name": call.name} if n == 0 else {"id": None, "name": None}
                yield AIMessageChunk(
                    content="",
                    tool_call_chunks=[{"index": index, "args": piece, "type": "tool_call_chunk", **head}],
                )
        yield AIMessageChunk(content="", response_metadata={"model_name": f"recorded:{self.transcript.name}", "finish_reason": "tool_calls" if turn.tool_calls else "stop"})

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(self._turn(messages)):
            time.sleep(self.chunk_delay_s)
            if run_manager and chunk.content:
                run_manager.on_llm_new_token(str(chunk.content), chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)

    async def _astream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(self._turn(messages)):
            await asyncio.sleep(self.chunk_delay_s)
            generation = ChatGenerationChunk(message=chunk)
            if run_manager:
                await run_manager.on_llm_new_token(str(chunk.content), chunk=generation)
            yield generation

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        chunks = list(self._chunks(self._turn(messages)))
        merged = merge_chunks(chunks)  # one pass, not O(N²)
        return ChatResult(generations=[ChatGeneration(message=merged)])

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        """Async-native like a real provider's client: without it langchain runs `_generate` on
        a thread pool, a hop a real model's `ainvoke` does not make (benchmarks compare graphs
        that call the model with `ainvoke` against toolrail's streaming planner)."""
        return self._generate(messages, stop, **kwargs)

