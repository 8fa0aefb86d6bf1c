"""Any LangChain chat model: build it from `provider:name`, bind tools the way its provider wants,
and explain whatever it raises.

Provider features are asked for only where the provider has them:

| provider  | tools go out as                           | parallel calls                 | strict                    |
| --------- | ----------------------------------------- | ------------------------------ | ------------------------- |
| OpenAI    | `function` + `strict: true` per tool      | `parallel_tool_calls=True`     | Structured Outputs        |
| Anthropic | `name`/`input_schema` + `strict: true`    | on by default (nothing sent)   | strict tool use           |
| others    | OpenAI-format functions, no `strict` key  | provider default (nothing sent)| toolrail's validation only|

Whatever the provider, toolrail validates every call itself against the same strict schema.
"""

from __future__ import annotations

import os
from typing import Any

from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelNotFoundError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelTimeoutError,
)
from langchain_core.language_models import BaseChatModel

from toolrail.errors import ConfigError
from toolrail.tools.registry import Tool, ToolRegistry

# Packages that bring each provider (what `pip install` needs when one is missing).
PROVIDER_PACKAGES = {
    "openai": "langchain-openai", "anthropic": "langchain-anthropic", "google_genai": "langchain-google-genai",
    "mistralai": "langchain-mistralai", "ollama": "langchain-ollama", "groq": "langchain-groq",
    "bedrock_converse": "langchain-aws", "fireworks": "langchain-fireworks", "together": "langchain-together",
}
KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def split_spec(spec: str) -> tuple[str, str]:
    """`anthropic:claude-sonnet-4-5` -> ("anthropic", "claude-sonnet-4-5"); a bare name is OpenAI's."""
    provider, sep, name = spec.partition(":")
    if not sep:
        return "openai", spec
    if not provider or not name:
        raise ConfigError(f"--model {spec!r}: expected provider:name, e.g. anthropic:claude-sonnet-4-5 or openai:gpt-4o-mini")
    return provider.strip().lower(), name.strip()


def chat_model(spec: str, *, base_url: str | None = None, api_key: str | None = None, timeout: float = 60.0) -> BaseChatModel:
    """A chat model from LangChain's `init_chat_model`, with the SDK's own retries off.

    toolrail retries 429/5xx itself (toolrail/backoff.py), visibly; an SDK retrying underneath
    would hide waits and multiply them. Usage is always asked for, local servers included.
    """
    provider, name = split_spec(spec)
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"--base-url must be an http(s):// URL, got {base_url!r}")
    options: dict[str, Any] = {"max_retries": 0, "timeout": timeout}
    if provider in ("openai", "anthropic"):
        options["stream_usage"] = True
        env_base = os.environ.get("OPENAI_BASE_URL") if provider == "openai" else None
        base_url = base_url or env_base
        # Local servers take any key; the real APIs refuse a missing one clearly (401).
        key = api_key or os.environ.get(KEY_VARIABLES[provider])
        options["api_key"] = key or ("not-needed" if base_url or provider == "openai" else None)
        if options["api_key"] is None:
            del options["api_key"]
    if base_url:
        options["base_url"] = base_url
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise ConfigError(f"--model {spec}: provider models need the `langchain` package: pip install 'toolrail[providers]'") from None
    try:
        return init_chat_model(name, model_provider=provider, **options)
    except ImportError:
        package = PROVIDER_PACKAGES.get(provider, f"langchain-{provider.replace('_', '-')}")
        raise ConfigError(f"--model {spec}: the {provider} integration is not installed: pip install {package}") from None
    except Exception as exc:  # unknown provider, bad option: one line, not a traceback
        raise ConfigError(f"--model {spec}: {str(exc).splitlines()[0]}") from None


