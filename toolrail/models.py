"""Which chat model a run talks to: any LangChain chat model (`provider:name`), any
OpenAI-compatible endpoint, or the recorded model."""

from __future__ import annotations

import os

from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from toolrail.errors import ConfigError
from toolrail.recorded import RECORDED_LABEL, RecordedChatModel, load_transcript

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_ANTHROPIC_MODEL = "anthropic:claude-sonnet-4-5"


LIVE_MODEL_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


def live_model_configured(name: str | None = None, base_url: str | None = None) -> bool:
    """A key or base URL is set, or the user named a provider: talk to a real model."""
    return bool(base_url or (name and ":" in name) or any(os.environ.get(v) for v in LIVE_MODEL_VARIABLES))


def openai_model(name: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 0) -> ChatOpenAI:
    """OpenAI, vLLM, Ollama, llama.cpp server...: anything speaking chat-completions."""
    base_url = base_url or os.environ.get("OPENAI_BASE_URL")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"OPENAI_BASE_URL must be an http(s):// URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
    return ChatOpenAI(
        model=name or os.environ.get("TOOLRAIL_MODEL") or DEFAULT_MODEL,
        base_url=base_url,
        # Local servers take any key; OpenAI itself will refuse a missing one clearly.
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
        timeout=timeout,
        # toolrail's own backoff retries 429/5xx visibly (toolrail/backoff.py); the SDK's would hide waits.
        max_retries=max_retries,
        stream_usage=True,  # usage from local servers too (langchain-openai leaves it off with a base URL)
    )


def model_for_prompt(prompt: str, name: str | None = None, *, recorded: bool = False,
                     base_url: str | None = None) -> tuple[BaseChatModel, str]:
    """The model for a CLI run and a label saying which kind it is."""
    if recorded or not live_model_configured(name, base_url):
        model = RecordedChatModel.for_prompt(prompt)
        return model, RECORDED_LABEL
    return live_model(name, base_url=base_url)


def live_model(name: str | None = None, *, base_url: str | None = None) -> tuple[BaseChatModel, str]:
    """`provider:name` through LangChain's init_chat_model; a bare name is OpenAI-compatible."""
    name = name or os.environ.get("TOOLRAIL_MODEL") or _default_name()
    if ":" not in name or name.startswith("openai:"):
        model = openai_model(name.removeprefix("openai:"), base_url=base_url)
        return model, f"{model.model_name} via {model.openai_api_base or 'api.openai.com'}"
    from toolrail.providers import chat_model, split_spec

    model = chat_model(name, base_url=base_url)
    provider, _ = split_spec(name)
    where = base_url or getattr(model, "anthropic_api_url", None) or f"{provider}'s API"
    return model, f"{name} via {where}"


def _default_name() -> str:
    only_anthropic = any(os.environ.get(v) for v in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")) and not any(
        os.environ.get(v) for v in ("OPENAI_API_KEY", "OPENAI_BASE_URL"))
    return DEFAULT_ANTHROPIC_MODEL if only_anthropic else DEFAULT_MODEL


def default_model() -> BaseChatModel:
    """For the module-level graph (LangGraph server / Studio): live if configured, else recorded.

    `TOOLRAIL_MODEL=provider:name` picks any LangChain provider; `TOOLRAIL_BASE_URL` its endpoint.
    """
    name, base_url = os.environ.get("TOOLRAIL_MODEL"), os.environ.get("TOOLRAIL_BASE_URL")
    if live_model_configured(name, base_url):
        return live_model(name, base_url=base_url)[0]
    return RecordedChatModel(transcript=load_transcript("trip"))
