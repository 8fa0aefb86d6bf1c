"""Usage per model call and per run, budgets, cost; strict final answers (response_format)."""

from __future__ import annotations

import json

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel, Field

from conftest import TRIP_PROMPT, client_for
from test_anthropic_wire import claude
from test_cli import toolrail
from toolrail.graphs.agent import build_graph
from toolrail.testing.anthropic_server import AnthropicMessagesServer
from toolrail.testing.openai_server import OpenAICompatibleServer, ScriptedReply, answer, call, calls
from toolrail.usage import Budget, Price

WEATHER = call("get_weather", {"location": "New York"}, id="call_w")


async def run(model, prompt: str = "go", thread: str = "t", graph=None, **options):
    graph = graph or build_graph(model=model, checkpointer=InMemorySaver(), **options)
    return await graph.ainvoke({"messages": [("user", prompt)]}, {"configurable": {"thread_id": thread}}), graph


def used(input_tokens: int, output_tokens: int, reply: ScriptedReply) -> ScriptedReply:
    reply.usage = (input_tokens, output_tokens)
    return reply


async def test_tokens_per_call_and_run_totals_are_in_state_also_from_a_local_server(openai_server, streaming):
    openai_server.script(used(100, 20, calls(WEATHER)), used(150, 30, answer("Rain.")))
    state, _ = await run(client_for(openai_server, streaming=streaming))
    if streaming:  # a client pointed at a base URL does not ask for usage by itself: toolrail does
        assert openai_server.requests[0]["stream_options"] == {"include_usage": True}
    assert [(c["input_tokens"], c["output_tokens"], c["total_tokens"], c["reported"]) for c in state["model_calls"]] == [
        (100, 20, 120, True), (150, 30, 180, True)]
    assert state["usage_total"] == {"run": 1, "model_calls": 2, "input_tokens": 250, "output_tokens": 50,
                                    "total_tokens": 300, "cost_usd": None, "retries": 0}


async def test_a_continued_thread_totals_each_run_on_its_own(openai_server):
    openai_server.script(used(100, 20, answer("one")), used(7, 3, answer("two")))
    _, graph = await run(client_for(openai_server))
    state, _ = await run(None, "again", graph=graph)
    assert len(state["model_calls"]) == 2 and state["usage_total"]["total_tokens"] == 10 and state["usage_total"]["run"] == 2


async def test_a_price_table_turns_tokens_into_cost_matching_dated_model_names(openai_server):
    openai_server.script(used(1_000_000, 500_000, answer("ok")))
    budget = Budget(prices={"scripted": Price(input_per_mtok=0.15, output_per_mtok=0.6)})
    state, _ = await run(client_for(openai_server), budget=budget)  # the server answers as "scripted-model"
    assert state["model_calls"][0]["cost_usd"] == pytest.approx(0.45)
    assert state["usage_total"]["cost_usd"] == pytest.approx(0.45)


async def test_the_token_budget_ends_the_run_and_no_further_call_runs(openai_server):
    openai_server.script(used(10, 10, calls(WEATHER)), used(10, 10, calls(call("get_weather", {"location": "Boston"}, id="call_b"))), answer("never"))
    state, _ = await run(client_for(openai_server), budget=30)
    assert state["failure"]["reason"] == "budget"
    assert "used 40 tokens; its budget is 30" in state["failure"]["message"]
    assert [r["id"] for r in state["results"] if r["status"] == "ok"] == ["call_w"]  # call_b never ran
    assert len(openai_server.requests) == 2


async def test_a_spent_budget_sends_no_request(openai_server):
    openai_server.script(used(50, 0, calls(WEATHER)), answer("never"))
    state, _ = await run(client_for(openai_server), budget=Budget(max_tokens_total=50))
    assert state["failure"]["reason"] == "budget" and len(openai_server.requests) == 1


def test_budget_flags_usage_in_json_and_history(tmp_path):
    (tmp_path / "prices.json").write_text(json.dumps({"scripted": {"input": 1.0, "output": 2.0}}))
    with OpenAICompatibleServer([calls(WEATHER), calls(WEATHER), answer("x")]) as server:
        done = toolrail("run", "--json", "--thread", "b1", "hi", "--model", "scripted", "--base-url", server.base_url,
                        "--max-tokens-total", "30", "--prices", "prices.json", tmp_path=tmp_path)
    assert done.returncode == 1 and "run stopped (budget)" in done.stderr
    state = json.loads(done.stdout)
    assert state["failure"]["reason"] == "budget"
    assert state["usage_total"]["total_tokens"] == 40 and state["usage_total"]["cost_usd"] == pytest.approx(0.00006)
    history = json.loads(toolrail("history", "b1", "--json", tmp_path=tmp_path).stdout)
    assert [c["total_tokens"] for row in reversed(history) for c in row["model_calls"]] == [20, 20]


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-tokens-total", "0"], "expected a whole number >= 1"),
    (["--prices", "missing.json"], "--prices missing.json: cannot read it"),
    (["--response-schema", "missing.json"], "--response-schema missing.json: cannot read it"),
])
def test_bad_budget_and_schema_flags_are_one_line(tmp_path, flags, message):
    done = toolrail("run", TRIP_PROMPT, *flags, tmp_path=tmp_path)
    assert done.returncode == 2 and message in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr


# --- strict final answers ----------------------------------------------------------------------


class TripPlan(BaseModel):
    """The plan, as the app needs it."""

    city: str
    high_c: int
    flight: str | None = Field(description="cheapest nonstop flight number, if any")


GOOD = '{"city": "New York", "high_c": 9, "flight": "B6 916"}'


async def test_an_invalid_final_answer_goes_back_with_the_exact_error_then_the_valid_object_is_in_state(openai_server, streaming):
    openai_server.script(calls(WEATHER), answer('{"city": "New York", "high_c": "nine"}'), answer(GOOD))
    state, _ = await run(client_for(openai_server, streaming=streaming), response_format=TripPlan)
    body = openai_server.requests[0]
    assert body["response_format"]["type"] == "json_schema"  # OpenAI structured output asked for, strict
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["response_format"]["json_schema"]["schema"]["additionalProperties"] is False
    feedback = openai_server.requests[2]["messages"][-1]
    assert feedback["role"] == "user"
    assert '- high_c: Input should be a valid integer (got "nine")' in feedback["content"]
    assert "- flight: required argument is missing" in feedback["content"]
    assert state["structured_response"] == {"city": "New York", "high_c": 9, "flight": "B6 916"}
    assert state.get("failure") is None and state["usage_total"]["model_calls"] == 3


async def test_anthropic_answers_are_validated_by_toolrail_with_the_schema_in_the_prompt():
    with AnthropicMessagesServer([answer("Sure! Here it is."), answer(f"```json\n{GOOD}\n```")]) as server:
        state, _ = await run(claude(server), response_format=TripPlan)
        first = server.requests[0]
    assert "response_format" not in first and '"high_c":{"type":"integer"}' in first["system"]
    assert state["verdicts"][0]["valid"] is False and "not valid JSON" in state["verdicts"][0]["error"]
    assert state["structured_response"]["flight"] == "B6 916"


async def test_with_a_non_strict_tool_the_schema_goes_in_the_prompt_only(openai_server):
    """OpenAI refuses response_format beside a non-strict tool: toolrail does not ask for it then."""
    from toolrail.tools.json_schema import tool_from_json_schema
    from toolrail.tools.registry import ToolRegistry

    registry = ToolRegistry()
    registry.add(tool_from_json_schema({"name": "free_form", "parameters": {"type": "object", "properties": {"blob": {"type": "dict"}}}},
                                       implementation=lambda blob: "ok"))
    assert registry.get("free_form").strict is False
    openai_server.script(answer(GOOD))
    graph = build_graph(model=client_for(openai_server), tools=registry, checkpointer=InMemorySaver(), response_format=TripPlan)
    state, _ = await run(None, graph=graph)
    body = openai_server.requests[0]
    assert "response_format" not in body and '"high_c":{"type":"integer"}' in body["messages"][0]["content"]
    assert state["structured_response"]["city"] == "New York"


async def test_an_answer_invalid_past_the_retry_budget_is_a_structured_failure(openai_server):
    openai_server.script(answer("{}"), answer("{}"))
    state, _ = await run(client_for(openai_server), response_format=TripPlan, max_retries=1)
    assert state["failure"]["reason"] == "retry_budget_exhausted"
    assert "city: required argument is missing" in state["failure"]["errors"][0]["error"]
    assert state["structured_response"] is None


def test_response_schema_file_from_the_cli(tmp_path):
    schema = {"name": "weather_summary", "schema": {"type": "object", "properties": {
        "city": {"type": "string"}, "rain": {"type": "boolean"}}, "required": ["city", "rain"]}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    with OpenAICompatibleServer([answer('{"city": "NYC", "rain": "yes"}'), answer('{"city": "NYC", "rain": true}')]) as server:
        done = toolrail("run", "--json", "hi", "--model", "scripted", "--base-url", server.base_url,
                        "--response-schema", "schema.json", tmp_path=tmp_path)
        sent = server.requests[0]["response_format"]["json_schema"]
    assert done.returncode == 0, done.stderr
    assert sent["name"] == "weather_summary" and sent["strict"] is True
    assert json.loads(done.stdout)["structured_response"] == {"city": "NYC", "rain": True}


def test_a_response_schema_strict_mode_cannot_express_is_refused(tmp_path):
    (tmp_path / "loose.json").write_text(json.dumps({"type": "object", "properties": {"anything": {}}}))
    done = toolrail("run", TRIP_PROMPT, "--response-schema", "loose.json", tmp_path=tmp_path)
    assert done.returncode == 2 and "--response-schema loose.json" in done.stderr and done.stderr.count("\n") == 1, done.stderr