def provider_of(model: Any) -> str:
    """'openai', 'anthropic' or 'other', from the chat model's class (bound or not)."""
    from toolrail.recorded import RecordedChatModel

    inner = getattr(model, "bound", model)
    if isinstance(inner, RecordedChatModel):
        return "openai"  # replays OpenAI-shaped turns
    module = type(inner).__module__
    if module.startswith("langchain_openai"):
        return "openai"
    if module.startswith("langchain_anthropic"):
        return "anthropic"
    return "other"


def bind_tools_for_provider(model: BaseChatModel, tools: ToolRegistry) -> Any:
    """Bind the registry in the form the model's provider accepts, asking only for features it has."""
    if not len(tools):
        return model
    provider = provider_of(model)
    if provider == "openai":
        # Parallel calls stay on because toolrail validates every call itself (OpenAI does not
        # guarantee strict decoding for parallel calls).
        return model.bind_tools(tools.openai_schemas(), parallel_tool_calls=True)
    if provider == "anthropic":
        return model.bind_tools([anthropic_tool(tool) for tool in tools])
    return model.bind_tools([_without_strict(tool.openai_schema()) for tool in tools])


def anthropic_tool(tool: Tool) -> dict[str, Any]:
    """Anthropic's tool format; `strict: true` asks for its strict tool use where the schema allows."""
    spec: dict[str, Any] = {"name": tool.wire_name or tool.name, "description": tool.description, "input_schema": tool.parameters}
    if tool.strict:
        spec["strict"] = True
    return spec


def _without_strict(schema: dict[str, Any]) -> dict[str, Any]:
    function = {k: v for k, v in schema["function"].items() if k != "strict"}
    return {**schema, "function": function}


def with_usage_reporting(model: BaseChatModel) -> BaseChatModel:
    """An OpenAI client pointed at a base URL streams without usage unless asked: ask."""
    if isinstance(model, BaseChatModel) and provider_of(model) == "openai" and getattr(model, "stream_usage", True) is not True:
        return model.model_copy(update={"stream_usage": True})
    return model


def status_of(exc: BaseException) -> int | None:
    """The HTTP status behind a provider error, whatever SDK raised it."""
    for candidate in (exc, exc.__cause__):
        if candidate is None:
            continue
        status = getattr(candidate, "status_code", None)
        if status is None:
            status = getattr(getattr(candidate, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
    return None


def explain_model_error(exc: BaseException) -> str:
    """Say what to do, not just what broke; works for every provider LangChain classifies."""
    import openai

    status = status_of(exc)
    if isinstance(exc, (openai.APIConnectionError, ModelConnectionError)) and not isinstance(exc, (openai.APITimeoutError, ModelTimeoutError)):
        url = getattr(getattr(exc, "request", None), "url", "the endpoint")
        return (
            f"cannot reach the model at {url} ({exc}). Is the server running? Check the base URL "
            "(--base-url, OPENAI_BASE_URL, ANTHROPIC_BASE_URL), or unset the keys and base URLs to use the recorded model."
        )
    if isinstance(exc, (openai.APITimeoutError, ModelTimeoutError)):
        return f"the model did not answer in time ({type(exc).__name__}); raise its timeout or try again."
    if isinstance(exc, (openai.AuthenticationError, ModelAuthenticationError)) or status == 401:
        return "the model endpoint refused the API key (401): check OPENAI_API_KEY / ANTHROPIC_API_KEY."
    if isinstance(exc, ModelPermissionDeniedError) or status == 403:
        return f"the key may not use this model (403): {_message(exc)}"
    if isinstance(exc, (openai.NotFoundError, ModelNotFoundError)) or status == 404:
        return f"the endpoint does not know that model or route (404): check --model / TOOLRAIL_MODEL. {_message(exc)}"
    if isinstance(exc, ContextOverflowError):
        return f"the conversation no longer fits the model's context window: {_message(exc)}"
    if isinstance(exc, ModelRateLimitError) or status == 429:
        return f"the model endpoint is rate limiting (HTTP 429): {_message(exc)}"
    if status is not None:
        return f"the model endpoint answered HTTP {status}: {_message(exc)}"
    return f"{type(exc).__name__}: {exc}"


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc)
