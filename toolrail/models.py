"""Which chat model a run talks to: any OpenAI-compatible endpoint, or the recorded model."""

from __future__ import annotations

import os

from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from toolrail.errors import ConfigError
from toolrail.recorded import RECORDED_LABEL, RecordedChatModel, load_transcript

DEFAULT_MODEL = "gpt-4o-mini"


def live_model_configured() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))


def openai_model(name: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 1) -> ChatOpenAI:
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
        max_retries=max_retries,
    )


def model_for_prompt(prompt: str, name: str | None = None, *, recorded: bool = False) -> tuple[BaseChatModel, str]:
    """The model for a CLI run and a label saying which kind it is."""
    if recorded or not live_model_configured():
        model = RecordedChatModel.for_prompt(prompt)
        return model, RECORDED_LABEL
    model = openai_model(name)
    return model, f"{model.model_name} via {model.openai_api_base or 'api.openai.com'}"


def default_model() -> BaseChatModel:
    """For the module-level graph (LangGraph server / Studio): live if configured, else recorded."""
    if live_model_configured():
        return openai_model()
    return RecordedChatModel(transcript=load_transcript("trip"))
