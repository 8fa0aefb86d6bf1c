"""planner: ask the model for the next step, with every tool bound in strict form.

Reads `messages`; writes the assistant message, the turn's raw calls (`turn_calls`) and, when
the model cannot be reached, a structured `failure`.
"""

from __future__ import annotations

from typing import Any

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.runnables import RunnableConfig

from toolrail.calls import history_message, raw_calls
from toolrail.errors import ModelUnavailable
from toolrail.state import AgentState, RunFailure
from toolrail.tools.registry import ToolRegistry

DEFAULT_SYSTEM_PROMPT = (
    "You are a capable assistant with tools. When several tool calls are independent, make them "
    "all in the same turn (in parallel). If a call is rejected, read the error and send corrected "
    "calls. Answer in plain text once you have what you need."
)


def make_planner(model: BaseChatModel, tools: ToolRegistry, system_prompt: str = DEFAULT_SYSTEM_PROMPT):
    # Strict mode is requested per tool in its schema; parallel calls stay on because toolrail
    # validates every call itself (OpenAI does not guarantee strict decoding for parallel calls).
    bound = model.bind_tools(tools.openai_schemas(), parallel_tool_calls=True) if len(tools) else model

    async def planner(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        prompt = [SystemMessage(system_prompt), *state["messages"]]
        try:
            reply = await _stream_reply(bound, prompt, config)
        except (openai.OpenAIError, ModelUnavailable) as exc:
            return {"failure": _model_failure(exc, state)}
        calls = raw_calls(reply)
        return {"messages": [history_message(reply, calls)], "turn_calls": calls, "failure": None}

    return planner


async def _stream_reply(model: Any, prompt: list[BaseMessage], config: RunnableConfig) -> BaseMessage:
    """Stream the reply (so calls and text surface as they are generated) and merge the chunks."""
    reply: BaseMessage | None = None
    async for chunk in model.astream(prompt, config):
        reply = chunk if reply is None else reply + chunk
    if reply is None:
        raise ModelUnavailable("the model returned an empty stream")
    return reply


def _model_failure(exc: Exception, state: AgentState) -> RunFailure:
    return RunFailure(
        reason="model_error",
        message=_explain(exc),
        attempts=state.get("attempts", 0),
        errors=[],
    )


def _explain(exc: Exception) -> str:
    """Say what to do, not just what broke."""
    if isinstance(exc, openai.APIConnectionError):
        url = getattr(getattr(exc, "request", None), "url", "the endpoint")
        return (
            f"cannot reach the model at {url} ({exc}). Is the server running? Check OPENAI_BASE_URL, "
            "or unset OPENAI_API_KEY and OPENAI_BASE_URL to use the recorded model."
        )
    if isinstance(exc, openai.AuthenticationError):
        return "the model endpoint refused the API key (401): check OPENAI_API_KEY."
    if isinstance(exc, openai.NotFoundError):
        return f"the endpoint does not know that model or route (404): check --model / TOOLRAIL_MODEL. {exc}"
    if isinstance(exc, openai.APIStatusError):
        return f"the model endpoint answered HTTP {exc.status_code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
