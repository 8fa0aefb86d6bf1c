"""Any LangChain chat model; Anthropic proven over its own wire (Messages API, streamed tool_use blocks).

The real `ChatAnthropic` client (langchain-anthropic over the official SDK) talks to a local
server speaking the Messages API; the graph, validation, retries and speculation are the same
code the OpenAI path runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver

from conftest import TRIP_PROMPT
from test_cli import toolrail
from toolrail.errors import ConfigError
from toolrail.graphs.agent import DEFAULT_TOOLS, build_graph
from toolrail.providers import bind_tools_for_provider, chat_model
from toolrail.testing.anthropic_server import AnthropicMessagesServer
from toolrail.testing.openai_server import ScriptedReply, answer, call, calls
from toolrail.tools.registry import ToolRegistry

WEATHER = call("get_weather", {"location": "New York"}, id="toolu_w")
BAD_FLIGHTS = call("search_flights", {"origin": "SF", "destination": "NYC", "date": None, "max_stops": "nonstop"}, id="toolu_bad")
FLIGHTS = call("search_flights", {"origin": "SF", "destination": "NYC", "date": None, "max_stops": 0}, id="toolu_f")
TRIP_SCRIPT = [calls(WEATHER, BAD_FLIGHTS), calls(WEATHER, FLIGHTS), answer("Light rain in NYC; B6 916 is the cheapest nonstop.")]


@pytest.fixture
def anthropic_server():
    with AnthropicMessagesServer() as server:
        yield server


def claude(server: AnthropicMessagesServer, streaming: bool = True) -> ChatAnthropic:
    return ChatAnthropic(model="claude-scripted", base_url=server.base_url, api_key="test-key", max_retries=0,
                         streaming=streaming, timeout=20)


async def run(model, tools=None, **options) -> dict:
    graph = build_graph(model=model, tools=tools, checkpointer=InMemorySaver(), **options)
    return await graph.ainvoke({"messages": [("user", TRIP_PROMPT)]}, {"configurable": {"thread_id": "t"}})


def tool_results(request: dict) -> dict[str, dict]:
    return {block["tool_use_id"]: block for m in request["messages"] if m["role"] == "user" and isinstance(m["content"], list)
            for block in m["content"] if block.get("type") == "tool_result"}


async def test_trip_example_over_the_messages_api_with_strict_tools_retry_and_parallel_calls(anthropic_server, streaming):
    anthropic_server.script(*TRIP_SCRIPT)
    state = await run(claude(anthropic_server, streaming))

    first = anthropic_server.requests[0]
    assert first.get("stream", False) is streaming
    sent = {t["name"]: t for t in first["tools"]}
    assert set(sent) == {t.name for t in DEFAULT_TOOLS}
    for name, tool in sent.items():  # Anthropic's own format, strict tool use asked for
        assert tool["strict"] is True and tool["input_schema"] == DEFAULT_TOOLS.get(name).parameters
    assert "tool_choice" not in first and "parallel_tool_calls" not in first  # parallel is Anthropic's default

    rejected = tool_results(anthropic_server.requests[1])
    assert rejected["toolu_bad"]["is_error"] is True
    assert "max_stops: Input should be a valid integer" in rejected["toolu_bad"]["content"]
    results = tool_results(anthropic_server.requests[2])
    assert json.loads(results["toolu_w"]["content"])["location"] == "New York, NY"
    assert json.loads(results["toolu_f"]["content"])["flights"][0]["flight"] == "B6 916"
    assert [v["valid"] for v in state["verdicts"]] == [True, False, True, True]
    assert state.get("failure") is None
    assert state["messages"][-1].text.strip() == "Light rain in NYC; B6 916 is the cheapest nonstop."
    assert state["usage_total"]["total_tokens"] == 60 and state["usage_total"]["model_calls"] == 3


async def test_speculation_starts_a_tool_use_block_before_the_stream_ends(anthropic_server):
    started: dict[str, float] = {}
    registry = ToolRegistry()

    @registry.register
    async def lookup(key: str) -> str:
        """Look something up.

        Args:
            key: what
        """
        started[key] = time.perf_counter()
        await asyncio.sleep(0.1)
        return key

    anthropic_server.script(
        calls(call("lookup", {"key": "a"}, id="toolu_a"), call("lookup", {"key": "b"}, id="toolu_b", gap_before_s=0.5), tail_delay_s=0.8),
        answer("ok"),
    )
    state = await run(claude(anthropic_server), tools=registry)
    stream_end = anthropic_server.stream_ended_at[0]
    assert started["a"] < started["b"] < stream_end  # each block started once its input_json closed
    assert [(r["id"], r["speculative"], r["status"]) for r in state["results"]] == [("toolu_a", True, "ok"), ("toolu_b", True, "ok")]


@pytest.mark.parametrize(("status", "expected"), [
    (401, "refused the API key (401)"), (403, "may not use this model (403)"), (404, "does not know that model"),
    (400, "HTTP 400"), (413, "HTTP 413"),
])
async def test_an_anthropic_error_ends_the_run_with_a_structured_failure(anthropic_server, status, expected):
    anthropic_server.script(ScriptedReply(http_status=status))
    state = await run(claude(anthropic_server))
    assert state["failure"]["reason"] == "model_error"
    assert expected in state["failure"]["message"]


async def test_an_unreachable_anthropic_endpoint_is_a_failure_not_an_exception():
    from toolrail.backoff import RetryPolicy

    model = ChatAnthropic(model="claude-x", base_url="http://127.0.0.1:9", api_key="k", max_retries=0, timeout=5)
    state = await run(model, model_retry=RetryPolicy(base_delay_s=0.01, max_connection_retries=1))
    assert state["failure"]["reason"] == "model_error"
    assert "cannot reach the model" in state["failure"]["message"]
    assert "connection failed: retries exhausted (1) after 2 request(s)" in state["failure"]["message"]
    assert state["model_calls"][0]["waits"][0]["error"] == "AnthropicConnectionError"


def test_init_chat_model_builds_the_provider_model_with_sdk_retries_off(anthropic_server):
    model = chat_model("anthropic:claude-scripted", base_url=anthropic_server.base_url)
    assert isinstance(model, ChatAnthropic) and model.max_retries == 0 and model.stream_usage is True
    assert model.anthropic_api_url == anthropic_server.base_url


@pytest.mark.parametrize(("spec", "message"), [
    ("nosuchprovider:model", "--model nosuchprovider:model"), (":claude", "expected provider:name"),
    ("google_genai:gemini-2.0-flash", "pip install langchain-google-genai"),
])
def test_a_model_spec_that_cannot_be_built_is_one_clear_error(spec, message):
    with pytest.raises(ConfigError, match=message.replace(":", ".")):
        chat_model(spec)


class _OtherProvider(BaseChatModel):
    """A chat model of no provider toolrail knows: it records what binding asked of it."""

    bound_with: dict[str, Any] = {}

    @property
    def _llm_type(self) -> str:
        return "other"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        _OtherProvider.bound_with = {"tools": tools, **kwargs}
        return self.bind(tools=tools)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("done"))])


def test_other_providers_are_not_asked_for_features_they_may_not_have():
    bind_tools_for_provider(_OtherProvider(), DEFAULT_TOOLS)
    bound = _OtherProvider.bound_with
    assert set(bound) == {"tools"}  # no parallel_tool_calls (langchain-google-genai rejects it)
    assert all("strict" not in t["function"] for t in bound["tools"])
    assert bound["tools"][0]["function"]["parameters"] == DEFAULT_TOOLS.get(bound["tools"][0]["function"]["name"]).parameters


def test_trip_example_runs_from_the_cli_over_the_anthropic_server(tmp_path):
    with AnthropicMessagesServer([ScriptedReply(tool_calls=r.tool_calls, content=r.content, fragment_delay_s=0.01) for r in TRIP_SCRIPT]) as server:
        done = toolrail("run", TRIP_PROMPT, "--model", "anthropic:claude-scripted", "--base-url", server.base_url, tmp_path=tmp_path,
                        env={"ANTHROPIC_API_KEY": "test-key"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "anthropic:claude-scripted via http://127.0.0.1" in out
    assert "✗ search_flights rejected" in out and "2 calls ran concurrently" in out
    assert "started while the model is still streaming" in out  # speculation over tool_use blocks
    assert "B6 916 is the cheapest nonstop" in out
    assert "usage: 3 model call(s) · 60 tokens (30 in, 30 out)" in out
